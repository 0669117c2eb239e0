"""Lumina-Image 2.0 as a flow ODE, on diffusers' Lumina2Pipeline components.

Lumina2Pipeline's own loop is Euler on dx/dt = model output, with t from 0 (noise) to 1 (data) and
normalised CFG (the guided prediction rescaled to the conditional one's norm). The anagram sampler
needs the velocity itself, per view and prompt; these helpers give it with the pipeline's own text
encoding (system prompt included), latents and VAE decoding.
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
