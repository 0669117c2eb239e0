"""Lumina-Next sampling as its authors run it, on diffusers' LuminaPipeline components.

diffusers' LuminaPipeline samples with Euler only, without a time-shift control, and with its RoPE
watershed at 1.0. Lumina-Next's own demo (lumina_next_t2i_mini/demo.py) uses a midpoint solver, time
shift 4, time-aware scaled RoPE (linear/position-interpolation scaling below the watershed timestep,
NTK above, watershed 0.3, scale sqrt(W*H) / native size, applied only above the native size: its
"Extrapolation" sizes) and proportional attention. This module runs that loop with the pipeline's
tokenizer, text encoder, latents, transformer and VAE, so the model code stays diffusers'.

Text is encoded as the demo's `encode_prompt` does, not as diffusers' (which pads or cuts the negative
to the prompt's length): prompt and negative tokenised together, padded to the longest (a multiple of
8), Gemma's second-to-last hidden states. The authors cut a text at 256 tokens without a word; here a
prompt, negative or caption over 256 tokens is refused, saying so.

CFG comes in two forms: "lumina" applies guidance to the first three latent channels only, as the
original code (and diffusers) does; "plain" applies it to all channels.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import InvalidInput
from .flow import Integration, integrate

ROPE_MAX = 384  # the patch grid the RoPE table covers (diffusers and the original use 384x384)
TEXT_TOKENS = 256  # Gemma tokens per text: the demo's max_length, diffusers' max_sequence_length
# RoPE tables kept on their device, most recently used last. A job needs at most two (linear below
# the watershed, NTK above); a few more let consecutive jobs at other sizes or scales keep theirs.
# 0 turns the cache off: every call builds the full table on the CPU, as diffusers' pipeline does
# (bench/lumina_next_rope.py compares the two).
ROPE_CACHE_SIZE = 6
_rope_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_rope_lock = threading.Lock()


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
    """(linear factor, NTK factor) for timestep t (0 = noise): linear below the watershed, NTK above.

    Only above the native size (scale > 1): the authors scale their "(Extrapolation)" sizes alone
    (demo.py; sample.py: resolution class > 1024), so 512x512 or 768x768 keep the native RoPE.
    """
    if opts.rope_scaling == "none" or scale <= 1.0:
        return 1.0, 1.0
    return (scale, 1.0) if t < opts.watershed else (1.0, scale)


def rope_table(head_dim: int, table: int, grid: tuple[int, int], linear: float, ntk: float,
               device: torch.device | str) -> torch.Tensor:
    """The 2-D RoPE table (complex64) a `grid` = (rows, cols) of patch tokens reads, on `device`.

    The model slices the first rows and columns of what it is given (LuminaPatchEmbed), so the
    `table`-wide table is built on the CPU exactly as before (the same values to the bit: a table
    built on a GPU could differ in the last place) and only the grid's corner is kept and moved,
    once per key: on the 2B model at 1024x1024 that is 1.2 MiB instead of 40.5 MiB per call.
    Every input the values depend on is in the key; cached tables are shared and never written to.
    """
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    if ROPE_CACHE_SIZE <= 0:
        return get_2d_rotary_pos_embed_lumina(head_dim, table, table, linear_factor=linear, ntk_factor=ntk)
    device = torch.device(device)
    key = (head_dim, table, tuple(grid), float(linear), float(ntk), device)
    with _rope_lock:
        hit = _rope_cache.get(key)
        if hit is not None:
            _rope_cache.move_to_end(key)
            return hit
    full = get_2d_rotary_pos_embed_lumina(head_dim, table, table, linear_factor=linear, ntk_factor=ntk)
    # A copy of the corner, so that a view does not keep the full table's storage alive.
    rope = full[:grid[0], :grid[1]].contiguous().to(device)
    with _rope_lock:
        _rope_cache[key] = rope
        _rope_cache.move_to_end(key)
        while len(_rope_cache) > max(ROPE_CACHE_SIZE, 0):
            _rope_cache.popitem(last=False)
    return rope


def clear_rope_cache() -> None:
    """Drop every cached RoPE table (their device memory goes with them)."""
    with _rope_lock:
        _rope_cache.clear()


def token_grid(pipe: Any, x: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of patch tokens for latents `x`, as the model's patch embedder counts them."""
    patch = pipe.transformer.config.patch_size
    return x.shape[-2] // patch, x.shape[-1] // patch


def guided(pred: torch.Tensor, cfg: float, mode: str) -> torch.Tensor:
    """Classifier-free guidance on a [cond; uncond] batch; returns the guided half."""
    cond, uncond = pred.chunk(2, dim=0)
    if mode == "plain":
        return uncond + cfg * (cond - uncond)
    # Lumina-Next: guide the first three channels, keep the conditional prediction for the rest.
    eps = uncond[:, :3] + cfg * (cond[:, :3] - uncond[:, :3])
    return torch.cat([eps, cond[:, 3:]], dim=1)


