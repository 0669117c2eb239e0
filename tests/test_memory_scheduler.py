"""The memory scheduler's rules, on the CPU with budgets given in bytes, using the tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import Clock, image_params

from studio.history import JobStatus
from studio.runtime.footprint import Footprint
from studio.runtime.loader import SharedComponents, load_pipeline
from studio.runtime.memory import MemoryScheduler
from studio.runtime.placement import LADDER, Placement
from studio.services import Studio
from studio.settings import REPO_ROOT
from studio.zoo.cards import CardRegistry

CARDS = CardRegistry.load([REPO_ROOT / "model_zoo"])
NEXT, LUMINA2 = CARDS.get("tiny-lumina-next"), CARDS.get("tiny-lumina2")


@pytest.fixture
def load(settings):
    loads = []

    def loader(card):
        loads.append(card.id)
        return load_pipeline(card, settings)

    loader.loads = loads
    return loader


@pytest.fixture(scope="module")
def sizes(tmp_path_factory, model_cache):
    from studio.settings import Settings

    settings = Settings.load(env={}, home=tmp_path_factory.mktemp("h"), model_cache=model_cache)
    return {card.id: Footprint.measure(load_pipeline(card, settings)) for card in (NEXT, LUMINA2)}


def scheduler(loader, **kwargs):
    return MemoryScheduler(loader, device="cpu", clock=Clock(), **kwargs)


def test_footprint_is_measured_from_the_tensors(sizes):
    fp = sizes["tiny-lumina-next"]
    assert set(fp.components) == {"transformer", "vae", "text_encoder"}
    assert fp.total == sum(fp.components.values()) > 0
    # Each step down the ladder needs less on the device at once.
    peaks = [fp.device_bytes(p) for p in LADDER]
    assert peaks == sorted(peaks, reverse=True) and peaks[0] > peaks[-1] > 0
    assert fp.device_bytes(Placement.MODEL_OFFLOAD) == max(fp.components.values())


def test_placement_is_the_most_generous_that_fits(load, sizes):
    fp = sizes["tiny-lumina-next"]
    for placement in LADDER:
        s = scheduler(load, device_budget=fp.device_bytes(placement))
        with s.acquire(NEXT) as lease:
            assert lease.placement is placement
            assert s.device_used() <= fp.device_bytes(placement)


def test_working_memory_of_the_job_counts(load, sizes):
    fp = sizes["tiny-lumina-next"]
    s = scheduler(load, device_budget=fp.total)
    with s.acquire(NEXT, working_bytes=0) as lease:
        assert lease.placement is Placement.FULL
    s = scheduler(load, device_budget=fp.total)
    with s.acquire(NEXT, working_bytes=fp.total // 2) as lease:
        assert lease.placement is not Placement.FULL


def test_least_recently_used_is_moved_out_first_and_the_budget_holds(load, sizes):
    both = sizes["tiny-lumina-next"].total + sizes["tiny-lumina2"].total
    s = scheduler(load, device_budget=both, ram_budget=10 * both)
    with s.acquire(NEXT):
        pass
    with s.acquire(LUMINA2):
        pass
    assert s.placement_of(NEXT.id) is Placement.FULL and s.placement_of(LUMINA2.id) is Placement.FULL
    # A third model (the same card under another id) needs room: the LRU one (NEXT) goes to RAM.
    third = NEXT.model_copy(update={"id": "tiny-lumina-next-b"})
    with s.acquire(third):
        assert s.device_used() <= both
    assert s.placement_of(NEXT.id) is None  # parked in RAM, not dropped
    assert s.placement_of(LUMINA2.id) is Placement.FULL
    assert load.loads == ["tiny-lumina-next", "tiny-lumina2", "tiny-lumina-next-b"]
    with s.acquire(NEXT):  # back from RAM, no disk read
        pass
    assert load.loads.count("tiny-lumina-next") == 1


def test_over_the_ram_budget_parked_models_are_dropped(load, sizes):
    one = max(sizes["tiny-lumina-next"].total, sizes["tiny-lumina2"].total)
    s = scheduler(load, device_budget=one, ram_budget=0)
    with s.acquire(NEXT):
        pass
    with s.acquire(LUMINA2):
        pass
    assert s.resident() == [LUMINA2.id] and s.ram_used() == 0
    with s.acquire(NEXT):
        pass
    assert load.loads.count("tiny-lumina-next") == 2  # it had to come from disk again


def test_a_model_in_use_is_never_moved_out(load, sizes):
    one = max(sizes["tiny-lumina-next"].total, sizes["tiny-lumina2"].total)
    s = scheduler(load, device_budget=one)
    with s.acquire(NEXT) as held:
        assert held.placement is Placement.FULL
        with s.acquire(LUMINA2) as other:
            # NEXT is locked: the newcomer must make do with what is left, offloaded.
            assert s.placement_of(NEXT.id) is Placement.FULL
            assert other.placement is not Placement.FULL
    s.free_all()
    assert s.resident() == []


def test_free_all_keeps_what_is_in_use(load):
    s = scheduler(load)
    with s.acquire(NEXT):
        with s.acquire(LUMINA2):
            pass
        assert s.free_all() > 0
        assert s.resident() == [NEXT.id]


def test_components_with_the_same_checkpoint_are_loaded_once(tmp_path, model_cache, settings):
    """Two cards on two repos whose text encoder is the very same file share one module."""
    import shutil

    from studio.zoo.builtin import builtin_revision

    # Two hub-style snapshots of the tiny model whose files are links to the same blobs.
    source = model_cache / "models--studio-builtin--tiny-lumina-next" / "snapshots"
    source = source / builtin_revision("tiny-lumina-next")
    cache = tmp_path / "cache"
    for repo in ("org/a", "org/b"):
        repo_dir = cache / f"models--{repo.replace('/', '--')}"
        snapshot = repo_dir / "snapshots" / ("c" * 40)
        for path in source.rglob("*"):
            if path.is_file():
                blob = repo_dir / "blobs" / f"{path.relative_to(source).as_posix().replace('/', '_')}-same"
                if path.suffix == ".safetensors":  # same content -> same blob name, as on the hub
                    import hashlib

                    blob = repo_dir / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
                blob.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, blob)
                (snapshot / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                (snapshot / path.relative_to(source)).symlink_to(blob)
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text("c" * 40)
    local = settings.replace(model_cache=cache)
    shared = SharedComponents()
    cards = [NEXT.model_copy(update={"id": f"card-{r}", "tiny": False,
                                     "source": NEXT.source.model_copy(update={"repo": f"org/{r}", "builtin": None})})
             for r in ("a", "b")]
    a = load_pipeline(cards[0], local, shared)
    b = load_pipeline(cards[1], local, shared)
    assert a.text_encoder is b.text_encoder and a.transformer is b.transformer
    s = scheduler(lambda card: a if card.id == "card-a" else b)
    with s.acquire(cards[0]):
        pass
    with s.acquire(cards[1]):
        pass
    assert s.device_used() == Footprint.measure(a).total  # counted once


def _run_placed(home, model_cache, placement: str, task: str, params: dict, read) -> list:
    """One job in a studio of its own (its own data folder) forced to `placement`: `read(its outputs)`."""
    from studio.settings import Settings

    settings = Settings.load(env={}, home=home, model_cache=model_cache, placement=placement)
    with Studio(settings) as studio:
        job = studio.run(task, params)
        assert job.status is JobStatus.DONE, job.error
        assert studio.history.get_job(job.id).placement == placement
        return read(job.outputs)


def _read_images(outputs) -> list:
    from PIL import Image

    return [np.asarray(Image.open(o.path)) for o in outputs]


def _read_sound(outputs):
    import soundfile as sf

    return sf.read(str(outputs[0].path))[0]


MUSIC = {"model": "tiny-musicgen", "prompt": "piano", "seed": 1, "seconds": 1}


@pytest.fixture(scope="module")
def full_placement_images(tmp_path_factory, model_cache):
    """The reference every placement is held to: the images of a `full` run (one run for the module)."""
    return _run_placed(tmp_path_factory.mktemp("ref"), model_cache, "full", "image", image_params(num_images=2),
                       _read_images)


@pytest.fixture(scope="module")
def full_placement_sound(tmp_path_factory, model_cache):
    return _run_placed(tmp_path_factory.mktemp("ref"), model_cache, "full", "music", MUSIC, _read_sound)


@pytest.mark.parametrize("placement", list(Placement))
def test_every_placement_gives_the_same_pixels(tmp_path, model_cache, placement, full_placement_images):
    candidates = _run_placed(tmp_path / "under-test", model_cache, placement.value, "image",
                             image_params(num_images=2), _read_images)
    assert len(candidates) == len(full_placement_images) == 2
    for reference, candidate in zip(full_placement_images, candidates):
        assert np.array_equal(reference, candidate)


def test_out_of_memory_steps_down_once_and_records_what_ran(studio, monkeypatch):
    from studio.tasks.image import ImageTask

    real_run = ImageTask.run
    seen = []

    def run_with_small_gpu(self, pipeline, spec, card, on_step):
        placement = studio.scheduler.placement_of(card.id)
        seen.append(placement)
        if placement is Placement.FULL:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(self, pipeline, spec, card, on_step)

    monkeypatch.setattr(ImageTask, "run", run_with_small_gpu)
    job = studio.run("image", image_params())
    assert job.status is JobStatus.DONE, job.error
    assert seen == [Placement.FULL, Placement.MODEL_OFFLOAD]
    assert studio.history.get_job(job.id).placement == "model_offload"
    from studio.media import read_png_metadata

    assert read_png_metadata(job.outputs[0].path).job["used"]["placement"] == "model_offload"


def test_out_of_memory_twice_fails_the_job_with_the_numbers(studio, monkeypatch):
    from studio.tasks.image import ImageTask

    def always_oom(self, pipeline, spec, card, on_step):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(ImageTask, "run", always_oom)
    job = studio.run("image", image_params(width=512, height=512))
    assert job.status is JobStatus.FAILED
    assert "Out of memory" in job.error and "Tiny Lumina-Next" in job.error and "512x512" in job.error
    assert "GB" in job.error
    monkeypatch.undo()
    assert studio.run("image", image_params()).status is JobStatus.DONE  # the worker carries on


def test_memory_and_speed_settings_are_validated(tmp_path):
    from studio.errors import InvalidInput
    from studio.settings import Settings

    base = {"env": {}, "home": tmp_path}
    assert Settings.load(**base, vram_budget_gb="6").vram_budget_gb == 6.0
    for bad, message in (({"vram_budget_gb": "-2"}, "more than 0"), ({"ram_budget_gb": "lots"}, "number of GB"),
                         ({"placement": "everywhere"}, "placement must be one of"),
                         ({"attention": "xformers"}, "attention must be")):
        with pytest.raises(InvalidInput, match=message):
            Settings.load(**base, **bad)


def test_flash_attention_without_cuda_fails_the_job_with_a_clear_message(tmp_path, model_cache):
    from studio.settings import Settings

    settings = Settings.load(env={}, home=tmp_path, model_cache=model_cache, attention="flash")
    with Studio(settings) as studio:
        job = studio.run("image", image_params())
    assert job.status is JobStatus.FAILED and "needs a CUDA GPU" in job.error and "sdpa" in job.error


def test_channels_last_reaches_the_model(settings):
    pipe = load_pipeline(NEXT, settings.replace(channels_last=True))
    conv = next(m for m in pipe.vae.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not next(m for m in load_pipeline(NEXT, settings).vae.modules()
                    if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(memory_format=torch.channels_last)


def test_cli_budget_flags_reach_the_settings():
    from studio.cli import _settings, build_parser

    args = build_parser().parse_args(["generate", "image", "--model", "m", "--prompt", "p", "--vram-budget", "7.5",
                                      "--placement", "model_offload", "--fp8", "--channels-last"])
    settings = _settings(args)
    assert (settings.vram_budget_gb, settings.placement, settings.fp8, settings.channels_last) == (
        7.5, "model_offload", True, True)
    assert settings.compile is False  # flags not given keep the default


def test_memory_panel_shows_what_is_resident_and_frees_it(studio):
    from studio.ui.models_tab import MEMORY_COLUMNS, memory_rows, memory_summary

    assert memory_rows(studio) == []
    studio.run("image", image_params())
    [row] = [dict(zip(MEMORY_COLUMNS, r)) for r in memory_rows(studio)]
    assert row["Model"].startswith("Tiny Lumina-Next") and row["Placement"] == "full" and row["Where"] == "cpu"
    assert "of weights" in memory_summary(studio) and "budget" in memory_summary(studio)
    assert studio.scheduler.free_all() > 0 and memory_rows(studio) == []


def test_stepping_down_from_group_offload_reloads_and_leaves_nothing_locked(tmp_path, model_cache, monkeypatch):
    from studio.settings import Settings
    from studio.tasks.image import ImageTask

    real_run = ImageTask.run
    settings = Settings.load(env={}, home=tmp_path, model_cache=model_cache, placement="group_offload")
    with Studio(settings) as studio:
        def oom_on_group(self, pipeline, spec, card, on_step):
            if studio.scheduler.placement_of(card.id) is Placement.GROUP_OFFLOAD:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return real_run(self, pipeline, spec, card, on_step)

        monkeypatch.setattr(ImageTask, "run", oom_on_group)
        job = studio.run("image", image_params())
        assert job.status is JobStatus.DONE, job.error
        assert studio.history.get_job(job.id).placement == "sequential_offload"
        assert [r.in_use for r in studio.scheduler.residents()] == [False]
        assert studio.scheduler.free_all() > 0 and studio.scheduler.resident() == []


@pytest.mark.parametrize("placement", [p for p in Placement if p is not Placement.FULL])
def test_a_transformers_model_runs_the_same_under_every_placement(tmp_path, model_cache, placement,
                                                                 full_placement_sound):
    candidate = _run_placed(tmp_path / "under-test", model_cache, placement.value, "music", MUSIC, _read_sound)
    assert np.array_equal(full_placement_sound, candidate)
