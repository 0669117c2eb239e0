"""A model family defined here, outside the studio, registers with one call and then generates like a
shipped one: through the Image tab's handler, the CLI and the named API, with its own option, that
option's default, and its infotext line; an option it does not declare is refused by name.

The toy family draws a flat colour from the prompt, the seed and its `glow` option. It is a real
family: a card in the user's cards folder, a built-in builder that writes its file into the model
cache, a native loader that reads it back, and a runner.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.engines.bundle import ModuleBundle
from studio.families import FAMILIES, Family, Option
from studio.history import JobFilter, JobStatus
from studio.media import read_png_metadata
from studio.services import Studio
from studio.settings import Settings
from studio.tasks.base import TaskOutput

HERE = Path(__file__).parent
TOY_CARD = """\
id: tiny-toy
title: "Tiny Toy"
family: toy
tasks: [image]
source:
  builtin: tiny-toy
library: native
pipeline: toy
dtype: float32
memory_gb: 0.01
license: mit
tiny: true
defaults: {width: 64, height: 64}
min_size: 16
max_size: 256
"""


class ToyBuilder:
    """What `ensure_builtin` saves: one JSON file, as a downloaded checkpoint would be a file."""

    def save_pretrained(self, folder, **_):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "toy.json").write_text(json.dumps({"base": [40, 90, 200]}))


def load_toy(card, folder, required, dtype):
    """A pipeline-shaped bundle of torch modules, which the memory scheduler places like any other."""
    base = json.loads((Path(folder) / "toy.json").read_text())["base"]
    palette = torch.nn.Linear(1, 3, bias=False)
    palette.weight.data = torch.tensor(base, dtype=torch.float32)[:, None]
    return ModuleBundle(palette=palette)


def run_toy(task, pipeline, spec, card, on_step):
    digest = hashlib.sha256(f"{spec.prompt}|{spec.seed}".encode()).digest()
    glow = spec.option("glow")
    base = pipeline.palette.weight.detach().cpu()[:, 0].tolist()
    colour = [min(255, int(b * glow) + d % 32) for b, d in zip(base, digest)]
    on_step(1, 1)
    images = [Image.new("RGB", (spec.width, spec.height), tuple(colour)) for _ in range(spec.num_images)]
    return TaskOutput(items=images, used={"sampler": "toy"})


TOY = Family(
    name="toy",
    title="Toy",
    tasks=("image",),
    options=(Option("glow", float, 0.5, label="Glow", minimum=0, maximum=1, widget="slider", step=0.05,
                    infotext="Glow"),),
    unused={"steps": "it paints in one go"},
    run=f"{__name__}:run_toy",
    load=f"{__name__}:load_toy",
    builders={"tiny-toy": f"{__name__}:ToyBuilder"},
)


def register_toy():
    """The one line a plug-in family needs (STUDIO_FAMILIES=test_family_plugin runs it in a subprocess)."""
    FAMILIES.register(TOY)


if os.environ.get("STUDIO_FAMILIES", "").split(",").count(__name__):
    register_toy()


@pytest.fixture
def toy_studio(tmp_path, model_cache):
    register_toy()
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache)
    settings.ensure_dirs()
    (settings.user_cards_dir / "tiny-toy.yaml").write_text(TOY_CARD)
    try:
        with Studio(settings) as studio:
            yield studio
    finally:
        FAMILIES.unregister("toy")


def pixel(path) -> tuple[int, ...]:
    with Image.open(path) as im:
        return tuple(np.asarray(im.convert("RGB"))[0, 0])


def test_a_toy_family_generates_with_its_option_default_and_infotext(toy_studio):
    job = toy_studio.run("image", {"model": "tiny-toy", "prompt": "a lamp", "seed": 3})
    assert job.status is JobStatus.DONE, job.error
    assert job.spec.option("glow") == 0.5  # the family's default, recorded on the job
    assert toy_studio.history.get_job(job.id).params["glow"] == 0.5
    info = read_png_metadata(job.outputs[0].path)
    assert "Glow: 0.5" in info.raw["parameters"] and "Sampler: toy" in info.raw["parameters"]
    brighter = toy_studio.run("image", {"model": "tiny-toy", "prompt": "a lamp", "seed": 3, "glow": 1.0})
    assert pixel(brighter.outputs[0].path) != pixel(job.outputs[0].path)
    again = toy_studio.run("image", {"model": "tiny-toy", "prompt": "a lamp", "seed": 3})
    assert pixel(again.outputs[0].path) == pixel(job.outputs[0].path)


@pytest.mark.parametrize("params, message", [
    ({"watershed": 0.5}, "watershed: Lumina-Next's options apply to Lumina-Next models only, not to Tiny Toy (Toy)"),
    ({"solver": "euler"}, "solver: an option of Lumina-Next and Lumina-T2I models, which Tiny Toy (Toy) does not take"),
    ({"sparkle": 1}, "sparkle: not a parameter"),
    ({"glow": 3}, "glow (Toy): must be at most 1"),
    ({"steps": 20}, "steps: Tiny Toy (Toy) takes no denoising steps: it paints in one go"),
])
def test_what_the_toy_family_does_not_take_is_refused_by_name(toy_studio, params, message):
    job = toy_studio.run("image", {"model": "tiny-toy", "prompt": "a lamp", **params})
    assert job.status is JobStatus.FAILED and message in job.error, job.error
    assert not list(toy_studio.settings.outputs_dir.rglob("*.png"))


def test_the_toy_family_runs_from_the_image_tab(toy_studio):
    from studio.ui.image_tab import build
    import gradio as gr

    with gr.Blocks():
        form = build(toy_studio)
    glow = form.fields["glow"]  # the tab built the family's control without knowing the family
    assert glow.elem_id == "image-glow" and glow.label == "Glow"
    updates = form.model_updates("tiny-toy")
    assert updates[glow]["visible"] is True and updates[glow]["value"] == 0.5
    assert updates[form.fields["steps"]]["visible"] is False  # it takes no steps
    assert updates[form.fields["solver"]]["visible"] is False  # another family's control is hidden
    values = {component: getattr(component, "value", None) for component in form.inputs}
    values.update({form.model: "tiny-toy", form.fields["prompt"]: "a lamp", form.fields["seed"]: 3, glow: 0.9})
    params = form.read(*[values[c] for c in form.inputs])
    assert params["glow"] == 0.9 and "steps" not in params and "solver" not in params
    job = toy_studio.run("image", params)
    assert job.status is JobStatus.DONE, job.error
    assert "Glow: 0.9" in read_png_metadata(job.outputs[0].path).raw["parameters"]


def test_the_toy_family_runs_from_the_cli(tmp_path, model_cache):
    home = tmp_path / "home"
    (home / "model_cards").mkdir(parents=True)
    (home / "model_cards" / "tiny-toy.yaml").write_text(TOY_CARD)
    env = {**os.environ, "STUDIO_FAMILIES": __name__, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "studio.cli", "generate", "image", "--home", str(home),
                             "--model-cache", str(model_cache), "--model", "tiny-toy", "--prompt", "a lamp",
                             "--glow", "0.8", "--seed", "5"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    png = Path(result.stdout.strip().splitlines()[-1])
    assert "Glow: 0.8" in read_png_metadata(png).raw["parameters"]


def test_the_toy_family_runs_from_the_named_api(toy_studio):
    from gradio_client import Client

    from studio.ui.app import build_app

    demo = build_app(toy_studio)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        images, summary = client.predict(prompt="a lamp", model="tiny-toy", seed=7, glow=0.25,
                                         api_name="/generate_image")
        assert "Done" in summary and len(images) == 1
        job = toy_studio.gallery.page(JobFilter(), 1).jobs[0]
        assert job.params["glow"] == 0.25 and job.params["model"] == "tiny-toy"
    finally:
        demo.close()
