"""The built-in tiny audio/music models: real classes, saved and reloaded like a download, usable clips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.zoo.builtin_audio import tiny_roberta_tokenizer
from helpers import builders_from

AUDIO_BUILDERS = builders_from("studio.zoo.builtin_audio")  # as the model families declare them

PROMPT, OTHER_PROMPT = "a dog barking in the rain", "soft piano chords"
MUSICGENS = ("tiny-musicgen", "tiny-musicgen-melody")


def _state_dict(built) -> dict[str, torch.Tensor]:
    """Every weight and buffer of a pipeline, a MusicGen wrapper or a model, by qualified name."""
    if hasattr(built, "components"):
        return {f"{name}.{key}": value
                for name, module in built.components.items() if isinstance(module, torch.nn.Module)
                for key, value in module.state_dict().items()}
    return dict(getattr(built, "model", built).state_dict())


class Loaded:
    """A saved tiny model loaded back the way a downloaded checkpoint is, with a common generate()."""

    def __init__(self, name: str, folder: Path):
        self.name = name
        if name in MUSICGENS:
            from transformers import (AutoProcessor, MusicgenForConditionalGeneration,
                                      MusicgenMelodyForConditionalGeneration)

            if name == "tiny-musicgen":
                self.model = MusicgenForConditionalGeneration.from_pretrained(folder)
                self.processor = AutoProcessor.from_pretrained(folder)
            else:  # the studio's processor: transformers' needs torchaudio
                from studio.families.musicgen.melody import load_melody_processor

                self.model = MusicgenMelodyForConditionalGeneration.from_pretrained(folder)
                self.processor = load_melody_processor(str(folder))
            self.sample_rate = self.model.config.audio_encoder.sampling_rate
            self.channels = self.model.config.decoder.audio_channels
        else:
            from diffusers import AudioLDM2Pipeline, StableAudioPipeline

            cls = StableAudioPipeline if name == "tiny-stable-audio" else AudioLDM2Pipeline
            self.pipe = cls.from_pretrained(folder)
            self.pipe.set_progress_bar_config(disable=True)
            if name == "tiny-stable-audio":
                self.sample_rate, self.channels = self.pipe.vae.sampling_rate, self.pipe.vae.config.audio_channels
            else:
                self.sample_rate, self.channels = self.pipe.vocoder.config.sampling_rate, 1

    def generate(self, prompt: str, seed: int, seconds: float = 1.0) -> np.ndarray:
        """A clip as (channels, samples)."""
        if self.name in MUSICGENS:
            inputs = self.processor(text=[prompt], padding=True, return_tensors="pt")
            frame_rate = self.model.config.audio_encoder.frame_rate
            # The delay pattern costs num_codebooks - 1 extra steps before the last codebook's frame.
            tokens = round(seconds * frame_rate) + self.model.decoder.num_codebooks - 1
            torch.manual_seed(seed)
            audio = self.model.generate(**inputs, do_sample=True, max_new_tokens=tokens)
            return audio[0].numpy()
        generator = torch.Generator().manual_seed(seed)
        if self.name == "tiny-stable-audio":
            audio = self.pipe(prompt, audio_end_in_s=seconds, num_inference_steps=4, generator=generator).audios
            return audio[0].float().numpy()
        audio = self.pipe(prompt, audio_length_in_s=seconds, num_inference_steps=3, generator=generator).audios
        return np.asarray(audio)[0][None, :]


@pytest.fixture(scope="module", params=sorted(AUDIO_BUILDERS))
def built(request, tmp_path_factory):
    name = request.param
    model = AUDIO_BUILDERS[name]()
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder, safe_serialization=True)
    return name, model, folder, Loaded(name, folder)


def test_saved_as_safetensors_and_small(built):
    _, _, folder, _ = built
    weights = [p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 5 * 1024 * 1024


def test_real_classes(built):
    name, _, _, loaded = built
    if name == "tiny-stable-audio":
        expected = {"transformer": "StableAudioDiTModel", "vae": "AutoencoderOobleck", "text_encoder": "T5EncoderModel",
                    "projection_model": "StableAudioProjectionModel",
                    "scheduler": "CosineDPMSolverMultistepScheduler"}
    elif name == "tiny-audioldm2":
        expected = {"unet": "AudioLDM2UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "ClapModel",
                    "text_encoder_2": "T5EncoderModel", "language_model": "GPT2LMHeadModel",
                    "projection_model": "AudioLDM2ProjectionModel", "vocoder": "SpeechT5HifiGan",
                    "feature_extractor": "ClapFeatureExtractor", "scheduler": "DDIMScheduler"}
    elif name == "tiny-musicgen":
        assert type(loaded.model).__name__ == "MusicgenForConditionalGeneration"
        assert type(loaded.processor).__name__ == "MusicgenProcessor"
        assert type(loaded.model.audio_encoder).__name__ == "EncodecModel"
        assert type(loaded.model.text_encoder).__name__ == "T5EncoderModel"
        assert loaded.processor.feature_extractor.sampling_rate == loaded.sample_rate
        assert loaded.model.audio_encoder.config.num_quantizers == loaded.model.decoder.num_codebooks
        return
    else:
        assert type(loaded.model).__name__ == "MusicgenMelodyForConditionalGeneration"
        assert type(loaded.model.audio_encoder).__name__ == "EncodecModel"
        assert type(loaded.model.text_encoder).__name__ == "T5EncoderModel"
        assert type(loaded.processor.tokenizer).__name__.startswith("T5Tokenizer")  # T5Tokenizer in 5.x
        assert loaded.processor.chroma.sampling_rate == loaded.sample_rate
        assert (loaded.model.config.num_chroma, loaded.model.config.chroma_length) == (12, 235)
        assert loaded.model.audio_encoder.config.num_quantizers == loaded.model.decoder.num_codebooks
        return
    assert {key: type(loaded.pipe.components[key]).__name__ for key in expected} == expected


def test_reload_keeps_every_weight(built):
    name, model, _, loaded = built
    saved = _state_dict(model)
    reloaded = _state_dict(loaded.model if name in MUSICGENS else loaded.pipe)
    assert saved.keys() == reloaded.keys()
    assert all(torch.equal(saved[key], reloaded[key]) for key in saved)


def test_same_weights_on_every_build(built):
    name, model, _, _ = built
    first, second = _state_dict(model), _state_dict(AUDIO_BUILDERS[name]())
    assert first.keys() == second.keys()
    differing = [key for key in first if not torch.equal(first[key], second[key])]
    assert not differing


# (sample rate, channels) of the real checkpoints these stand in for.
EXPECTED_FORMAT = {"tiny-stable-audio": (44100, 2), "tiny-audioldm2": (16000, 1), "tiny-musicgen": (32000, 1),
                   "tiny-musicgen-melody": (32000, 1)}


def test_clip_has_the_requested_format_and_is_reproducible(built):
    name, _, _, loaded = built
    assert (loaded.sample_rate, loaded.channels) == EXPECTED_FORMAT[name]
    clip = loaded.generate(PROMPT, seed=7, seconds=1.0)
    assert clip.shape == (loaded.channels, loaded.sample_rate)
    assert np.isfinite(clip).all()
    assert clip.std() > 1e-3  # audible, not a constant or near-silence
    np.testing.assert_array_equal(loaded.generate(PROMPT, seed=7, seconds=1.0), clip)
    other = loaded.generate(OTHER_PROMPT, seed=7, seconds=1.0)
    assert np.abs(other - clip).mean() > 1e-3  # the prompt reaches the audio


@pytest.mark.parametrize("built", ["tiny-stable-audio"], indirect=True)
def test_stable_audio_length_limit(built):
    _, _, _, loaded = built
    window = loaded.pipe.transformer.config.sample_size * loaded.pipe.vae.hop_length / loaded.sample_rate
    assert math.isclose(window, 256 * 2048 / 44100)
    clip = loaded.generate(PROMPT, seed=0, seconds=2.0)
    assert clip.shape == (2, 2 * 44100)
    with pytest.raises(ValueError, match="longer than the model maximum"):
        loaded.generate(PROMPT, seed=0, seconds=math.ceil(window))


def test_clap_tokenizer_handles_any_text():
    tok = tiny_roberta_tokenizer()
    for text in ["a cat", "一只猫在雪地里", "🐱🦊 emoji", ""]:
        ids = tok(text).input_ids
        assert ids[0] == tok.cls_token_id == 0 and ids[-1] == tok.sep_token_id == 2
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("built", ["tiny-musicgen-melody"], indirect=True)
def test_musicgen_melody_is_saved_in_the_official_layout(built):
    import json

    _, _, folder, _ = built
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= names
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["feature_extractor_type"] == "MusicgenMelodyFeatureExtractor"
    assert (preprocessor["n_fft"], preprocessor["hop_length"], preprocessor["sampling_rate"]) == (16384, 4096, 32000)
    assert json.loads((folder / "tokenizer_config.json").read_text())["processor_class"] == "MusicgenMelodyProcessor"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MusicgenMelodyForConditionalGeneration"]
