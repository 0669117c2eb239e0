"""The built-in tiny video models: real classes, a save/load round trip, reproducible clips that follow
their prompt (and image), and the same weights on every build."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_small_safetensors, builders_from, save_and_reload

VIDEO_BUILDERS = builders_from("studio.zoo.builtin_video")  # as the model families declare them


HEIGHT, WIDTH, FRAMES = 32, 48, 9

EXPECTED_CLASSES = {
    "tiny-wan": ("WanPipeline", "WanTransformer3DModel", "AutoencoderKLWan", "UMT5EncoderModel",
                 "UniPCMultistepScheduler"),
    "tiny-wan-i2v": ("WanImageToVideoPipeline", "WanTransformer3DModel", "AutoencoderKLWan", "UMT5EncoderModel",
                     "UniPCMultistepScheduler"),
    "tiny-cogvideox": ("CogVideoXPipeline", "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX",
                       "T5EncoderModel", "CogVideoXDDIMScheduler"),
    "tiny-cogvideox-i2v": ("CogVideoXImageToVideoPipeline", "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX",
                           "T5EncoderModel", "CogVideoXDDIMScheduler"),
}


def picture(seed: int) -> Image.Image:
    """A small noise picture, deliberately not the video's size or aspect (the pipeline resizes it)."""
    return Image.fromarray((np.random.default_rng(seed).random((40, 56, 3)) * 255).astype("uint8"))


@dataclass
class Built:
    name: str
    original: object
    folder: Path
    pipe: object
    clips: dict = field(default_factory=dict)

    def generate(self, prompt: str = "a red fox running through snow", seed: int = 0, image_seed: int = 0):
        key = (prompt, seed, image_seed)
        if key not in self.clips:
            extra = {"image": picture(image_seed)} if "i2v" in self.name else {}
            self.clips[key] = self.pipe(
                prompt=prompt, height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=2,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **extra,
            ).frames[0]
        return self.clips[key]


# The control-video models are called differently; tests/test_builtin_control.py covers them.
PLAIN_MODELS = sorted(name for name in VIDEO_BUILDERS if name in EXPECTED_CLASSES)


@pytest.fixture(scope="module", params=PLAIN_MODELS)
def built(request, tmp_path_factory) -> Built:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    original, pipe = save_and_reload(VIDEO_BUILDERS[name], folder)
    return Built(name, original, folder, pipe)


def test_saved_as_real_classes_in_safetensors_and_small(built):
    pipe = built.pipe
    assert (type(pipe).__name__, type(pipe.transformer).__name__, type(pipe.vae).__name__,
            type(pipe.text_encoder).__name__, type(pipe.scheduler).__name__) == EXPECTED_CLASSES[built.name]
    assert_small_safetensors(built.folder)
    assert pipe.text_encoder.config.vocab_size >= len(pipe.tokenizer)


def test_reloaded_pipeline_makes_a_clip_of_the_asked_shape(built):
    clip = built.generate()
    assert clip.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.isfinite(clip).all() and clip.min() >= 0.0 and clip.max() <= 1.0
    assert clip.std() > 0.01  # not a flat picture


def test_same_seed_same_clip_other_seed_other_clip(built):
    first = built.generate(seed=0)
    built.clips.clear()
    assert np.array_equal(built.generate(seed=0), first)
    assert not np.allclose(built.generate(seed=1), first, atol=1e-3)


def test_clip_follows_the_prompt(built):
    assert not np.allclose(built.generate("a red fox running through snow"),
                           built.generate("an old lighthouse at night, waves"), atol=1e-3)


def test_image_to_video_follows_the_image(built):
    if "i2v" not in built.name:
        pytest.skip("text-to-video model")
    assert not np.allclose(built.generate(image_seed=0), built.generate(image_seed=1), atol=1e-3)


def _state(pipe) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value for name, module in pipe.components.items()
            if isinstance(module, torch.nn.Module) for key, value in module.state_dict().items()}


def test_same_weights_on_every_build(built):
    # Leave freed memory full of NaN first: a parameter allocated with torch.empty and never
    # initialised would pick it up and differ from the first build.
    garbage = [torch.full((n,), float("nan")) for n in range(1, 200_000, 4_999)]
    del garbage
    first, second = _state(built.original), _state(VIDEO_BUILDERS[built.name]())
    assert first.keys() == second.keys()
    assert [k for k in first if not torch.equal(first[k], second[k])] == []
    assert all(torch.isfinite(v.float()).all() for v in second.values())
