"""Lumina-Image 2.0 as a flow ODE, on diffusers' Lumina2Pipeline components.

Lumina2Pipeline's own loop is Euler on dx/dt = model output, with t from 0 (noise) to 1 (data) and
normalised CFG (the guided prediction rescaled to the conditional one's norm). The anagram sampler
needs the velocity itself, per view and prompt; these helpers give it with the pipeline's own text
encoding (system prompt included), latents and VAE decoding.

Image editing (`edit_call`) runs through the pipeline's own loop, as diffusers' img2img pipelines do it
(`get_timesteps`): of its N sigmas, linspace(1, 1/N, N) shifted, the first int(N - N strength) are skipped
(the tail is passed as `sigmas`; the shift is per point, so it is the tail of the full schedule), the start
latents are sigma0 z + (1 - sigma0) x1 (z the noise text to image draws, x1 the start image's latents), and
for inpainting the step callback puts the kept region back at each step's sigma.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def encode(pipe: Any, prompt: str, negative_prompt: str, use_cfg: bool) -> tuple[torch.Tensor, ...]:
    embeds, mask, neg_embeds, neg_mask = pipe.encode_prompt(
        prompt, use_cfg, negative_prompt=negative_prompt, num_images_per_prompt=1,
        device=pipe._execution_device)
    return embeds, mask, neg_embeds, neg_mask


def make_velocity(pipe: Any, prompt: str, negative_prompt: str, cfg: float
                  ) -> Callable[[torch.Tensor, float], torch.Tensor]:
    use_cfg = cfg > 1.0
    embeds, mask, neg_embeds, neg_mask = encode(pipe, prompt, negative_prompt, use_cfg)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        timestep = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        cond = pipe.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds,
                                encoder_attention_mask=mask, return_dict=False)[0]
        if not use_cfg:
            return cond
        uncond = pipe.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=neg_embeds,
                                  encoder_attention_mask=neg_mask, return_dict=False)[0]
        guided = uncond + cfg * (cond - uncond)
        # Lumina-Image 2.0's CFG normalisation: keep the conditional prediction's norm.
        return guided * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(guided, dim=-1, keepdim=True))

    return velocity


def initial_latents(pipe: Any, width: int, height: int, generator: torch.Generator) -> torch.Tensor:
    return pipe.prepare_latents(1, pipe.transformer.config.in_channels, height, width, pipe.transformer.dtype,
                                pipe._execution_device, generator)


@torch.no_grad()
def decode(pipe: Any, latents: torch.Tensor) -> list[Any]:
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents, return_dict=False)[0]
    images = pipe.image_processor.postprocess(image, output_type="pil")
    pipe.maybe_free_model_hooks()
    return images


@torch.no_grad()
def encode_images(pipe: Any, images: list[Any], dtype: torch.dtype) -> torch.Tensor:
    """Start pictures as latents (the VAE's mean, shifted and scaled as the pipeline's decode undoes)."""
    from .flow_edit import pixels

    x = pixels(images, pipe._execution_device, pipe.vae.dtype)
    mean = pipe.vae.encode(x).latent_dist.mode()
    return ((mean - (pipe.vae.config.shift_factor or 0.0)) * pipe.vae.config.scaling_factor).to(dtype)


def edit_call(pipe: Any, edit: Any, width: int, height: int, steps: int, generators: list[torch.Generator]
              ) -> tuple[dict[str, Any], Callable[[int, torch.Tensor], torch.Tensor] | None, int]:
    """(the pipeline call's `latents` and `sigmas`, the blend for the step callback or None, steps run)."""
    import numpy as np
    from diffusers.pipelines.lumina2.pipeline_lumina2 import calculate_shift

    from .flow_edit import latent_mask, refuse_no_step

    dtype = pipe.text_encoder.dtype  # the pipeline draws its noise in the prompt features' dtype
    noise = pipe.prepare_latents(len(generators), pipe.transformer.config.in_channels, height, width, dtype,
                                 pipe._execution_device, generators)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    begin = int(max(steps - min(steps * edit.strength, steps), 0))  # diffusers' get_timesteps
    tail = sigmas[begin:]
    refuse_no_step(len(tail) + 1, edit.strength, steps)
    if begin == 0 and edit.mask is None:
        return {"latents": noise, "sigmas": tail}, None, steps
    config = pipe.scheduler.config
    schedule = type(pipe.scheduler).from_config(config)
    mu = calculate_shift(noise.shape[1], config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))  # as the pipeline computes it
    schedule.set_timesteps(sigmas=tail, mu=mu, device=noise.device)
    points = [float(v) for v in schedule.sigmas]
    x1 = encode_images(pipe, edit.images, dtype).expand_as(noise)
    latents = noise if begin == 0 else (points[0] * noise + (1.0 - points[0]) * x1).to(dtype)
    if edit.mask is None:
        return {"latents": latents, "sigmas": tail}, None, len(tail)
    region = latent_mask(edit.mask, *noise.shape[-2:], noise.device, dtype)

    def blend(index: int, x: torch.Tensor) -> torch.Tensor:
        sigma = points[index + 1]  # after step `index`
        return x * region + (sigma * noise + (1.0 - sigma) * x1).to(x.dtype) * (1 - region)

    return {"latents": latents, "sigmas": tail}, blend, len(tail)
