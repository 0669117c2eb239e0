"""Compositional generation and visual anagrams: the algorithms' invariants and the tasks end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import FAST_STEPS, files_under

from studio.engines import anagram
from studio.engines.compose import RegionalCrossAttention, regional_text, token_regions
from studio.history import JobStatus
from studio.media import read_png_metadata
from studio.runtime.loader import load_pipeline
from studio.settings import REPO_ROOT
from studio.zoo.cards import CardRegistry

NEXT = CardRegistry.load([REPO_ROOT / "model_zoo"]).get("tiny-lumina-next")
GRIDS = [(r, c) for r in range(1, 5) for c in range(1, 5) if r * c >= 2]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, model_cache):
    from studio.settings import Settings

    return load_pipeline(NEXT, Settings.load(env={}, home=tmp_path_factory.mktemp("h"), model_cache=model_cache))


# -- compositional -------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, cols", GRIDS)
def test_every_caption_lands_in_exactly_its_own_cell(rows, cols):
    cell = 64  # pixels: 4x4 tokens per cell
    regions = token_regions(rows, cols, cols * cell, rows * cell).view(rows * 4, cols * 4)
    for r in range(rows):
        for c in range(cols):
            block = regions[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4]
            assert torch.all(block == r * cols + c), (rows, cols, r, c)
    assert sorted(regions.unique().tolist()) == list(range(rows * cols))


def test_the_reference_2x2_bug_is_not_here():
    # The reference demo gives caption 2 two cells and caption 3 none; here each has its quadrant.
    assert token_regions(2, 2, 64, 64).view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3],
                                                                [2, 2, 3, 3]]


def test_each_cell_sees_only_its_caption_and_the_uncond_row_the_negative(pipe):
    captions = ["a moon", "a river over stones", "an old house", "a cherry tree"]
    feats, mask, per_cell = regional_text(pipe, captions, "blurry", use_cfg=True)
    length = feats.shape[1] // 4
    for k in range(4):
        allowed = per_cell[0, k].nonzero().flatten()
        assert allowed.min() >= k * length and allowed.max() < (k + 1) * length
    neg = per_cell[1]
    assert torch.equal(neg[0], neg[3]) and neg[0].nonzero().max() < length


def test_changing_caption_k_changes_cross_attention_only_in_region_k(pipe):
    captions = ["a moon", "a river", "an old house", "a cherry tree"]
    rows = cols = 2
    regions = token_regions(rows, cols, 128, 128)  # 8x8 tokens
    layer = pipe.transformer.layers[0]
    hidden = torch.randn(1, regions.numel(), layer.attn2.query_dim if hasattr(layer.attn2, "query_dim") else 64,
                         generator=torch.Generator().manual_seed(0))

    def cross(texts):
        feats, _, per_cell = regional_text(pipe, texts, "", use_cfg=False)
        processor = RegionalCrossAttention(layer.attn2.processor, per_cell, regions)
        with torch.no_grad():
            return processor(layer.attn2, hidden, layer.norm1_context(feats))

    base = cross(captions)
    for k in range(4):
        changed = list(captions)
        changed[k] = "a bright red sports car"
        delta = (cross(changed) - base).abs().sum(dim=(2, 3))[0]  # per image token
        assert torch.all(delta[regions == k] > 0), f"caption {k + 1} did not reach its cell"
        # Outside the cell nothing but rounding: exactly 0 on AVX2 CPUs; AVX-512 kernels block the attention
        # sums by sequence length, so other cells move by ~1e-6 of what the changed cell moves.
        assert delta[regions != k].max() <= 1e-4 * delta[regions == k].min(), f"caption {k + 1} leaked outside its cell"


def compose_params(**extra):
    params = {"model": "tiny-lumina-next", "grid_rows": 2, "grid_cols": 2, "steps": FAST_STEPS, "seed": 7,
              "captions": ["a full moon", "a small river", "an old brick house", "a huge cherry tree"]}
    params.update(extra)
    return params


def test_compose_end_to_end_with_history(studio):
    job = studio.run("compose", compose_params(negative_prompt="blurry"))
    assert job.status is JobStatus.DONE, job.error
    [image] = job.outputs
    assert Image.open(image.path).size == (256, 256)
    meta = read_png_metadata(image.path)
    assert meta.infotext.prompt.splitlines() == ["Cell 1: a full moon", "Cell 2: a small river",
                                                 "Cell 3: an old brick house", "Cell 4: a huge cherry tree"]
    assert meta.infotext.fields["Grid"] == "2x2" and meta.infotext.negative_prompt == "blurry"
    record = studio.history.get_job(job.id)
    assert record.task == "compose" and record.params["captions"][2] == "an old brick house"
    assert "cherry tree" in record.prompt
    again = studio.run("compose", compose_params(negative_prompt="blurry"))
    assert np.array_equal(np.asarray(Image.open(image.path)), np.asarray(Image.open(again.outputs[0].path)))


@pytest.mark.parametrize("rows, cols", [(1, 2), (4, 1), (1, 4), (3, 3)])
def test_compose_grids_make_the_derived_canvas(studio, rows, cols):
    job = studio.run("compose", compose_params(grid_rows=rows, grid_cols=cols, captions=[f"cell {i}" for i in
                                                                                      range(rows * cols)], steps=2))
    assert job.status is JobStatus.DONE, job.error
    assert Image.open(job.outputs[0].path).size == (cols * 128, rows * 128)


def test_an_empty_caption_uses_the_plain_prompt_and_says_so(studio):
    job = studio.run("compose", compose_params(captions=["a moon", "a river", "", "a tree"]))
    assert job.status is JobStatus.DONE, job.error
    assert read_png_metadata(job.outputs[0].path).job["used"]["empty_cells"] == [3]


@pytest.mark.parametrize("change, message", [
    ({"captions": ["a", "b", "c"]}, "needs 4 captions (got 3)"),
    ({"grid_rows": 1, "grid_cols": 1, "captions": ["a"]}, "at least two cells"),
    ({"captions": ["", " ", "", ""]}, "every caption is empty"),
    ({"grid_rows": 4, "grid_cols": 4, "captions": ["x"] * 16, "cell_width": 512, "cell_height": 512}, "not possible"),
    ({"model": "tiny-lumina2"}, "cannot do compose generation"),
    ({"grid_rows": 5}, "grid_rows"),
])
def test_compose_bad_input(studio, change, message):
    job = studio.run("compose", compose_params(**change))
    assert job.status is JobStatus.FAILED and message in job.error
    assert files_under(studio.settings.outputs_dir) == []


# -- anagrams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (2, 4, 16, 16), (1, 16, 12, 20), (1, 4, 6, 10)])
def test_every_view_and_its_inverse_compose_to_identity(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for view in anagram.VIEWS.values():
        if view.square_only and shape[-1] != shape[-2]:
            continue
        if view.name == "negate" and shape[1] == 4:
            continue  # the reference's negate keeps channel 3 of Lumina-Next's latent: below
        assert torch.equal(view.inverse(view.forward(x)), x), view.name
        assert torch.equal(view.forward(view.inverse(x)), x), view.name


def test_negate_maps_an_update_back_as_the_reference_does():
    # view_negate.py: inverse_view negates channels 0-2 only (invert_mask[:3] = -1), on the 4-channel latent.
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    negate = anagram.VIEWS["negate"]
    assert torch.equal(negate.forward(x), -x)
    back = negate.inverse(x)
    assert torch.equal(back[:, :3], -x[:, :3]) and torch.equal(back[:, 3], x[:, 3])
    assert torch.equal(negate.inverse(negate.forward(x))[:, :3], x[:, :3])
    wide = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))  # Lumina-Image 2.0: no such rule
    assert torch.equal(negate.inverse(negate.forward(wide)), wide)


def test_a_quarter_turn_needs_a_square_picture():
    with pytest.raises(Exception, match="needs a square size"):
        anagram.check_views(["identity", "rotate_90"], 512, 256)
    assert anagram.check_views(["identity", "rotate_180"], 512, 256)


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4"])
def test_the_combined_update_is_the_mean_of_per_view_updates_mapped_back(solver):
    from studio.engines.flow import step

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, 6, generator=gen, dtype=torch.float64)
    weights = [torch.randn(4, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    velocities = [lambda z, t, w=w: torch.einsum("ij,bjhw->bihw", w, z) * (1 + t) + z.flip(-1) for w in weights]
    views = [anagram.VIEWS[n] for n in ("identity", "rotate_90", "negate")]
    combined = anagram.combined_step(solver, velocities, views, x, 0.2, 0.35)
    per_view = [view.inverse(step(solver, v, view.forward(x), 0.2, 0.35, python_times=True) - view.forward(x))
                for v, view in zip(velocities, views)]
    assert torch.allclose(combined, x + sum(per_view) / 3)
    # With one view (identity) it is an ordinary solver step.
    assert torch.allclose(anagram.combined_step(solver, velocities[:1], views[:1], x, 0.2, 0.35),
                          step(solver, velocities[0], x, 0.2, 0.35, python_times=True))


def anagram_params(**extra):
    params = {"model": "tiny-lumina-next", "prompts": ["an old man", "a snowy mountain"],
              "views": ["identity", "rotate_180"], "style": "an oil painting of", "width": 256, "height": 256,
              "steps": FAST_STEPS, "seed": 11}
    params.update(extra)
    return params


def test_anagram_end_to_end_saves_the_picture_its_reading_the_preview_and_the_animation(studio):
    job = studio.run("anagram", anagram_params())
    assert job.status is JobStatus.DONE, job.error
    picture, viewed, preview, gif = job.outputs
    assert (picture.kind, viewed.kind, preview.kind, gif.kind) == ("image", "image", "preview", "animation")
    assert gif.path.suffix == ".gif"
    with Image.open(gif.path) as anim:
        assert anim.n_frames > 10 and json.loads(anim.info["comment"])["job_id"] == job.id
    meta = read_png_metadata(picture.path)
    assert "as it is: an oil painting of an old man" in meta.infotext.prompt
    assert "rotated 180°: an oil painting of a snowy mountain" in meta.infotext.prompt
    record = studio.history.get_job(job.id)
    assert [a.kind for a in record.assets] == ["image", "image", "preview", "animation", "thumbnail"]
    # Both phases ran, at the training size: the refine phase too, as in the authors' code.
    assert meta.job["used"]["phases"] == phases("256x256")
    assert Image.open(preview.path).size == (256, 256)
    assert not np.array_equal(np.asarray(Image.open(preview.path)), np.asarray(Image.open(picture.path)))
    assert record.prompt == "an oil painting of an old man / an oil painting of a snowy mountain"
    # Its reading under the view is the picture turned round, as the authors save it.
    seen, original = np.asarray(Image.open(viewed.path)), np.asarray(Image.open(picture.path))
    assert np.array_equal(seen, np.rot90(original, 2))


def phases(size: str, init: str = "256x256") -> dict:
    steps = FAST_STEPS - 1  # the authors' N time points, N - 1 solver steps; midpoint: 2 evaluations, 2 views
    return {"init": {"size": init, "model_evaluations": steps * 2 * 2, "solver_steps": steps},
            "refine": {"size": size, "model_evaluations": steps * 2 * 2, "solver_steps": steps}}


def test_both_phases_run_and_the_job_records_them(studio):
    """Above the training size (the tiny model's 256): the init phase there, its preview saved at that
    size, then the refine phase at the target size. (At 256 the refine phase runs too: above.)"""
    job = studio.run("anagram", anagram_params(width=320, height=320))
    assert job.status is JobStatus.DONE, job.error
    kinds = {o.kind: o for o in job.outputs}
    assert Image.open(kinds["preview"].path).size == (256, 256)
    assert Image.open(kinds["image"].path).size == (320, 320)
    used = read_png_metadata(kinds["preview"].path).job["used"]
    assert used["phases"] == phases("320x320") and used["model_evaluations"] == 2 * 8
    assert [a.kind for a in studio.history.get_job(job.id).assets].count("preview") == 1


def test_the_default_anagram_job_is_the_authors_recipe(studio):
    from studio.families.lumina_next import ANAGRAM

    from studio.tasks.anagram import AnagramSpec

    params = anagram_params()
    params.pop("style")
    job = studio.run("anagram", params)  # steps given only to be quick: the recipe's 30 are the default
    assert job.status is JobStatus.DONE, job.error
    record = studio.history.get_job(job.id).params
    assert (record["cfg"], record["shift"], record["style"]) == (8.0, 7.0, "an oil painting of")
    assert AnagramSpec.defaults_for(NEXT)["steps"] == 30
    assert record["negative_prompt"] == ANAGRAM["negative_prompt"]
    assert record["negative_prompt"].startswith("blurry, ugly, duplicate") and "watershed" not in record
    meta = read_png_metadata(job.outputs[0].path).infotext
    assert meta.fields["CFG scale"] == "8.0" and meta.fields["Shift"] == "7.0"
    assert meta.negative_prompt == ANAGRAM["negative_prompt"]


def test_a_reading_that_already_has_the_style_gets_it_once(studio):
    job = studio.run("anagram", anagram_params(prompts=["an oil painting of an old man", "a snowy mountain"]))
    assert job.status is JobStatus.DONE, job.error
    record = studio.history.get_job(job.id)
    assert record.prompt == "an oil painting of an old man / an oil painting of a snowy mountain"
    assert "as it is: an oil painting of an old man\n" in read_png_metadata(job.outputs[0].path).infotext.prompt + "\n"


@pytest.mark.parametrize("views", [["identity", "flip_vertical"], ["identity", "flip_horizontal"],
                                   ["identity", "negate"], ["rotate_90", "rotate_270"],
                                   ["identity", "rotate_180", "flip_horizontal"]])
def test_anagram_views_run(studio, views):
    prompts = ["a cat", "a dog", "a bird"][:len(views)]
    # 128: below the training size, the least tiling (the init phase still runs at 256).
    job = studio.run("anagram", anagram_params(prompts=prompts, views=views, steps=2, width=128, height=128))
    assert job.status is JobStatus.DONE, job.error
    assert len([o for o in job.outputs if o.kind == "image"]) == 1 + sum(v != "identity" for v in views)


@pytest.mark.parametrize("change, message", [
    ({"views": ["identity"]}, "each prompt needs its view"),
    ({"views": ["identity", "identity"]}, "different view"),
    ({"views": ["identity", "rotate_90"], "width": 512, "height": 256}, "needs a square size"),
    ({"views": ["identity", "spin"]}, "unknown view"),
    ({"solver": "dopri5"}, "fixed-step solver"),
    ({"steps": 1}, "at least 2"),
    ({"prompts": ["an old man", "  "]}, "needs text"),
    ({"model": "tiny-lumina2", "solver": "rk4"}, "apply to Lumina-Next models only"),
])
def test_anagram_bad_input(studio, change, message):
    job = studio.run("anagram", anagram_params(**change))
    assert job.status is JobStatus.FAILED and message in job.error
    assert files_under(studio.settings.outputs_dir) == []


def test_anagrams_also_run_on_lumina_image_2(studio):
    job = studio.run("anagram", anagram_params(model="tiny-lumina2", views=["identity", "flip_vertical"]))
    assert job.status is JobStatus.DONE, job.error
    assert [o.kind for o in job.outputs] == ["image", "image", "preview", "animation"]
    meta = read_png_metadata(job.outputs[0].path)
    assert meta.infotext.fields["Sampler"] == "Euler" and meta.infotext.fields["Model"] == "tiny-lumina2"
    again = studio.run("anagram", anagram_params(model="tiny-lumina2", views=["identity", "flip_vertical"]))
    assert np.array_equal(np.asarray(Image.open(job.outputs[0].path)), np.asarray(Image.open(again.outputs[0].path)))
