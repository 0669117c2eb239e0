"""LlamaGen's VQ decoder on transformers' JanusVQVAE: key map, loading, decoding (offline, tiny)."""

from __future__ import annotations

import argparse
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import JanusVQVAE

from studio.engines.llamagen.options import VQ_DOWNSAMPLE
from studio.engines.llamagen.vq import (
    VQCheckpointError,
    decode_tokens,
    decoder_side,
    downsample_factor,
    load_vq_decoder,
    lookup_codes,
    official_key_map,
    tiny_vq_config,
    vq16_config,
)

# Parameter counts of the official VQ-16 (vq_ds16_c2i.pt / vq_ds16_t2i.pt), from the shapes below;
# the whole model is LlamaGen's advertised "72M" tokenizer.
VQ16_DECODER_SIDE_PARAMS = 42_583_171  # quantize.embedding + post_quant_conv + decoder
VQ16_DECODER_SIDE_TENSORS = 197
VQ16_ALL_PARAMS = 71_883_403
VQ16_JANUS_TENSORS = 343  # official file: 344, with quantize.codebook_used


def official_shapes(
    ch: int = 128,
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
    num_res_blocks: int = 2,
    z_channels: int = 256,
    embed_dim: int = 8,
    codebook_size: int = 16384,
) -> dict[str, tuple[int, ...]]:
    """The state dict names and shapes of LlamaGen's VQModel, written out from the module structure
    of tokenizer/tokenizer_image/vq_model.py (Encoder, Decoder, VectorQuantizer, ResnetBlock,
    AttnBlock, Upsample/Downsample with conv), independently of the map under test."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def norm(name: str, c: int) -> None:
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def res(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name: str, c: int) -> None:
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(prefix: str, c: int) -> None:
        res(f"{prefix}.mid.0", c, c)
        attn(f"{prefix}.mid.1", c)
        res(f"{prefix}.mid.2", c, c)

    levels = len(ch_mult)
    # Encoder: conv_blocks from the highest resolution down.
    conv("encoder.conv_in", 3, ch, 3)
    in_mult = (1, *ch_mult)
    for i in range(levels):
        block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            res(f"encoder.conv_blocks.{i}.res.{j}", block_in, block_out)
            block_in = block_out
            if i == levels - 1:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", block_in)
        if i != levels - 1:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", block_in, block_in, 3)
    mid("encoder", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, z_channels, 3)
    # Decoder: conv_blocks from the lowest resolution up (index 0 = deepest level).
    block_in = ch * ch_mult[-1]
    conv("decoder.conv_in", z_channels, block_in, 3)
    mid("decoder", block_in)
    for i, level in enumerate(reversed(range(levels))):
        block_out = ch * ch_mult[level]
        for j in range(num_res_blocks + 1):
            res(f"decoder.conv_blocks.{i}.res.{j}", block_in, block_out)
            block_in = block_out
            if level == levels - 1:
                attn(f"decoder.conv_blocks.{i}.attn.{j}", block_in)
        if level != 0:
            conv(f"decoder.conv_blocks.{i}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, 3, 3)
    # Quantizer and the 1x1 convs around it.
    shapes["quantize.embedding.weight"] = (codebook_size, embed_dim)
    shapes["quantize.codebook_used"] = (65536,)  # codebook_show_usage buffer
    conv("quant_conv", z_channels, embed_dim, 1)
    conv("post_quant_conv", embed_dim, z_channels, 1)
    return shapes


TINY = {"ch": 32, "ch_mult": (1, 1, 2), "num_res_blocks": 1, "z_channels": 32, "embed_dim": 4, "codebook_size": 64}
DECODER_SIDE_OFFICIAL = ("quantize.embedding.", "post_quant_conv.", "decoder.")


def random_official(seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = official_shapes(**{**TINY, **overrides})
    sd = {name: torch.randn(shape, generator=gen) * 0.2 for name, shape in shapes.items()}
    sd["quantize.codebook_used"] = torch.zeros(65536)
    return sd


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    return random_official()


@pytest.fixture(scope="module")
def vq(official: dict[str, torch.Tensor]) -> JanusVQVAE:
    return load_vq_decoder(official, tiny_vq_config())


def test_map_gives_exactly_janus_keys_and_shapes() -> None:
    shapes = official_shapes(**TINY)
    mapped = official_key_map({k: torch.empty(s) for k, s in shapes.items()})
    janus = JanusVQVAE(tiny_vq_config()).state_dict()
    assert set(mapped) == set(janus)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in janus.items()}
    # The decoder side alone is covered by the official decoder-side keys alone.
    decoder_shapes = {k: s for k, s in shapes.items() if k.startswith(DECODER_SIDE_OFFICIAL)}
    decoder_only = official_key_map({k: torch.empty(s) for k, s in decoder_shapes.items()})
    assert set(decoder_only) == {k for k in janus if decoder_side(k)}


def test_weights_land_where_their_official_names_say(official: dict[str, torch.Tensor], vq: JanusVQVAE) -> None:
    loaded = vq.state_dict()
    pairs = {
        "decoder.conv_blocks.0.res.1.conv1.weight": "decoder.up.0.block.1.conv1.weight",
        "decoder.conv_blocks.0.attn.1.proj_out.weight": "decoder.up.0.attn.1.proj_out.weight",
        "decoder.conv_blocks.1.res.0.nin_shortcut.weight": "decoder.up.1.block.0.nin_shortcut.weight",
        "decoder.conv_blocks.1.upsample.conv.bias": "decoder.up.1.upsample.conv.bias",
        "decoder.mid.0.norm1.weight": "decoder.mid.block_1.norm1.weight",
        "decoder.mid.1.q.weight": "decoder.mid.attn_1.q.weight",
        "decoder.mid.2.conv2.bias": "decoder.mid.block_2.conv2.bias",
        "decoder.norm_out.weight": "decoder.norm_out.weight",
        "decoder.conv_out.weight": "decoder.conv_out.weight",
        "post_quant_conv.weight": "post_quant_conv.weight",
        "quantize.embedding.weight": "quantize.embedding.weight",
        "encoder.conv_blocks.0.downsample.conv.weight": "encoder.down.0.downsample.conv.weight",
    }
    for theirs, ours in pairs.items():
        assert torch.equal(official[theirs], loaded[ours]), theirs
    # And every tensor: each loaded value is its official counterpart.
    for name, value in official_key_map(official).items():
        assert torch.equal(value, loaded[name]), name
    assert not vq.training and not vq.decoder.training


def test_decoding_gives_images_in_unit_range_deterministically(vq: JanusVQVAE) -> None:
    config = tiny_vq_config()
    factor = downsample_factor(config)
    assert factor == 4 and downsample_factor(vq16_config()) == 16
    assert VQ_DOWNSAMPLE == {"vq16": 16, "tiny": factor}  # what model cards are checked against
    tokens = torch.randint(0, config.num_embeddings, (2, 4 * 5), generator=torch.Generator().manual_seed(1))
    images = decode_tokens(vq, tokens, (4, 5))
    assert images.shape == (2, 3, 4 * factor, 5 * factor) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.01  # not a constant image
    assert torch.equal(images, decode_tokens(vq, tokens.clone(), (4, 5)))
    # Each image depends only on its own tokens.
    torch.testing.assert_close(images[1:], decode_tokens(vq, tokens[1:], (4, 5)), rtol=1e-5, atol=1e-6)


def test_codebook_lookup_matches_an_independent_l2_reference(vq: JanusVQVAE) -> None:
    tokens = torch.tensor([[0, 5, 63, 7, 7, 12], [1, 2, 3, 4, 5, 6]])
    codes = lookup_codes(vq, tokens, (2, 3))
    table = vq.quantize.embedding.weight.detach()
    for b in range(2):
        for row in range(2):
            for col in range(3):
                entry = table[tokens[b, row * 3 + col]]
                expected = entry / entry.pow(2).sum().sqrt()
                torch.testing.assert_close(codes[b, :, row, col], expected, rtol=1e-6, atol=1e-7)
    assert torch.allclose(codes.norm(dim=1), torch.ones(2, 2, 3))


def test_square_grids_decode_as_janus_does(vq: JanusVQVAE) -> None:
    """On its fixed num_patches x num_patches grid, Janus's own decode path gives the same image."""
    side = vq.config.num_patches
    tokens = torch.randint(0, vq.config.num_embeddings, (2, side * side), generator=torch.Generator().manual_seed(2))
    assert torch.equal(lookup_codes(vq, tokens, (side, side)), vq.quantize.get_codebook_entry(tokens))
    with torch.no_grad():
        janus = (vq.decode(tokens).clamp(-1, 1) + 1) / 2
    assert torch.equal(decode_tokens(vq, tokens, (side, side)), janus)


