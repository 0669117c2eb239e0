"""The gallery: find past jobs by text and filters a page at a time, re-run them exactly, star,
delete with their files, and export a selection as a zip with a manifest."""

import json
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from studio.errors import InvalidInput
from studio.history import HistoryStore, JobFilter, JobStatus
from studio.history.tables import Job, utcnow

from helpers import FAST_STEPS, files_under, image_params
from test_output_hashes import content_hash


@pytest.fixture
def store(db_url):
    """A store on each backend: a SQLite file, then a fresh PostgreSQL database (conftest.db_url)."""
    s = HistoryStore(db_url)
    yield s
    s.close()


def _job(store: HistoryStore, prompt: str, task: str = "image", model: str = "tiny-lumina-next",
         status: JobStatus = JobStatus.DONE) -> str:
    job_id = store.create_job(task=task, model_id=model, prompt=prompt, params={"prompt": prompt}, seed=1)
    if status is not JobStatus.PENDING:
        store.mark_running(job_id)
        {JobStatus.DONE: store.mark_done, JobStatus.FAILED: lambda i: store.mark_failed(i, "boom"),
         JobStatus.RUNNING: lambda i: None}[status](job_id)
    return job_id


def _ids(page) -> list[str]:
    return [j.id for j in page.jobs]


def test_pages_newest_first_with_the_total(store):
    ids = [_job(store, f"picture number {i}") for i in range(7)]
    first = store.find_jobs(limit=3)
    assert _ids(first) == ids[::-1][:3] and first.total == 7
    assert _ids(store.find_jobs(limit=3, offset=3)) == ids[::-1][3:6]
    assert _ids(store.find_jobs(limit=3, offset=6)) == [ids[0]]
    assert store.find_jobs(limit=3, offset=9).jobs == []


def test_filters_combine(store):
    cat = _job(store, "a cat on a red sofa", task="image", model="tiny-lumina-next")
    dog = _job(store, "a dog running on a beach", task="video", model="tiny-wan")
    failed = _job(store, "a cat in the rain", task="image", model="tiny-lumina2", status=JobStatus.FAILED)
    store.set_favorite(dog, True)

    assert _ids(store.find_jobs(JobFilter(task="image"))) == [failed, cat]
    assert _ids(store.find_jobs(JobFilter(model_id="tiny-wan"))) == [dog]
    assert _ids(store.find_jobs(JobFilter(status="failed"))) == [failed]
    assert _ids(store.find_jobs(JobFilter(favorites=True))) == [dog]
    assert store.get_job(dog).favorite and not store.get_job(cat).favorite
    assert _ids(store.find_jobs(JobFilter(text="cat", task="image", status=JobStatus.DONE))) == [cat]
    store.set_favorite(dog, False)
    assert store.find_jobs(JobFilter(favorites=True)).total == 0


def test_date_range(store):
    job = _job(store, "a lighthouse")
    now = utcnow()
    assert _ids(store.find_jobs(JobFilter(since=now - timedelta(hours=1)))) == [job]
    assert store.find_jobs(JobFilter(since=now + timedelta(seconds=1))).total == 0
    assert store.find_jobs(JobFilter(until=now - timedelta(hours=1))).total == 0
    assert _ids(store.find_jobs(JobFilter(until=now + timedelta(seconds=1)))) == [job]


def test_full_text_search_finds_words_phrases_and_other_scripts(store):
    red = _job(store, "A RED fox jumps over the lazy dog")
    tea = _job(store, "雨の中の茶屋, 水彩画")
    grid = _job(store, "snowy peaks | a pine forest | 一只猫在睡觉 🐱", task="compose")
    short = _job(store, "go to 5 km")

    def found(text: str) -> list[str]:
        return _ids(store.find_jobs(JobFilter(text=text)))

    assert found("red fox") == [red]  # every word, any case, any order
    assert found("fox red") == [red]
    assert found('"lazy dog"') == [red] and found('"dog lazy"') == []  # a quoted phrase keeps its order
    assert found("茶屋") == [tea]  # words inside Japanese and Chinese text, which have no spaces
    assert found("猫在睡") == [grid] and found("pine") == [grid]  # every caption of a compositional job
    assert found("🐱") == [grid]
    assert found("go km") == [short]  # words shorter than the index's trigrams still match
    assert found("unicorn") == []
    # Query syntax typed by a user is text, never FTS5 operators: no error, just no match.
    for odd in ('AND OR NOT', 'fox*', '"unbalanced', 'col:fox', "NEAR(a b)", "%", "_", "\x00fox", "a " * 1000,
                "x" * 100_000):
        assert isinstance(found(odd), list)
    assert found("\x00red fox") == [red]  # control characters are dropped, not searched for
    store.delete_job(red)
    assert found("red fox") == []