@torch.no_grad()
def encode_texts(pipe: Any, texts: list[str], names: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma features and masks of `texts`, tokenised together as the authors' `encode_prompt` does
    (padding=True, pad_to_multiple_of=8, max_length=256, right padding; hidden_states[-2]).

    A text with a name (what the user typed: "prompt", "negative prompt", "caption 2") over 256
    tokens is refused; one without (a caption Studio derives) is cut there, as the authors cut all.
    """
    tokenizer = pipe.tokenizer
    for name, ids in zip(names, tokenizer(texts)["input_ids"]):
        if name is not None and len(ids) > TEXT_TOKENS:
            raise InvalidInput(f"The {name} is {len(ids)} tokens; Lumina-Next's text encoder takes {TEXT_TOKENS} "
                               "(the authors' code drops the rest without a word): shorten it")
    inputs = tokenizer(texts, padding=True, pad_to_multiple_of=8, max_length=TEXT_TOKENS, truncation=True,
                       padding_side="right", return_tensors="pt")
    device = pipe._execution_device
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    feats = pipe.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    return feats.to(pipe.text_encoder.dtype), mask


def encode(pipe: Any, prompts: list[str], negative_prompt: str, num_images: int, use_cfg: bool,
           names: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption features and masks for a [prompts...; negatives...] batch (negatives only with CFG),
    each prompt's rows `num_images` times in a row. The prompts and the negative are one tokeniser
    batch, as in the authors' demo, so neither is cut to the other's length."""
    count = len(prompts)
    names = names or (["prompt"] if count == 1 else [f"prompt {i + 1}" for i in range(count)])
    texts, labels = list(prompts), list(names)
    if use_cfg:
        texts.append(negative_prompt)
        labels.append("negative prompt")
    feats, mask = encode_texts(pipe, texts, labels)
    embeds, embeds_mask = feats[:count].repeat_interleave(num_images, 0), mask[:count].repeat_interleave(num_images, 0)
    if not use_cfg:
        return embeds, embeds_mask
    rows = count * num_images
    return (torch.cat([embeds, feats[count:].expand(rows, -1, -1)]),
            torch.cat([embeds_mask, mask[count:].expand(rows, -1)]))


def make_velocity(pipe: Any, embeds: torch.Tensor, mask: torch.Tensor, width: int, height: int,
                  opts: LuminaNextOptions, rope_scale: float | None = None
                  ) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """dx/dt of the (guided) model for the given caption features, at this output size.

    `rope_scale` overrides the RoPE scale the size implies, sqrt(W*H) / native (1.0: never scale).
    """
    device = pipe._execution_device
    use_cfg = opts.cfg > 1.0
    native = pipe.default_image_size
    scale = math.sqrt(width * height) / native if rope_scale is None else rope_scale
    attention_kwargs = {"base_sequence_length": (native // 16) ** 2} if opts.proportional_attn else {}
    head_dim = pipe.transformer.head_dim

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        # The authors' model sees t in the state's dtype (torchdiffeq casts it), the watershed test too.
        t = float(torch.tensor(t, dtype=x.dtype))
        linear, ntk = rope_factors(t, scale, opts)
        # On the latents' device: where the model would move it to on every call.
        rope = rope_table(head_dim, ROPE_MAX, token_grid(pipe, x), linear, ntk, x.device)
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
def encode_images(pipe: Any, images: list[Any], dtype: torch.dtype) -> torch.Tensor:
    """Start pictures as the latents the flow ends at (t = 1): the VAE's mean, times its scaling factor
    (the reference samples the posterior; the mean keeps a re-run exact without a second generator)."""
    from .flow_edit import pixels

    x = pixels(images, pipe._execution_device, pipe.vae.dtype)
    return (pipe.vae.encode(x).latent_dist.mode() * pipe.vae.config.scaling_factor).to(dtype)


@torch.no_grad()
def sample(pipe: Any, *, prompt: str, negative_prompt: str, width: int, height: int, num_images: int,
           generator: torch.Generator | list[torch.Generator], opts: LuminaNextOptions,
           on_step: Callable[[int, int], None] | None = None, edit: Any = None,
           on_latents: Callable[[int, int, torch.Tensor], None] | None = None) -> tuple[list[Any], Integration]:
    """Generate images; returns (PIL images, how the integration went: model evaluations, solver steps).
    `edit` (images, strength, mask; tasks/image_edit.Edit): start from those pictures (engines/flow_edit.py).
    `on_latents` hears the predicted clean latents at each step (a live preview's; flow.integrate)."""
    from .flow import sampling_grid
    from .flow_edit import edit_start, latent_mask

    embeds, mask = encode(pipe, [prompt], negative_prompt, num_images, opts.cfg > 1.0)
    latents = initial_latents(pipe, num_images, width, height, embeds.dtype, generator)
    start, after_step = 0, None
    if edit is not None:
        x1 = encode_images(pipe, edit.images, latents.dtype)
        region = (latent_mask(edit.mask, *latents.shape[-2:], latents.device, latents.dtype)
                  if edit.mask is not None else None)
        latents, start, after_step = edit_start(latents, x1, sampling_grid(opts.steps, opts.shift), edit.strength,
                                                opts.steps, region)
    velocity = make_velocity(pipe, embeds, mask, width, height, opts)
    result = integrate(velocity, latents, solver=opts.solver, steps=opts.steps, shift=opts.shift,
                       on_step=progress_hook(on_step), start=start, after_step=after_step, on_estimate=on_latents)
    return decode(pipe, result.x), result
