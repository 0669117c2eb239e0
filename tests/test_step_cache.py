"""Step caching (`speed: off | balanced | fast`) on the real tiny Wan and CogVideoX transformers, run as
jobs through the studio: fewer full transformer passes, a clip close to speed off, the hooks gone
after the job (speed off stays bit-identical), the setting recorded and re-run, and refused where a
model cannot cache. Also the attention backend reaching every diffusers model.

How passes are counted: a forward pre-hook on a child of the transformer's LAST block. A skipped
block (First Block Cache's later blocks, TaylorSeer's predicted steps) runs none of its children, so
the hook fires once per pass that really ran the whole transformer.

Tolerance: a cached clip's decoded MP4 frames differ from speed off's by a mean of less than 3 levels
of 255, and by less than a third of what another seed's clip differs (so the bound means something on
these noise-like random-weight outputs). The same bound for tiny Lumina-Image 2.0's 256x256 PNG. Measured
at 12 steps (48x32, 9 frames for video): tiny Wan balanced 0.52, fast 1.02 (another seed: 5.2); tiny
CogVideoX balanced 2.0, fast 2.2 (another seed: 34.6); tiny Lumina 2 balanced 0.11, fast 0.38 (38.0).
"""

from __future__ import annotations

import json
import re

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from studio.errors import InvalidInput
from studio.history import JobStatus
from studio.media import read_png_metadata
from studio.media_av import read_video
from studio.runtime import step_cache

STEPS = 12
TOLERANCE = 3.0  # mean absolute difference, in levels of 255, between a cached clip and speed off's
WAN = {"model": "tiny-wan", "prompt": "a red fox running through snow", "steps": STEPS, "seed": 3, "frames": 9,
       "width": 48, "height": 32}
LUMINA2 = {"model": "tiny-lumina2", "prompt": "a red kite over a field", "steps": STEPS, "seed": 3, "width": 256,
           "height": 256}
COGVIDEOX = {"model": "tiny-cogvideox", "prompt": "a red fox running through snow", "steps": STEPS, "seed": 3,
             "frames": 9, "width": 48, "height": 32}


class Passes:
    """Full transformer passes of the pipeline the studio holds for `card_id` (see the module's docstring)."""

    def __init__(self, studio, card_id: str) -> None:
        with studio.scheduler.acquire(studio.cards.get(card_id)) as lease:
            transformer = lease.pipeline.transformer
        blocks = next(getattr(transformer, name) for name in ("blocks", "transformer_blocks", "layers")
                      if hasattr(transformer, name))
        self.count = 0
        self.calls = 0
        self._handles = [next(iter(blocks[-1].children())).register_forward_pre_hook(self._full),
                         transformer.register_forward_pre_hook(self._call)]

    def _full(self, *_):
        self.count += 1

    def _call(self, *_):
        self.calls += 1

    def take(self) -> tuple[int, int]:
        counts = (self.count, self.calls)
        self.count = self.calls = 0
        return counts


def clip(job) -> np.ndarray:
    """The clip's decoded frames (a video job) or the picture's pixels (an image job)."""
    if job.task == "image":
        with Image.open(job.outputs[0].path) as im:
            return np.asarray(im.convert("RGB")).astype(float)
    mp4 = next(s.path for s in job.outputs if s.kind == "video")
    return np.stack([np.frombuffer(f, np.uint8) for f in list(imageio_ffmpeg.read_frames(str(mp4)))[1:]]
                    ).astype(float)


def done(studio, params):
    job = studio.run("image" if params["model"] == "tiny-lumina2" else "video", params)
    assert job.status is JobStatus.DONE, job.error
    return job


def job_json(job) -> dict:
    png = next(s.path for s in job.outputs if s.kind in ("poster", "image"))
    return read_png_metadata(png).job


@pytest.mark.parametrize("params,method", [(WAN, "FirstBlockCache"), (COGVIDEOX, "TaylorSeerCache (lite)"),
                                           (LUMINA2, "FirstBlockCache")], ids=["wan", "cogvideox", "lumina2"])