def test_rerun_is_pixel_identical(studio):
    first = studio.run("image", image_params(seed=-1))  # a random seed: the job records the one it drew
    assert first.status is JobStatus.DONE, first.error
    again = studio.gallery.rerun(first.id)
    again.wait(120)
    assert again.status is JobStatus.DONE, again.error
    assert again.id != first.id and studio.history.get_job(again.id).seed == studio.history.get_job(first.id).seed
    assert np.array_equal(np.asarray(Image.open(first.outputs[0].path)), np.asarray(Image.open(again.outputs[0].path)))


@pytest.mark.parametrize("task, params, recorded", [
    # CogVideoX has no flow shift; older versions recorded one for every video model.
    ("video", {"model": "tiny-cogvideox", "prompt": "waves", "steps": 2, "seed": 5, "frames": 9}, {"shift": 3.0}),
    # MusicGen samples tokens; older versions filled the diffusion models' steps in for it too.
    ("music", {"model": "tiny-musicgen", "prompt": "lo-fi piano", "seed": 5, "seconds": 1.0}, {"steps": 100}),
])
def test_a_job_recorded_by_an_older_version_reruns_the_same(studio, task, params, recorded):
    """Fields a model never took, as older versions recorded them: sent by a client today they are
    refused by name, but a re-run of the old job leaves them out, so it runs and gives the same output."""
    first = studio.run(task, params)
    assert first.status is JobStatus.DONE, first.error
    old = {**studio.history.get_job(first.id).params, **recorded}
    with studio.history.engine.begin() as connection:  # the row as the older version wrote it
        connection.execute(update(Job).where(Job.id == first.id).values(params=old))
    refused = studio.run(task, old)
    assert refused.status is JobStatus.FAILED and next(iter(recorded)) in refused.error
    again = studio.gallery.rerun(first.id)
    again.wait(120)
    assert again.status is JobStatus.DONE, again.error
    assert not set(recorded) & {k for k, v in studio.history.get_job(again.id).params.items() if v is not None}
    assert [content_hash(o.path) for o in again.outputs] == [content_hash(o.path) for o in first.outputs]


def test_delete_removes_rows_and_files_and_keeps_the_rest(studio):
    keep = studio.run("image", image_params(prompt="keep me"))
    drop = studio.run("image", image_params(prompt="drop me", num_images=2))
    drop_files = [studio.settings.outputs_dir / a.path for a in studio.history.get_job(drop.id).assets]
    assert len(drop_files) == 3 and all(p.is_file() for p in drop_files)  # two images and the thumbnail

    assert studio.gallery.delete(drop.id) == 3
    assert studio.history.get_job(drop.id) is None and not any(p.exists() for p in drop_files)
    assert all((studio.settings.outputs_dir / a.path).is_file() for a in studio.history.get_job(keep.id).assets)
    assert studio.gallery.page(JobFilter(text="drop")).total == 0
    with pytest.raises(InvalidInput, match="not in the history"):
        studio.gallery.delete(drop.id)


def test_a_running_job_cannot_be_deleted(studio):
    job_id = _job(studio.history, "still going", status=JobStatus.RUNNING)
    with pytest.raises(InvalidInput, match="running"):
        studio.gallery.delete(job_id)
    assert studio.history.get_job(job_id) is not None


