"""Quantized transformers (runtime/quantize.py, runtime/gguf_transformer.py), run on the CPU end to end.

- torchao int8 weight-only: tiny Wan (diffusers, quantized as it loads) and tiny Lumina-T2I (native,
  quantized after load) generate through `studio.run`; the transformer's footprint is exactly what the
  int8 data plus per-row scale and zero point weigh (1 byte a weight + 5 bytes a row: (1 + 5/32) / 4 =
  0.289 of float32 on the tiny model's 32-wide rows, 1/2 of bf16 for real rows of thousands); the
  poster frame is within a mean 1.0 of 255 of the unquantized one.
- GGUF Q8_0 / Q4_0: the tiny Wan DiT written as a community file (original key names, its 5-D patch
  embedding folded to 4 with `comfy.gguf.orig_shape`) is loaded through its card (the same path as a
  downloaded file) and generates; packed footprint exactly 34/32 (Q8_0) and 18/32 (Q4_0) bytes
  a quantized weight (8.5 and 4.5 bits); poster within 1.0 (Q8_0) and 3.0 (Q4_0) of 255.
- A GGUF of another architecture (tiny Lumina 2's DiT), or of another size of Wan, is refused before
  loading: a failed job row with the reason, no output file, the worker still running jobs.
- fp8 on the CPU is refused with what to use instead.
- The quantization is recorded in the job JSON (`used.quantization`) and the infotext.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
import torch
import yaml

from studio.cli import flags
from studio.errors import InvalidInput
from studio.history import JobStatus
from studio.media import read_png_metadata
from studio.runtime.footprint import Footprint, storage_bytes
from studio.runtime.loader import load_pipeline
from studio.runtime.placement import Placement
from studio.runtime.quantize import estimated_memory_gb, ratio_to_bf16
from studio.services import Studio
from studio.settings import REPO_ROOT, Settings
from studio.zoo.builtin_gguf import write_gguf
from studio.zoo.cards import CardRegistry

from helpers import pixels

VIDEO = {"prompt": "waves on a beach", "steps": 2, "seed": 18, "frames": 9}
GiB = 2**30


def _poster(job):
    return next(o for o in job.outputs if o.kind == "poster").path


def _linear_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, model_cache):
    """The unquantized tiny Wan's poster frame and metadata, from a studio of its own (a second studio on
    the same data folder would hand its jobs to the first, which owns the queue); run once for the module,
    as every test compares with the same clip."""
    home = tmp_path_factory.mktemp("baseline")
    with Studio(Settings.load(env={}, home=home, model_cache=model_cache)) as studio:
        job = studio.run("video", {"model": "tiny-wan", **VIDEO}, timeout=300)
        assert job.status is JobStatus.DONE, job.error
        return pixels(_poster(job)).astype(np.float64), read_png_metadata(_poster(job))


def _studio(settings, **changes):
    return Studio(settings.replace(**changes))


def test_int8_wan_generates_on_cpu_recorded_and_close_to_unquantized(settings, baseline):
    base_pixels, base_meta = baseline
    assert base_meta.job["used"]["quantization"] == "none"
    assert "Quantization" not in base_meta.raw["parameters"]
    with _studio(settings, quantization="int8") as studio:
        job = studio.run("video", {"model": "tiny-wan", **VIDEO}, timeout=300)
        assert job.status is JobStatus.DONE, job.error
        meta = read_png_metadata(_poster(job))
        assert meta.job["used"]["quantization"] == "int8 (torchao weight-only)"
        assert "Quantization: int8 (torchao weight-only)" in meta.raw["parameters"]
        diff = np.abs(pixels(_poster(job)).astype(np.float64) - base_pixels).mean()
        assert diff < 1.0, diff  # measured 0.017 of 255
        (resident,) = studio.scheduler.residents()
    plain = Footprint.measure(load_pipeline(studio.cards.get("tiny-wan"), settings, cards=studio.cards))
    assert plain.total - resident.bytes > 0


def test_int8_footprint_is_the_int8_data_and_scales(settings):
    cards = CardRegistry.load([REPO_ROOT / "model_zoo"])
    card = cards.get("tiny-wan")
    plain = load_pipeline(card, settings, cards=cards)
    quantized = load_pipeline(card, settings.replace(quantization="int8"), cards=cards)
    q_weights = [w for w in _linear_weights(quantized.transformer) if type(w).__name__ == "Int8Tensor"]
    assert len(q_weights) >= 20  # every Linear but the ones Wan keeps in float32 (its time embedder)
    for w in q_weights:  # int8 data + a float32 scale and an int8 zero point per output row
        assert storage_bytes(w) == w.numel() + w.shape[0] * (4 + 1)
    int8_bytes = sum(storage_bytes(w) for w in q_weights)
    f32_bytes = sum(w.numel() * 4 for w in q_weights)
    # 1/4 of float32 plus 5 bytes a row: at most (1 + 5/32) / 4 here, where the narrowest rows are 32 wide.
    assert 1 / 4 < int8_bytes / f32_bytes <= (1 + 5 / 32) / 4
    before = Footprint.measure(plain).components["transformer"]
    after = Footprint.measure(quantized).components["transformer"]
    assert after == before - f32_bytes + int8_bytes
    # The other components are untouched.
    assert Footprint.measure(plain).components["vae"] == Footprint.measure(quantized).components["vae"]


def test_int8_native_lumina_t2i_generates(settings):
    with _studio(settings, quantization="int8") as studio:
        job = studio.run("image", {"model": "tiny-lumina-t2i", "prompt": "a lighthouse", "steps": 2, "seed": 3},
                         timeout=300)
        assert job.status is JobStatus.DONE, job.error
        meta = read_png_metadata(job.outputs[0].path)
        assert meta.job["used"]["quantization"] == "int8 (torchao weight-only)"
        assert "Quantization: int8" in meta.raw["parameters"]


@pytest.mark.parametrize("card_id, kind, block_bytes, tolerance", [
    ("tiny-wan-gguf-q8", "Q8_0", 34, 1.0),   # measured 0.015 of 255
    ("tiny-wan-gguf-q4", "Q4_0", 18, 3.0),   # measured 0.24
])
def test_gguf_transformer_loads_through_its_card_and_generates(settings, baseline, card_id, kind,
                                                              block_bytes, tolerance):
    base_pixels, _ = baseline
    with Studio(settings) as studio:
        job = studio.run("video", {"model": card_id, **VIDEO}, timeout=300)
    assert job.status is JobStatus.DONE, job.error
    meta = read_png_metadata(_poster(job))
    description = f"GGUF {kind} (tiny-wan-{kind}.gguf)"
    assert meta.job["used"]["quantization"] == description
    assert f"Quantization: {description}" in meta.raw["parameters"]
    diff = np.abs(pixels(_poster(job)).astype(np.float64) - base_pixels).mean()
    assert diff < tolerance, diff

    card = studio.cards.get(card_id)
    # Written as community files are: Wan's 5-D patch embedding folded to GGML's 4 dimensions, its shape noted.
    from gguf import GGUFReader

    from studio.runtime.loader import _snapshot_dir, resolve_source

    folder = _snapshot_dir(*resolve_source(studio.cards.get(card.transformer_gguf.card), settings), settings)
    reader = GGUFReader(str(folder / card.transformer_gguf.file))
    (patch,) = [t for t in reader.tensors if t.name == "patch_embedding.weight"]
    assert len(patch.shape) == 4 and "comfy.gguf.orig_shape.patch_embedding.weight" in reader.fields

    gguf = load_pipeline(card, settings, cards=studio.cards)
    plain = load_pipeline(studio.cards.get("tiny-wan"), settings, cards=studio.cards)
    packed = [w for w in _linear_weights(gguf.transformer) if hasattr(w, "quant_type")]
    assert len(packed) >= 20
    assert all(storage_bytes(w) == math.prod(w.quant_shape) * block_bytes // 32 for w in packed)
    f32_bytes = sum(math.prod(w.quant_shape) * 4 for w in packed)
    before = Footprint.measure(plain).components["transformer"]
    after = Footprint.measure(gguf).components["transformer"]
    assert after == before - f32_bytes + sum(storage_bytes(w) for w in packed)
    assert after < before


def _lumina2_gguf(path):
    from studio.zoo.builtin_image import build_tiny_lumina2

    write_gguf(build_tiny_lumina2().transformer.state_dict(), path, "Q8_0", "lumina2")


def _wider_wan_gguf(path):
    from studio.zoo.builtin_gguf import wan_original_name
    from studio.zoo.builtin_video import _tiny_wan_transformer

    model = _tiny_wan_transformer(in_channels=16, out_channels=16, )
    wide = type(model)(**{**model.config, "ffn_dim": 128})
    write_gguf({wan_original_name(k): v for k, v in wide.state_dict().items()}, path, "Q8_0", "wan")


def _fake_download(settings, repo: str, filename: str, write) -> None:
    """A GGUF file in the model cache as a download leaves it (snapshot folder, refs/main)."""
    revision = hashlib.sha1(repo.encode()).hexdigest()
    folder = settings.model_cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    write(snapshot / filename)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)


def _gguf_cards(settings, name: str, repo: str, filename: str) -> None:
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    holder = {"id": f"{name}-file", "title": f"{name} file", "family": "wan", "tasks": ["component"],
              "source": {"repo": repo}, "library": "native", "pipeline": "WanTransformer3DModel",
              "allow_patterns": [filename], "memory_gb": 0.01, "license": "other", "runnable": False}
    variant = {"id": name, "title": name, "family": "wan", "tasks": ["video"], "source": {"builtin": "tiny-wan"},
               "pipeline": "WanPipeline", "requires": [f"{name}-file"],
               "transformer_gguf": {"card": f"{name}-file", "file": filename}, "dtype": "float32",
               "memory_gb": 0.01, "license": "other", "tiny": True, "size_multiple": 16, "min_size": 32,
               "defaults": {"width": 64, "height": 48, "frames": 9}}
    for card in (holder, variant):
        (settings.user_cards_dir / f"{card['id']}.yaml").write_text(yaml.safe_dump(card))


@pytest.mark.parametrize("write, why", [
    (_lumina2_gguf, "made for 'lumina2'"),
    (_wider_wan_gguf, "wrong shape: blocks.0.ffn.net.0.proj.weight (128, 32) (expected (64, 32))"),
])
def test_gguf_of_another_architecture_is_refused(settings, write, why):
    _fake_download(settings, "someone/other-gguf", "other.gguf", write)
    _gguf_cards(settings, "tiny-wan-other-gguf", "someone/other-gguf", "other.gguf")
    with Studio(settings) as studio:
        assert "tiny-wan-other-gguf" in studio.cards.cards, studio.cards.problems
        job = studio.run("video", {"model": "tiny-wan-other-gguf", **VIDEO}, timeout=300)
        assert job.status is JobStatus.FAILED
        assert "other.gguf" in job.error and "is not a GGUF of this model's transformer" in job.error
        assert why in job.error
        record = studio.history.get_job(job.id)
        assert record.status is JobStatus.FAILED and record.error == job.error and not record.assets
        assert not list(settings.outputs_dir.rglob("*.mp4"))
        after = studio.run("video", {"model": "tiny-wan", **VIDEO}, timeout=300)  # the worker runs on
        assert after.status is JobStatus.DONE, after.error


def test_fp8_on_the_cpu_is_refused_clearly(settings):
    with _studio(settings, quantization="fp8") as studio:
        job = studio.run("video", {"model": "tiny-wan", **VIDEO}, timeout=300)
        assert job.status is JobStatus.FAILED
        assert "fp8" in job.error and "CUDA GPU" in job.error and "int8" in job.error
        assert studio.history.get_job(job.id).error == job.error
        after = studio.run("video", {"model": "tiny-wan-gguf-q8", **VIDEO}, timeout=300)  # GGUF: no torchao fp8
        assert after.status is JobStatus.DONE, after.error


def test_the_setting_from_env_flag_and_card(tmp_path):
    assert Settings.load(env={"STUDIO_QUANTIZATION": "int8"}, home=tmp_path).quantization == "int8"
    assert Settings.load(env={}, home=tmp_path).quantization == "auto"
    with pytest.raises(InvalidInput, match="quantization must be one of"):
        Settings.load(env={"STUDIO_QUANTIZATION": "int4"}, home=tmp_path)
    parser = __import__("argparse").ArgumentParser()
    flags.add_settings_flags(parser)
    args = parser.parse_args(["--quantization", "int8", "--home", str(tmp_path)])
    assert flags.settings_from(args).quantization == "int8"


def test_card_estimates_scale_with_the_quantization(settings):
    cards = CardRegistry.load([REPO_ROOT / "model_zoo"])
    big = cards.get("wan2.1-t2v-14b")
    assert (big.memory_gb, big.transformer_gb) == (58.0, 26.6)
    assert ratio_to_bf16("int8") == 0.5 and ratio_to_bf16("Q8_0") == 8.5 / 16 and ratio_to_bf16("Q4_0") == 4.5 / 16
    assert estimated_memory_gb(big, "int8") == pytest.approx(58 - 26.6 / 2)
    assert estimated_memory_gb(big, "none") == 58.0
    with _studio(settings, quantization="int8") as studio:  # the scheduler's estimate before the model loads
        need = studio.scheduler.need_bytes(studio.cards.get("wan2.1-t2v-14b"), Placement.FULL, 0)
        assert need == int((58 - 26.6 / 2) * GiB)
    for name, q in (("q8", "Q8_0"), ("q4", "Q4_0")):  # the GGUF variants' own estimates say the same
        variant = cards.get(f"wan2.1-t2v-14b-gguf-{name}")
        assert variant.memory_gb == pytest.approx(estimated_memory_gb(big, q), abs=0.5)
        assert variant.transformer_gguf.file == f"wan2.1-t2v-14b-{q}.gguf"


def test_a_gguf_card_must_require_the_card_holding_its_file():
    cards = CardRegistry.load([REPO_ROOT / "model_zoo"])
    data = cards.get("tiny-wan-gguf-q8").model_dump(mode="json")
    data["requires"] = []
    with pytest.raises(ValueError, match="must also be in `requires`"):
        type(cards.get("tiny-wan-gguf-q8")).model_validate(data)


def test_a_gguf_card_downloads_only_its_file_and_the_rest_of_the_base_repo():
    from studio.zoo.hub import RemoteFile, select_files

    cards = CardRegistry.load([REPO_ROOT / "model_zoo"])
    gguf_repo = [RemoteFile(path=f"wan2.1-t2v-14b-{q}.gguf", size=1, etag=q, lfs=True)
                 for q in ("Q3_K_S", "Q4_0", "Q4_K_M", "Q5_0", "Q8_0")] + [RemoteFile("README.md", 1, "r", False)]
    holder = cards.get("wan2.1-t2v-14b-gguf-q4-file")
    assert [f.path for f in select_files(gguf_repo, holder)] == ["wan2.1-t2v-14b-Q4_0.gguf"]
    base_repo = [RemoteFile(path=p, size=1, etag=p, lfs=True) for p in (
        "model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer/diffusion_pytorch_model-00001-of-00012.safetensors", "text_encoder/config.json",
        "text_encoder/model-00001-of-00005.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json", "tokenizer/spiece.model")]
    chosen = {f.path for f in select_files(base_repo, cards.get("wan2.1-t2v-14b-gguf-q4"))}
    assert chosen == {f.path for f in base_repo} - {"transformer/diffusion_pytorch_model.safetensors.index.json",
                                                     "transformer/diffusion_pytorch_model-00001-of-00012.safetensors"}
    assert cards.get("wan2.1-t2v-14b-gguf-q4").requires == ["wan2.1-t2v-14b-gguf-q4-file"]


def test_fp8_layerwise_storage_still_works_and_is_recorded(tmp_path, model_cache):
    settings = Settings.load(env={"STUDIO_FP8": "1"}, home=tmp_path / "home", model_cache=model_cache)
    with Studio(settings) as studio:
        job = studio.run("image", {"model": "tiny-lumina-t2i", "prompt": "a lighthouse", "steps": 2, "seed": 3},
                         timeout=300)
        assert job.status is JobStatus.DONE, job.error
        meta = read_png_metadata(job.outputs[0].path)
        assert meta.job["used"]["quantization"] == "fp8 storage (layerwise casting)"
    # With a torchao quantization on, layerwise casting is left off (the two do not stack).
    both = load_pipeline(studio.cards.get("tiny-lumina-t2i"), settings.replace(quantization="int8"), cards=studio.cards)
    weight = both.transformer.layers[0].feed_forward.w1.weight
    assert type(weight).__name__ == "Int8Tensor" and weight.dtype == torch.float32


@pytest.mark.parametrize("placement", ["model_offload", "group_offload", "sequential_offload"])
def test_quantized_transformers_run_under_every_offload_placement(settings, placement):
    # On the CPU the offload hooks move weights between the CPU and itself: this holds that torchao's and
    # GGUF's tensors go through diffusers' hooks; the CUDA transfers themselves are not exercised here.
    for model, quantization in (("tiny-wan", "int8"), ("tiny-wan-gguf-q4", "auto")):
        with _studio(settings, placement=placement, quantization=quantization) as studio:
            job = studio.run("video", {"model": model, **VIDEO}, timeout=300)
            assert job.status is JobStatus.DONE, job.error
            assert read_png_metadata(_poster(job)).job["used"]["placement"] == placement


def test_int8_for_every_model_leaves_those_without_a_transformer_as_they_are(settings):
    with _studio(settings, quantization="int8") as studio:
        job = studio.run("image", {"model": "tiny-llamagen-c2i", "prompt": "golden retriever", "seed": 1},
                         timeout=300)
        assert job.status is JobStatus.DONE, job.error
        # LlamaGen's GPT is not a `transformer` component: left as it is, and recorded so.
        assert read_png_metadata(job.outputs[0].path).job["used"]["quantization"] == "none"
        job = studio.run("audio", {"model": "tiny-audioldm2", "prompt": "rain", "steps": 2, "seed": 1,
                                   "seconds": 1.5}, timeout=300)
        assert job.status is JobStatus.DONE, job.error  # a diffusers UNet pipeline: nothing to quantize


def test_the_models_tab_shows_the_scaled_estimate(settings):
    from studio.ui.models_tab import details

    with _studio(settings, quantization="int8") as studio:
        text = details(studio, "wan2.1-t2v-14b")
        assert "**Needs about** 44.7 GB of GPU memory (transformer quantized to int8, weight-only)" in text
        assert "(transformer from the GGUF file wan2.1-t2v-14b-Q4_0.gguf)" in details(studio, "wan2.1-t2v-14b-gguf-q4")


def test_a_quantization_per_model_beside_one_for_every_model(tmp_path):
    """`MODEL=MODE` pairs set one model's quantization, beside (or instead of) the mode for all the others;
    a model the setting does not name keeps its card's."""
    from studio.runtime.quantize import mode_for

    cards = CardRegistry.load([REPO_ROOT / "model_zoo"])
    wan, lumina = cards.get("tiny-wan"), cards.get("tiny-lumina-t2i")
    per_model = Settings.load(env={"STUDIO_QUANTIZATION": "tiny-wan=int8"}, home=tmp_path)
    assert (mode_for(wan, per_model), mode_for(lumina, per_model)) == ("int8", lumina.quantization or "none")
    both = Settings.load(env={"STUDIO_QUANTIZATION": "none, tiny-lumina-t2i=int8"}, home=tmp_path)
    assert (mode_for(wan, both), mode_for(lumina, both)) == ("none", "int8")
    for bad, why in (("tiny-wan=int4", "got 'tiny-wan=int4'"), ("../x=int8", "is not a model id")):
        with pytest.raises(InvalidInput, match=re.escape(why)):
            Settings.load(env={"STUDIO_QUANTIZATION": bad}, home=tmp_path)
    parser = __import__("argparse").ArgumentParser()
    flags.add_settings_flags(parser)
    args = parser.parse_args(["--quantization", "tiny-wan=int8", "--home", str(tmp_path)])
    assert mode_for(wan, flags.settings_from(args)) == "int8"