@pytest.mark.parametrize("container", ["model", "state_dict", None, "safetensors"])
def test_checkpoint_files_load_in_every_container(tmp_path, official, vq, container) -> None:
    if container == "safetensors":
        path = tmp_path / "vq.safetensors"
        save_file(official, str(path))
    else:
        path = tmp_path / "vq_ds16_c2i.pt"
        torch.save(official if container is None else {container: official, "steps": 400000}, path)
    loaded = load_vq_decoder(path, tiny_vq_config())
    tokens = torch.arange(16).view(1, 16)
    assert torch.equal(decode_tokens(loaded, tokens, (4, 4)), decode_tokens(vq, tokens, (4, 4)))


def test_a_decoder_only_file_loads(official) -> None:
    decoder_only = {k: v for k, v in official.items() if k.startswith(DECODER_SIDE_OFFICIAL)}
    loaded = load_vq_decoder(decoder_only, tiny_vq_config())
    assert decode_tokens(loaded, torch.zeros(1, 4, dtype=torch.long), (2, 2)).shape == (1, 3, 8, 8)


def test_a_file_with_a_wrong_key_fails_clearly(tmp_path, official) -> None:
    bad = dict(official)
    bad["decoder.conv_blocks.0.res.0.bogus.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save({"model": bad}, path)
    with pytest.raises(VQCheckpointError, match=re.escape("does not have: decoder.up.0.block.0.bogus.weight")):
        load_vq_decoder(path, tiny_vq_config())


def test_a_missing_decoder_weight_fails_clearly(official) -> None:
    bad = {k: v for k, v in official.items() if k != "decoder.mid.1.v.bias"}
    with pytest.raises(VQCheckpointError, match=re.escape("missing decoder weights: decoder.mid.attn_1.v.bias")):
        load_vq_decoder(bad, tiny_vq_config())


def test_a_checkpoint_of_another_size_fails_clearly() -> None:
    other = random_official(codebook_size=128)  # as if a different codebook size were released
    expected = re.escape("shapes that do not fit the config: quantize.embedding.weight (128, 4)")
    with pytest.raises(VQCheckpointError, match=expected):
        load_vq_decoder(other, tiny_vq_config())


def test_pickled_python_objects_are_refused(tmp_path, official) -> None:
    """A training checkpoint with its argparse args is not unpickled (weights_only=True)."""
    path = tmp_path / "train.pt"
    torch.save({"model": official, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(VQCheckpointError, match="not loaded for safety"):
        load_vq_decoder(path, tiny_vq_config())
    with pytest.raises(VQCheckpointError, match="not found"):
        load_vq_decoder(tmp_path / "absent.pt", tiny_vq_config())


def test_bad_tokens_are_rejected(vq: JanusVQVAE) -> None:
    with pytest.raises(ValueError, match="lie in"):
        decode_tokens(vq, torch.tensor([[0, 1, 2, 64]]), (2, 2))
    with pytest.raises(ValueError, match="shape"):
        decode_tokens(vq, torch.zeros(1, 5, dtype=torch.long), (2, 2))
    with pytest.raises(TypeError, match="codebook_sise"):
        vq16_config(codebook_sise=1)


def test_full_size_vq16_matches_the_official_architecture() -> None:
    config = vq16_config()
    with torch.device("meta"):
        model = JanusVQVAE(config)
    params = dict(model.named_parameters())
    decoder = {k: p for k, p in params.items() if decoder_side(k)}
    assert sum(p.numel() for p in decoder.values()) == VQ16_DECODER_SIDE_PARAMS
    assert len(decoder) == VQ16_DECODER_SIDE_TENSORS
    assert sum(p.numel() for p in params.values()) == VQ16_ALL_PARAMS
    assert len(model.state_dict()) == VQ16_JANUS_TENSORS

    shapes = official_shapes()  # LlamaGen's VQ_16 defaults
    assert len(shapes) == VQ16_JANUS_TENSORS + 1
    official_decoder = {k: s for k, s in shapes.items() if k.startswith(DECODER_SIDE_OFFICIAL)}
    assert sum(torch.Size(s).numel() for s in official_decoder.values()) == VQ16_DECODER_SIDE_PARAMS
    mapped = official_key_map({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # The codebook LlamaGen's GPT predicts into: 16384 codes of 8 dims.
    assert tuple(params["quantize.embedding.weight"].shape) == (16384, 8)
