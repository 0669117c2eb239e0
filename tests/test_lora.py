"""LoRA adapters end to end through the one job path: tiny LoRAs made here with peft for the tiny
Lumina-Image 2.0 and Lumina-Next models (and tiny Wan), loaded for one job and gone after it."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from studio.history import JobStatus
from studio.media import read_png_metadata
from studio.png_params import read_parameters

from helpers import image_params, pixels, snapshot

TRANSFORMERS = {"tiny-lumina2": "Lumina2Transformer2DModel", "tiny-lumina-next": "LuminaNextDiT2DModel",
                "tiny-wan": "WanTransformer3DModel"}


def make_lora(studio, model: str, name: str, seed: int = 0, layout: str = "diffusers", rank: int = 4,
              targets=("to_q", "to_v")) -> str:
    """A LoRA for the tiny model's transformer, written to the LoRA folder in `layout`: peft's state dict
    (lora_A/lora_B under `transformer.`) or kohya's (lora_unet_*, lora_down/lora_up, alpha)."""
    import diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    model_cls = getattr(diffusers, TRANSFORMERS[model])
    transformer = model_cls.from_pretrained(snapshot(studio, model) / "transformer")
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False)
    inject_adapter_in_model(config, transformer)
    state = get_peft_model_state_dict(transformer)
    if layout == "diffusers":
        tensors = {f"transformer.{k}": v.contiguous() for k, v in state.items()}
    else:
        tensors = {}
        for key, value in state.items():
            base, _, part = key.rpartition(".lora_")
            stem = "lora_unet_" + base.replace(".", "_")
            tensors[f"{stem}.lora_{'down' if part.startswith('A') else 'up'}.weight"] = value.contiguous()
            tensors[f"{stem}.alpha"] = torch.tensor(float(rank))
    studio.settings.lora_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(studio.settings.lora_dir / f"{name}.safetensors"))
    return name


def run(studio, model, **params):
    return studio.run("image", image_params(model=model, width=128, height=128, **params))


@pytest.mark.parametrize("model", ["tiny-lumina2", "tiny-lumina-next"])
def test_a_lora_changes_the_picture_and_leaves_nothing_behind(studio, model):
    make_lora(studio, model, "style")
    make_lora(studio, model, "other", seed=1, layout="kohya")
    plain = run(studio, model)
    styled = run(studio, model, loras=[{"name": "style", "weight": 1.0}])
    after = run(studio, model)
    both = run(studio, model, loras="style:0.5, other:-1")
    zero = run(studio, model, loras=[{"name": "style", "weight": 0}])
    for job in (plain, styled, after, both, zero):
        assert job.status is JobStatus.DONE, job.error
    base = pixels(plain.outputs[0].path)
    assert not np.array_equal(pixels(styled.outputs[0].path), base)  # the adapter changes the output
    assert np.array_equal(pixels(after.outputs[0].path), base)  # and is gone after its job
    assert not np.array_equal(pixels(both.outputs[0].path), pixels(styled.outputs[0].path))
    assert np.array_equal(pixels(zero.outputs[0].path), base)  # weight 0 is no LoRA

    # Recorded in the row and the PNG; a re-run from the row is exact.
    record = studio.history.get_job(both.id)
    assert record.params["loras"] == [{"name": "style", "weight": 0.5}, {"name": "other", "weight": -1.0}]
    again = studio.run("image", record.params)
    assert np.array_equal(pixels(again.outputs[0].path), pixels(both.outputs[0].path))
    meta = read_png_metadata(both.outputs[0].path)
    assert meta.infotext.prompt.endswith("<lora:style:0.5> <lora:other:-1>")
    hashes = meta.infotext.fields["Lora hashes"]
    assert hashes.startswith("style: ") and ", other: " in hashes
    assert len(hashes.split(", ")[0].split(": ")[1]) == 12
    assert [a["name"] for a in meta.job["used"]["loras"]] == ["style", "other"]
    found = read_parameters(both.outputs[0].path)
    assert found.params["loras"] == record.params["loras"]


def test_a1111_hash_is_the_sha256_of_the_tensor_data(studio):
    import hashlib

    from studio.zoo.loras import short_hash

    path = studio.settings.lora_dir / f"{make_lora(studio, 'tiny-lumina2', 'h')}.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert short_hash(path) == hashlib.sha256(raw[8 + length:]).hexdigest()[:12]


