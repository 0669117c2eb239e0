"""Lumina-T2I as one pipeline, run as its demo (lumina_t2i/demo.py) runs it.

1. Text: the prompt and the negative (the demo's is always "") tokenised by LLaMA's tokenizer with
   BOS and EOS, never cut, zero-padded on the right to the longer; LLaMA runs with **no attention
   mask** (it is causal: padding after a text changes nothing before it), its `last_hidden_state`
   is the caption; the mask goes to the Flag-DiT only. The text encoder runs once per job.
2. Noise: float32 normal noise per image from its own CPU generator, cast to the model's dtype; the
   state is [noise; noise], the demo's CFG batch.
3. Flow: t from 0 (noise) to 1, the authors' grid (N points, shifted) and torchdiffeq's solvers
   (engines/flow.py); euler, or dopri5/dopri8 with atol [1e-6], rtol [1e-3] (lists, as the reference
   passes them: torchdiffeq's step control then runs in float64). Each evaluation is the
   demo's `forward_with_cfg`: the first half of the state twice, CFG on the first 3 channels, the
   guided half written to both halves (channel 3 keeps each half's own prediction). The timestep
   is rounded to the state's dtype, as torchdiffeq hands it to the model.
4. RoPE and attention: NTK scaling (on by default) multiplies theta by the area ratio to the native
   size, (w/16 * h/16) / (native/16)^2; proportional attention's base is (native/16)^2 + 2 native/16.
5. Decode: the guided half / 0.13025 through the SDXL VAE in float32 (the demo's autocast would run
   its convolutions in half precision: here it is float32 throughout), (x + 1) / 2 clamped, * 255
   truncated to bytes (torchvision's to_pil_image).

In half precision the text encoder and the Flag-DiT run under torch.autocast, as the whole demo does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from ...errors import InvalidInput, ModelNotAvailable
from ..bundle import ModuleBundle
from ..flow import Integration, integrate
from .files import VAE_FACTORS, TrainArgs, load_transformer, read_model_args, read_text_encoder, read_vae
from .model import CONFIGS, FlagDiT, rope_table
from .options import DiTFiles, engine_options

LATENT_STRIDE = 8  # the SDXL VAE
SIZE_UNIT = 16  # the demo's unit for NTK and proportional attention: latent stride x patch


@dataclass(frozen=True)
class T2IOptions:
    """How to sample; the defaults a user gets are the family's (studio.families.lumina_t2i)."""

    solver: str
    steps: int
    shift: float
    cfg: float
    ntk_scaling: bool
    proportional_attn: bool


def autocast(device: torch.device, dtype: torch.dtype) -> Any:
    """The demo runs the whole request under torch.autocast in the model's dtype: in half precision
    its LayerNorms (q/k norms, caption and final norms) compute and return float32. Off in float32."""
    half = dtype in (torch.bfloat16, torch.float16)
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=half)


