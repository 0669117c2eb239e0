"""MusicGen Melody: the chroma of a melody clip as transformers' MusicgenMelodyFeatureExtractor computes
it (without torchaudio), and melody jobs end to end on the built-in tiny model: the form, the named
API, the CLI, and bad clips refused with a clear message, no file, the worker still running."""

from __future__ import annotations

import importlib
import math
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import files_under, free_port, kept

from studio.engines.chroma import MelodyChroma, resample
from studio.history import JobStatus
from studio.media_av import read_audio
from studio.tasks.music import MAX_MELODY_BYTES

TINY = "tiny-musicgen-melody"
PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def note_hz(name: str, octave: int = 4) -> float:
    """Equal temperament, A4 = 440 Hz."""
    return 440.0 * 2 ** ((PITCH_CLASSES.index(name) - 9 + 12 * (octave - 4)) / 12)


def tune(names: list[str], seconds_each: float, rate: int, seed: int = 0) -> np.ndarray:
    """A melody of one note after another, each with two overtones, over a little noise."""
    parts = []
    for name in names:
        f = note_hz(name)
        parts.append(tone(f, seconds_each, rate) + tone(2 * f, seconds_each, rate, 0.2)
                     + tone(3 * f, seconds_each, rate, 0.1))
    wave = np.concatenate(parts)
    return (wave + np.random.default_rng(seed).normal(0, 0.01, wave.shape)).astype(np.float32)


