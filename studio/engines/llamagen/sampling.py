"""Sampling image tokens from LlamaGen's GPT, as its generate.py does: prefill the condition, then
KV-cached decode one token at a time; classifier-free guidance on a [cond; null] batch
(`uncond + (cond - uncond) * scale`), temperature, top-k then top-p filtering, seeded multinomial.
"""

from __future__ import annotations

from typing import Callable

import torch

from ...errors import InvalidInput
from .gpt import GPT, causal_mask


def top_k_top_p_filtering(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0,
                          filter_value: float = -float("inf"), min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Set logits (B, V) outside the top-k, then outside the top-p nucleus, to filter_value (a copy)."""
    logits = logits.clone()
    if top_k > 0:
        k = min(max(top_k, min_tokens_to_keep), logits.shape[-1])
        kth = torch.topk(logits, k)[0][..., -1, None]
        logits[logits < kth] = filter_value
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum > top_p
        if min_tokens_to_keep > 1:
            drop[..., :min_tokens_to_keep] = False
        # Shift right so the token that crosses top_p is kept, and the best token always is.
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        logits[drop.scatter(1, sorted_idx, drop)] = filter_value
    return logits


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = 0, top_p: float | None = 1.0,
                  generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """Draw one token per row of logits (B, V): temperature, top-k, top-p, multinomial -> (B, 1) long.
    With a list of generators, row i draws from generator i (so a row's tokens do not depend on the
    rest of the batch); the original draws the whole batch from one."""
    logits = logits.float() / max(temperature, 1e-5)
    top_k, top_p = top_k or 0, 1.0 if top_p is None else top_p
    if top_k > 0 or top_p < 1.0:
        logits = top_k_top_p_filtering(logits, top_k=top_k, top_p=top_p)
    probs = logits.softmax(-1)
    if isinstance(generator, (list, tuple)):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {probs.shape[0]}")
        return torch.cat([_draw(probs[i:i + 1], g) for i, g in enumerate(generator)])
    return _draw(probs, generator)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is not None and generator.device != probs.device:
        # A CPU generator gives the same tokens whatever device the model runs on.
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)


def null_condition(model: GPT, cond: torch.Tensor) -> torch.Tensor:
    """The unconditional twin of cond: class `num_classes` (c2i) or the learned empty caption (t2i)."""
    if model.config.model_type == "c2i":
        return torch.full_like(cond, model.config.num_classes)
    return torch.zeros_like(cond) + model.cls_embedding.uncond_embedding.to(device=cond.device, dtype=cond.dtype)


def _check_condition(model: GPT, cond: torch.Tensor, use_cfg: bool, emb_masks: torch.Tensor | None) -> None:
    c = model.config
    if c.model_type == "c2i":
        if cond.dim() != 1:
            raise ValueError(f"c2i condition must be class ids (B,), got shape {tuple(cond.shape)}")
        if bool(((cond < 0) | (cond >= c.num_classes)).any()):
            raise InvalidInput(f"class ids must be in 0..{c.num_classes - 1}, got {cond.tolist()}")
        if use_cfg and not c.null_class:
            raise ValueError("this model has no null class, so it cannot run with cfg_scale > 1")
    else:
        if cond.dim() != 3 or cond.shape[1] != c.cls_token_num or cond.shape[2] != c.caption_dim:
            raise ValueError(f"t2i condition must be caption features (B, {c.cls_token_num}, {c.caption_dim}), "
                             f"got shape {tuple(cond.shape)}")
        if use_cfg and c.caption_token_num != c.cls_token_num:
            raise ValueError("CFG needs the unconditional caption to be as long as the prefix "
                             f"({c.caption_token_num} != {c.cls_token_num})")
    if emb_masks is not None and tuple(emb_masks.shape) != (cond.shape[0], c.cls_token_num):
        raise ValueError(f"emb_masks must be (B, {c.cls_token_num}), got shape {tuple(emb_masks.shape)}")


@torch.no_grad()
def generate(model: GPT, cond: torch.Tensor, max_new_tokens: int, cfg_scale: float = 1.0, temperature: float = 1.0,
             top_k: int | None = 0, top_p: float | None = 1.0,
             generator: torch.Generator | list[torch.Generator] | None = None,
             on_token: Callable[[int, int], None] | None = None, *, emb_masks: torch.Tensor | None = None,
             cfg_interval: float = -1) -> torch.Tensor:
    """Sample image token ids (B, max_new_tokens) for class ids (B,) or caption features (B, T, C).

    CFG (cfg_scale > 1, as in the original) runs [cond; null] in one batch and samples from
    uncond + (cond - uncond) * cfg_scale. `emb_masks` (B, T) marks valid caption tokens (t2i);
    `cfg_interval` >= 0 stops guiding after that many decode steps, as the original's option does.
    `on_token(done, total)` is called after each token.
    """
    c = model.config
    if not 0 < max_new_tokens <= c.block_size:
        raise ValueError(f"max_new_tokens must be in 1..{c.block_size}, got {max_new_tokens}")
    use_cfg = cfg_scale > 1.0
    _check_condition(model, cond, use_cfg, emb_masks)
    batch = cond.shape[0]
    cond = cond.to(model.device)
    cond_all = torch.cat([cond, null_condition(model, cond)]) if use_cfg else cond
    prefix = c.cls_token_num

    model.setup_caches(cond_all.shape[0], prefix + max_new_tokens, model.dtype)
    try:
        if emb_masks is not None:
            masks = emb_masks.to(model.device)
            masks = torch.cat([masks, masks]) if use_cfg else masks  # the null caption gets the same mask
            model.causal_mask = causal_mask(cond_all.shape[0], model.causal_mask.shape[-1], masks, model.device)

        def pick(logits: torch.Tensor, guide: bool) -> torch.Tensor:
            logits = logits[:, -1]
            if use_cfg:
                cond_logits, uncond_logits = logits.split(batch, dim=0)
                logits = uncond_logits + (cond_logits - uncond_logits) * cfg_scale if guide else cond_logits
            return sample_logits(logits, temperature, top_k, top_p, generator)

        tokens = [pick(model.prefill(cond_all), True)]
        if on_token is not None:
            on_token(1, max_new_tokens)
        for i in range(max_new_tokens - 1):
            guide = not (cfg_interval > -1 and i > cfg_interval)
            fed = torch.cat([tokens[-1], tokens[-1]]) if use_cfg else tokens[-1]
            tokens.append(pick(model.decode_one(fed, prefix + i), guide))
            if on_token is not None:
                on_token(i + 2, max_new_tokens)
    finally:
        # The caches scale with batch x sequence x layers; free them rather than keep them resident.
        model.reset_caches()
    return torch.cat(tokens, dim=1)
