"""Infinity's transformer and BSQ decoder against the reference's published facts: the real-size
configurations built on the meta device (parameter counts, official key names), the star-style
RoPE positions, the bit sampler's filtering, and both spellings of released VAE and scale files."""

from __future__ import annotations

import math

import pytest
import torch

from studio.engines.infinity.model import CONFIGS, build_on_meta, rope_table
from studio.engines.infinity.pipeline import read_transformer
from studio.engines.infinity.sampling import filter_bit_logits
from studio.engines.infinity.schedules import schedule, size_names
from studio.engines.infinity.vae import BSQDecoder, VAEConfig, bits_to_codes, decoder_state, official_name
from studio.errors import ModelNotAvailable


@pytest.mark.parametrize("model_type, d_vae, params, keys", [
    ("infinity_2b", 32, 2_204_564_032, 694),  # the published 2B count (reference_audit: 8.82 GB fp32)
    ("infinity_layer12", 32, 125_185_696, 274),  # the 125M with a d32 VAE
    ("infinity_layer12", 16, 125_148_800, 274),  # ... or a d16 one: the file tells which
])
def test_real_size_configs_have_the_published_counts_and_official_names(model_type, d_vae, params, keys):
    model = build_on_meta(CONFIGS[model_type].with_file(d_vae=d_vae))
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(state) == keys
    for name in ("cfg_uncond", "pos_start", "lvl_embed.weight", "word_embed.weight", "text_norm.weight",
                 "text_proj_for_sos.ca.mat_q", "text_proj_for_ca.2.weight", "shared_ada_lin.1.weight",
                 "block_chunks.0.module.0.sa.mat_qkv.weight", "block_chunks.0.module.0.sa.scale_mul_1H11",
                 "block_chunks.0.module.0.sa.q_bias", "block_chunks.0.module.0.ca.mat_kv.weight",
                 "block_chunks.0.module.0.ca_norm.weight", "block_chunks.0.module.0.ada_gss",
                 "block_chunks.0.module.0.ffn.fc2.weight", "head_nm.ada_lin.1.weight", "head.weight"):
        assert name in state, name
    assert state["head.weight"].shape[0] == 2 * d_vae  # two logits per bit
    assert state["lvl_embed.weight"].shape[0] == 15


def test_2b_shapes():
    state = build_on_meta(CONFIGS["infinity_2b"]).state_dict()
    assert state["cfg_uncond"].shape == (512, 2048)
    assert state["text_proj_for_sos.ca.mat_q"].shape == (1, 16, 128)  # 2048 / 128 pool heads
    assert state["block_chunks.7.module.3.sa.scale_mul_1H11"].shape == (1, 16, 1, 1)
    assert "block_chunks.8.module.0.ada_gss" not in state  # 8 chunks of 4 blocks


def test_star_rope_maps_every_scale_onto_the_final_1m_grid():
    config = CONFIGS["infinity_2b"]
    grids = schedule(1.0, "0.06M")  # 16 x 16 at the end, yet positions step over the 64 x 64 grid
    rope = rope_table(config, grids, 1.0)
    assert rope.shape == (2, sum(h * w for h, w in grids), config.head_dim // 2)
    half = config.head_dim // 2
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, half, 2).float() / half))
    last = rope[:, -16 * 16:].reshape(2, 16, 16, half)
    # Token (row 1, col 2) of the 16 x 16 grid sits at (4, 8) of the 64 x 64 grid.
    expected = torch.cat([4 * inv_freq, 8 * inv_freq])
    assert torch.allclose(last[0, 1, 2], expected.cos()) and torch.allclose(last[1, 1, 2], expected.sin())
    # The first scale is one token at the origin: no rotation.
    assert torch.equal(rope[0, 0], torch.ones(half)) and torch.equal(rope[1, 0], torch.zeros(half))


def test_size_tables():
    assert size_names("1M")[0] == "1024x1024" and "1776x592" in size_names("1M") and len(size_names("1M")) == 15
    assert set(size_names("0.06M")) >= {"256x256", "256x320", "240x320", "224x336", "144x432", "432x144"}
    assert [len(schedule(1.0, pn)) for pn in ("0.06M", "0.25M", "0.60M", "1M")] == [7, 10, 12, 13]
    assert sum(h * w for h, w in schedule(1.0, "1M")) == 10521


