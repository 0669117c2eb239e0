"""The line under a tab's result says what the job made as a user counts it (one video is "1 video",
not its poster and thumbnail too), each seed of a batch, and that a preset is "an image preset"."""

from __future__ import annotations

from studio.presets import a_preset
from studio.ui.results import captioned, job_summary


def test_a_video_is_one_video_and_a_batch_names_its_seeds(studio):
    video = studio.run("video", {"model": "tiny-wan", "prompt": "waves", "steps": 2, "seed": 5, "frames": 9})
    assert video.error is None, video.error
    assert len(video.outputs) > 1  # the clip and its poster picture
    line = job_summary(video, 1.0)
    assert "1 video in" in line and "seed `5`" in line and "outputs" not in line

    batch = studio.run("image", {"model": "tiny-lumina-next", "prompt": "kites", "width": 64, "height": 64,
                                 "steps": 2, "seed": 9, "num_images": 3})
    line = job_summary(batch, 1.0)
    assert "3 images in" in line and "seeds `9`–`11`" in line
    assert [caption for _, caption in captioned(batch)] == ["seed 9", "seed 10", "seed 11"]


def test_an_anagram_is_counted_by_kind(studio):
    job = studio.run("anagram", {"model": "tiny-lumina-next", "prompts": ["an old man", "a rabbit"],
                                 "views": ["identity", "rotate_180"], "width": 64, "height": 64, "steps": 2,
                                 "seed": 1})
    assert job.error is None, job.error
    assert "2 images and 1 animation in" in job_summary(job, 1.0)


def test_the_article_fits_the_modality():
    assert a_preset("image") == "an image preset" and a_preset("anagrams") == "an anagrams preset"
    assert a_preset("video") == "a video preset" and a_preset("music") == "a music preset"
