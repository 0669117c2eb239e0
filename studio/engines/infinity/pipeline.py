"""Infinity as one pipeline: encode the prompt with flan-t5, sample the bits scale by scale, decode
the summed codes with the BSQ VAE, hand back PIL RGB pictures (the reference flips to BGR for cv2).

`load_infinity` builds it from a card: the transformer's shape is read from its checkpoint (width,
depth, heads, d_vae = word_embed.weight.shape[1], text width) and must be the model_type the card
names; the VAE comes from the card it requires and must code as many bits as the transformer
predicts. Files are plain state dicts read with torch.load(weights_only=True), built on the meta
device and assigned; a file that is not what it should be is refused with what it holds.

Prompts are tokenised as the reference does (flan-t5, truncated at 512 tokens) but padded only to the
longest prompt of the batch: the padding is masked out of every attention, so the features are the
same. flan-t5 runs in float16 when the model runs in half precision (the reference's and its
training's choice). The unconditional half is the learned `cfg_uncond` rows (as many as the prompt
has tokens; a file with other than 512 rows is cut or completed as the reference's loader does), or
a negative prompt encoded like the prompt. The VAE decodes in float32 (the reference: bf16 autocast).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...errors import InvalidInput, ModelNotAvailable
from ..bundle import ModuleBundle
from .model import CONFIGS, Infinity, InfinityConfig
from .options import TransformerFiles, VAEFiles, engine_options
from .schedules import RATIOS, VAE_STRIDE, ratio_for, schedule, size_names
from .vae import BSQDecoder, VAECheckpointError, load_vae_decoder

MAX_TEXT_TOKENS = 512
# Inference-time buffers some training checkpoints carry (the reference drops them too).
_STALE = ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen")


class InfinityPipeline(ModuleBundle):
    """Components in the order they run (text encoder, transformer, VAE), for chained offload."""

    def __init__(self, transformer: Infinity, vae: BSQDecoder, text_encoder: nn.Module, tokenizer: Any,
                 pn: str, vae_name: str) -> None:
        super().__init__(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae)
        self.pn, self.vae_name = pn, vae_name

    def grids(self, width: int, height: int) -> tuple[list[tuple[int, int]], float]:
        ratio = ratio_for(width, height, self.pn)
        if ratio is None:
            raise InvalidInput(f"Infinity at {self.pn} makes these sizes only (one per aspect ratio): "
                               f"{', '.join(size_names(self.pn))}; not {width}x{height}")
        return schedule(ratio, self.pn), ratio

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """flan-t5 features (B, T, C) float32 and the mask of real tokens (B, T) bool."""
        limit = min(MAX_TEXT_TOKENS, self.transformer.config.text_maxlen)
        batch = self.tokenizer(prompts, max_length=limit, padding="longest", truncation=True, return_tensors="pt")
        device = self.device
        mask = batch.attention_mask.to(device)
        out = self.text_encoder(input_ids=batch.input_ids.to(device), attention_mask=mask).last_hidden_state
        return out.float(), mask.bool()

    def _with_uncond(self, prompts: list[str], negative: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        text, mask = self.encode(prompts)
        if negative:
            neg, neg_mask = self.encode([negative] * len(prompts))
            width = max(text.shape[1], neg.shape[1])
            features = [F.pad(t, (0, 0, 0, width - t.shape[1])) for t in (text, neg)]
            masks = [F.pad(m, (0, width - m.shape[1])) for m in (mask, neg_mask)]  # padding is False: masked
            return torch.cat(features), torch.cat(masks)
        uncond = self.transformer.cfg_uncond.float()[:text.shape[1]].to(text.device)
        return torch.cat((text, uncond.expand_as(text).clone())), torch.cat((mask, mask))

    @torch.no_grad()
    def __call__(self, *, prompts: list[str], width: int, height: int, cfg: float = 4.0, tau: float = 0.5,
                 top_k: int = 0, top_p: float = 1.0, negative_prompt: str | None = None,
                 generators: list[torch.Generator], on_progress: Callable[[int, int], None] | None = None,
                 on_decode: Callable[[], None] | None = None) -> list[Image.Image]:
        """One picture per prompt, image b drawn from generators[b]; on_progress(scales_done, scales)."""
        if not tau > 0:
            raise InvalidInput(f"tau must be greater than 0 (got {tau})")
        if not 0 < top_p <= 1:
            raise InvalidInput(f"top_p must be in (0, 1] (got {top_p})")
        grids, ratio = self.grids(width, height)
        self.transformer.execution_device = self.execution_device
        try:
            if cfg != 1:
                text, mask = self._with_uncond(prompts, negative_prompt)
            else:
                text, mask = self.encode(prompts)
            codes = self.transformer(text, mask, grids, ratio, cfg=cfg, tau=tau, top_k=top_k, top_p=top_p,
                                     generators=generators, on_scale=on_progress)
            if on_decode is not None:
                on_decode()
            # One image at a time: less decode memory, and a batch's image k is bit-for-bit the one
            # its seed makes alone (conv kernels round differently at other batch sizes).
            pixels = torch.cat([self.vae(codes[i:i + 1]) for i in range(codes.shape[0])])
        finally:
            self.offload_all()
        # As the reference: (x + 1) / 2 * 255, truncated to uint8; kept in RGB order.
        array = ((pixels + 1) / 2).permute(0, 2, 3, 1).mul(255).to(torch.uint8).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in array]


def _torch_load(path: Path, title: str) -> Any:
    if not path.is_file():
        raise ModelNotAvailable(f"{path.name} is not in the model cache; download {title} first.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise ModelNotAvailable(f"{path.name} holds Python objects besides tensors and is not loaded for safety "
                                "(torch.load with weights_only=True refused it)") from err
    except Exception as err:  # truncated, empty or not a torch file: torch says it in many ways
        raise ModelNotAvailable(f"cannot read {path.name} (damaged or incomplete download?): {err}. Remove "
                                f"{title} in the Models tab and download it again.") from err


def uncond_rows(rows: torch.Tensor, maxlen: int = MAX_TEXT_TOKENS) -> torch.Tensor:
    """`cfg_uncond` at the reference's text_maxlen (512), as its load_state_dict makes it
    (infinity.py:648-656): a longer file's rows are cut; a shorter one's are completed with the rows
    its constructor would have held, trunc_normal(std 1.2) from a CPU generator seeded 0, / sqrt(Ct5)
    (infinity.py:187-191), so prompts of up to 512 tokens are guided as the reference guides them."""
    if rows.shape[0] >= maxlen:
        return rows[:maxlen]
    init = torch.empty(maxlen, rows.shape[1])
    rng = torch.Generator(device="cpu")
    rng.manual_seed(0)
    torch.nn.init.trunc_normal_(init, std=1.2, generator=rng)
    init /= rows.shape[1] ** 0.5
    return torch.cat((rows.to(init.dtype), init[rows.shape[0]:]))


def read_transformer(raw: Any, name: str, model_type: str) -> tuple[InfinityConfig, dict[str, torch.Tensor]]:
    """The config a transformer state dict describes (checked against the card's model_type), and
    its weights under this module's names."""
    if not isinstance(raw, Mapping) or "word_embed.weight" not in raw:
        held = ", ".join(sorted(map(str, raw))[:6]) if isinstance(raw, Mapping) else type(raw).__name__
        what = " — a BSQ VAE file, not the transformer" if isinstance(raw, Mapping) and "vae" in raw else ""
        raise ModelNotAvailable(f"{name} is not an Infinity transformer checkpoint: it holds {held or 'nothing'}{what}")
    state = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor) and k not in _STALE}
    if isinstance(state.get("cfg_uncond"), torch.Tensor) and state["cfg_uncond"].dim() == 2:
        state["cfg_uncond"] = uncond_rows(state["cfg_uncond"])
    try:
        C, d_vae = state["word_embed.weight"].shape
        chunks = sorted({int(k.split(".")[1]) for k in state if k.startswith("block_chunks.")})
        per_chunk = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("block_chunks.0.module."))
        heads = state["block_chunks.0.module.0.sa.scale_mul_1H11"].numel()
        found = InfinityConfig(depth=len(chunks) * per_chunk, embed_dim=C, num_heads=heads, block_chunks=len(chunks),
                               d_vae=d_vae, text_channels=state["text_norm.weight"].shape[0],
                               text_maxlen=state["cfg_uncond"].shape[0])
    except (KeyError, ValueError) as err:
        raise ModelNotAvailable(f"{name} is an incomplete Infinity checkpoint (missing {err})") from None
    want = CONFIGS[model_type]
    shape = lambda c: (c.depth, c.embed_dim, c.num_heads, c.block_chunks)  # noqa: E731
    if shape(found) != shape(want):
        raise ModelNotAvailable(
            f"{name} holds an Infinity transformer of depth {found.depth}, width {found.embed_dim}, {found.num_heads} "
            f"heads, {d_vae}-bit codes; the card says {model_type} (depth {want.depth}, width {want.embed_dim}, "
            f"{want.num_heads} heads)")
    for key in list(state):
        if key.endswith("scale_mul_1H11"):  # 11H1 in files from customised flash-attn runs
            state[key] = state[key].reshape(1, -1, 1, 1)
    return want.with_file(d_vae=d_vae, text_channels=found.text_channels, text_maxlen=found.text_maxlen), state


