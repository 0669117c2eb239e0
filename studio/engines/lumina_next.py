"""Lumina-Next sampling as its authors run it, on diffusers' LuminaPipeline components.

diffusers' LuminaPipeline samples with Euler only, without a time-shift control, and with its RoPE
watershed at 1.0. Lumina-Next's own demo uses a midpoint solver, time shift 4, time-aware scaled
RoPE (linear/position-interpolation scaling below the watershed timestep, NTK above, watershed 0.3,
scale sqrt(W*H) / native size) and proportional attention. This module runs that loop with the
pipeline's own text encoding, latents, transformer and VAE, so the model code stays diffusers'.

CFG comes in two forms: "lumina" applies guidance to the first three latent channels only, as the
original code (and diffusers) does; "plain" applies it to all channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .flow import integrate

ROPE_MAX = 384  # the patch grid the RoPE table covers (diffusers and the original use 384x384)


@dataclass(frozen=True)
class LuminaNextOptions:
    """How to sample; the defaults a user gets are the Lumina-Next family's (studio.families.lumina_next)."""

    solver: str
    steps: int
    shift: float
    cfg: float
    cfg_mode: str  # "lumina" or "plain"
    rope_scaling: str  # "time_aware" or "none"
    watershed: float
    proportional_attn: bool


def rope_factors(t: float, scale: float, opts: LuminaNextOptions) -> tuple[float, float]:
    """(linear factor, NTK factor) for timestep t (0 = noise): linear below the watershed, NTK above."""
    if opts.rope_scaling == "none" or scale == 1.0:
        return 1.0, 1.0
    return (scale, 1.0) if t < opts.watershed else (1.0, scale)


def guided(pred: torch.Tensor, cfg: float, mode: str) -> torch.Tensor:
    """Classifier-free guidance on a [cond; uncond] batch; returns the guided half."""
    cond, uncond = pred.chunk(2, dim=0)
    if mode == "plain":
        return uncond + cfg * (cond - uncond)
    # Lumina-Next: guide the first three channels, keep the conditional prediction for the rest.
    eps = uncond[:, :3] + cfg * (cond[:, :3] - uncond[:, :3])
    return torch.cat([eps, cond[:, 3:]], dim=1)


def encode(pipe: Any, prompts: list[str], negative_prompt: str, num_images: int, use_cfg: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption features and masks for a [prompts...; negatives...] batch (negatives only with CFG)."""
    device = pipe._execution_device
    embeds, mask, neg_embeds, neg_mask = pipe.encode_prompt(
        prompts, use_cfg, negative_prompt=[negative_prompt] * len(prompts), num_images_per_prompt=num_images,
        device=device, clean_caption=False)
    if use_cfg:
        return torch.cat([embeds, neg_embeds]), torch.cat([mask, neg_mask])
    return embeds, mask


def make_velocity(pipe: Any, embeds: torch.Tensor, mask: torch.Tensor, width: int, height: int,
                  opts: LuminaNextOptions) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """dx/dt of the (guided) model for the given caption features, at this output size."""
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    device = pipe._execution_device
    use_cfg = opts.cfg > 1.0
    native = pipe.default_image_size
    scale = math.sqrt(width * height) / native
    attention_kwargs = {"base_sequence_length": (native // 16) ** 2} if opts.proportional_attn else {}
    head_dim = pipe.transformer.head_dim

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        linear, ntk = rope_factors(t, scale, opts)
        rope = get_2d_rotary_pos_embed_lumina(head_dim, ROPE_MAX, ROPE_MAX, linear_factor=linear, ntk_factor=ntk)
        batch = torch.cat([x, x]) if use_cfg else x
        timestep = torch.full((batch.shape[0],), t, device=device, dtype=x.dtype)
        pred = pipe.transformer(hidden_states=batch, timestep=timestep, encoder_hidden_states=embeds,
                                encoder_mask=mask, image_rotary_emb=rope, cross_attention_kwargs=attention_kwargs,
                                return_dict=False)[0]
        pred = pred.chunk(2, dim=1)[0]  # learned sigma: the second half is the variance
        return guided(pred, opts.cfg, opts.cfg_mode) if use_cfg else pred

    return velocity


def initial_latents(pipe: Any, num_images: int, width: int, height: int, dtype: torch.dtype,
                    generator: torch.Generator) -> torch.Tensor:
    return pipe.prepare_latents(num_images, pipe.transformer.config.in_channels, height, width, dtype,
                                pipe._execution_device, generator)


@torch.no_grad()
def decode(pipe: Any, latents: torch.Tensor) -> list[Any]:
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    images = pipe.image_processor.postprocess(image, output_type="pil")
    pipe.maybe_free_model_hooks()
    return images


def progress_hook(on_step: Callable[[int, int], None] | None) -> Callable[[int, int, torch.Tensor], None]:
    def hook(done: int, total: int, _x: torch.Tensor) -> None:
        if on_step is not None:
            on_step(done, total)

    return hook


@torch.no_grad()
def sample(pipe: Any, *, prompt: str, negative_prompt: str, width: int, height: int, num_images: int,
           generator: torch.Generator, opts: LuminaNextOptions,
           on_step: Callable[[int, int], None] | None = None) -> tuple[list[Any], int]:
    """Generate images; returns (PIL images, model evaluations)."""
    embeds, mask = encode(pipe, [prompt], negative_prompt, num_images, opts.cfg > 1.0)
    latents = initial_latents(pipe, num_images, width, height, embeds.dtype, generator)
    velocity = make_velocity(pipe, embeds, mask, width, height, opts)
    latents, evaluations = integrate(velocity, latents, solver=opts.solver, steps=opts.steps, shift=opts.shift,
                                     on_step=progress_hook(on_step))
    return decode(pipe, latents), evaluations
