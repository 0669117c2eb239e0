"""Text conditioning of Lumina-T2Audio and Lumina-T2Music, with weights from the Lightning checkpoint.

**T2Audio** (`FrozenCLAPFLANEmbedder`, reference `lumina_audio/models/encoders/modules.py`): two
captions of one prompt.
- The original caption goes through Microsoft CLAP-2022's text branch (`CLAP/clap.py` TextEncoder):
  `base` = transformers' BertModel (bert-base-uncased) on all tokens, then `projection` =
  Projection(768 -> 1024): `e1 = linear1(h)` (no bias), `out = layer_norm(e1 + linear2(gelu(e1)))`
  (linear2 without bias; its Dropout(0.5) is off in eval). Every token's state is projected (the
  CLS pooling of CLAP's own forward is not used).
- The structured caption goes through T5EncoderModel (google/t5-v1_1-large), `last_hidden_state`.
- Each tokenizer call is `truncation=True, max_length=77, padding="max_length"`, and only
  `input_ids` reach the models: no attention mask, so the 77 positions, padding included, attend to
  one another, as in the reference. The result is `concat([clap, t5], dim=1)`: (B, 154, 1024).
- The module attributes are `caption_encoder.base`, `caption_encoder.projection`, `t5_transformer`,
  so under the checkpoint's `cond_stage_model.` they are keyed `caption_encoder.base.<BertModel
  key>`, `caption_encoder.projection.{linear1,linear2,layer_norm}.*` and `t5_transformer.<T5EncoderModel
  key>`. The reference's constructor reads `CLAP_weights_2022.pth` but never loads it
  (`match_params` is built and dropped), so these checkpoint tensors are the only weights used.
- The demo's unconditional input is `{"ori_caption": "", "struct_caption": ""}`.

**T2Music** (`FrozenFLANEmbedder`): the prompt through T5EncoderModel (google/flan-t5-large), same
tokenizer call, `last_hidden_state`, no mask: (B, 77, 1024); keyed `transformer.<T5EncoderModel key>`.
The music demo's unconditional input is a dict, which the T5 tokenizer rejects, so its `except`
falls back to `uc = c` and guidance is a no-op (demo_music.py): the pipeline must choose.

The architectures are read off the tensors' shapes (so tiny test models load the same way); BERT's
head count is taken as hidden/64, true of every BERT size. Tokenizers are the caller's (the
models' own files: bert-base-uncased's WordPiece, T5's SentencePiece).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import InvalidInput, ModelNotAvailable

MAX_LENGTH = 77
CLAP_PREFIX = "caption_encoder."
T5_AUDIO_PREFIX = "t5_transformer."
T5_MUSIC_PREFIX = "transformer."
# Buffers older transformers saved in BertModel's state dict (now non-persistent): rebuilt, not read.
_BERT_STALE = ("embeddings.position_ids", "embeddings.token_type_ids")


class Projection(nn.Module):
    """CLAP's text projection, with its parameter names (linear1, linear2, layer_norm)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.linear1(x)
        return self.layer_norm(e1 + self.linear2(F.gelu(e1)))


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _layers(state: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def bert_config(state: dict):
    """A BertConfig matching a BertModel state dict (bert-base-uncased for the released model)."""
    from transformers import BertConfig

    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    return BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
        num_hidden_layers=_layers(state, r"encoder\.layer\.(\d+)\."),
        intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0], layer_norm_eps=1e-12)


def t5_config(state: dict):
    """A T5Config matching a T5EncoderModel state dict (t5-v1_1-large / flan-t5-large: 24 layers,
    d_model 1024, 16 heads of 64, gated-gelu 2816)."""
    from transformers import T5Config

    vocab, d_model = state["shared.weight"].shape
    buckets, heads = state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state
    d_ff = state[f"encoder.block.0.layer.1.DenseReluDense.{'wi_0' if gated else 'wi'}.weight"].shape[0]
    return T5Config(
        vocab_size=vocab, d_model=d_model, num_heads=heads,
        d_kv=state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0] // heads, d_ff=d_ff,
        num_layers=_layers(state, r"encoder\.block\.(\d+)\."), relative_attention_num_buckets=buckets,
        feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False, use_cache=False,
        layer_norm_epsilon=1e-6)


