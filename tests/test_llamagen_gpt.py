"""LlamaGen GPT port: official checkpoint layout, KV-cache fidelity, 2D RoPE, sampling, weight files."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from studio.engines.llamagen import (
    GPT,
    GPTConfig,
    apply_rotary_emb,
    causal_mask,
    generate,
    load_state_dict_from_file,
    precompute_freqs_cis_2d,
    sample_logits,
)
from studio.errors import InvalidInput, ModelNotAvailable

# The official sizes, written out by hand: (n_layer, dim, n_head, SwiGLU hidden). The hidden size is
# find_multiple(int(2 * 4 * dim / 3), 256), e.g. 1280 -> 3413 -> 3584.
OFFICIAL = {
    "B": (12, 768, 12, 2048),
    "L": (24, 1024, 16, 2816),
    "XL": (36, 1280, 20, 3584),
    "XXL": (48, 1536, 24, 4096),
    "3B": (24, 3200, 32, 8704),
}


def official_layout(name: str, model_type: str) -> dict[str, tuple[int, ...]]:
    n_layer, dim, _, hidden = OFFICIAL[name]
    vocab = 16384
    layout: dict[str, tuple[int, ...]] = {
        "tok_embeddings.weight": (vocab, dim),
        "norm.weight": (dim,),
        "output.weight": (vocab, dim),
    }
    if model_type == "c2i":
        layout["cls_embedding.embedding_table.weight"] = (1001, dim)  # 1000 classes + the null class
    else:
        layout["cls_embedding.cap_proj.fc1.weight"] = (dim, 2048)
        layout["cls_embedding.cap_proj.fc2.weight"] = (dim, dim)
        layout["cls_embedding.uncond_embedding"] = (120, 2048)
    for n in range(n_layer):
        p = f"layers.{n}."
        layout[p + "attention.wqkv.weight"] = (3 * dim, dim)
        layout[p + "attention.wo.weight"] = (dim, dim)
        layout[p + "feed_forward.w1.weight"] = (hidden, dim)
        layout[p + "feed_forward.w3.weight"] = (hidden, dim)
        layout[p + "feed_forward.w2.weight"] = (dim, hidden)
        layout[p + "attention_norm.weight"] = (dim,)
        layout[p + "ffn_norm.weight"] = (dim,)
    return layout


@pytest.mark.parametrize("name,model_type", [(n, "c2i") for n in OFFICIAL] + [("XL", "t2i")])
def test_state_dict_matches_the_official_checkpoint_layout(name, model_type):
    config = GPTConfig.named(name, model_type=model_type)
    assert (config.n_layer, config.dim, config.n_head) == OFFICIAL[name][:3]
    with torch.device("meta"):
        model = GPT(config)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state == official_layout(name, model_type)
    # The RoPE table exists but is derived, never saved.
    prefix = 1 if model_type == "c2i" else 120
    assert tuple(model.freqs_cis.shape) == (prefix + 256, config.head_dim // 2, 2)
    assert "freqs_cis" not in state


def tiny_model(model_type: str = "c2i", seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(model_type, **overrides)).eval()


def conditions(model: GPT, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A CFG batch [cond; null] and the caption validity mask (t2i) for it."""
    c = model.config
    g = torch.Generator().manual_seed(1)
    if c.model_type == "c2i":
        cond = torch.randint(0, c.num_classes, (batch,), generator=g)
        return torch.cat([cond, torch.full_like(cond, c.num_classes)]), None
    cond = torch.randn(batch, c.cls_token_num, c.caption_dim, generator=g)
    null = torch.zeros_like(cond) + model.cls_embedding.uncond_embedding
    valid = torch.ones(batch, c.cls_token_num, dtype=torch.long)
    valid[0, : c.cls_token_num // 2] = 0  # a left-padded short caption, as the t2i sampler feeds it
    return torch.cat([cond, null]), torch.cat([valid, valid])


@pytest.mark.parametrize("model_type", ["c2i", "t2i"])
def test_kv_cached_decoding_matches_recomputing_the_whole_sequence(model_type):
    model = tiny_model(model_type)
    c = model.config
    cond, valid = conditions(model)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, c.vocab_size, (cond.shape[0], c.block_size - 1), generator=g)
    total = c.cls_token_num + tokens.shape[1]

    with torch.no_grad():
        model.setup_caches(cond.shape[0], total + 1, torch.float32)
        if valid is not None:
            model.causal_mask = causal_mask(cond.shape[0], model.causal_mask.shape[-1], valid)
        steps = [model.prefill(cond)]
        for i in range(tokens.shape[1]):
            steps.append(model.decode_one(tokens[:, i : i + 1], c.cls_token_num + i))
        cached = torch.cat(steps, dim=1)
        # The caches do not leak into the saved weights.
        assert set(model.state_dict()) == set(GPT(c).state_dict())

        model.reset_caches()
        mask = None if valid is None else causal_mask(cond.shape[0], total, valid)[:, None]
        full = model(tokens, cond, mask=mask)

    assert cached.shape == full.shape == (cond.shape[0], total, c.vocab_size)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def reference_angles(row: int, col: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Per-pair rotation angle of image token (row, col): first quarter of head_dim by row, second by column."""
    quarter = head_dim // 4
    inv = torch.tensor([base ** (-2 * i / (head_dim // 2)) for i in range(quarter)], dtype=torch.float64)
    return torch.cat([row * inv, col * inv])


def test_rope_splits_pairs_between_row_and_column_like_the_reference():
    grid, head_dim, prefix = 4, 16, 3
    table = precompute_freqs_cis_2d(grid, head_dim, 10000, prefix)
    assert table.shape == (prefix + grid * grid, head_dim // 2, 2)
    x = torch.randn(1, grid * grid, 2, head_dim, dtype=torch.float64)
    rotated = apply_rotary_emb(x, table[prefix:])
    for r in range(grid):
        for col in range(grid):
            pos = r * grid + col
            angles = reference_angles(r, col, head_dim)
            torch.testing.assert_close(table[prefix + pos, :, 0].double(), angles.cos(), atol=1e-6, rtol=0)
            torch.testing.assert_close(table[prefix + pos, :, 1].double(), angles.sin(), atol=1e-6, rtol=0)
            # Interleaved pairs (x[2i], x[2i+1]) rotate like complex numbers.
            z = torch.view_as_complex(x[0, pos].reshape(2, -1, 2).contiguous())
            z = z * torch.polar(torch.ones_like(angles), angles)
            torch.testing.assert_close(rotated[0, pos], torch.view_as_real(z).flatten(-2), atol=1e-6, rtol=0)

    # Same row -> same row half; same column -> same column half; a different row changes the row half.
    rows, cols = table[prefix:].view(grid, grid, head_dim // 2, 2).split(head_dim // 4, dim=2)
    assert torch.equal(rows[2, 0], rows[2, 3]) and torch.equal(cols[0, 1], cols[3, 1])
    assert not torch.allclose(rows[1, 0], rows[2, 0])


def test_condition_prefix_gets_zero_rotation_as_in_the_original():
    # The original pads the table with zeros (cos = sin = 0), which zeroes the prefix's queries and keys.
    table = precompute_freqs_cis_2d(4, 16, 10000, 5)
    assert torch.count_nonzero(table[:5]) == 0
    assert torch.count_nonzero(apply_rotary_emb(torch.randn(2, 5, 3, 16), table[:5])) == 0

    # Consequence: the prefix tokens attend uniformly, so their outputs ignore the q/k weights while
    # the image tokens' outputs do not.
    model = tiny_model("t2i")
    c = model.config
    cond, _ = conditions(model)
    tokens = torch.randint(0, c.vocab_size, (cond.shape[0], 5))
    with torch.no_grad():
        before = model(tokens, cond)
        for layer in model.layers:
            layer.attention.wqkv.weight[: 2 * c.dim].mul_(3.0).add_(0.5)  # the q and k rows
        after = model(tokens, cond)
    prefix = c.cls_token_num
    torch.testing.assert_close(before[:, :prefix], after[:, :prefix])
    assert not torch.allclose(before[:, prefix:], after[:, prefix:])


def run(model: GPT, seed: int, **kwargs) -> torch.Tensor:
    c = model.config
    cond = torch.tensor([3, 7]) if c.model_type == "c2i" else conditions(model)[0][:2]
    kwargs = {"cfg_scale": 4.0, "top_k": 20, **kwargs}
    return generate(model, cond, c.block_size, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("model_type", ["c2i", "t2i"])
def test_same_seed_same_tokens_and_another_seed_other_tokens(model_type):
    model = tiny_model(model_type)
    first = run(model, 11)
    assert first.shape == (2, model.config.block_size) and first.dtype == torch.long
    assert int(first.min()) >= 0 and int(first.max()) < model.config.vocab_size
    assert torch.equal(first, run(model, 11))
    assert not torch.equal(first, run(model, 12))
    assert model.causal_mask is None  # generate() frees its caches


def test_top_k_one_is_greedy_decoding_with_cfg():
    model = tiny_model("c2i")
    c = model.config
    scale = 3.0
    cond = torch.tensor([3, 7])
    sampled = generate(model, cond, c.block_size, cfg_scale=scale, top_k=1,
                       generator=torch.Generator().manual_seed(0))

    # Greedy by full recomputation, no cache: argmax of uncond + (cond - uncond) * scale.
    both = torch.cat([cond, torch.full_like(cond, c.num_classes)])
    seq = torch.empty(4, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(c.block_size):
            logits = model(seq if seq.shape[1] else None, both)[:, -1]
            guided_logits = logits[2:] + (logits[:2] - logits[2:]) * scale
            nxt = guided_logits.argmax(-1, keepdim=True)
            seq = torch.cat([seq, torch.cat([nxt, nxt])], dim=1)
    assert torch.equal(sampled, seq[:2])


def test_sample_logits_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g)
    assert torch.equal(sample_logits(logits, top_k=1, generator=g)[:, 0], logits.argmax(-1))
    assert torch.equal(sample_logits(logits, top_p=1e-6, generator=g)[:, 0], logits.argmax(-1))
    top5 = logits.topk(5).indices
    draws = torch.cat([sample_logits(logits, top_k=5, generator=g) for _ in range(200)], dim=1)
    assert all(set(draws[i].tolist()) <= set(top5[i].tolist()) for i in range(3))
    assert all(len(set(draws[i].tolist())) > 1 for i in range(3))


def test_progress_cfg_interval_and_caption_mask():
    model = tiny_model("t2i")
    c = model.config
    seen: list[tuple[int, int]] = []
    cond = conditions(model)[0][:2]
    valid = torch.ones(2, c.cls_token_num, dtype=torch.long)
    valid[1, :3] = 0
    out = generate(model, cond, c.block_size, cfg_scale=5.0, generator=torch.Generator().manual_seed(0),
                   on_token=lambda i, n: seen.append((i, n)), emb_masks=valid, cfg_interval=3)
    assert out.shape == (2, c.block_size)
    assert seen == [(i, c.block_size) for i in range(1, c.block_size + 1)]


def test_bad_class_id_is_a_user_error():
    with pytest.raises(InvalidInput):
        generate(tiny_model("c2i"), torch.tensor([10]), 4)


def test_half_precision_keeps_an_fp32_rope_table():
    reference = tiny_model("c2i").freqs_cis
    model = tiny_model("c2i").to(torch.bfloat16)  # casts every buffer, the RoPE table included
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2]]), torch.tensor([3]))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert model.freqs_cis.dtype == torch.float32 and torch.equal(model.freqs_cis, reference)
    tokens = generate(model, torch.tensor([1]), 4, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (1, 4)


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items()}


CONTAINERS = {
    "ddp": lambda sd: {"model": sd, "optimizer": {}, "steps": 5000,
                       "args": argparse.Namespace(gpt_model="GPT-B", image_size=256)},
    "deepspeed": lambda sd: {"module": sd},
    "state_dict": lambda sd: {"state_dict": sd},
    "fsdp_bare": lambda sd: sd,
    "module_prefix": lambda sd: {"model": {"module." + k: v for k, v in sd.items()}},
    "compiled_prefix": lambda sd: {"module._orig_mod." + k: v for k, v in sd.items()},
    "stale_freqs_cis": lambda sd: {**sd, "freqs_cis": torch.zeros(17, 4, 2)},
}


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("model_type", ["c2i", "t2i"])
def test_checkpoint_containers_load_strictly(tmp_path: Path, container, model_type):
    source = tiny_model(model_type, seed=1)
    path = tmp_path / "gpt.pt"
    torch.save(CONTAINERS[container](_strip(source.state_dict())), path)

    state = load_state_dict_from_file(path)
    target = tiny_model(model_type, seed=2)
    result = target.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_safetensors_and_foreign_files(tmp_path: Path):
    from safetensors.torch import save_file

    source = tiny_model("c2i", seed=1)
    save_file(_strip(source.state_dict()), tmp_path / "gpt.safetensors")
    target = tiny_model("c2i", seed=2)
    target.load_state_dict(load_state_dict_from_file(tmp_path / "gpt.safetensors"), strict=True)
    assert torch.equal(target.output.weight, source.output.weight)

    torch.save({"epoch": 3, "note": "not weights"}, tmp_path / "other.pt")
    with pytest.raises(ModelNotAvailable):
        load_state_dict_from_file(tmp_path / "other.pt")


def test_tiny_config_is_a_real_grid():
    c = GPTConfig.tiny()
    assert math.isqrt(c.block_size) ** 2 == c.block_size and c.head_dim % 4 == 0


# Parameter counts LlamaGen's README publishes for its checkpoints (GPT-B 111M, L 343M, XL 775M; the
# text model's XL adds the caption projection), and each card's token grid and condition prefix.
PUBLISHED = {
    "llamagen-c2i-b-384": (111, 576, 1),
    "llamagen-c2i-l-384": (343, 576, 1),
    "llamagen-c2i-xl-384": (775, 576, 1),
    "llamagen-t2i-xl-256": (778, 256, 120),
    "llamagen-t2i-xl-512": (778, 1024, 120),
}


@pytest.mark.parametrize("card_id", sorted(PUBLISHED))
def test_each_shipped_card_describes_the_published_model(card_id):
    from studio.engines.llamagen.options import engine_options
    from studio.engines.llamagen.pipeline import gpt_config
    from studio.settings import REPO_ROOT
    from studio.zoo.cards import CardRegistry

    card = CardRegistry.load([REPO_ROOT / "model_zoo"]).get(card_id)
    config = gpt_config(engine_options(card), card.max_size)
    with torch.device("meta"):
        model = GPT(config)
    millions, tokens, prefix = PUBLISHED[card_id]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions
    assert (config.block_size, config.cls_token_num, config.vocab_size) == (tokens, prefix, 16384)
    assert config.model_type == card.engine["kind"]