def load_transformer(path: Path, model_type: str, title: str, dtype: torch.dtype) -> Infinity:
    config, state = read_transformer(_torch_load(path, title), path.name, model_type)
    with torch.device("meta"):
        model = Infinity(config)
    for name, buffer in model.named_buffers():  # zero biases: some files leave them out
        state.setdefault(name, torch.zeros(buffer.shape))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise ModelNotAvailable(f"{path.name} does not fit the Infinity transformer it describes: {err}") from None
    model = model.float().eval()
    for chunk in model.block_chunks:  # as the reference's bf16=1: the blocks in dtype, the rest float32
        chunk.to(dtype)
    return model


def _vae_for(transformer: Infinity, path: Path, card_title: str) -> BSQDecoder:
    try:
        vae = load_vae_decoder(path)
    except VAECheckpointError as err:
        raise ModelNotAvailable(str(err)) from None
    if vae.config.codebook_dim != transformer.config.d_vae:
        raise ModelNotAvailable(
            f"{path.name} is a {vae.config.codebook_dim}-bit BSQ VAE, but {card_title}'s transformer predicts "
            f"{transformer.config.d_vae} bits per token (word_embed is {transformer.config.d_vae} wide): pair it with "
            f"the d{transformer.config.d_vae} VAE")
    return vae


