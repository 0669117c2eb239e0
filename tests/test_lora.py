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

from helpers import image_params, make_lora, pixels


def test_a_lora_card_downloads_like_a_model_and_loads_by_its_id(tmp_path, model_cache):
    import yaml
    from fakehub import FakeHub, hub_online

    from studio.services import Studio
    from studio.settings import Settings

    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache)
    with Studio(settings) as studio:
        make_lora(studio, "tiny-lumina-next", "made")
        weights = (settings.lora_dir / "made.safetensors").read_bytes()
        plain = run(studio, "tiny-lumina-next")
        folder = run(studio, "tiny-lumina-next", loras="made")
    (settings.lora_dir / "made.safetensors").unlink()
    card = {"id": "tiny-next-style", "title": "Tiny Lumina-Next style (LoRA)", "family": "lumina-next",
            "tasks": ["lora"], "source": {"repo": "test-org/tiny-next-lora"}, "library": "native", "pipeline": "lora",
            "lora": {"file": "style.safetensors"}, "allow_patterns": ["style.safetensors"], "runnable": False,
            "memory_gb": 0.01, "license": "mit"}
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    (settings.user_cards_dir / "tiny-next-style.yaml").write_text(yaml.safe_dump(card))
    with FakeHub() as hub, hub_online():
        hub.add_repo("test-org/tiny-next-lora", {"style.safetensors": weights, "style.ckpt": b"pickle"})
        with Studio(settings.replace(hf_endpoint=hub.endpoint)) as studio:
            missing = run(studio, "tiny-lumina-next", loras="tiny-next-style")
            assert missing.status is JobStatus.FAILED and "not downloaded yet" in missing.error
            state = studio.downloads.enqueue("tiny-next-style")
            assert state.wait(60) and state.error is None
            assert hub.gets("test-org/tiny-next-lora", "style.ckpt") == []
            assert studio.loras.names("lumina-next") == ["tiny-next-style"] and studio.loras.names("wan") == []
            carded = run(studio, "tiny-lumina-next", loras="tiny-next-style:1")
            assert carded.status is JobStatus.DONE, carded.error
            assert np.array_equal(pixels(carded.outputs[0].path), pixels(folder.outputs[0].path))
            assert not np.array_equal(pixels(carded.outputs[0].path), pixels(plain.outputs[0].path))
            other = run(studio, "tiny-lumina2", loras="tiny-next-style")
            assert other.status is JobStatus.FAILED and "is for Lumina-Next models" in other.error


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


@pytest.mark.parametrize("model", ["tiny-wan", "tiny-cogvideox"])
def test_video_models_take_a_lora(studio, model):
    make_lora(studio, model, "motion")
    params = {"model": model, "prompt": "waves", "steps": 2, "frames": 9, "seed": 3}
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


def test_the_image_tab_reads_and_fills_the_lora_box(studio):
    import gradio as gr

    from studio.ui.image_tab import build

    make_lora(studio, "tiny-lumina2", "style")
    with gr.Blocks():
        form = build(studio)
    box = form.fields["loras"]
    picker = next(c for c in form.outputs if getattr(c, "elem_id", None) == "image-lora-picker")
    updates = form.model_updates("tiny-lumina2")
    assert updates[picker]["choices"] == [("style", "style")] or updates[picker]["choices"] == ["style"]
    assert form.model_updates("tiny-llamagen-t2i")[picker]["choices"] == []
    values = {component: getattr(component, "value", None) for component in form.inputs}
    values.update({form.model: "tiny-lumina2", form.fields["prompt"]: "a lamp", box: "style:0.5"})
    params = form.read(*[values[c] for c in form.inputs])
    assert params["loras"] == "style:0.5"
    values[form.model] = "tiny-llamagen-t2i"
    assert "loras" not in form.read(*[values[c] for c in form.inputs])  # a model without LoRAs is sent none
    assert box.postprocess([{"name": "style", "weight": 0.5}, {"name": "b", "weight": 1.0}]) == "style:0.5, b:1"


