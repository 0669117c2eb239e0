"""Lumina-T2Audio / T2Music: seconds and real-time factor per stage of one 9.984 s clip.

Random weights at the released sizes, no download: the text encoders (CLAP's BERT-base + projection
and the T5-v1.1-large encoder for T2Audio, 2 x 77 tokens, the prompt and the empty unconditional
one), the FlagDiTv2 (one CFG evaluation: a batch of two 20 x 312 latents, 154 context tokens; a job
makes steps - 1 of them: 99 for the audio demo's 100 steps, 39 for the music demo's 40), the mel
VAE decoder (20 x 312 -> 80 x 624) and BigVGAN (624 mel frames -> 159,744 samples at 16 kHz). The
real-time factor is a stage's seconds over the clip's 9.984 s (below 1: faster than real time).

    python bench/lumina_audio.py                       # CPU, float32
    python bench/lumina_audio.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from studio.engines.lumina_audio.backbone import FlagDiTv2, FlagDiTv2Config
from studio.engines.lumina_audio.text import Projection
from studio.engines.lumina_audio.vae import MelVAEDecoder, VAEConfig
from studio.engines.lumina_audio.vocoder import BigVGAN, VocoderConfig

LATENT = 312
RATE = 16000
CLIP_SECONDS = LATENT * 2 * 256 / RATE  # 9.984
JOB_EVALUATIONS = {"audio": 99, "music": 39}  # the demos' 100 and 40 time points


def build(make, device: str) -> torch.nn.Module:
    """The module with its own initialisation (random; the time does not depend on the values), its
    buffers (BigVGAN's filters, BERT's position ids) computed as they are in use."""
    return make().to(device).eval()


def text_encoders(device: str):
    from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

    bert = build(lambda: BertModel(BertConfig()), device)  # bert-base-uncased's config
    projection = build(lambda: Projection(768, 1024), device)
    t5 = build(lambda: T5EncoderModel(T5Config(
        vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False)), device)  # google/t5-v1_1-large's

    def run() -> torch.Tensor:
        ids = torch.randint(0, 30000, (2, 77), device=device)
        clap = projection(bert(input_ids=ids).last_hidden_state)
        return torch.cat([clap, t5(input_ids=ids).last_hidden_state], dim=1)

    return run


def timed(run, repeats: int, cuda: bool) -> float:
    run()  # warm-up
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per stage (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--stages", nargs="+", default=["text", "dit", "vae", "vocoder"])
    args = parser.parse_args()
    device, cuda = args.device, args.device.startswith("cuda")
    repeats = args.repeats or (3 if cuda else 1)
    torch.manual_seed(0)
    stages = {}
    if "text" in args.stages:
        stages["text"] = text_encoders(device)
    if "dit" in args.stages:
        dit = build(lambda: FlagDiTv2(FlagDiTv2Config()), device)
        x = torch.randn(2, 20, LATENT, device=device)
        t = torch.tensor([500, 500], device=device)
        context = torch.randn(2, 154, 1024, device=device)
        stages["dit"] = lambda: dit(x, t, context)
    if "vae" in args.stages:
        vae = build(lambda: MelVAEDecoder(VAEConfig()), device)
        z = torch.randn(1, 20, LATENT, device=device)
        stages["vae"] = lambda: vae(z)
    if "vocoder" in args.stages:
        vocoder = build(lambda: BigVGAN(VocoderConfig()), device)
        mel = torch.randn(1, 80, LATENT * 2, device=device)
        stages["vocoder"] = lambda: vocoder(mel)
    print(f"Lumina-T2Audio stages at real size, random weights, {device} float32; clip {CLIP_SECONDS:.3f} s")
    results = []
    with torch.no_grad():
        for name, run in stages.items():
            seconds = timed(run, repeats, cuda)
            row = {"stage": name, "seconds": round(seconds, 4), "rtf": round(seconds / CLIP_SECONDS, 4)}
            line = f"  {name:8s} {seconds:8.3f} s  RTF {seconds / CLIP_SECONDS:.4f}"
            if name == "dit":
                for task, count in JOB_EVALUATIONS.items():
                    row[f"{task}_job_seconds"] = round(seconds * count, 2)
                    row[f"{task}_job_rtf"] = round(seconds * count / CLIP_SECONDS, 3)
                line += (f" per CFG evaluation; audio job ({JOB_EVALUATIONS['audio']} evaluations) "
                         f"{seconds * JOB_EVALUATIONS['audio']:.1f} s, music job ({JOB_EVALUATIONS['music']}) "
                         f"{seconds * JOB_EVALUATIONS['music']:.1f} s")
            if cuda:
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            print(line)
            results.append(row)
    print("RESULT " + json.dumps({"device": device, "dtype": "float32", "clip_seconds": CLIP_SECONDS,
                                  "results": results}))


if __name__ == "__main__":
    main()
