"""The built-in tiny models: real classes, HF cache layout, same weights everywhere, normal loading path."""

import hashlib
import json

import pytest
from diffusers import Lumina2Pipeline, LuminaNextDiT2DModel, LuminaPipeline

from studio.zoo.builtin import builtin_repo_id, builtin_revision, ensure_builtin
from studio.zoo.tiny_parts import tiny_gemma_tokenizer


def snapshot_dir(cache, name):
    return cache / f"models--studio-builtin--{name}" / "snapshots" / builtin_revision(name)


@pytest.mark.parametrize("name, pipeline_cls", [("tiny-lumina-next", LuminaPipeline),
                                                ("tiny-lumina2", Lumina2Pipeline)])
def test_saved_in_diffusers_format_in_the_hf_cache_and_loaded_like_a_download(model_cache, name, pipeline_cls):
    snapshot = snapshot_dir(model_cache, name)
    index = json.loads((snapshot / "model_index.json").read_text())
    assert index["_class_name"] == pipeline_cls.__name__
    weights = sorted(p.name for p in snapshot.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth"})
    assert weights and all(w.endswith(".safetensors") for w in weights)
    refs = model_cache / f"models--studio-builtin--{name}" / "refs" / "main"
    assert refs.read_text() == builtin_revision(name)

    # The same call that loads a downloaded checkpoint, offline.
    pipe = pipeline_cls.from_pretrained(builtin_repo_id(name), cache_dir=str(model_cache), local_files_only=True)
    assert type(pipe).__name__ == pipeline_cls.__name__


def test_real_architecture_classes(model_cache):
    pipe = LuminaPipeline.from_pretrained(builtin_repo_id("tiny-lumina-next"), cache_dir=str(model_cache),
                                          local_files_only=True)
    assert isinstance(pipe.transformer, LuminaNextDiT2DModel)
    assert type(pipe.text_encoder).__name__ == "GemmaModel"
    assert type(pipe.vae).__name__ == "AutoencoderKL"


def test_same_weights_on_every_build(model_cache, tmp_path):
    ensure_builtin("tiny-lumina-next", tmp_path)

    def digests(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*.safetensors")}

    assert digests(snapshot_dir(tmp_path, "tiny-lumina-next")) == digests(snapshot_dir(model_cache, "tiny-lumina-next"))


def test_second_call_reuses_the_snapshot(model_cache):
    weights = next(snapshot_dir(model_cache, "tiny-lumina2").rglob("*.safetensors"))
    before = weights.stat().st_mtime_ns
    assert ensure_builtin("tiny-lumina2", model_cache) == (builtin_repo_id("tiny-lumina2"),
                                                          builtin_revision("tiny-lumina2"))
    assert weights.stat().st_mtime_ns == before


def test_tokenizer_handles_any_text():
    tok = tiny_gemma_tokenizer()
    for text in ["a cat", "一只猫在雪地里", "🐱🦊 emoji", ""]:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id  # Gemma's <bos>: an empty prompt still has one token
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_retrained_shipped_weights_get_a_snapshot_of_their_own(tmp_path):
    """A mini model's weights live in the repository: when they are retrained, a cache built from the old ones
    must not be taken for them."""
    from studio.zoo.builtin import shipped_weights_digest

    folder = tmp_path / "mini-x" / "transformer"
    folder.mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(b"old")
    before = shipped_weights_digest("mini-x", tmp_path)
    (folder / "weights.safetensors").write_bytes(b"new")
    shipped_weights_digest.cache_clear()
    assert shipped_weights_digest("mini-x", tmp_path) != before
    assert shipped_weights_digest("tiny-x", tmp_path) == ""  # nothing shipped: the builder's revision as before
    assert builtin_revision("mini-lumina-next") != builtin_revision("tiny-lumina-next")
