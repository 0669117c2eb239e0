"""Train the built-in mini Lumina-Next on generated scenes and save it where the studio ships it.

    python tools/train_mini_lumina.py [--out studio/minis/weights/mini-lumina-next] [--composite-share 0.2]
    python tools/train_mini_lumina.py --decoder-only   # only stage 1b, on the weights in --out

Three stages, all on the CPU, seeded:
1. the VAE (AutoencoderKL, 8x down, 4 channels: LuminaPipeline fixes the 8x; no mid-block attention, so
   a latent cell describes its own part of the picture) learns to rebuild scene pictures (MSE, optionally L1,
   + a small KL; the SD VAEs' GAN and perceptual terms are left out: they cost more than this budget). Its
   blur is what limits the model now: round trips keep colours and places but turn small stars and squares
   into discs (training_log.json: vae_check);
1b. the decoder alone, the encoder frozen, on mosaics of one to four scenes' latents side by side (their
   GroupNorm statistics are the whole canvas's, which a decoder trained on one scene at a time reads the
   background's colour from: Compose grids came out in other colours). The shipped weights got this stage
   with --decoder-only after the other stages had run (the log says so); it changes no latent, so a full run
   trains the same DiT;
2. every training picture is encoded once (the posterior mean) and the latents' scaling factor is set to
   1 / their standard deviation, as SDXL's 0.13025 was;
3. Next-DiT and the Gemma text encoder learn together with rectified flow, as Lumina-Next is trained:
   x_t = t x1 + (1 - t) x0 (t = 0 noise, x1 the latent), the target velocity x1 - x0, t logit-normal;
   captions dropped 10% of the time (the empty prompt), which CFG needs. Text features are Gemma's
   second-to-last hidden states and the RoPE table and proportional attention are the studio's sampling
   path's (engines/lumina_next.py), so what is trained is what a job samples. A share of the steps
   (--composite-share) trains on two scenes side by side or stacked, each caption reaching only its own
   cell as Compose conditions (engines/compose.py).

Then held-out captions (seeds the training never saw) are sampled through engines/lumina_next.sample with the
card's defaults and read back with the scenes' detector; the agreement per attribute goes into the log
(`training_log.json` beside the weights). The weights are saved in float16.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.engines.compose import regional_conditioning, token_regions  # noqa: E402
from studio.engines.lumina_next import LuminaNextOptions, rope_table, sample, token_grid  # noqa: E402
from studio.minis import scenes  # noqa: E402
from studio.zoo.builtin_mini import IMAGE_SIZE, MINI_LUMINA_NEXT, untrained_mini_lumina_next  # noqa: E402

HELD_OUT = 10**7  # seeds from here on are never trained on
SAMPLING = dict(solver="midpoint", steps=20, shift=1.0, cfg=4.0)  # the mini card's defaults


def log(record: dict, sink: list) -> None:
    sink.append(record)
    print(json.dumps(record), flush=True)


def pictures(seeds: range | list[int]) -> torch.Tensor:
    """Scenes of `seeds` as a (N, 3, H, W) batch in [-1, 1]."""
    arrays = [np.asarray(scenes.draw(scenes.random_scene(s), IMAGE_SIZE)) for s in seeds]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(vae, steps: int, batch: int, lr: float, records: list, l1: float = 0.0) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    vae.train()
    started = time.monotonic()
    for step in range(steps):
        x = pictures(range(HELD_OUT + 10**6 + step * batch, HELD_OUT + 10**6 + (step + 1) * batch))  # fresh scenes
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample()).sample
        recon = F.mse_loss(y, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = recon + l1 * F.l1_loss(y, x) + 1e-4 * kl  # L1 keeps edges sharper than MSE alone
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log({"stage": "vae", "step": step, "mse": round(recon.item(), 5), "kl": round(kl.item(), 3),
                 "s": round(time.monotonic() - started, 1)}, records)
    vae.eval()


@torch.no_grad()
def vae_agreement(vae, count: int) -> float:
    """Share of held-out pictures whose VAE round trip the detector reads as it reads the original."""
    seeds = list(range(HELD_OUT, HELD_OUT + count))
    x = pictures(seeds)
    y = vae.decode(vae.encode(x).latent_dist.mode()).sample
    same = 0
    for original, rebuilt in zip(x, y):
        a, b = (scenes.read(to_pil(v)) for v in (original, rebuilt))
        same += all(getattr(a, k) == getattr(b, k) for k in ("background", "colour", "shape", "size", "place"))
    return same / count


def to_pil(x: torch.Tensor):
    from PIL import Image

    array = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


@torch.no_grad()
def encode_pictures(vae, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The posterior means of pictures (N, 3, H, W), `chunk` at a time."""
    return torch.cat([vae.encode(part).latent_dist.mode() for part in x.split(chunk)])


