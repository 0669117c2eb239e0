"""The Video, Audio and Music tasks end to end with the built-in tiny models: the files decode back
to what was asked, carry their job, are recorded, reproduce with the same seed, and bad input fails clean."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import files_under

from studio.history import JobStatus
from studio.media_av import read_audio, read_video

VIDEO_MODELS = {"tiny-wan": (64, 48, 16), "tiny-wan-i2v": (64, 48, 16), "tiny-cogvideox": (48, 32, 8),
                "tiny-cogvideox-i2v": (48, 32, 8)}


@pytest.fixture
def start_image(tmp_path):
    path = tmp_path / "start.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(path)
    return str(path)


def video_params(model, start_image, **extra):
    params = {"model": model, "prompt": "waves rolling onto a beach at dusk", "steps": 2, "seed": 5, "frames": 9}
    if "i2v" in model:
        params["image"] = start_image
    params.update(extra)
    return params


def decoded_frames(path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader])


@pytest.mark.parametrize("model", VIDEO_MODELS)
def test_video_plays_back_as_requested_and_is_recorded(studio, model, start_image):
    width, height, fps = VIDEO_MODELS[model]
    job = studio.run("video", video_params(model, start_image))
    assert job.status is JobStatus.DONE, job.error
    kinds = [o.kind for o in job.outputs]
    assert kinds == (["video", "poster", "input"] if "i2v" in model else ["video", "poster"])
    info = read_video(job.outputs[0].path)
    assert (info.frames, info.fps, info.width, info.height) == (9, fps, width, height)
    assert info.job["job_id"] == job.id and info.job["params"]["frames"] == 9
    assert "waves rolling" in info.tags["title"]
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.DONE and record.params["fps"] == fps
    video_asset = record.assets[0]
    assert video_asset.mime == "video/mp4" and video_asset.duration_s == pytest.approx(9 / fps)
    assert Image.open(job.outputs[1].path).size == (width, height)


def test_same_seed_same_video(studio, start_image):
    first = studio.run("video", video_params("tiny-wan", start_image))
    again = studio.run("video", video_params("tiny-wan", start_image))
    other = studio.run("video", video_params("tiny-wan", start_image, seed=6))
    assert np.array_equal(decoded_frames(first.outputs[0].path), decoded_frames(again.outputs[0].path))
    assert not np.array_equal(decoded_frames(first.outputs[0].path), decoded_frames(other.outputs[0].path))


def test_flow_shift_reaches_wan(studio, start_image):
    a = studio.run("video", video_params("tiny-wan", start_image, shift=1.0))
    b = studio.run("video", video_params("tiny-wan", start_image, shift=8.0))
    assert not np.array_equal(decoded_frames(a.outputs[0].path), decoded_frames(b.outputs[0].path))


@pytest.mark.parametrize("model, change, message", [
    ("tiny-wan", {"frames": 10}, "frames must be 4k+1"),
    ("tiny-wan", {"frames": 37}, "at most 33 frames"),
    ("tiny-cogvideox", {"frames": 13}, "frames must be 8k+1"),
    ("tiny-wan", {"width": 50}, "multiples of 16"),
    ("tiny-wan", {"image": "x.png"}, "from text only"),
    ("tiny-wan-i2v", {"image": None}, "add a start image"),
    ("tiny-wan-i2v", {"image": "/nonexistent/start.png"}, "is missing"),
    ("tiny-wan", {"fps": 0}, "fps"),
])
def test_video_bad_input(studio, start_image, model, change, message):
    job = studio.run("video", video_params(model, start_image, **change))
    assert job.status is JobStatus.FAILED and message in job.error
    assert files_under(studio.settings.outputs_dir) == []


def test_an_upload_that_is_not_an_image(studio, tmp_path, start_image):
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not pixels")
    job = studio.run("video", video_params("tiny-wan-i2v", start_image, image=str(fake)))
    assert job.status is JobStatus.FAILED and "not an image the studio can read" in job.error


AUDIO_MODELS = {("audio", "tiny-stable-audio"): (44100, 2), ("audio", "tiny-audioldm2"): (16000, 1),
                ("music", "tiny-musicgen"): (32000, 1)}


def sound_params(model, **extra):
    params = {"model": model, "prompt": "rain on a tin roof, distant thunder", "seed": 21, "seconds": 1.5}
    if model != "tiny-musicgen":
        params["steps"] = 3
    params.update(extra)
    return params


def samples(path):
    import soundfile as sf

    data, _ = sf.read(str(path), always_2d=True)
    return data


@pytest.mark.parametrize("task, model", AUDIO_MODELS)
def test_sound_plays_back_as_requested_and_is_recorded(studio, task, model):
    rate, channels = AUDIO_MODELS[(task, model)]
    job = studio.run(task, sound_params(model))
    assert job.status is JobStatus.DONE, job.error
    assert [o.kind for o in job.outputs] == ["audio", "waveform"]
    info = read_audio(job.outputs[0].path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert info.duration_s == pytest.approx(1.5, abs=0.02)
    assert info.job["job_id"] == job.id and "rain on a tin roof" in info.title
    assert np.abs(samples(job.outputs[0].path)).max() > 0  # not silence
    record = studio.history.get_job(job.id)
    assert record.assets[0].mime == "audio/wav" and record.assets[0].duration_s == pytest.approx(1.5, abs=0.02)
    assert Image.open(job.outputs[1].path).size == (800, 200)


@pytest.mark.parametrize("task, model", AUDIO_MODELS)
def test_same_seed_same_sound(studio, task, model):
    a = studio.run(task, sound_params(model))
    b = studio.run(task, sound_params(model))
    c = studio.run(task, sound_params(model, seed=22))
    assert np.array_equal(samples(a.outputs[0].path), samples(b.outputs[0].path))
    assert not np.array_equal(samples(a.outputs[0].path), samples(c.outputs[0].path))


def test_flac_and_several_waveforms(studio):
    job = studio.run("audio", sound_params("tiny-stable-audio", format="flac", num_waveforms=2))
    assert job.status is JobStatus.DONE, job.error
    assert [o.kind for o in job.outputs] == ["audio", "waveform", "audio", "waveform"]
    assert job.outputs[0].path.suffix == ".flac" and read_audio(job.outputs[2].path).channels == 2
    assert not np.array_equal(samples(job.outputs[0].path), samples(job.outputs[2].path))


def test_musicgen_sampling_controls_reach_the_model(studio):
    base = samples(studio.run("music", sound_params("tiny-musicgen")).outputs[0].path)
    for change in ({"temperature": 0.3}, {"top_k": 5}, {"cfg": 1.0}):
        other = samples(studio.run("music", sound_params("tiny-musicgen", **change)).outputs[0].path)
        assert not np.array_equal(base, other), change


@pytest.mark.parametrize("task, model, change, message", [
    ("audio", "tiny-stable-audio", {"seconds": 30}, "at most 11.5 s"),
    ("audio", "tiny-audioldm2", {"num_waveforms": 2}, "1 waveform per job"),
    ("music", "tiny-musicgen", {"seconds": 31}, "at most 30 s"),
    ("music", "tiny-musicgen", {"negative_prompt": "drums"},
     "takes no negative prompt: its guidance is against silence"),
    ("audio", "tiny-stable-audio", {"format": "mp3"}, "format"),
    ("audio", "tiny-musicgen", {}, "cannot do audio generation"),
])
def test_sound_bad_input(studio, task, model, change, message):
    job = studio.run(task, sound_params(model, **change))
    assert job.status is JobStatus.FAILED and message in job.error
    assert files_under(studio.settings.outputs_dir) == []


@pytest.fixture
def input_video(tmp_path):
    from studio.media_av import save_mp4

    rng = np.random.default_rng(0)
    frames = (rng.random((12, 48, 64, 3)) * 255).astype(np.uint8)
    return str(save_mp4(frames, tmp_path, "clip.mp4", fps=16, title="input", job={}).path)


def test_video_to_video_restyles_an_input_clip(studio, input_video, start_image):
    params = video_params("tiny-wan", start_image, video=input_video, steps=10)  # strength counts in steps
    job = studio.run("video", params)
    assert job.status is JobStatus.DONE, job.error
    assert [o.kind for o in job.outputs] == ["video", "poster", "input"]
    assert read_video(job.outputs[0].path).frames == 9
    weaker = studio.run("video", {**params, "strength": 0.5})
    assert not np.array_equal(decoded_frames(job.outputs[0].path), decoded_frames(weaker.outputs[0].path))
    assert studio.history.get_job(job.id).params["strength"] == 0.8


@pytest.mark.parametrize("change, message", [
    ({"model": "tiny-cogvideox", "frames": 9}, "cannot restyle an input video"),
    ({"frames": 33}, "has 12 frames; this job needs 33"),
    ({"strength": 1.5}, "strength"),
    ({"strength": 0.3}, "leaves no step to redraw"),
])
def test_video_to_video_bad_input(studio, input_video, start_image, change, message):
    job = studio.run("video", {**video_params("tiny-wan", start_image, video=input_video), **change})
    assert job.status is JobStatus.FAILED and message in job.error


def test_an_upload_that_is_not_a_video(studio, tmp_path, start_image):
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"not a video at all")
    job = studio.run("video", video_params("tiny-wan", start_image, video=str(fake)))
    assert job.status is JobStatus.FAILED and "not a video the studio can read" in job.error


@pytest.fixture
def control_clip(tmp_path):
    from studio.media_av import save_mp4

    def make(seed):
        frames = (np.random.default_rng(seed).random((9, 32, 48, 3)) * 255).astype(np.uint8)
        return str(save_mp4(frames, tmp_path, f"control-{seed}.mp4", fps=8, title="pose", job={}).path)

    return make


def control_params(model, clip, **extra):
    params = {"model": model, "prompt": "a dancer on a stage", "steps": 2, "seed": 9, "frames": 9,
              "control_video": clip}
    params.update(extra)
    return params


@pytest.mark.parametrize("model", ["tiny-wan-vace", "tiny-cogvideox-fun-control"])
def test_a_control_video_guides_the_new_one(studio, control_clip, model):
    job = studio.run("video", control_params(model, control_clip(1)))
    assert job.status is JobStatus.DONE, job.error
    assert [o.kind for o in job.outputs] == ["video", "poster", "input"]
    info = read_video(job.outputs[0].path)
    assert (info.frames, info.width, info.height) == (9, 48, 32)
    assert info.job["params"]["control_video"].endswith("control-1.mp4")


def test_another_control_video_gives_another_video(studio, control_clip):
    a = studio.run("video", control_params("tiny-cogvideox-fun-control", control_clip(1)))
    b = studio.run("video", control_params("tiny-cogvideox-fun-control", control_clip(2)))
    assert not np.array_equal(decoded_frames(a.outputs[0].path), decoded_frames(b.outputs[0].path))


def test_vace_takes_a_reference_image(studio, control_clip, start_image):
    job = studio.run("video", control_params("tiny-wan-vace", control_clip(1), reference_image=start_image,
                                             control_scale=0.5))
    assert job.status is JobStatus.DONE, job.error
    assert studio.history.get_job(job.id).params["control_scale"] == 0.5


@pytest.mark.parametrize("model, change, message", [
    ("tiny-wan-vace", {"control_video": None}, "add one"),
    ("tiny-cogvideox-fun-control", {"reference_image": "ref.png"}, "takes no reference image"),
    ("tiny-wan", {}, "takes no control video"),
    ("tiny-wan-vace", {"frames": 17}, "this job needs 17"),
])
def test_control_video_bad_input(studio, control_clip, model, change, message):
    job = studio.run("video", {**control_params(model, control_clip(1)), **change})
    assert job.status is JobStatus.FAILED and message in job.error