def test_cli_named_api_and_a1111_text_take_loras(studio, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from studio.cli import build_parser
    from studio.cli.generate import job_params
    from studio.ui.named_api import parameters

    args = build_parser().parse_args(["generate", "image", "--model", "tiny-lumina2", "--prompt", "a",
                                      "--lora", "style:0.5", "--lora", "other", "--lora-dir", str(tmp_path)])
    assert job_params(args)["loras"] == ["style:0.5", "other"] and args.lora_dir == str(tmp_path)
    assert any(p.name == "loras" for p in parameters("image")) and any(p.name == "loras" for p in parameters("video"))
    info = PngInfo()
    info.add_text("parameters", "a cat <lora:ink:0.7> <lora:grain:0.3:1>, best\nSteps: 20, Seed: 3, Size: 64x64")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    found = read_parameters(path)
    assert found.prompt == "a cat, best"
    assert found.params["loras"] == [{"name": "ink", "weight": 0.7}, {"name": "grain", "weight": 1.0}]  # te 0.3, unet 1


def test_the_adapter_math_and_its_removal_when_the_job_fails(tmp_path):
    """On a plain torch module: W x + weight * alpha / rank * B A x per layer, kohya names mapped back to
    the module's, two ranks in one file; and the very modules restored when the body raises."""
    import types

    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import save_file

    from studio.runtime.lora import adapters
    from studio.zoo.loras import LoraLibrary

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 6), torch.nn.Linear(6, 8)])

        def forward(self, x):
            return self.blocks[1](self.blocks[0](x))

    torch.manual_seed(0)
    net = Net()
    originals = list(net.modules())
    a0, b0, a1, b1 = torch.randn(4, 8), torch.randn(6, 4), torch.randn(2, 6), torch.randn(8, 2)
    save_file({"lora_unet_blocks_0.lora_down.weight": a0, "lora_unet_blocks_0.lora_up.weight": b0,
               "lora_unet_blocks_0.alpha": torch.tensor(2.0),
               "lora_unet_blocks_1.lora_down.weight": a1, "lora_unet_blocks_1.lora_up.weight": b1},
              str(tmp_path / "k.safetensors"))
    lora = LoraLibrary(tmp_path, cards=None).resolve("k")
    x = torch.randn(3, 8)
    with torch.no_grad():
        h = net.blocks[0](x) + 0.7 * (2.0 / 4) * x @ a0.T @ b0.T
        expected = net.blocks[1](h) + 0.7 * h @ a1.T @ b1.T
        plain = net(x)
        record: dict = {}
        with pytest.raises(RuntimeError, match="the job failed"):
            with adapters(types.SimpleNamespace(transformer=net), [(lora, 0.7)], record=record):
                assert all(isinstance(b, BaseTunerLayer) for b in net.blocks)
                torch.testing.assert_close(net(x), expected)
                raise RuntimeError("the job failed")
        assert list(net.modules()) == originals and not hasattr(net, "peft_config")
        assert torch.equal(net(x), plain)
    assert record["loras"] == [{"name": "k", "weight": 0.7, "hash": record["loras"][0]["hash"], "layers": 2}]


def test_the_alpha_in_a_diffusers_saved_files_metadata_scales_the_lora(studio):
    """diffusers saves a LoRA's peft config (lora_alpha) in the safetensors metadata: a LoRA of rank 4 with
    lora_alpha 8 is the same LoRA with its up weights doubled."""
    import json

    from safetensors.torch import load_file, save_file

    make_lora(studio, "tiny-lumina-next", "half")
    folder = studio.settings.lora_dir
    tensors = load_file(str(folder / "half.safetensors"))
    save_file(tensors, str(folder / "meta.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": 8})})
    save_file({k: v * 2 if "lora_B" in k else v for k, v in tensors.items()}, str(folder / "doubled.safetensors"))
    plain, meta, doubled = (pixels(run(studio, "tiny-lumina-next", loras=name).outputs[0].path)
                            for name in ("half", "meta", "doubled"))
    assert np.array_equal(meta, doubled) and not np.array_equal(meta, plain)