def test_speed_makes_fewer_full_passes_close_to_off_and_leaves_no_hook(studio, params, method):
    first = done(studio, params)  # loads the pipeline; the counter goes on the very one the studio keeps
    passes = Passes(studio, params["model"])
    off = done(studio, params)
    off_passes, calls = passes.take()
    assert np.array_equal(clip(first), clip(off))
    assert off_passes == calls == (STEPS if params is COGVIDEOX else 2 * STEPS)  # CogVideoX batches its CFG
    results, differences = {}, {}
    for speed in ("balanced", "fast"):
        job = done(studio, {**params, "speed": speed})
        full, calls_on = passes.take()
        results[speed] = full
        assert calls_on == calls  # the transformer is still called every step …
        assert full < off_passes  # … but runs in full less often
        used = job_json(job)["used"]["step_cache"]
        assert used["method"] == method and used["speed"] == speed
        assert (used["full_passes"], used["transformer_calls"]) == (full, calls)
        difference = np.abs(clip(job) - clip(off)).mean()
        assert 0 < difference < TOLERANCE, f"{speed}: {difference:.3f} levels"
        differences[speed] = difference
    assert results["fast"] <= results["balanced"]
    other_seed = np.abs(clip(done(studio, {**params, "seed": 4})) - clip(off)).mean()
    passes.take()
    assert max(differences.values()) < other_seed / 3  # far nearer speed off than another seed is
    # Speed off after the speed-on jobs: every pass in full, the very same clip as before them.
    after = done(studio, params)
    assert passes.take() == (off_passes, calls)
    assert np.array_equal(clip(after), clip(off))
    assert "step_cache" not in job_json(after)["used"]


def test_speed_is_recorded_in_the_job_and_infotext_and_a_rerun_reproduces_it(studio):
    job = done(studio, {**WAN, "speed": "fast"})
    meta = read_png_metadata(next(s.path for s in job.outputs if s.kind == "poster"))
    assert meta.infotext.fields["Speed"] == "fast"
    assert meta.job["params"]["speed"] == "fast"
    mp4 = next(s.path for s in job.outputs if s.kind == "video")
    in_mp4 = json.loads(read_video(mp4).tags["comment"])  # the MP4 carries the job too
    assert in_mp4["params"]["speed"] == "fast" and in_mp4["used"]["step_cache"]["method"] == "FirstBlockCache"
    again = done(studio, meta.job["params"])  # an exact re-run sends the recorded params
    assert job_json(again)["params"]["speed"] == "fast"
    assert job_json(again)["used"]["step_cache"] == job_json(job)["used"]["step_cache"]
    assert np.array_equal(clip(again), clip(job))
    off = done(studio, WAN)
    assert job_json(off)["params"]["speed"] == "off"  # the default, recorded like any other setting
    assert read_png_metadata(next(s.path for s in off.outputs if s.kind == "poster")).infotext.fields["Speed"] == "off"


def refused(studio, task, params) -> str:
    """The reason a job was refused before it was queued (a failed row, no file)."""
    job = studio.jobs.submit(task, params)
    assert job.status is JobStatus.FAILED
    assert not job.outputs
    return job.error


def test_models_that_cannot_cache_do_not_offer_speed_and_refuse_it_by_name(studio):
    error = refused(studio, "image", {"model": "tiny-lumina-next", "prompt": "a kite", "steps": 2, "speed": "fast"})
    assert "speed: Lumina-Image 2.0's options apply to Lumina-Image 2.0 models only, not to" in error
    error = refused(studio, "anagram", {"model": "tiny-lumina2", "prompts": ["a cat", "a dog"], "steps": 2,
                                        "speed": "fast"})
    assert "speed: not a parameter of this task" in error  # Lumina-Image 2.0 caches its images only
    assert not list(studio.settings.outputs_dir.rglob("*.png"))


def test_wan_vace_and_video_to_video_refuse_speed_clearly(studio, tmp_path):
    error = refused(studio, "video", {"model": "tiny-wan-vace", "prompt": "a dancer", "speed": "fast",
                                      "control_video": str(tmp_path / "none.mp4")})
    assert "cannot cache steps (VACE adds its control hints" in error and "use speed off" in error
    error = refused(studio, "video", {**WAN, "speed": "balanced", "video": str(tmp_path / "clip.mp4")})
    assert "speed: video-to-video cannot cache steps" in error
    assert "must be one of 'off', 'balanced', 'fast'" in refused(studio, "video", {**WAN, "speed": "turbo"})
    assert not list(studio.settings.outputs_dir.rglob("*.mp4"))