# -- the chroma -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [32000, 44100, 16000])
@pytest.mark.parametrize("name", ["A", "C", "E", "F#"])
def test_a_pure_tone_lights_its_pitch_class_in_every_frame(rate, name):
    chroma = MelodyChroma()
    features = chroma(tone(note_hz(name), 2.0, rate), rate)
    assert features.shape == (1, 1 + 64000 // 4096, 12) and features.dtype == torch.float32
    assert torch.equal(features.sum(-1), torch.ones(1, features.shape[1]))  # one-hot per frame
    assert [PITCH_CLASSES[i] for i in features[0].argmax(-1).tolist()] == [name] * features.shape[1]


def test_a440_is_the_a_bin_and_others_are_far_below():
    energies = MelodyChroma().energies(tone(440.0, 2.0, 32000), 32000)
    assert torch.all(energies[:, 9] == 1.0)  # normalised by the frame's largest: A is it
    # The filters are Gaussian bumps one semitone wide: G# and A# get exp(-2) of A; the rest next to nothing.
    assert torch.all(energies[:, [8, 10]] < 0.2)
    assert torch.all(energies[:, [0, 1, 2, 3, 4, 5, 6, 7, 11]] < 0.02)


def torchaudio_stand_in() -> types.SimpleNamespace:
    """torchaudio's two pieces the extractor calls, as torchaudio documents them: Spectrogram(n_fft,
    win_length, hop_length, power=2, center, pad=0, normalized=True) is torch.stft with a periodic Hann
    window, reflect padding, divided by the window's L2 norm, squared. Resampling is not stood in for:
    it is only called for a clip at another rate than 32 kHz (checked against the formula below)."""

    class Spectrogram(torch.nn.Module):
        def __init__(self, n_fft, win_length, hop_length, power, center, pad, normalized):
            super().__init__()
            assert (power, center, pad, normalized) == (2, True, 0, True)  # what the extractor asks
            self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
            self.window = torch.hann_window(win_length)

        def forward(self, waveform):
            shape = waveform.shape
            spec = torch.stft(waveform.reshape(-1, shape[-1]), n_fft=self.n_fft, hop_length=self.hop_length,
                              win_length=self.win_length, window=self.window, center=True, pad_mode="reflect",
                              normalized=False, onesided=True, return_complex=True)
            spec = spec.reshape(*shape[:-1], *spec.shape[-2:]) / self.window.pow(2.0).sum().sqrt()
            return spec.abs().pow(2.0)

    def no_resampling(*_args, **_kwargs):
        raise AssertionError("the clip was not at 32 kHz")

    return types.SimpleNamespace(transforms=types.SimpleNamespace(Spectrogram=Spectrogram),
                                 functional=types.SimpleNamespace(resample=no_resampling))


@pytest.fixture
def extractor(monkeypatch):
    """transformers' own MusicgenMelodyFeatureExtractor (its padding, truncation, filter bank, einsum,
    normalisation and one-hot), with torchaudio stood in for."""
    # The module itself: the package's lazy attribute is a placeholder that refuses without torchaudio.
    module = importlib.import_module("transformers.models.musicgen_melody.feature_extraction_musicgen_melody")
    monkeypatch.setattr(module, "torchaudio", torchaudio_stand_in(), raising=False)
    return module.MusicgenMelodyFeatureExtractor()


@pytest.mark.parametrize("seconds", [0.3, 3.7, 31.5])  # shorter than one window; a few bars; cut at 30 s
def test_chroma_is_what_the_feature_extractor_gives(extractor, seconds):
    wave = tune(["C", "E", "G", "A", "F", "D", "B", "C#"], seconds / 8, 32000)
    theirs = extractor(torch.from_numpy(wave), sampling_rate=32000, return_tensors="pt")["input_features"]
    ours = MelodyChroma()(wave, 32000)
    assert ours.shape == theirs.shape == (1, MelodyChroma().frames(len(wave)), 12)
    assert torch.equal(ours, theirs)


def test_chroma_of_a_stereo_clip_is_that_of_its_mono_mix(extractor):
    left, right = tune(["D", "F#", "A"], 1.0, 32000), tune(["G", "B", "D"], 1.0, 32000, seed=1)
    stereo = np.stack([left, right])
    # The extractor takes a batch of stereo clips as (batch, channels, samples) and mixes them to mono.
    theirs = extractor(torch.from_numpy(stereo)[None], sampling_rate=32000, return_tensors="pt")["input_features"]
    assert torch.equal(MelodyChroma()(stereo, 32000), theirs)


def test_power_spectrogram_is_the_stft_the_extractor_asks_for():
    """Independently of torch.stft: frames centred by reflection, a periodic Hann window, numpy's FFT in
    float64, over the window's L2 norm, squared."""
    chroma = MelodyChroma()
    wave = tune(["A", "C"], 0.8, 32000)
    n, hop = chroma.n_fft, chroma.hop_length
    padded = np.pad(wave.astype(np.float64), n // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    frames = np.stack([padded[i * hop:i * hop + n] for i in range(1 + len(wave) // hop)])
    reference = (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2).T / np.sum(window ** 2)
    ours = chroma.power_spectrogram(torch.from_numpy(wave)).double().numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 2e-4 * reference.max()


def band_limited_reference(x: np.ndarray, rate: int, new_rate: int, width: int = 24, rolloff: float = 0.945):
    """torchaudio.functional.resample's definition evaluated directly in float64: output sample j at
    time j / new_rate sums x[i] * sinc(d) * cos(pi d / 2 width)^2 * rolloff * min / rate, where d is the
    time between them in units of 1 / (rolloff * min(rate, new_rate)), for |d| < width."""
    low = min(rate, new_rate) * rolloff
    out = np.zeros(math.ceil(len(x) * new_rate / rate))
    reach = width / low  # seconds either side
    for j in range(len(out)):
        t = j / new_rate
        first, last = max(0, math.floor((t - reach) * rate)), min(len(x) - 1, math.ceil((t + reach) * rate))
        i = np.arange(first, last + 1)
        d = (i / rate - t) * low
        h = np.sinc(d) * np.cos(np.pi * d / (2 * width)) ** 2 * (low / rate)
        h[np.abs(d) > width] = 0.0
        out[j] = np.dot(x[i], h)
    return out


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 16000])
def test_resampling_is_torchaudios_band_limited_interpolation(rate):
    x = tune(["A", "E"], 0.05, rate, seed=3)
    x = x + tone(0.45 * rate, 0.1, rate, 0.05)[:len(x)]  # and a high tone, filtered out going down to 32 kHz
    ours = resample(torch.from_numpy(x), rate, 32000).double().numpy()
    reference = band_limited_reference(x.astype(np.float64), rate, 32000)
    assert ours.shape == reference.shape == (math.ceil(len(x) * 32000 / rate),)
    # torchaudio builds its kernel in the waveform's dtype, float32 here, as this does: ~1e-5 of rounding.
    assert np.abs(ours - reference).max() < 1e-4


def test_the_chroma_settings_come_from_the_checkpoint():
    assert MelodyChroma.from_config({"hop_length": 2048, "feature_size": 12}).hop_length == 2048
    assert MelodyChroma.from_config({}) == MelodyChroma()
    with pytest.raises(ValueError, match="n_fft must be a positive whole number"):
        MelodyChroma.from_config({"n_fft": "big"})


# -- jobs on the tiny model -----------------------------------------------------------------------


def write_clip(path, wave, rate, subtype="PCM_16"):
    sf.write(str(path), np.asarray(wave).T, rate, subtype=subtype)
    return str(path)


@pytest.fixture
def melody(tmp_path):
    """A stereo WAV at 44.1 kHz: a tune in the left channel, its fifth in the right."""
    left, right = tune(["C", "E", "G", "C"], 0.75, 44100), tune(["G", "B", "D", "G"], 0.75, 44100, seed=1)
    return write_clip(tmp_path / "tune.wav", np.stack([left, right]), 44100)