def _assign(model: nn.Module, state: dict, what: str) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise ModelNotAvailable(f"the checkpoint's {what} weights do not fit: {str(err).splitlines()[0]}") from None
    return model.eval().requires_grad_(False)


def build_bert(state: dict, dtype: torch.dtype = torch.float32) -> nn.Module:
    from transformers import BertModel

    state = {k: v.to(dtype) for k, v in state.items() if k not in _BERT_STALE}
    config = bert_config(state)
    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer="pooler.dense.weight" in state)
    model = _assign(model, state, "CLAP text (BERT)")
    emb = model.embeddings  # the non-persistent buffers, as BertEmbeddings makes them
    emb.register_buffer("position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)),
                        persistent=False)
    emb.register_buffer("token_type_ids", torch.zeros(emb.position_ids.size(), dtype=torch.long), persistent=False)
    return model


def build_t5(state: dict, dtype: torch.dtype = torch.float32) -> nn.Module:
    from transformers import T5EncoderModel

    state = {k: v.to(dtype) for k, v in state.items()}
    for a, b in (("shared.weight", "encoder.embed_tokens.weight"), ("encoder.embed_tokens.weight", "shared.weight")):
        if a in state and b not in state:  # one module under two names: a file may hold just one
            state[b] = state[a]
    with torch.device("meta"):
        model = T5EncoderModel(t5_config(state))
    return _assign(model, state, "T5")


def build_projection(state: dict, dtype: torch.dtype = torch.float32) -> Projection:
    d_out, d_in = state["linear1.weight"].shape
    with torch.device("meta"):
        proj = Projection(d_in, d_out)
    return _assign(proj, {k: v.to(dtype) for k, v in state.items()}, "CLAP projection")


@contextmanager
def _named_missing(prefix: str):
    """A tensor the architecture is read from, missing: say which (the file is cut or not this model's)."""
    try:
        yield
    except KeyError as err:
        missing = f"{prefix}{err.args[0]}"
        raise ModelNotAvailable(f"the checkpoint has no {missing}: its text encoder is incomplete") from None


def _ids(tokenizer, texts: list[str], device) -> torch.Tensor:
    batch = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding="max_length", return_tensors="pt")
    return batch["input_ids"].to(device)


@dataclass
class AudioTextEncoder:
    """T2Audio's conditioning: CLAP-BERT(+projection) on the caption, T5 on the structured caption."""

    bert: nn.Module
    projection: Projection
    t5: nn.Module
    bert_tokenizer: object
    t5_tokenizer: object

    @classmethod
    def from_checkpoint(cls, text_state: dict, bert_tokenizer, t5_tokenizer,
                        dtype: torch.dtype = torch.float32) -> AudioTextEncoder:
        """`text_state` is checkpoint.LuminaCheckpoint.text (cond_stage_model.* without the prefix)."""
        clap = _sub(text_state, CLAP_PREFIX)
        if not clap or not _sub(text_state, T5_AUDIO_PREFIX):
            raise ModelNotAvailable("the checkpoint has no cond_stage_model.caption_encoder/t5_transformer weights: "
                                    "not a Lumina-T2Audio checkpoint")
        with _named_missing(f"cond_stage_model.{CLAP_PREFIX}base."):
            bert = build_bert(_sub(clap, "base."), dtype)
        with _named_missing(f"cond_stage_model.{CLAP_PREFIX}projection."):
            projection = build_projection(_sub(clap, "projection."), dtype)
        with _named_missing("cond_stage_model." + T5_AUDIO_PREFIX):
            t5 = build_t5(_sub(text_state, T5_AUDIO_PREFIX), dtype)
        return cls(bert=bert, projection=projection, t5=t5, bert_tokenizer=bert_tokenizer, t5_tokenizer=t5_tokenizer)

    def to(self, device) -> AudioTextEncoder:
        for m in (self.bert, self.projection, self.t5):
            m.to(device)
        return self

    @torch.no_grad()
    def encode(self, captions: list[str], struct_captions: list[str]) -> torch.Tensor:
        if len(captions) != len(struct_captions):
            raise ValueError("one structured caption per caption")
        device = self.projection.linear1.weight.device
        hidden = self.bert(input_ids=_ids(self.bert_tokenizer, captions, device)).last_hidden_state
        clap = self.projection(hidden)
        t5 = self.t5(input_ids=_ids(self.t5_tokenizer, struct_captions, device)).last_hidden_state
        return torch.cat([clap, t5], dim=1)

    def unconditional(self, batch: int = 1) -> torch.Tensor:
        return self.encode([""] * batch, [""] * batch)