def test_bad_loras_fail_clearly_and_the_worker_lives_on(studio):
    lora_dir = studio.settings.lora_dir
    make_lora(studio, "tiny-lumina-next", "next-only")
    (lora_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    good = lora_dir / f"{make_lora(studio, 'tiny-lumina2', 'cut')}.safetensors"
    good.write_bytes(good.read_bytes()[:-64])  # the header says more than the file holds
    cases = {
        "next-only": "does not fit Lumina2Transformer2DModel: 0 of its",
        "nobody": "Unknown LoRA 'nobody'",
        "broken": "not a readable safetensors file",
        "cut": "corrupt or cut short",
        "../escape": "never by a path",
        "/etc/passwd": "never by a path",
        "style.ckpt": ".ckpt files are pickles",
    }
    for name, reason in cases.items():
        job = run(studio, "tiny-lumina2", loras=[{"name": name}])
        assert job.status is JobStatus.FAILED and reason in job.error, (name, job.error)
        assert not job.outputs and studio.history.get_job(job.id).status is JobStatus.FAILED
    heavy = run(studio, "tiny-lumina2", loras="cut:4.5")
    assert heavy.status is JobStatus.FAILED and "less than or equal to 4" in heavy.error
    for other in ("tiny-llamagen-t2i", "tiny-lumina-t2i", "tiny-infinity"):
        refused = studio.run("image", {"model": other, "prompt": "a cat", "loras": "x"})
        assert refused.status is JobStatus.FAILED and "takes no LoRA adapters" in refused.error, refused.error
    audio = studio.run("audio", {"model": "tiny-stable-audio", "prompt": "rain", "loras": "x"})
    assert audio.status is JobStatus.FAILED and "loras: not a parameter" in audio.error
    assert not list(studio.settings.outputs_dir.rglob("*.png"))
    assert run(studio, "tiny-lumina2").status is JobStatus.DONE  # the worker runs on, the model unharmed


def test_a_failed_load_leaves_the_model_as_it_was(studio):
    make_lora(studio, "tiny-lumina2", "ok")
    make_lora(studio, "tiny-lumina-next", "misfit")
    plain = run(studio, "tiny-lumina2")
    failed = run(studio, "tiny-lumina2", loras="ok, misfit")  # the second does not fit: the first is not kept
    assert failed.status is JobStatus.FAILED and "misfit" in failed.error
    assert np.array_equal(pixels(run(studio, "tiny-lumina2").outputs[0].path), pixels(plain.outputs[0].path))


def test_lora_card_and_folder_names(studio):
    from studio.zoo.cards import ModelCard

    card = ModelCard.model_validate({
        "id": "some-lora", "title": "Some LoRA", "family": "wan", "tasks": ["lora"], "source": {"repo": "a/b"},
        "library": "native", "pipeline": "lora", "lora": {"file": "some.safetensors"},
        "allow_patterns": ["some.safetensors"], "runnable": False, "memory_gb": 0.1, "license": "mit"})
    assert card.lora.file == "some.safetensors"
    with pytest.raises(ValueError, match="both or neither"):
        ModelCard.model_validate({**card.model_dump(), "lora": None})
    make_lora(studio, "tiny-lumina2", "listed")
    assert "listed" in studio.loras.names()


def test_wan_takes_a_lora(studio):
    make_lora(studio, "tiny-wan", "motion")
    params = {"model": "tiny-wan", "prompt": "waves", "steps": 2, "frames": 5, "seed": 3}
    plain = studio.run("video", params)
    styled = studio.run("video", {**params, "loras": "motion:1"})
    after = studio.run("video", params)
    assert plain.status is styled.status is after.status is JobStatus.DONE, styled.error
    posters = [next(o for o in j.outputs if o.kind == "poster") for j in (plain, styled, after)]
    assert not np.array_equal(pixels(posters[1].path), pixels(posters[0].path))
    assert np.array_equal(pixels(posters[2].path), pixels(posters[0].path))
    meta = read_png_metadata(posters[1].path)
    assert "<lora:motion:1>" in meta.infotext.prompt and "Lora hashes" in meta.infotext.fields
    assert json.dumps(studio.history.get_job(styled.id).params["loras"]) == '[{"name": "motion", "weight": 1.0}]'