def ntk_factor(width: int, height: int, native: int) -> float:
    return (width // SIZE_UNIT) * (height // SIZE_UNIT) / (native // SIZE_UNIT) ** 2


def base_seqlen(native: int) -> int:
    return (native // SIZE_UNIT) ** 2 + (native // SIZE_UNIT) * 2


class LuminaT2IPipeline(ModuleBundle):
    """Components in the order they run (LLaMA, Flag-DiT, VAE), for chained model offload: under it
    the text encoder leaves the device when the Flag-DiT's first forward starts."""

    def __init__(self, text_encoder: nn.Module, tokenizer: Any, transformer: FlagDiT, vae: nn.Module,
                 args: TrainArgs) -> None:
        super().__init__(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae)
        self.args = args
        self.native_size = args.image_size

    def token_limit(self) -> int:
        return int(getattr(self.text_encoder.config, "max_position_embeddings", 4096))

    @torch.no_grad()
    def encode(self, texts: list[str], names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """LLaMA features (B, T, C) and the mask of real tokens (B, T), texts padded to the longest."""
        ids = [self.tokenizer.encode(text, truncation=False) for text in texts]
        limit = self.token_limit()
        for name, tokens in zip(names, ids):
            if len(tokens) > limit:
                raise InvalidInput(f"The {name} is {len(tokens)} tokens; LLaMA reads at most {limit}: shorten it")
        device = self.device
        tok = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
        mask = torch.zeros_like(tok, dtype=torch.bool)
        for row, tokens in enumerate(ids):
            tok[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = True
        with autocast(device, self.text_encoder.dtype):
            feats = self.text_encoder(input_ids=tok.to(device)).last_hidden_state
        return feats, mask.to(device)

    def velocity(self, feats: torch.Tensor, mask: torch.Tensor, width: int, height: int,
                 opts: T2IOptions) -> Callable[[torch.Tensor, float], torch.Tensor]:
        """The demo's forward_with_cfg as dx/dt of the [guided; other] state."""
        dit = self.transformer
        lh, lw = height // LATENT_STRIDE, width // LATENT_STRIDE
        ntk = ntk_factor(width, height, self.native_size) if opts.ntk_scaling else 1.0
        freqs = rope_table(dit.config.head_dim, dit.sequence_length(lh, lw), ntk, device=self.device)
        base = base_seqlen(self.native_size) if opts.proportional_attn else None

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            half = x[: len(x) // 2]
            combined = torch.cat([half, half])
            # torchdiffeq hands the model t in the state's dtype; the demo multiplies it into float32 ones.
            timestep = torch.full((len(combined),), float(torch.tensor(t, dtype=x.dtype)), device=x.device)
            with autocast(x.device, x.dtype):
                out = dit(combined, timestep, feats, mask, freqs, base)
            eps, rest = out[:, :3], out[:, 3:]
            cond, uncond = eps.chunk(2)
            guided = uncond + opts.cfg * (cond - uncond)
            return torch.cat([torch.cat([guided, guided]), rest], dim=1)

        return velocity

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Start pictures as latents: the SDXL VAE's mean (float32) times its factor, as the decode undoes."""
        from ..flow_edit import pixels

        x = pixels(images, self.device, torch.float32)
        return self.vae.encode(x).latent_dist.mode() * VAE_FACTORS[self.args.vae]

    def _edit_start(self, edit: Any, state: torch.Tensor, opts: T2IOptions) -> tuple[torch.Tensor, int, Any]:
        """The start state, grid index and step blend of an edit (engines/flow_edit.py) on the [guided; other]
        state: the start latents stand in both halves."""
        from ..flow import sampling_grid
        from ..flow_edit import edit_start, latent_mask

        x1 = self.encode_images(edit.images).to(state.dtype)
        x1 = torch.cat([x1.expand(len(state) // 2, -1, -1, -1)] * 2)
        region = latent_mask(edit.mask, *state.shape[-2:], state.device, state.dtype) if edit.mask is not None else None
        return edit_start(state, x1, sampling_grid(opts.steps, opts.shift), edit.strength, opts.steps, region)

    @torch.no_grad()
    def __call__(self, *, prompt: str, negative_prompt: str, width: int, height: int, opts: T2IOptions,
                 generators: list[torch.Generator], on_step: Callable[[int, int], None] | None = None,
                 edit: Any = None, on_latents: Callable[[int, int, torch.Tensor], None] | None = None
                 ) -> tuple[list[Image.Image], Integration]:
        """One picture per generator; on_step(time points reached, steps); on_latents(time point, steps,
        the guided half's predicted clean latents), for a live preview. `edit` (images, strength, mask):
        start from those pictures (image to image, inpainting: engines/flow_edit.py)."""
        if width % SIZE_UNIT or height % SIZE_UNIT:
            raise InvalidInput(f"Lumina-T2I makes sizes in multiples of {SIZE_UNIT} (got {width}x{height})")
        count = len(generators)
        try:
            feats, mask = self.encode([prompt, negative_prompt], ["prompt", "negative prompt"])
            dtype = self.transformer.x_embedder.weight.dtype
            feats = torch.cat([feats[:1].expand(count, -1, -1), feats[1:].expand(count, -1, -1)]).to(dtype)
            mask = torch.cat([mask[:1].expand(count, -1), mask[1:].expand(count, -1)])
            shape = (4, height // LATENT_STRIDE, width // LATENT_STRIDE)
            noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device, dtype)
            state = torch.cat([noise, noise])
            start, blend = 0, None
            if edit is not None:
                state, start, blend = self._edit_start(edit, state, opts)
            hook = (lambda done, total, _x: on_step(done, total)) if on_step is not None else None
            estimate = _GuidedHalf(on_latents, count) if on_latents is not None else None
            result = integrate(self.velocity(feats, mask, width, height, opts), state, solver=opts.solver,
                               steps=opts.steps, shift=opts.shift, tolerance_lists=True, on_step=hook, start=start,
                               after_step=blend, on_estimate=estimate)
            latents = result.x[:count].float() / VAE_FACTORS[self.args.vae]
            # One image at a time: less decode memory, and image k is bit for bit what its seed makes alone.
            pixels = torch.cat([self.vae.decode(latents[i:i + 1]).sample for i in range(count)])
        finally:
            self.offload_all()
        array = ((pixels + 1.0) / 2.0).clamp(0.0, 1.0).mul(255).byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in array], result


class _GuidedHalf:
    """An estimate hook (flow.integrate) handing on the guided half of the CFG state, due when its own is."""

    def __init__(self, hook: Callable[[int, int, torch.Tensor], None], count: int) -> None:
        self.hook, self.count = hook, count
        self.due = getattr(hook, "due", lambda point: True)

    def __call__(self, point: int, total: int, x0: torch.Tensor) -> None:
        self.hook(point, total, x0[: self.count])


def load_lumina_t2i(card: Any, folder: Any, required: dict[str, Any], dtype: torch.dtype) -> LuminaT2IPipeline:
    files = engine_options(card)
    if not isinstance(files, DiTFiles):
        raise ModelNotAvailable(f"{card.title} is a component: it runs as part of Lumina-T2I")
    args = read_model_args(folder / files.model_args, card.title)
    encoder, tokenizer = read_text_encoder(required[files.text_encoder], dtype)
    config = CONFIGS[args.model].with_file(qk_norm=args.qk_norm, cap_feat_dim=encoder.config.hidden_size)
    transformer = load_transformer(folder / files.weights, config, dtype, card.title)
    vae = read_vae(required[files.vae])
    return LuminaT2IPipeline(encoder, tokenizer, transformer, vae, args)


__all__ = ["LuminaT2IPipeline", "T2IOptions", "load_lumina_t2i"]