def encode_all(vae, seeds: range, chunk: int = 256) -> torch.Tensor:
    """The posterior means of the scenes of `seeds`, drawn `chunk` at a time (40,000 pictures do not sit in memory)."""
    return torch.cat([encode_pictures(vae, pictures(range(start, min(start + chunk, seeds.stop))))
                      for start in range(seeds.start, seeds.stop, chunk)])


def grid(parts: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, rows * cols, C, H, W) laid out row by row into (B, C, rows * H, cols * W)."""
    b, _, c, h, w = parts.shape
    return parts.view(b, rows, cols, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, rows * h, cols * w)


# (rows, cols, canvases per step): 16 scenes a step, every other step single scenes, whose decoding the
# stage must keep
MOSAICS = ((1, 1, 16), (1, 2, 8), (1, 1, 16), (2, 1, 8), (1, 1, 16), (2, 2, 4))


def train_decoder_on_mosaics(vae, steps: int, lr: float, records: list, pool: int = 4000, l1: float = 1.0) -> None:
    """The decoder (the encoder frozen, so every latent the DiT learns from stays as it was) learns to decode
    scenes' latents laid side by side into the scenes side by side. The VAE's GroupNorm takes its statistics
    over the whole picture; trained on one background a picture, the decoder read the background's colour from
    them, so a canvas of two backgrounds (a Compose grid, whose latents are two scenes' side by side) came out
    in other colours: an orange | green canvas decoded as purple | red."""
    seeds = range(HELD_OUT + 2 * 10**6, HELD_OUT + 2 * 10**6 + pool)
    x = pictures(seeds)
    z = encode_pictures(vae, x)
    generator = torch.Generator().manual_seed(2)
    params = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    vae.train()
    started = time.monotonic()
    for step in range(steps):
        rows, cols, count = MOSAICS[step % len(MOSAICS)]
        pick = torch.randint(0, pool, (count, rows * cols), generator=generator)
        target = grid(x[pick], rows, cols)
        y = vae.decode(grid(z[pick], rows, cols)).sample
        recon = F.mse_loss(y, target)
        loss = recon + l1 * F.l1_loss(y, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log({"stage": "decoder", "step": step, "grid": f"{rows}x{cols}", "mse": round(recon.item(), 5),
                 "s": round(time.monotonic() - started, 1)}, records)
    vae.eval()


@torch.no_grad()
def mosaic_agreement(vae, count: int) -> dict:
    """Two held-out scenes' latents side by side, decoded: the share of cells whose background, and whose
    whole reading, is the scene's (the cells of a Compose grid are decoded this way)."""
    seeds = list(range(HELD_OUT + 200, HELD_OUT + 200 + 2 * count))
    x = pictures(seeds)
    z = encode_pictures(vae, x)
    y = vae.decode(torch.cat([z[0::2], z[1::2]], dim=-1)).sample
    backgrounds = whole = 0
    for i, canvas in enumerate(y):
        for half, original in zip(canvas.chunk(2, dim=-1), (x[2 * i], x[2 * i + 1])):
            a, b = scenes.read(to_pil(original)), scenes.read(to_pil(half))
            backgrounds += a.background == b.background
            whole += all(getattr(a, k) == getattr(b, k) for k in ("background", "colour", "shape", "size", "place"))
    return {"cells": 2 * count, "background": round(backgrounds / (2 * count), 3),
            "same_reading": round(whole / (2 * count), 3)}


def tokenize(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """As engines/lumina_next.encode_texts tokenises: padded to the longest, a multiple of 8, right padding."""
    batch = tokenizer(texts, padding=True, pad_to_multiple_of=8, max_length=256, truncation=True,
                      padding_side="right", return_tensors="pt")
    return batch.input_ids, batch.attention_mask


class Captions:
    """Every training caption tokenised once (padded to the longest), and the empty caption padded alike."""

    def __init__(self, tokenizer, captions: list[str]) -> None:
        self.tokenizer, self.captions = tokenizer, captions
        self.ids, self.mask = tokenize(tokenizer, captions)
        empty_ids, empty_mask = tokenize(tokenizer, [""])
        self.empty_ids = F.pad(empty_ids, (0, self.ids.shape[1] - empty_ids.shape[1]))
        self.empty_mask = F.pad(empty_mask, (0, self.ids.shape[1] - empty_mask.shape[1]))

    def batch(self, pick: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The picked captions, each dropped to the empty caption 10% of the time (what CFG needs)."""
        ids, mask = self.ids[pick].clone(), self.mask[pick].clone()
        drop = torch.rand(len(pick), generator=generator) < 0.1
        ids[drop], mask[drop] = self.empty_ids, self.empty_mask
        return ids, mask


def features(text_encoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gemma's second-to-last hidden states, as engines/lumina_next.encode_texts takes them."""
    return text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]


def noised(x1: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, target velocity) of rectified flow, t logit-normal(0, 1)."""
    x0 = torch.randn(x1.shape, generator=generator)
    t = torch.sigmoid(torch.randn(len(x1), generator=generator))
    xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
    return xt, t, x1 - x0


def single_loss(pipe, latents: torch.Tensor, captions: Captions, batch: int, attention: dict,
                generator: torch.Generator) -> torch.Tensor:
    """Flow loss on `batch` single scenes at the native size."""
    pick = torch.randint(0, len(latents), (batch,), generator=generator)
    xt, t, target = noised(latents[pick], generator)
    ids, mask = captions.batch(pick, generator)
    rope = rope_table(pipe.transformer.head_dim, 384, token_grid(pipe, xt), 1.0, 1.0, "cpu")
    pred = pipe.transformer(hidden_states=xt, timestep=t, encoder_hidden_states=features(pipe.text_encoder, ids, mask),
                            encoder_mask=mask, image_rotary_emb=rope, cross_attention_kwargs=attention,
                            return_dict=False)[0]
    return F.mse_loss(pred.chunk(2, dim=1)[0], target)


def composite_loss(pipe, latents: torch.Tensor, captions: Captions, batch: int, attention: dict,
                   generator: torch.Generator) -> torch.Tensor:
    """Flow loss on `batch` canvases of two scenes side by side (1x2) or one above the other (2x1), each
    cell's caption reaching only its own cell: the Compose task's conditioning (engines/compose.py:
    regional cross-attention, the joined captions in adaLN), with the canvas at the native RoPE as it
    samples. The VAE has no attention, so two scenes' latents laid side by side are close to the latents
    of the two pictures side by side. Without these, the model learns that a background is one colour over
    the whole picture and blends the cells' colours."""
    rows, cols = (1, 2) if torch.rand(1, generator=generator).item() < 0.5 else (2, 1)
    a = torch.randint(0, len(latents), (batch,), generator=generator)
    b = torch.randint(0, len(latents), (batch,), generator=generator)
    x1 = torch.cat([latents[a], latents[b]], dim=-1 if cols == 2 else -2)
    xt, t, target = noised(x1, generator)
    (ids_a, mask_a), (ids_b, mask_b) = captions.batch(a, generator), captions.batch(b, generator)
    feats = features(pipe.text_encoder, torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b]))
    length = ids_a.shape[1]
    text = torch.cat([feats[:batch], feats[batch:]], dim=1)  # [cell 0's tokens | cell 1's tokens]
    text_mask = torch.cat([mask_a, mask_b], dim=1).bool()
    per_cell = torch.zeros(batch, 2, 2 * length, dtype=torch.bool)
    per_cell[:, 0, :length], per_cell[:, 1, length:] = mask_a.bool(), mask_b.bool()
    joined = [" ".join(c for c in (captions.captions[i] if m.any() else "", captions.captions[j] if n.any() else "")
                       if c) for i, j, m, n in zip(a.tolist(), b.tolist(), mask_a, mask_b)]
    joined_ids, joined_mask = tokenize(captions.tokenizer, joined)
    joined_feats = features(pipe.text_encoder, joined_ids, joined_mask)
    height, width = xt.shape[-2] * 8, xt.shape[-1] * 8
    regions = token_regions(rows, cols, width, height)
    rope = rope_table(pipe.transformer.head_dim, 384, token_grid(pipe, xt), 1.0, 1.0, "cpu")
    with regional_conditioning(pipe.transformer, per_cell, regions, joined_feats, joined_mask):
        pred = pipe.transformer(hidden_states=xt, timestep=t, encoder_hidden_states=text, encoder_mask=text_mask,
                                image_rotary_emb=rope, cross_attention_kwargs=attention, return_dict=False)[0]
    return F.mse_loss(pred.chunk(2, dim=1)[0], target)