@pytest.fixture
def other_melody(tmp_path):
    return write_clip(tmp_path / "other.flac", tune(["F#", "A#", "C#", "D#"], 0.75, 32000, seed=2), 32000)


def params(**extra):
    return {"model": TINY, "prompt": "a folk tune on a fiddle", "seed": 9, "seconds": 1.5, **extra}


def samples(path):
    data, _ = sf.read(str(path), always_2d=True)
    return data


def test_a_melody_job_writes_the_asked_clip_and_records_its_melody(studio, melody):
    job = studio.run("music", params(melody=melody))
    assert job.status is JobStatus.DONE, job.error
    assert [o.kind for o in job.outputs] == ["audio", "waveform"]
    info = read_audio(job.outputs[0].path)
    assert (info.sample_rate, info.channels) == (32000, 1)
    assert info.duration_s == pytest.approx(1.5, abs=0.02)
    assert "a folk tune on a fiddle" in info.title
    assert info.job["job_id"] == job.id and kept(info.job["params"]["melody"], melody)
    assert info.job["used"]["melody"] == "tune.wav" and info.job["used"]["chroma_frames"] == 1 + 96000 // 4096
    assert np.abs(samples(job.outputs[0].path)).max() > 0
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.DONE and kept(record.params["melody"], melody)  # the job's own copy
    assert record.assets[0].duration_s == pytest.approx(1.5, abs=0.02)


def test_same_seed_and_melody_same_samples(studio, melody):
    a = samples(studio.run("music", params(melody=melody)).outputs[0].path)
    b = samples(studio.run("music", params(melody=melody)).outputs[0].path)
    c = samples(studio.run("music", params(melody=melody, seed=10)).outputs[0].path)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_the_melody_changes_the_music(studio, melody, other_melody):
    followed = samples(studio.run("music", params(melody=melody)).outputs[0].path)
    other = samples(studio.run("music", params(melody=other_melody)).outputs[0].path)
    without = studio.run("music", params())
    assert without.status is JobStatus.DONE, without.error  # no melody: the model's null melody
    assert read_audio(without.outputs[0].path).duration_s == pytest.approx(1.5, abs=0.02)
    plain = samples(without.outputs[0].path)
    assert not np.array_equal(followed, other)
    assert not np.array_equal(followed, plain) and not np.array_equal(other, plain)


def test_a_rerun_of_a_melody_job_is_exact(studio, melody):
    job = studio.run("music", params(melody=melody, seed=-1))
    again = studio.gallery.rerun(job.id)
    assert again.wait(timeout=120)
    assert again.status is JobStatus.DONE, again.error
    assert again.spec.melody == job.spec.melody and kept(again.spec.melody, melody)  # the job's copy, once
    assert again.spec.seed == job.spec.seed
    assert np.array_equal(samples(job.outputs[0].path), samples(again.outputs[0].path))


