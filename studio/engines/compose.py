"""Lumina-Next compositional generation: one picture from a grid of region captions.

As in Lumina-Next's method, the image latent is not split: self-attention stays global over the
whole canvas. Only the text cross-attention is regional: each region's patch tokens attend to their
own caption and nothing else. This is done on diffusers' model by a cross-attention processor that
runs diffusers' own Lumina processor once per region (with that caption's token mask) and keeps, for
every image token, the output of its region: the reference's sum of disjointly masked attentions.
The adaLN conditioning uses the pooled embedding of all captions joined (a thin wrapper around the
model's time/caption embedder), and the negative caption drives the unconditional branch of CFG.
As in the authors' demo (lumina_next_compositional_generation/demo.py), the captions, the negative
and the joined caption are one tokeniser batch, and the canvas keeps the native RoPE whatever its
size: the demo never scales it, not even at its default 2048x1024. Scaling it like a large image
(time-aware, from the canvas size) is an option, off by default.

Cells are numbered row by row from the top left: cell k = row * cols + col. Every caption lands in
its own cell. Here Studio deliberately differs from the authors: their region numbering,
(row + 1) * (col + 1) - 1 (models/model.py), sends two cells of a 2x2 grid to caption 2 and none to
caption 3.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from .flow import Integration, integrate
from .lumina_next import LuminaNextOptions, decode, encode_texts, initial_latents, make_velocity, progress_hook

PATCH_PIXELS = 16  # an 8x VAE and 2x2 patches: one image token covers 16x16 pixels


def token_regions(rows: int, cols: int, width: int, height: int) -> torch.Tensor:
    """The cell index of every image token, in the model's token order (row-major over the patch grid)."""
    grid_h, grid_w = height // PATCH_PIXELS, width // PATCH_PIXELS
    row = torch.arange(grid_h).unsqueeze(1) * rows // grid_h
    col = torch.arange(grid_w).unsqueeze(0) * cols // grid_w
    return (row * cols + col).flatten()


class RegionalCrossAttention:
    """A cross-attention processor: each image token sees only its region's caption tokens."""

    def __init__(self, inner: Any, text_masks: torch.Tensor, regions: torch.Tensor) -> None:
        self.inner = inner  # diffusers' LuminaAttnProcessor2_0 of the layer
        self.text_masks = text_masks  # [batch, cells, text tokens] bool: what each cell may attend to
        self.regions = regions  # [image tokens] cell index

    # diffusers passes a processor only the keyword arguments its signature names: spell them out.
    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, query_rotary_emb: torch.Tensor | None = None,
                 key_rotary_emb: torch.Tensor | None = None, base_sequence_length: int | None = None) -> torch.Tensor:
        out = None
        for cell in range(self.text_masks.shape[1]):
            part = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask=self.text_masks[:, cell],
                              query_rotary_emb=query_rotary_emb, key_rotary_emb=key_rotary_emb,
                              base_sequence_length=base_sequence_length)
            mine = (self.regions == cell).to(part.device, part.dtype).view(1, -1, 1, 1)
            out = part * mine if out is None else out + part * mine
        return out


