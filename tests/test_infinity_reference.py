"""The Infinity port against the reference itself: bits, logits and decoded pixels that
FoundationVision/Infinity (4c27bbb) produced for two small seeded models, kept in
tests/data/infinity_reference.json.

They came from the reference's own `Infinity.autoregressive_infer_cfg` (with the flags of
scripts/infer.sh: bit labels, star RoPE in every layer, lvl_embed in the first block only, CFG on
the logits) and its BSQ `AutoEncoder.decode`, run on the CPU in float32 with batch 1, where its
generator and ours draw the same numbers: so every bit must agree, and logits and pixels to float
rounding. Off the reference's path only what cannot run without CUDA: flash-attn's two calls were
done by SDPA with the same arguments, and its cross-attention's cast to bfloat16 (basic.py:395,
a flash-attn requirement) left out. One case is the tiny built-in's shape at 1:2 guided by the
learned `cfg_uncond`; the other has 125M's head width (96) and a two-head text pool, 16-bit
codes, at 7:4 with a negative prompt, tau 1 and top-p 0.6 (which drops bit values).

The weights are seeded here (`case`) and tests/data/make_infinity_reference.py builds the same
models in the reference to write the golden file: change how they are drawn and run it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from studio.engines.infinity import sampling
from studio.engines.infinity.model import CONFIGS, Infinity, InfinityConfig
from studio.engines.infinity.schedules import schedule
from studio.engines.infinity.vae import BSQDecoder, VAEConfig

GOLDEN = Path(__file__).parent / "data" / "infinity_reference.json"

CASES = {
    "tiny-uncond": dict(config=CONFIGS["tiny"], ratio=0.5, pn="0.06M", cfg=4.0, tau=0.5, top_k=900, top_p=0.97,
                        seed=1, text_len=7, negative_len=0),
    "head96-negative": dict(config=InfinityConfig(depth=4, embed_dim=192, num_heads=2, block_chunks=2, d_vae=16,
                                                  text_channels=256),
                            ratio=1.75, pn="0.06M", cfg=3.0, tau=1.0, top_k=900, top_p=0.6, seed=7, text_len=9,
                            negative_len=5),
}


def _fill(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter from `generator`, in name order, scaled by its fan-in (buffers stay)."""
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            fan_in = param[0].numel() if param.dim() >= 2 else 1
            param.copy_(torch.randn(param.shape, generator=generator) * (0.3 if param.dim() < 2 else fan_in ** -0.5))


def case(name: str) -> dict:
    """The seeded transformer, VAE decoder, prompt features (and negative ones) of a golden case."""
    spec = dict(CASES[name])
    config: InfinityConfig = spec["config"]
    generator = torch.Generator().manual_seed(2024)
    model = Infinity(config).eval()
    _fill(model, generator)
    with torch.no_grad():
        model.head.weight.mul_(4)  # decisive bits for some tokens, doubtful ones for others
        model.blocks[0].sa.scale_mul_1H11[0, 0] = 5.0  # above the cap: clamped at log 100
    vae = BSQDecoder(VAEConfig(codebook_dim=config.d_vae, base_ch=32, ch_mult=(1, 1, 1, 1, 1))).eval()
    _fill(vae, generator)
    text = torch.randn(1, spec["text_len"], config.text_channels, generator=generator)
    negative = (torch.randn(1, spec["negative_len"], config.text_channels, generator=generator)
                if spec["negative_len"] else None)
    return {**spec, "model": model, "vae": vae, "text": text, "negative": negative}


def features(c: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Cond then uncond rows with their masks, as InfinityPipeline._with_uncond builds them."""
    text, negative = c["text"], c["negative"]
    if negative is None:
        uncond = c["model"].cfg_uncond.detach()[:text.shape[1]][None]
        return torch.cat((text, uncond)), torch.ones(2, text.shape[1], dtype=torch.bool)
    width = max(text.shape[1], negative.shape[1])
    feats = torch.cat([F.pad(t, (0, 0, 0, width - t.shape[1])) for t in (text, negative)])
    mask = torch.zeros(2, width, dtype=torch.bool)
    mask[0, :text.shape[1]], mask[1, :negative.shape[1]] = True, True
    return feats, mask


def hex_bits(bits: torch.Tensor) -> str:
    """(…, d) bits in {0, 1}, d a multiple of 4 -> one hex digit per 4 bits, row-major."""
    flat = bits.reshape(-1, 4).long()
    return "".join("%x" % v for v in (flat * torch.tensor([8, 4, 2, 1])).sum(-1).tolist())


def run_port(c: dict, monkeypatch) -> dict:
    drawn, logits_seen = [], []
    draw, filt = sampling.draw_bits, sampling.filter_bit_logits
    monkeypatch.setattr(sampling, "filter_bit_logits",
                        lambda logits, k, p: (logits_seen.append(logits.clone()), filt(logits, k, p))[1])
    monkeypatch.setattr(sampling, "draw_bits", lambda logits, gens: (drawn.append(draw(logits, gens)), drawn[-1])[1])
    grids = schedule(c["ratio"], c["pn"])
    feats, mask = features(c)
    with torch.no_grad():
        codes = c["model"](feats, mask, grids, c["ratio"], cfg=c["cfg"], tau=c["tau"], top_k=c["top_k"],
                           top_p=c["top_p"], generators=[torch.Generator().manual_seed(c["seed"])])
        pixels = c["vae"](codes)
    return {"bits": [hex_bits(b) for b in drawn], "logits": [lg.reshape(-1)[:8].tolist() for lg in logits_seen],
            "pixels": pixels}


def pooled(pixels: torch.Tensor) -> list:
    """The decoded image (1, 3, H, W), averaged down to 3 x 4 x 4, flat."""
    return F.adaptive_avg_pool2d(pixels.float(), 4).reshape(-1).tolist()


@pytest.mark.parametrize("name", list(CASES))
def test_the_port_reproduces_the_reference(name, monkeypatch):
    golden = json.loads(GOLDEN.read_text())[name]
    got = run_port(case(name), monkeypatch)
    assert len(got["bits"]) == len(golden["bits"]) == len(schedule(CASES[name]["ratio"], CASES[name]["pn"]))
    for si, (ours, ref) in enumerate(zip(got["bits"], golden["bits"])):
        assert ours == ref, f"scale {si}: the bits differ from the reference's"
    for si, (ours, ref) in enumerate(zip(got["logits"], golden["logits"])):
        assert ours == pytest.approx(ref, abs=1e-3), f"scale {si}: logits"
    assert pooled(got["pixels"]) == pytest.approx(golden["pooled"], abs=1e-4)
    image = ((got["pixels"] + 1) / 2).mul(255).to(torch.uint8).float().mean().item()
    assert image == pytest.approx(golden["image_mean"], abs=0.05)  # the uint8 picture, to truncation