@dataclass
class MusicTextEncoder:
    """T2Music's conditioning: FLAN-T5 on the prompt."""

    t5: nn.Module
    tokenizer: object

    @classmethod
    def from_checkpoint(cls, text_state: dict, tokenizer, dtype: torch.dtype = torch.float32) -> MusicTextEncoder:
        state = _sub(text_state, T5_MUSIC_PREFIX)
        if not state:
            raise ModelNotAvailable("the checkpoint has no cond_stage_model.transformer weights: "
                                    "not a Lumina-T2Music checkpoint")
        with _named_missing("cond_stage_model." + T5_MUSIC_PREFIX):
            return cls(t5=build_t5(state, dtype), tokenizer=tokenizer)

    def to(self, device) -> MusicTextEncoder:
        self.t5.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        device = self.t5.shared.weight.device
        return self.t5(input_ids=_ids(self.tokenizer, prompts, device)).last_hidden_state


# ---- structured captions (T2Audio's T5 half) ------------------------------------------------------
# The format of n2s_openai.py's few-shot prompt: `<sound& when>` events joined by `@`, `when` one of
# all (the whole clip), start, mid, end; e.g. `<running water& all>@<birds chriping& start>`. GPT's
# answers were fed to T5 as they came (the prompt's own example ends with a full stop).
WHENS = ("all", "start", "mid", "end")
_EVENT = re.compile(r"\s*<([^<>@&]*?)\s*[&,]\s*([A-Za-z]+)\s*>\s*")
_FORMAT = "<sound& when> events joined by @, when one of all, start, mid, end (e.g. <dog barking& start>@<rain& all>)"


def fallback_struct_caption(caption: str) -> str:
    """n2s_openai.py's own fallback when GPT declines: the whole caption, lower-cased, for the whole
    clip. Kept as the reference writes it, with a comma where its prompt's format has `&`."""
    return f"<{caption.lower()}, all>"


def parse_struct_caption(text: str) -> list[tuple[str, str]]:
    """The (sound, when) events of a user-typed structured caption, or InvalidInput saying what is
    wrong. Accepts `&` or the fallback's `,` before `when` and one final full stop, as GPT wrote them."""
    body = text.strip()
    if body.endswith("."):
        body = body[:-1]
    if not body:
        raise InvalidInput(f"The structured caption is empty; write {_FORMAT}.")
    events = []
    for piece in body.split("@"):
        m = _EVENT.fullmatch(piece)
        if m is None:
            raise InvalidInput(f"Cannot read {piece.strip()!r} in the structured caption; write {_FORMAT}.")
        sound, when = m.group(1).strip(), m.group(2).lower()
        if not sound:
            raise InvalidInput(f"{piece.strip()!r} in the structured caption names no sound; write {_FORMAT}.")
        if when not in WHENS:
            raise InvalidInput(f"{piece.strip()!r}: {when!r} is not one of {', '.join(WHENS)}.")
        events.append((sound, when))
    return events


def struct_caption(caption: str, structured: str | None = None) -> str:
    """The text for T5: the user's structured caption, checked and passed on as typed (stripped),
    or else the reference's fallback built from the caption."""
    if structured is None or not structured.strip():
        return fallback_struct_caption(caption)
    parse_struct_caption(structured)
    return structured.strip()