def text_encoder_dtype(dtype: torch.dtype) -> torch.dtype:
    """flan-t5 in float16 wherever the model runs in half precision: the reference encodes prompts
    with it in float16 (run_infinity.py:153), as its training did (train.py:242); in float32, float32."""
    return torch.float16 if dtype in (torch.bfloat16, torch.float16) else dtype


def _read_text_encoder(folder: Path, width: int, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        encoder = T5EncoderModel.from_pretrained(folder, use_safetensors=True, dtype=text_encoder_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(folder, legacy=True)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"the text encoder in {folder} cannot be loaded: {err}") from err
    if encoder.config.d_model != width:
        raise ModelNotAvailable(f"the text encoder's features are {encoder.config.d_model} wide; this Infinity "
                                f"model takes {width}")
    return encoder.eval(), tokenizer


def load_infinity(card: Any, folder: Path, required: dict[str, Path], dtype: torch.dtype) -> InfinityPipeline:
    files = engine_options(card)
    if isinstance(files, VAEFiles):
        raise ModelNotAvailable(f"{card.title} is a component: it runs as part of an Infinity model")
    assert isinstance(files, TransformerFiles)
    transformer = load_transformer(folder / files.file, files.model_type, card.title, dtype)
    vae_path = required[files.vae] / files.vae_file
    if not vae_path.is_file():
        raise ModelNotAvailable(f"{files.vae_file} is not in the model cache; download {card.title} again")
    vae = _vae_for(transformer, vae_path, card.title)
    encoder, tokenizer = _read_text_encoder(required[files.text_encoder], transformer.config.text_channels, dtype)
    return InfinityPipeline(transformer, vae, encoder, tokenizer, files.pn, vae_path.stem)


__all__ = ["InfinityPipeline", "load_infinity", "RATIOS", "VAE_STRIDE"]
