"""Lumina-T2I in the Image task, end to end with the built-in tiny model: the official file layout
(loaded as a download is), jobs (metadata, exact re-runs, each solver, NTK on an extrapolated size
and not on a native one, the controls), the demo's defaults on the real card, fp8 weight storage,
bad input and damaged or foreign files, the Image tab's shared Lumina controls, and the CLI."""

from __future__ import annotations

import os
import pickle
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from studio.history import JobStatus
from studio.media import read_png_metadata
from studio.runtime.loader import load_pipeline
from studio.tasks.image import ImageSpec

from helpers import cli_generated_png, pixels, snapshot

TINY = "tiny-lumina-t2i"
ZOO = Path(__file__).parent.parent / "model_zoo"


def params(**changes):
    return {"model": TINY, "prompt": "a red kite over a grey sea", "seed": 11, "steps": 3, **changes}


def run(studio, **changes):
    job = studio.run("image", params(**changes))
    assert job.status is JobStatus.DONE, job.error
    return job


def test_builtins_are_written_like_the_official_release(studio):
    folder = snapshot(studio, TINY)
    assert sorted(p.name for p in folder.iterdir()) == ["consolidated.00-of-01.safetensors", "model_args.pth"]
    keys = set(load_file(folder / "consolidated.00-of-01.safetensors"))
    assert {"x_embedder.weight", "eol_token", "pad_token", "layers.0.attention.wk_y.weight",
            "layers.0.attention.ky_norm.bias", "layers.1.adaLN_modulation.1.weight", "final_layer.linear.weight",
            "t_embedder.mlp.2.weight", "cap_embedder.0.weight"} <= keys
    with torch.serialization.safe_globals([types.SimpleNamespace]):
        args = torch.load(folder / "model_args.pth", weights_only=True)
    assert isinstance(args, types.SimpleNamespace) and args.qk_norm is True and args.vae == "sdxl"
    llama = snapshot(studio, "tiny-llama")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in llama.iterdir()}
    assert any(k.startswith("lm_head.") for k in load_file(llama / "model.safetensors"))  # a LlamaForCausalLM
    vae = snapshot(studio, "tiny-sdxl-vae")
    assert sorted(p.name for p in vae.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_text_is_encoded_as_the_demo_encodes_it(studio):
    pipe = load_pipeline(studio.cards.get(TINY), studio.settings, cards=studio.cards)
    tokenizer = pipe.tokenizer
    ids = tokenizer.encode("a kite", truncation=False)
    assert ids[0] == 1 and ids[-1] == 2  # BOS and EOS, as the demo's tokenizer is set up
    assert tokenizer.encode("", truncation=False) == [1, 2]  # the demo's empty negative: two tokens
    feats, mask = pipe.encode(["a kite over the sea", ""], ["prompt", "negative prompt"])
    assert mask.sum(1).tolist() == [len(tokenizer.encode("a kite over the sea")), 2]
    # No attention mask to LLaMA: the zero padding after the short text changes nothing before it.
    alone, _ = pipe.encode([""], ["negative prompt"])
    assert torch.allclose(feats[1, :2], alone[0], atol=1e-6)


def test_a_job_makes_a_png_with_its_metadata_and_reruns_exactly(studio):
    job = run(studio)
    assert Image.open(job.outputs[0].path).size == (128, 128)
    meta = read_png_metadata(job.outputs[0].path)
    fields = meta.infotext.fields
    assert fields["Sampler"] == "Euler" and fields["Steps"] == "3" and fields["CFG scale"] == "4.0"
    assert fields["Shift"] == "4.0" and fields["NTK scaling"] == "True" and fields["Proportional attention"] == "True"
    assert fields["Seed"] == "11" and fields["Model"] == TINY
    assert meta.job["used"]["model_evaluations"] == 2 and meta.job["used"]["solver_steps"] == 2  # 3 points
    rerun = studio.run("image", studio.history.get_job(job.id).params)
    assert np.array_equal(pixels(job.outputs[0].path), pixels(rerun.outputs[0].path))
    other_seed = run(studio, seed=12)
    assert np.abs(pixels(other_seed.outputs[0].path).astype(int) - pixels(job.outputs[0].path)).mean() > 3


@pytest.mark.parametrize("solver, sampler, evaluations", [("euler", "Euler", 2), ("dopri5", "DOPRI5", 6),
                                                           ("dopri8", "DOPRI8", 13)])
def test_each_solver_runs_and_says_so(studio, solver, sampler, evaluations):
    job = run(studio, solver=solver)
    meta = read_png_metadata(job.outputs[0].path)
    assert meta.infotext.fields["Sampler"] == sampler
    used = meta.job["used"]["model_evaluations"]
    assert used == evaluations if solver == "euler" else used >= evaluations


def test_the_adaptive_solvers_are_not_euler(studio):
    euler, dopri = run(studio, solver="euler"), run(studio, solver="dopri5")
    assert not np.array_equal(pixels(euler.outputs[0].path), pixels(dopri.outputs[0].path))


def test_ntk_changes_an_extrapolated_picture_and_not_a_native_one(studio):
    def picture(size, ntk):
        width, height = size
        return pixels(run(studio, width=width, height=height, ntk_scaling=ntk).outputs[0].path)

    # 208^2 is the tiny model's 1664^2: 13x13 patches against the native 8x8, theta x 2.64.
    assert not np.array_equal(picture((208, 208), True), picture((208, 208), False))
    for native in ((128, 128), (64, 256)):  # the native area: the factor is 1
        assert np.array_equal(picture(native, True), picture(native, False)), native


@pytest.mark.parametrize("change", [{"cfg": 7.0}, {"shift": 1.0}, {"proportional_attn": False},
                                    {"negative_prompt": "blurry, dark"}, {"prompt": "a green field"},
                                    {"steps": 5}], ids=lambda c: next(iter(c)))
def test_each_control_changes_the_picture(studio, change):
    base = pixels(run(studio, width=208, height=208).outputs[0].path)
    assert not np.array_equal(base, pixels(run(studio, width=208, height=208, **change).outputs[0].path))


def test_batches_are_seeded_per_image(studio):
    batch = run(studio, num_images=2, seed=40)
    alone = run(studio, seed=41)
    assert np.abs(pixels(batch.outputs[1].path).astype(int) - pixels(alone.outputs[0].path)).max() <= 2


def test_the_real_card_takes_the_demos_defaults(studio):
    card = studio.cards.get("lumina-t2i")
    defaults = ImageSpec.defaults_for(card)
    assert {k: defaults[k] for k in ("width", "height", "steps", "cfg", "shift", "solver", "ntk_scaling",
                                     "proportional_attn")} == {
        "width": 1024, "height": 1024, "steps": 30, "cfg": 4.0, "shift": 4.0, "solver": "euler",
        "ntk_scaling": True, "proportional_attn": True}
    assert card.resolutions == ["1024x1024", "512x2048", "2048x512"]
    assert card.extrapolation == ["1664x1664", "1024x2048", "2048x1024"]
    assert card.allow_patterns == ["consolidated.00-of-01.safetensors", "model_args.pth"]


def test_fp8_storage_halves_the_transformer_and_still_generates(tmp_path, model_cache):
    from studio.runtime.footprint import Footprint
    from studio.services import Studio
    from studio.settings import Settings

    settings = Settings.load(env={"STUDIO_FP8": "1"}, home=tmp_path / "home", model_cache=model_cache)
    with Studio(settings) as studio:
        plain = load_pipeline(studio.cards.get(TINY), settings.replace(fp8=False), cards=studio.cards)
        stored = load_pipeline(studio.cards.get(TINY), settings, cards=studio.cards)
        assert stored.transformer.layers[0].feed_forward.w1.weight.dtype == torch.float8_e4m3fn
        assert stored.transformer.x_embedder.weight.dtype == torch.float32  # the small layers stay
        assert Footprint.measure(stored).components["transformer"] < 0.5 * Footprint.measure(plain).components[
            "transformer"]
        job = studio.run("image", params())
        assert job.status is JobStatus.DONE, job.error


BAD = {
    "a size off the list": ({"width": 192, "height": 192}, "Size 192x192 is not one of"),
    "one step": ({"steps": 1}, "steps: Lumina-T2I needs at least 2"),
    "another family's option": ({"watershed": 0.5}, "watershed"),
    "a solver the demo has not": ({"solver": "midpoint"}, "solver"),
    "an empty prompt": ({"prompt": "  "}, "prompt is empty"),
}


@pytest.mark.parametrize("change, message", BAD.values(), ids=BAD.keys())
def test_bad_input_fails_with_a_clear_message_and_no_file(studio, change, message):
    job = studio.run("image", params(**change))
    assert job.status is JobStatus.FAILED and message in job.error, job.error
    assert not list(studio.settings.outputs_dir.rglob("*.png"))
    assert studio.run("image", params()).status is JobStatus.DONE


class _Payload:
    """What a hostile model_args.pth could hold: unpickling it would run a command."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_damaged_foreign_or_hostile_files_and_a_missing_text_encoder_are_refused_clearly(tmp_path, model_cache):
    from studio.services import Studio
    from studio.settings import Settings

    cache = tmp_path / "cache"
    shutil.copytree(model_cache, cache)
    official = next(cache.rglob("consolidated.00-of-01.safetensors"))
    args = next(cache.rglob("model_args.pth"))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"transformer_blocks.0.attn.to_q.weight": torch.zeros(4, 4)}, str(foreign))
    renamed = {("blocks." + k[len("layers."):] if k.startswith("layers.") else k): v
               for k, v in load_file(official).items()}
    save_file(renamed, str(tmp_path / "renamed.safetensors"))
    hostile = tmp_path / "hostile.pth"
    hostile.write_bytes(pickle.dumps(_Payload()))
    wrong_vae = types.SimpleNamespace(model="DiT_Llama_tiny_patch2", qk_norm=True, image_size=128, vae="ema")
    torch.save(wrong_vae, tmp_path / "ema.pth")
    torch.save({"model": "DiT_Llama_tiny_patch2", "qk_norm": True}, tmp_path / "dict.pth")  # not the namespace
    weights = official.read_bytes()
    files = {"consolidated.00-of-01.safetensors": weights, "model_args.pth": args.read_bytes(),
             "cut.safetensors": weights[:len(weights) // 2], "foreign.safetensors": foreign.read_bytes(),
             "renamed.safetensors": (tmp_path / "renamed.safetensors").read_bytes(),
             "hostile.pth": hostile.read_bytes(), "ema.pth": (tmp_path / "ema.pth").read_bytes(),
             "dict.pth": (tmp_path / "dict.pth").read_bytes(),
             "lfs.pth": b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 629\n"}
    snap = cache / "models--test-org--t2i" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc")
    for name, data in files.items():
        (snap / name).write_bytes(data)
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=cache)
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    cases = {
        "cut": ({"weights": "cut.safetensors"}, "cut.safetensors (damaged or incomplete download?)"),
        "foreign": ({"weights": "foreign.safetensors"}, "foreign.safetensors is not a Lumina-T2I Flag-DiT checkpoint"),
        "renamed": ({"weights": "renamed.safetensors"}, "does not fit the 2-layer, 64-wide Flag-DiT"),
        "hostile": ({"model_args": "hostile.pth"}, "hostile.pth holds Python objects besides the training arguments"),
        "ema": ({"model_args": "ema.pth"}, "trained with the 'ema' VAE"),
        "dict": ({"model_args": "dict.pth"}, "should hold the training arguments (a SimpleNamespace), not a dict"),
        "lfs": ({"model_args": "lfs.pth"}, "lfs.pth is a Git LFS pointer, not the file itself"),
        "no-llama": ({"text_encoder": "llama-2-7b"}, "LLaMA-2-7B text encoder (component) is not in the model cache"),
    }
    for card_id, (engine, _) in cases.items():
        card = yaml.safe_load((ZOO / "tiny-lumina-t2i.yaml").read_text())
        del card["tiny"]
        card["engine"].update(engine)
        card.update(id=card_id, title=card_id, source={"repo": "test-org/t2i"},
                    requires=[card["engine"]["text_encoder"], card["engine"]["vae"]])
        (settings.user_cards_dir / f"{card_id}.yaml").write_text(yaml.safe_dump(card))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # where the hostile payload would leave its mark
    try:
        with Studio(settings) as studio:
            assert not studio.cards.problems, studio.cards.problems
            for card_id, (_, message) in cases.items():
                job = studio.run("image", params(model=card_id))
                assert job.status is JobStatus.FAILED and message in job.error, (card_id, job.error)
            assert not list(settings.outputs_dir.rglob("*.png"))
            assert studio.run("image", params()).status is JobStatus.DONE  # the worker is still there
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists()


def test_the_image_tab_shows_the_shared_lumina_controls_with_this_models_choices(studio):
    import gradio as gr

    from studio.ui.image_tab import build

    with gr.Blocks():
        form = build(studio)
    updates = form.model_updates(TINY)
    solver = updates[form.fields["solver"]]
    assert solver["visible"] is True and solver["value"] == "euler"
    assert [value for _, value in solver["choices"]] == ["euler", "dopri5", "dopri8"]
    assert updates[form.fields["ntk_scaling"]]["visible"] is True
    assert updates[form.fields["watershed"]]["visible"] is False  # Lumina-Next's alone
    back = form.model_updates("tiny-lumina-next")[form.fields["solver"]]
    assert "midpoint" in [value for _, value in back["choices"]] and back["value"] == "midpoint"
    values = {component: getattr(component, "value", None) for component in form.inputs}
    values.update({form.model: TINY, form.fields["prompt"]: "a lamp", form.fields["seed"]: 3,
                   form.inputs[3]: "128x128", form.fields["steps"]: 3, form.fields["solver"]: "euler",
                   form.fields["ntk_scaling"]: False})  # inputs[3]: the size picker
    job = studio.run("image", form.read(*[values[c] for c in form.inputs]))
    assert job.status is JobStatus.DONE, job.error
    assert "NTK scaling: False" in read_png_metadata(job.outputs[0].path).raw["parameters"]


def test_runs_from_the_cli(tmp_path, model_cache, capsys):
    """`studio generate image` with this model's flags, through the CLI's main in this process."""
    png = cli_generated_png(capsys, tmp_path / "home", model_cache, "--model", TINY, "--prompt", "a lamp",
                            "--solver", "dopri5", "--ntk-scaling", "false", "--size", "208x208", "--seed", "5")
    text = read_png_metadata(png).raw["parameters"]
    assert "Sampler: DOPRI5" in text and "NTK scaling: False" in text and Image.open(png).size == (208, 208)
