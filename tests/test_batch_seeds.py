"""A batch numbers its images' seeds seed, seed+1, … (as A1111 does): each image's PNG says its own
seed, and that seed alone makes the same picture."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("params", [
    {"model": "tiny-lumina-next", "prompt": "a red kite", "width": 64, "height": 64, "steps": 3},
    {"model": "tiny-lumina2", "prompt": "a red kite", "width": 64, "height": 64, "steps": 3},
    {"model": "tiny-llamagen-c2i", "prompt": "tabby"},
], ids=["lumina-next", "lumina2-diffusers", "llamagen"])
def test_image_k_of_a_batch_is_what_its_own_seed_makes_alone(studio, params):
    batch = studio.run("image", {**params, "num_images": 3, "seed": 41})
    assert batch.error is None, batch.error
    # The A1111 `parameters` text of each PNG, as other tools read it.
    seeds = [int(re.search(r"Seed: (\d+)", Image.open(saved.path).text["parameters"]).group(1))
             for saved in batch.outputs]
    assert seeds == [41, 42, 43]
    alone = studio.run("image", {**params, "num_images": 1, "seed": 43})
    assert alone.error is None, alone.error
    third, single = pixels(batch.outputs[2].path), pixels(alone.outputs[0].path)
    # The same noise; a batch of three runs its matrix products at another size, so a few
    # values may differ by the last bit after decoding, never more.
    assert np.abs(third - single).max() <= 2
    assert np.abs(pixels(batch.outputs[0].path) - single).mean() > 5  # the seeds do differ
