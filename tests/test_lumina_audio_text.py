"""Lumina-T2Audio/T2Music text conditioning (studio/engines/lumina_audio/text.py).

Tiny seeded BERT/T5 encoders are saved under the checkpoint's `cond_stage_model.*` names in a
Lightning-style file, read back through checkpoint.py and text.py, and compared with the same
modules run directly (tokenizer call of the reference: truncation, 77, padding "max_length", input
ids only). Where the reference checkout is on this machine, its own `FrozenCLAPFLANEmbedder.encode`,
`FrozenFLANEmbedder.forward` and CLAP `Projection` (exec'd from the source, on our tiny modules) give
the expected tensors as well.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from studio.engines.lumina_audio import checkpoint, text
from studio.errors import InvalidInput, ModelNotAvailable
from studio.zoo.tiny_parts import tiny_bert_tokenizer, tiny_t5_tokenizer

MIRROR = Path("/work/.mirror/Alpha-VLLM+Lumina-T2X/repo")


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module.eval()


def _bert(vocab: int):
    from transformers import BertConfig, BertModel

    return _seeded(BertModel(BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                        intermediate_size=96, max_position_embeddings=80)), 1)


def _t5(vocab: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    return _seeded(T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_ff=48, d_kv=8, num_heads=4, num_layers=2,
                                           feed_forward_proj="gated-gelu", is_encoder_decoder=False)), seed)


def _projection(d_in: int, d_out: int) -> text.Projection:
    return _seeded(text.Projection(d_in, d_out), 3)


def _prefixed(prefix: str, module: nn.Module) -> dict:
    return {prefix + k: v.clone() for k, v in module.state_dict().items()}


def _ckpt(tmp_path: Path, cond: dict) -> Path:
    sd = {"model.diffusion_model.x_embedder.weight": torch.ones(2, 2),
          "first_stage_model.decoder.conv_in.weight": torch.ones(2, 2, 5),
          "scale_factor": torch.tensor(0.9), **cond}
    path = tmp_path / "0.ckpt"
    torch.save({"state_dict": sd, "global_step": np.int64(1)}, path)
    return path


@pytest.fixture(scope="module")
def audio_parts():
    bert_tok, t5_tok = tiny_bert_tokenizer(), tiny_t5_tokenizer()
    return bert_tok, t5_tok, _bert(len(bert_tok)), _projection(64, 32), _t5(len(t5_tok), 2)


CAPTIONS = ["A dog barks while rain falls", ""]
STRUCTS = ["<dog barking& start>@<rain& all>", ""]


def _ids(tok, texts):
    return tok(texts, truncation=True, max_length=77, padding="max_length", return_tensors="pt")["input_ids"]


def test_audio_encoder_from_lightning_checkpoint(tmp_path, audio_parts):
    bert_tok, t5_tok, bert, proj, t5 = audio_parts
    cond = {**_prefixed("cond_stage_model.caption_encoder.base.", bert),
            **_prefixed("cond_stage_model.caption_encoder.projection.", proj),
            **_prefixed("cond_stage_model.t5_transformer.", t5)}
    # Older transformers saved BertEmbeddings.position_ids in the state dict: tolerated, rebuilt.
    cond["cond_stage_model.caption_encoder.base.embeddings.position_ids"] = torch.arange(80)[None]
    ckpt = checkpoint.read_checkpoint(_ckpt(tmp_path, cond), "T")
    enc = text.AudioTextEncoder.from_checkpoint(ckpt.text, bert_tok, t5_tok)
    assert not any(t.is_meta for m in (enc.bert, enc.projection, enc.t5) for t in [*m.parameters(), *m.buffers()])
    out = enc.encode(CAPTIONS, STRUCTS)
    assert out.shape == (2, 154, 32)
    with torch.no_grad():
        h = bert(input_ids=_ids(bert_tok, CAPTIONS)).last_hidden_state
        e1 = h @ proj.linear1.weight.T
        ln = proj.layer_norm
        clap = F.layer_norm(e1 + F.gelu(e1) @ proj.linear2.weight.T, (32,), ln.weight, ln.bias)
        want = torch.cat([clap, t5(input_ids=_ids(t5_tok, STRUCTS)).last_hidden_state], dim=1)
        masked = bert(input_ids=_ids(bert_tok, CAPTIONS[:1]),
                      attention_mask=(_ids(bert_tok, CAPTIONS[:1]) != 0).long()).last_hidden_state
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert (masked - h[:1]).abs().max() > 1e-3  # no attention mask: the padding is attended to
    torch.testing.assert_close(enc.unconditional(2), enc.encode(["", ""], ["", ""]))
    torch.testing.assert_close(enc.unconditional(1)[0], out[1], rtol=1e-5, atol=1e-6)


def test_music_encoder_from_lightning_checkpoint(tmp_path):
    tok = tiny_t5_tokenizer()
    t5 = _t5(len(tok), 5)
    ckpt = checkpoint.read_checkpoint(_ckpt(tmp_path, _prefixed("cond_stage_model.transformer.", t5)), "T")
    enc = text.MusicTextEncoder.from_checkpoint(ckpt.text, tok)
    out = enc.encode(["calm piano over soft strings"])
    assert out.shape == (1, 77, 32)
    with torch.no_grad():
        torch.testing.assert_close(out, t5(input_ids=_ids(tok, ["calm piano over soft strings"])).last_hidden_state)
    with pytest.raises(ModelNotAvailable, match="not a Lumina-T2Audio checkpoint"):
        text.AudioTextEncoder.from_checkpoint(ckpt.text, None, tok)
    # a file keeping the tied embedding under one name only
    state = _prefixed("", t5)
    del state["encoder.embed_tokens.weight"]
    assert torch.equal(text.build_t5(state).encoder.embed_tokens.weight, t5.shared.weight)


def test_shapes_that_do_not_fit_are_refused(audio_parts):
    _, _, bert, proj, _ = audio_parts
    state = _prefixed("", bert)
    state["encoder.layer.1.output.dense.weight"] = torch.zeros(64, 95)
    with pytest.raises(ModelNotAvailable, match="CLAP text \\(BERT\\) weights do not fit"):
        text.build_bert(state)
    with pytest.raises(ModelNotAvailable, match="not a Lumina-T2Music checkpoint"):
        text.MusicTextEncoder.from_checkpoint(_prefixed("caption_encoder.projection.", proj), None)
    partial = {**_prefixed("caption_encoder.base.", bert), **_prefixed("t5_transformer.", audio_parts[4])}
    with pytest.raises(ModelNotAvailable, match=r"no cond_stage_model\.caption_encoder\.projection\.linear1\.weight"):
        text.AudioTextEncoder.from_checkpoint(partial, None, None)


def _reference_namespace() -> dict:
    """The reference's embedder classes and CLAP Projection, exec'd from its source."""
    def show(path):
        return subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{path}"], check=True,
                              capture_output=True, text=True).stdout

    ns = {"torch": torch, "nn": nn, "F": F, "AbstractEncoder": nn.Module}
    modules = show("lumina_audio/models/encoders/modules.py")
    clap = show("lumina_audio/models/encoders/CLAP/clap.py")
    for src, name in ((modules, "FrozenFLANEmbedder"), (modules, "FrozenCLAPFLANEmbedder"), (clap, "Projection")):
        start = src.index(f"class {name}(")
        end = src.find("\nclass ", start + 1)
        exec(src[start:end if end > 0 else None], ns)
    music = show("lumina_music/models/encoders/modules.py")
    start = music.index("class FrozenFLANEmbedder(")
    ns["music_flan_source"] = music[start:music.find("\nclass ", start + 1)]
    ns["audio_flan_source"] = modules[modules.index("class FrozenFLANEmbedder("):modules.find(
        "\nclass ", modules.index("class FrozenFLANEmbedder(") + 1)]
    return ns


@pytest.mark.skipif(not MIRROR.is_dir(), reason="the reference checkout is not on this machine")
def test_against_the_reference_embedders(audio_parts):
    bert_tok, t5_tok, bert, proj, t5 = audio_parts
    ref = _reference_namespace()
    assert ref["music_flan_source"] == ref["audio_flan_source"]  # T2Music's embedder is the same code
    ref_proj = ref["Projection"](64, 32).eval()
    ref_proj.load_state_dict(proj.state_dict(), strict=False)
    assert set(ref_proj.state_dict()) == set(proj.state_dict())  # linear1, linear2, layer_norm (+ no dropout state)
    this = SimpleNamespace(clap_tokenizer=bert_tok, t5_tokenizer=t5_tok, max_length=77, device="cpu",
                           caption_encoder=SimpleNamespace(base=bert, projection=ref_proj), t5_transformer=t5)
    ours = text.AudioTextEncoder(bert, proj, t5, bert_tok, t5_tok)
    with torch.no_grad():
        want = ref["FrozenCLAPFLANEmbedder"].encode(this, {"ori_caption": CAPTIONS, "struct_caption": STRUCTS})
        torch.testing.assert_close(ours.encode(CAPTIONS, STRUCTS), want, rtol=1e-6, atol=1e-7)
        uc = ref["FrozenCLAPFLANEmbedder"].encode(this, {"ori_caption": "", "struct_caption": ""})  # the demo's uc
        torch.testing.assert_close(ours.unconditional(), uc, rtol=1e-6, atol=1e-7)
        flan = SimpleNamespace(tokenizer=t5_tok, transformer=t5, max_length=77, device="cpu")
        want = ref["FrozenFLANEmbedder"].forward(flan, ["calm piano"])
        torch.testing.assert_close(text.MusicTextEncoder(t5, t5_tok).encode(["calm piano"]), want)


def test_struct_caption_fallback_and_parsing():
    assert text.fallback_struct_caption("A Dog Barks") == "<a dog barks, all>"  # n2s_openai.py, comma and all
    assert text.struct_caption("A Dog Barks") == "<a dog barks, all>"
    assert text.struct_caption("A Dog Barks", "  ") == "<a dog barks, all>"
    assert text.struct_caption("x", " <dog barking& start>@<rain& all> ") == "<dog barking& start>@<rain& all>"
    # the few-shot answers of n2s_openai.py's prompt, as GPT wrote them (one with a full stop)
    assert text.parse_struct_caption("<running water& all>@<birds chriping& start>@<cow footsteps& mid>"
                                     "@<birds flying away& end>.") == [
        ("running water", "all"), ("birds chriping", "start"), ("cow footsteps", "mid"), ("birds flying away", "end")]
    assert text.parse_struct_caption("<train passing& all>@<short honks three times& end>")[1] == (
        "short honks three times", "end")
    assert text.parse_struct_caption(text.fallback_struct_caption("Rain, thunder")) == [("rain, thunder", "all")]
    assert text.parse_struct_caption("<dog &START>") == [("dog", "start")]


@pytest.mark.parametrize("bad, why", [
    ("dog barking", "Cannot read 'dog barking'"),
    ("<dog barking& start>@", "Cannot read ''"),
    ("<dog barking start>", "Cannot read"),
    ("<dog barking& later>", "'later' is not one of all, start, mid, end"),
    ("<& all>", "names no sound"),
    ("<a& all><b& end>", "Cannot read"),
    (".", "empty"),
])
def test_unparseable_struct_captions(bad, why):
    with pytest.raises(InvalidInput, match=why):
        text.parse_struct_caption(bad)
    with pytest.raises(InvalidInput):
        text.struct_caption("x", bad)