def train_dit(pipe, latents: torch.Tensor, captions: list[str], steps: int, batch: int, lr: float,
              records: list, generator: torch.Generator, composite_share: float = 0.0) -> None:
    """Next-DiT and the text encoder together; `composite_share` of the steps train on two-cell canvases
    (half as many canvases, so about as many tokens) instead of single scenes."""
    transformer, text_encoder = pipe.transformer, pipe.text_encoder
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.03)
    texts = Captions(pipe.tokenizer, captions)
    attention = {"base_sequence_length": (pipe.default_image_size // 16) ** 2}  # proportional attention, as sampled
    transformer.train()
    text_encoder.train()
    started = time.monotonic()
    ema = None
    for step in range(steps):
        if composite_share and torch.rand(1, generator=generator).item() < composite_share:
            loss = composite_loss(pipe, latents, texts, batch // 2, attention, generator)
        else:
            loss = single_loss(pipe, latents, texts, batch, attention, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 200 == 0 or step == steps - 1:
            log({"stage": "dit", "step": step, "loss": round(ema, 4), "s": round(time.monotonic() - started, 1)},
                records)
    transformer.eval()
    text_encoder.eval()


@torch.no_grad()
def held_out_agreement(pipe, count: int, records: list) -> dict:
    """Sample held-out captions as a job does (the card's defaults) and read each picture back."""
    opts = LuminaNextOptions(solver=SAMPLING["solver"], steps=SAMPLING["steps"], shift=SAMPLING["shift"],
                             cfg=SAMPLING["cfg"], cfg_mode="lumina", rope_scaling="time_aware", watershed=0.3,
                             proportional_attn=True)
    per_attribute: dict[str, list[bool]] = {}
    whole = []
    for i in range(count):
        scene = scenes.random_scene(HELD_OUT + 500_000 + i)
        generator = torch.Generator().manual_seed(i)
        (picture,), _ = sample(pipe, prompt=scene.caption, negative_prompt="", width=IMAGE_SIZE, height=IMAGE_SIZE,
                               num_images=1, generator=generator, opts=opts)
        verdict = scenes.agreement(scene.caption, picture)
        for name, ok in verdict.items():
            per_attribute.setdefault(name, []).append(ok)
        whole.append(all(verdict.values()))
    result = {"captions": count, "all_attributes": round(sum(whole) / count, 3),
              **{name: round(sum(v) / len(v), 3) for name, v in sorted(per_attribute.items())}}
    log({"stage": "held_out", **result}, records)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=MINI_LUMINA_NEXT)
    ap.add_argument("--scenes", type=int, default=40_000, help="training pictures (seeds 0..N-1)")
    ap.add_argument("--vae-steps", type=int, default=6000)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-l1", type=float, default=1.0, help="weight of an L1 term beside the VAE's MSE")
    ap.add_argument("--dit-steps", type=int, default=12000)
    ap.add_argument("--dit-batch", type=int, default=64)
    ap.add_argument("--composite-share", type=float, default=0.2,
                    help="share of the DiT steps on two-scene canvases with per-cell captions (Compose)")
    ap.add_argument("--decoder-steps", type=int, default=2000,
                    help="steps of the decoder on mosaics of 1 to 4 scenes (the encoder frozen)")
    ap.add_argument("--decoder-lr", type=float, default=2e-4)
    ap.add_argument("--decoder-only", action="store_true",
                    help="start from the weights in --out and run only the decoder stage (then evaluate and save), "
                         "keeping their training log: how the shipped weights got that stage")
    ap.add_argument("--eval", type=int, default=200, help="held-out captions sampled at the end")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.monotonic()
    if args.decoder_only:
        pipe, records, earlier_s = resume(args.out)
        decoder_stage(pipe.vae, args.decoder_steps, args.decoder_lr, records)
    else:
        records, earlier_s = [], 0.0
        pipe = untrained_mini_lumina_next(seed=0)
        train_vae(pipe.vae, args.vae_steps, args.vae_batch, 2e-3, records, l1=args.vae_l1)
        log({"stage": "vae_check", "same_reading": vae_agreement(pipe.vae, min(200, args.scenes))}, records)
        # The decoder stage leaves the encoder, hence every latent below, as it is; nor does it draw on torch's
        # global generator: a full run and a run of the stages before it plus --decoder-only train the same DiT.
        decoder_stage(pipe.vae, args.decoder_steps, args.decoder_lr, records)
        latents = encode_all(pipe.vae, range(args.scenes))
        scaling = 1.0 / latents.std().item()
        pipe.vae.register_to_config(scaling_factor=round(scaling, 5))
        log({"stage": "latents", "count": len(latents), "scaling_factor": round(scaling, 5)}, records)
        captions = [scenes.random_scene(s).caption for s in range(args.scenes)]
        generator = torch.Generator().manual_seed(1)
        train_dit(pipe, latents * scaling, captions, args.dit_steps, args.dit_batch, 1e-3, records, generator,
                  composite_share=args.composite_share)
    trained_s = earlier_s + time.monotonic() - started
    result = held_out_agreement(pipe, args.eval, records)
    pipe.to(torch.float16)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.decoder_only:  # only the VAE's weights changed: the rest stays byte for byte as it was saved
        save_file(pipe.vae.state_dict(), args.out / "vae" / "diffusion_pytorch_model.safetensors",
                  metadata={"format": "pt"})  # as diffusers' save_pretrained writes it
    else:
        pipe.save_pretrained(args.out, safe_serialization=True)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file() and f.name != "training_log.json")
    summary = {"training_s": round(trained_s, 1), "weights_bytes": size, "held_out": result, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "sampling": SAMPLING,
        "torch": torch.__version__, "threads": torch.get_num_threads()}
    (args.out / "training_log.json").write_text(json.dumps({"summary": summary, "log": records}, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


def decoder_stage(vae, steps: int, lr: float, records: list) -> None:
    log({"stage": "mosaic_check", "before_decoder_stage": True, **mosaic_agreement(vae, 100)}, records)
    train_decoder_on_mosaics(vae, steps, lr, records)
    log({"stage": "mosaic_check", **mosaic_agreement(vae, 100)}, records)
    log({"stage": "vae_check", "same_reading": vae_agreement(vae, 200)}, records)


def resume(folder: Path):
    """The pipeline saved in `folder` (in float32, to train on), its training log's records and training time."""
    from diffusers import LuminaPipeline

    earlier = json.loads((folder / "training_log.json").read_text())
    pipe = LuminaPipeline.from_pretrained(folder, local_files_only=True).to(torch.float32)
    return pipe, earlier["log"] + [{"stage": "resumed", "from": earlier["summary"]}], earlier["summary"]["training_s"]


if __name__ == "__main__":
    raise SystemExit(main())