def test_bit_filtering_is_the_references():
    logits = torch.tensor([[0.0, 3.0], [0.0, 0.1]])  # p(1) = 0.953 and 0.525
    assert torch.equal(filter_bit_logits(logits, 900, 1.0), logits)  # top-k >= 2 keeps both values
    greedy = filter_bit_logits(logits, 1, 1.0)
    assert greedy[0, 0] == -math.inf and greedy[1, 0] == -math.inf
    p97 = filter_bit_logits(logits, 0, 0.97)  # drops a value only when its probability <= 0.03
    assert torch.isfinite(p97).all()
    p90 = filter_bit_logits(logits, 0, 0.9)
    assert p90[0, 0] == -math.inf and torch.isfinite(p90[1]).all()


def test_codes_are_bsq_unit_vectors():
    codes = bits_to_codes(torch.tensor([[1, 0, 0, 1]]))
    assert torch.allclose(codes, torch.tensor([[0.5, -0.5, -0.5, 0.5]]))


def test_vae_keys_load_with_or_without_the_wrapper_infixes():
    decoder = BSQDecoder(VAEConfig(codebook_dim=4, base_ch=32, ch_mult=(1, 1, 1, 1, 1)))
    wrapped = decoder.state_dict()
    assert "decoder.up.1.upsample.conv.conv.weight" in wrapped and "decoder.mid.block_1.norm1.norm.weight" in wrapped
    plain = {"decoder.conv_in.weight": 1, "decoder.mid.block_1.norm1.weight": 2, "decoder.up.1.upsample.conv.weight": 3,
             "decoder.up.0.block.0.nin_shortcut.bias": 4, "decoder.norm_out.bias": 5}
    assert [official_name(k) for k in plain] == [
        "decoder.conv_in.conv.weight", "decoder.mid.block_1.norm1.norm.weight",
        "decoder.up.1.upsample.conv.conv.weight",
        "decoder.up.0.block.0.nin_shortcut.conv.bias", "decoder.norm_out.norm.bias"]
    assert all(official_name(k) == k for k in wrapped)
    state = decoder_state({"vae": {k: v for k, v in wrapped.items()}, "step": torch.tensor(0)}, "x.pth")
    assert set(state) == set(wrapped)
    with pytest.raises(ValueError, match="not an Infinity BSQ VAE file.*transformer"):
        decoder_state({"word_embed.weight": torch.zeros(1)}, "infinity_2b_reg.pth")


def test_scale_mul_in_either_shape_and_a_wrong_model_type_is_named():
    state = build_on_meta(CONFIGS["tiny"]).state_dict()
    state = {k: torch.zeros(v.shape) for k, v in state.items()}
    key = "block_chunks.0.module.0.sa.scale_mul_1H11"
    state[key] = torch.zeros(1, 1, 2, 1)  # the customised flash-attn layout
    config, fixed = read_transformer(state, "tiny.pth", "tiny")
    assert fixed[key].shape == (1, 2, 1, 1) and config.d_vae == 4 and config.text_channels == 128
    with pytest.raises(ModelNotAvailable, match=r"tiny.pth holds an Infinity transformer of depth 2, width 64.*"
                                                r"the card says infinity_2b"):
        read_transformer(state, "tiny.pth", "infinity_2b")
    with pytest.raises(ModelNotAvailable, match="a BSQ VAE file, not the transformer"):
        read_transformer({"vae": {}}, "infinity_vae_d32reg.pth", "infinity_2b")


def test_cfg_uncond_is_given_512_rows_as_the_reference_loads_it():
    """The reference's load_state_dict (infinity.py:648-656) cuts a longer cfg_uncond to its
    text_maxlen of 512 and completes a shorter one with its constructor's seeded rows; the values
    below are the reference's, from a file with 8 rows of 128."""
    state = {k: torch.zeros(v.shape) for k, v in build_on_meta(CONFIGS["tiny"]).state_dict().items()}
    short = torch.randn(8, 128)
    state["cfg_uncond"] = short
    config, fixed = read_transformer(state, "tiny.pth", "tiny")
    uncond = fixed["cfg_uncond"]
    assert config.text_maxlen == 512 and uncond.shape == (512, 128) and torch.equal(uncond[:8], short)
    assert uncond[8, :4].tolist() == pytest.approx([-0.114984318614, -0.013654734008, -0.072239160538,
                                                    -0.138935461641], abs=1e-9)
    assert uncond[511, -3:].tolist() == pytest.approx([0.014736368321, 0.027773912996, -0.154623478651], abs=1e-9)
    state["cfg_uncond"] = long = torch.randn(600, 128)
    config, fixed = read_transformer(state, "tiny.pth", "tiny")
    assert config.text_maxlen == 512 and torch.equal(fixed["cfg_uncond"], long[:512])