class _GlobalCaptionEmbed(torch.nn.Module):
    """Feeds the model's time/caption embedder the joined captions instead of the regional batch."""

    def __init__(self, inner: torch.nn.Module, feats: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.feats, self.mask = inner, feats, mask

    def forward(self, timestep: torch.Tensor, caption_feat: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        batch = timestep.shape[0]
        return self.inner(timestep, self.feats.expand(batch, -1, -1), self.mask.expand(batch, -1))


@contextmanager
def regional_conditioning(transformer: Any, text_masks: torch.Tensor, regions: torch.Tensor,
                          global_feats: torch.Tensor, global_mask: torch.Tensor) -> Iterator[None]:
    """Install the regional cross-attention and global adaLN caption for the duration of a sample."""
    originals = [layer.attn2.processor for layer in transformer.layers]
    embedder = transformer.time_caption_embed
    try:
        for layer, processor in zip(transformer.layers, originals):
            layer.attn2.processor = RegionalCrossAttention(processor, text_masks, regions)
        transformer.time_caption_embed = _GlobalCaptionEmbed(embedder, global_feats, global_mask)
        yield
    finally:
        for layer, processor in zip(transformer.layers, originals):
            layer.attn2.processor = processor
        transformer.time_caption_embed = embedder


def caption_features(pipe: Any, captions: list[str], negative: str, use_cfg: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and masks of [captions..., negative (with CFG), the captions joined], one tokeniser
    batch as in the authors' demo. The joined caption only feeds adaLN's pooled embedding; it is cut
    at 256 tokens as theirs is, while a caption or negative over 256 is refused."""
    texts = [*captions, *([negative] if use_cfg else []), " ".join(captions)]
    names = [*(f"caption {i + 1}" for i in range(len(captions))), *(["negative caption"] if use_cfg else []), None]
    return encode_texts(pipe, texts, names)


def regional_layout(feats: torch.Tensor, mask: torch.Tensor, cells: int, use_cfg: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Caption tokens laid side by side ([cond; uncond] x (cells * L) x D), their mask, and each cell's
    text mask ([batch, cells, cells * L]): a cell sees its caption; the uncond row sees the negative.
    `feats` rows: the cells' captions, then (with CFG) the negative."""
    # Padding no row uses is dropped: masked, it changes nothing, while every cell's pass attends over
    # cells x L keys (and the batch is padded to the joined caption, the longest text).
    length = int(mask.sum(dim=1).max())
    feats, mask = feats[:, :length], mask[:, :length]
    cond = feats[:cells].reshape(1, cells * length, -1)
    cond_mask = mask[:cells].reshape(1, cells * length).bool()
    per_cell = torch.zeros(1, cells, cells * length, dtype=torch.bool, device=feats.device)
    for cell in range(cells):
        per_cell[0, cell, cell * length:(cell + 1) * length] = mask[cell].bool()
    if not use_cfg:
        return cond, cond_mask, per_cell
    # The negative caption, padded to the same length, for every cell of the unconditional row.
    neg = torch.zeros_like(cond)
    neg[0, :length] = feats[cells]
    neg_mask = torch.zeros_like(cond_mask)
    neg_mask[0, :length] = mask[cells].bool()
    return (torch.cat([cond, neg]), torch.cat([cond_mask, neg_mask]),
            torch.cat([per_cell, neg_mask.unsqueeze(1).expand(1, cells, -1)]))


def regional_text(pipe: Any, captions: list[str], negative: str, use_cfg: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`regional_layout` of the captions (and negative) encoded as `caption_features` does."""
    feats, mask = caption_features(pipe, captions, negative, use_cfg)
    return regional_layout(feats[:-1], mask[:-1], len(captions), use_cfg)


def canvas_rope_scale(pipe: Any, width: int, height: int, scale_to_canvas: bool) -> float:
    """The RoPE scale of the canvas: 1.0 (native, the authors' way) unless asked to scale it like a
    large image, sqrt(W*H) / native (which still applies only above the native size)."""
    return math.sqrt(width * height) / pipe.default_image_size if scale_to_canvas else 1.0


@torch.no_grad()
def sample(pipe: Any, *, captions: list[str], negative_prompt: str, rows: int, cols: int, width: int,
           height: int, generator: torch.Generator, opts: LuminaNextOptions,
           on_step: Callable[[int, int], None] | None = None, scale_rope_to_canvas: bool = False
           ) -> tuple[list[Any], Integration]:
    """One image whose cells follow their captions; returns ([image], how the integration went)."""
    use_cfg = opts.cfg > 1.0
    feats, mask = caption_features(pipe, captions, negative_prompt, use_cfg)
    regional, regional_mask, per_cell = regional_layout(feats[:-1], mask[:-1], len(captions), use_cfg)
    global_feats, global_mask = feats[-1:], mask[-1:]
    latents = initial_latents(pipe, 1, width, height, feats.dtype, generator)
    velocity = make_velocity(pipe, regional, regional_mask, width, height, opts,
                             rope_scale=canvas_rope_scale(pipe, width, height, scale_rope_to_canvas))
    regions = token_regions(rows, cols, width, height).to(feats.device)
    with regional_conditioning(pipe.transformer, per_cell, regions, global_feats, global_mask):
        result = integrate(velocity, latents, solver=opts.solver, steps=opts.steps, shift=opts.shift,
                           on_step=progress_hook(on_step))
    return decode(pipe, result.x), result