def test_export_zip_holds_the_outputs_and_a_manifest(studio):
    a = studio.run("image", image_params(prompt="first picture"))
    b = studio.run("image", image_params(prompt="second picture", num_images=2))
    failed = studio.run("image", image_params(width=-5))
    export = studio.gallery.export([a.id, b.id, failed.id])
    assert export.path.parent == studio.settings.outputs_dir / "exports" and export.path.suffix == ".zip"
    assert (export.jobs, export.files) == (3, 3)
    with zipfile.ZipFile(export.path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        assert names == {"manifest.json", *(f"{j.id}/{o.path.name}" for j in (a, b) for o in j.outputs)}
        assert zf.read(f"{a.id}/{a.outputs[0].path.name}") == a.outputs[0].path.read_bytes()
    jobs = {j["id"]: j for j in manifest["jobs"]}
    assert jobs[a.id]["prompt"] == "first picture" and jobs[a.id]["params"]["steps"] == FAST_STEPS
    assert [f["kind"] for f in jobs[b.id]["files"]] == ["image", "image"]  # thumbnails stay out
    assert jobs[failed.id]["status"] == "failed" and "width" in jobs[failed.id]["error"]
    assert not [p for p in files_under(export.path.parent) if p.name.endswith(".part")]
    with pytest.raises(InvalidInput, match="select"):
        studio.gallery.export([])


def test_thumbnails_for_every_kind_of_output(studio):
    """A small WebP made at save time: of the image, of a video's poster frame, of a sound's waveform."""
    jobs = {
        "image": studio.run("image", image_params()),
        "poster": studio.run("video", {"model": "tiny-wan", "prompt": "waves", "width": 64, "height": 48,
                                       "frames": 5, "steps": 2, "seed": 1}),
        "waveform": studio.run("audio", {"model": "tiny-stable-audio", "prompt": "rain", "seconds": 1.0,
                                         "steps": 2, "seed": 1}),
    }
    for source_kind, job in jobs.items():
        assert job.status is JobStatus.DONE, job.error
        record = studio.history.get_job(job.id)
        thumb = studio.gallery.thumbnail(record)
        [source] = [a for a in record.assets if a.kind == source_kind]
        with Image.open(thumb) as small, Image.open(studio.settings.outputs_dir / source.path) as full:
            assert thumb.suffix == ".webp" and small.format == "WEBP" and max(small.size) <= 320
            # The same picture, smaller: the aspect ratio is kept.
            assert abs(small.width / small.height - full.width / full.height) < 0.05
    failed = studio.run("image", image_params(width=-5))
    assert studio.gallery.thumbnail(studio.history.get_job(failed.id)) is None


def test_a_tile_is_captioned_with_its_prompt_cut_at_a_word(store):
    from studio.gallery import caption

    job = store.get_job(_job(store, "a red lighthouse on a cliff at dawn,   gulls over a stormy sea, oil on canvas"))
    assert caption(job) == "a red lighthouse on a cliff at dawn, gulls over a stormy sea…"
    assert caption(store.get_job(_job(store, "a small moon"))) == "a small moon"
    store.set_favorite(job.id, True)
    assert caption(store.get_job(job.id), limit=20) == "★ a red lighthouse on…"
    assert caption(store.get_job(_job(store, "x" * 80)), limit=10) == "xxxxxxxxxx…"  # no word to cut at
    assert caption(store.get_job(_job(store, "", task="audio", model="tiny-musicgen"))) == "audio · tiny-musicgen"


def test_the_model_filter_offers_generating_models_not_components(studio):
    studio.run("image", image_params())
    _job(studio.history, "from a model since removed", model="a-removed-model")
    choices = studio.gallery.model_choices()
    ids = [model_id for _, model_id in choices]
    cards = studio.cards.cards
    assert "tiny-lumina-next" in ids and "tiny-musicgen" in ids and "wan2.1-t2v-1.3b" in ids
    assert not {"tiny-flan-t5", "flan-t5-xl", "llamagen-vq-ds16-c2i"} & set(ids)  # tasks: [component]
    assert all(model_id == "a-removed-model" or "component" not in cards[model_id].tasks for model_id in ids)
    assert ids[-1] == "a-removed-model" and choices[-1] == ("a-removed-model", "a-removed-model")
    titles = [title for title, _ in choices[:-1]]
    assert titles == sorted(titles, key=str.lower)


def test_the_gallery_starts_on_done_jobs(studio):
    from studio.gallery import SHOWN_STATUS

    studio.run("image", image_params(prompt="made"))
    refused = studio.run("image", image_params(prompt="refused", steps=0))
    assert studio.history.get_job(refused.id).status is JobStatus.FAILED  # still recorded
    shown = studio.gallery.page(JobFilter(status=SHOWN_STATUS))
    assert [job.prompt for job in shown.jobs] == ["made"]