@pytest.fixture
def bad_clips(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is text, not sound")
    too_long = write_clip(tmp_path / "long.wav", tone(440.0, 31.0, 8000), 8000)
    big = tmp_path / "huge.wav"
    with open(big, "wb") as f:  # sparse: its size says too big before a byte is read
        f.truncate(MAX_MELODY_BYTES + 1)
    not_numbers = tone(440.0, 1.0, 32000)
    not_numbers[100] = np.nan
    nan = write_clip(tmp_path / "nan.wav", not_numbers, 32000, subtype="FLOAT")
    empty = write_clip(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 32000)
    return {"text": str(text), "long": too_long, "big": str(big), "nan": nan, "empty": empty,
            "missing": str(tmp_path / "gone.wav")}


@pytest.mark.parametrize("clip, model, message", [
    ("text", TINY, "'notes.wav' is not an audio file the studio can read (use WAV, FLAC, OGG or MP3)"),
    ("long", TINY, "'long.wav' is 31.0 s long; a melody may be at most 30 s"),
    ("big", TINY, "the studio takes melody clips of at most 64 MB"),
    ("nan", TINY, "has samples that are not numbers"),
    ("empty", TINY, "holds no sound"),
    ("missing", TINY, "the melody clip 'gone.wav' is missing (upload it again)"),
    ("long", "tiny-musicgen", "Tiny MusicGen — test model takes no melody clip: pick a model that follows one"),
    ("long", "audioldm2-music", "takes no melody clip"),  # refused before it is looked for on disk
], ids=["not-audio", "too-long", "too-big", "nan", "empty", "missing", "musicgen-takes-none", "audioldm2-takes-none"])
def test_a_bad_melody_fails_the_job_clearly_and_the_worker_goes_on(studio, bad_clips, clip, model, message):
    job = studio.run("music", params(model=model, melody=bad_clips[clip]))
    assert job.status is JobStatus.FAILED and message in job.error, job.error
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.FAILED and message in record.error
    assert files_under(studio.settings.outputs_dir) == []
    assert studio.run("music", params(seconds=0.5)).status is JobStatus.DONE  # the worker is still there


def test_a_clip_of_exactly_30_s_is_taken_whole(studio, tmp_path):
    clip = write_clip(tmp_path / "thirty.wav", tune(["A", "D"], 15.0, 8000), 8000)
    job = studio.run("music", params(melody=clip, seconds=0.5))
    assert job.status is JobStatus.DONE, job.error
    used = read_audio(job.outputs[0].path).job["used"]
    assert used["melody_seconds"] == 30.0 and used["chroma_frames"] == 235  # the model's chroma_length


# -- the Music tab, the named API and the CLI -----------------------------------------------------


def test_the_music_tab_shows_the_melody_upload_for_melody_models_only(studio, melody):
    import gradio as gr

    from studio.ui.audio_tabs import build_music

    with gr.Blocks():
        form = build_music(studio)
    upload = next(c for c in form.inputs if getattr(c, "elem_id", None) == "music-melody")
    assert isinstance(upload, gr.Audio) and upload.type == "filepath" and upload.sources == ["upload"]
    assert upload.visible is False  # the default model, Tiny MusicGen, takes none
    assert form.model_updates(TINY)[upload]["visible"] is True
    assert form.model_updates("tiny-musicgen")[upload]["visible"] is False

    values = {c: getattr(c, "value", None) for c in form.inputs}
    values.update({form.model: TINY, form.fields["prompt"]: "a march", form.fields["seed"]: 4, upload: melody})
    sent = form.read(*[values[c] for c in form.inputs])
    assert sent["melody"] == melody
    job = studio.run("music", sent)
    assert job.status is JobStatus.DONE, job.error
    values[form.model] = "tiny-musicgen"  # a clip left in the hidden upload is not sent to a model without one
    assert "melody" not in form.read(*[values[c] for c in form.inputs])


def test_generate_music_takes_a_melody_upload_and_submit_job_refuses_a_path(studio, melody):
    from gradio_client import Client, handle_file

    from studio.ui.app import build_app
    from studio.ui.launch import launch_options

    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True,
                        **launch_options(studio.settings.replace(port=free_port()), None))
    try:
        client = Client(demo.local_url, verbose=False)
        named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert "melody" in {p["parameter_name"] for p in named["/generate_music"]["parameters"]}
        player, picture, files, status = client.predict(prompt="a waltz", model=TINY, melody=handle_file(melody),
                                                        seconds=1.0, seed=3, api_name="/generate_music")
        assert "Done" in status, status
        assert player.endswith(".wav") and read_audio(player).duration_s == pytest.approx(1.0, abs=0.02)
        [record] = studio.history.list_jobs()
        assert record.params["melody"].endswith("tune.wav") and record.params["melody"] != melody  # the upload
        job = client.predict(record.id, api_name="/job_status")
        assert job["params"]["melody"] == "tune.wav"  # by its name only
        with pytest.raises(Exception, match="melody: send input files through /generate_music, not as paths"):
            client.predict("music", {"model": TINY, "prompt": "a waltz", "melody": melody}, api_name="/submit_job")
        player, picture, files, status = client.predict(prompt="a waltz", model="tiny-musicgen",
                                                        melody=handle_file(melody), api_name="/generate_music")
        assert "takes no melody clip" in status
    finally:
        demo.close()


def test_studio_generate_music_takes_a_melody_file(tmp_path, model_cache, capsys, melody):
    from studio.cli import main
    from studio.history import HistoryStore

    home = tmp_path / "home"
    argv = ["generate", "music", "--home", str(home), "--model-cache", str(model_cache), "--model", TINY,
            "--prompt", "a march", "--melody", melody, "--seconds", "1", "--seed", "2"]
    assert main(argv) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith(": done") and lines[2].endswith(".wav")
    store = HistoryStore(home / "studio.db")
    try:
        [record] = store.list_jobs()
    finally:
        store.close()
    assert kept(record.params["melody"], melody)
    with pytest.raises(SystemExit) as refused:  # argparse: the file must exist
        main([*argv[:11], str(tmp_path / "none.wav")])
    assert refused.value.code == 2 and "no such file" in capsys.readouterr().err