def test_a_transformer_without_cache_hooks_is_refused_by_name():
    class Plain:
        transformer = object()

    with pytest.raises(InvalidInput, match="not a CacheMixin"):
        with step_cache.step_cache(Plain(), "fast", "first_block", {}):
            pass
    with step_cache.step_cache(Plain(), "off", "first_block", {}):  # off installs nothing anywhere
        pass


def test_the_cli_has_a_speed_flag_that_reaches_the_job(tmp_path, model_cache, capsys):
    from studio.cli import main

    home = tmp_path / "home"
    argv = ["generate", "video", "--home", str(home), "--model-cache", str(model_cache), "--model", "tiny-wan",
            "--prompt", "a red fox", "--steps", "6", "--frames", "9", "--size", "48x32", "--seed", "2",
            "--speed", "fast"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    poster = next(line for line in lines[2:] if line.endswith(".png"))
    meta = read_png_metadata(poster)
    assert meta.infotext.fields["Speed"] == "fast" and meta.job["used"]["step_cache"]["threshold"] == 0.1
    with pytest.raises(SystemExit):  # argparse knows the choices
        main([*argv[:-1], "turbo"])
    assert "invalid choice: 'turbo'" in capsys.readouterr().err


def test_the_named_api_and_the_tabs_offer_speed_where_a_family_declares_it():
    from studio.families import FAMILIES
    from studio.tasks.video import VideoSpec
    from studio.ui.named_api import parameters

    speed = next(p for p in parameters("video") if p.name == "speed")
    assert not speed.required and [value for _, value in speed.component.choices] == ["off", "balanced", "fast"]
    assert "speed" in {p.name for p in parameters("image")}  # Lumina-Image 2.0's
    assert not {"speed"} & {p.name for task in ("anagram", "compose", "audio", "music") for p in parameters(task)}
    assert "speed" in VideoSpec.option_names()
    option = FAMILIES.get("wan").option("speed")
    assert option.default == "off" and option.advanced and option.values == ("off", "balanced", "fast")
    assert FAMILIES.get("cogvideox").option("speed").group == option.group == "Speed"  # one control for both
    from studio.ui.family_controls import FamilyControls
    from studio.zoo.cards import CardRegistry
    from studio.settings import REPO_ROOT

    cards = CardRegistry.load([REPO_ROOT / "model_zoo"])
    for task, card_id, shown in (("video", "tiny-wan", True), ("video", "tiny-wan-i2v", True),
                                 ("video", "tiny-cogvideox", True), ("video", "tiny-wan-vace", False),
                                 ("image", "tiny-lumina2", True), ("image", "tiny-lumina-next", False)):
        card = cards.get(card_id)
        assert ("speed" in FamilyControls(task, task, card).taken(card)) is shown, card_id


# -- attention backends ------------------------------------------------------------------------------

def tiny_flux():
    """A tiny Flux transformer: a non-Wan diffusers model whose attention goes through the dispatcher."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                  attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                  pooled_projection_dim=16, axes_dims_rope=(2, 2, 4)).eval()


def flux_forward(model):
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return model(hidden_states=torch.randn(1, 16, 4, generator=g),
                     encoder_hidden_states=torch.randn(1, 8, 16, generator=g),
                     pooled_projections=torch.randn(1, 16, generator=g), timestep=torch.tensor([0.5]),
                     img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3), return_dict=False)[0]


def test_a_backend_reaches_every_diffusers_model_that_takes_one(monkeypatch, settings):
    """A pipeline-like object with a tiny Flux transformer (takes a backend), a second one as
    transformer_2, the real tiny CogVideoX transformer (its processor calls SDPA itself in diffusers
    0.42.1) and a text encoder (not a diffusers model). The kernels cannot run on this CPU, so the
    device and package checks are passed for the test and the backend is diffusers' SDPA-math one."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from studio.runtime import attention
    from studio.runtime.loader import load_pipeline

    cog = load_pipeline(studio_card(settings, "tiny-cogvideox"), settings)

    class Pipe:
        components = {"transformer": tiny_flux(), "transformer_2": tiny_flux(), "cog": cog.transformer,
                      "text_encoder": cog.text_encoder}

    pipe = Pipe()
    before = flux_forward(pipe.components["transformer"])
    monkeypatch.setitem(attention.KERNELS, "sage", ("_native_math", "torch", "—"))
    monkeypatch.setattr(_AttentionBackendRegistry, "_active_backend", _AttentionBackendRegistry._active_backend)
    assert attention.apply_attention_backend(pipe, "sage", "cuda") == ["transformer", "transformer_2"]
    for part in ("transformer", "transformer_2"):
        processors = [m.processor for m in pipe.components[part].modules() if hasattr(m, "processor")]
        assert processors and all(p._attention_backend is AttentionBackendName._NATIVE_MATH for p in processors)
    assert not attention.takes_backend(cog.transformer)
    after = flux_forward(pipe.components["transformer"])
    assert torch_close(before, after)  # the same attention, by another kernel
    assert attention.apply_attention_backend(pipe, "sdpa", "cpu") == []  # the default sets nothing
    # Through the loader, on a real card: the tiny Wan's transformer takes it (its VAE and text encoder do not).
    wan = load_pipeline(studio_card(settings, "tiny-wan"), settings.replace(attention="sage", device="cuda"))
    assert {m.processor._attention_backend for m in wan.transformer.modules()
            if hasattr(getattr(m, "processor", None), "_attention_backend")} == {AttentionBackendName._NATIVE_MATH}
    # A native card built on diffusers' Wan transformer (VideoX-Fun's Control checkpoint) takes it too.
    from studio.zoo.cards import CardRegistry

    cards = CardRegistry.load([settings.model_zoo_dir])
    fun_pipe = load_pipeline(cards.get("tiny-wan-fun-control"), settings.replace(attention="sage", device="cuda"),
                             cards=cards)
    assert {m.processor._attention_backend for m in fun_pipe.transformer.modules()
            if hasattr(getattr(m, "processor", None), "_attention_backend")} == {AttentionBackendName._NATIVE_MATH}


def torch_close(a, b) -> bool:
    import torch

    return torch.allclose(a, b, atol=1e-5)


def studio_card(settings, card_id):
    from studio.zoo.cards import CardRegistry

    return CardRegistry.load([settings.model_zoo_dir]).get(card_id)


@pytest.mark.parametrize("backend,says", [("flash", "needs a CUDA GPU (the device here is cpu) and the flash_attn"),
                                          ("sage", "needs a CUDA GPU (the device here is cpu) and the sageattention")])
def test_a_kernel_backend_on_the_cpu_is_refused_naming_what_to_install(settings, backend, says):
    from studio.runtime.attention import check_backend
    from studio.runtime.loader import load_pipeline
    from studio.settings import Settings

    with pytest.raises(InvalidInput, match=r"use 'sdpa'") as refused:
        load_pipeline(studio_card(settings, "tiny-cogvideox"), settings.replace(attention=backend, device="cpu"))
    assert says in str(refused.value) and "pip install" in str(refused.value)
    with pytest.raises(InvalidInput, match=re.escape(says)):  # a native card too, before anything loads
        load_pipeline(studio_card(settings, "tiny-lumina-next"), settings.replace(attention=backend, device="cpu"))
    with pytest.raises(InvalidInput, match="not installed: pip install sageattention"):
        check_backend("sage", "cuda")  # no sageattention in this environment
    with pytest.raises(InvalidInput, match="attention must be one of sdpa, native, flash, sage"):
        Settings.load(env={}, home=settings.home, attention="xformers")


def test_the_hooks_are_removed_when_the_job_fails_midway(settings):
    from diffusers.hooks import HookRegistry

    from studio.runtime.loader import load_pipeline

    for card_id, method in (("tiny-wan", "first_block"), ("tiny-cogvideox", "taylorseer"),
                            ("tiny-lumina2", "first_block")):
        pipe = load_pipeline(studio_card(settings, card_id), settings)
        model = pipe.transformer
        with pytest.raises(RuntimeError, match="midway"):
            with step_cache.step_cache(pipe, "fast", method, {}, name_passes=card_id == "tiny-lumina2"):
                assert any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in model.modules())
                raise RuntimeError("midway")
        left = {name for m in model.modules() if getattr(m, "_diffusers_hook", None)
                for name in m._diffusers_hook.hooks}
        assert not left, left
        assert not model._forward_pre_hooks and not getattr(model, "is_cache_enabled", False)
        assert HookRegistry.check_if_exists_or_initialize(model) is not None
