"""LlamaGen in the Image task, end to end with the built-in tiny models: the official file layout in
the model cache, loading it, class- and text-conditional jobs, determinism, metadata, bad input."""

from __future__ import annotations

import argparse
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from studio.engines.llamagen.classes import class_names
from studio.history import JobStatus
from studio.job import Stage
from studio.history.search import JobFilter
from studio.media import read_png_metadata
from studio.engines.llamagen.sampling import generate
from studio.runtime.loader import load_pipeline
from studio.zoo.availability import is_available
from studio.runtime.placement import Placement, apply_placement, park
from studio.zoo.builtin_llamagen import TINY_FILES

from helpers import pixels, snapshot

C2I, T2I = "tiny-llamagen-c2i", "tiny-llamagen-t2i"


@pytest.mark.parametrize("card_id, kind", [(C2I, "c2i"), (T2I, "t2i")])
def test_builtin_is_written_like_the_official_release(studio, card_id, kind):
    folder = snapshot(studio, card_id)
    files = TINY_FILES[kind]
    assert sorted(p.name for p in folder.iterdir()) == sorted([files["gpt_file"], files["vq_file"]])
    for name in (files["gpt_file"], files["vq_file"]):
        assert zipfile.is_zipfile(folder / name)  # torch.save's format, as the official .pt files
    with torch.serialization.safe_globals([argparse.Namespace]):  # what the loader allows, nothing more
        gpt = torch.load(folder / files["gpt_file"], map_location="cpu", weights_only=True)
    assert set(gpt) == {"model", "steps", "args"}  # a training checkpoint, with the run's Namespace
    assert "layers.0.attention.wqkv.weight" in gpt["model"] and "freqs_cis" not in gpt["model"]
    vq = torch.load(folder / files["vq_file"], map_location="cpu", weights_only=True)
    assert "decoder.conv_blocks.0.res.0.conv1.weight" in vq["model"]  # LlamaGen's names, not Janus's
    assert "quantize.codebook_used" in vq["model"]


def test_loads_through_the_model_loader(studio):
    pipe = load_pipeline(studio.cards.get(T2I), studio.settings, None, studio.cards)
    assert list(pipe.components) == ["text_encoder", "tokenizer", "gpt", "decoder"]
    assert pipe.kind == "t2i" and pipe.grid == 16
    assert type(pipe.text_encoder).__name__ == "T5EncoderModel"


def test_class_conditional_job_from_the_picker(studio):
    job = studio.run("image", {"model": C2I, "prompt": "ignored for a class model", "class_id": 207, "seed": 7})
    assert job.status is JobStatus.DONE, job.error
    [saved] = job.outputs
    with Image.open(saved.path) as im:
        assert im.size == (64, 64)
    meta = read_png_metadata(saved.path)
    assert meta.infotext.prompt == "207 · golden retriever"
    fields = meta.infotext.fields
    assert fields["Class"] == "207" and fields["Sampler"] == "LlamaGen (autoregressive)"
    assert fields["CFG scale"] == "4.0" and fields["Temperature"] == "1.0" and "Steps" not in fields
    record = studio.history.get_job(job.id)
    assert record.params["class_id"] == 207 and record.params["steps"] is None
    assert record.params["prompt"] == "207 · golden retriever"  # what the gallery shows and searches
    assert studio.gallery.page(JobFilter(text="retriever")).total == 1


def test_class_name_typed_as_the_prompt(studio):
    by_name = studio.run("image", {"model": C2I, "prompt": "Golden Retriever", "seed": 3})
    by_id = studio.run("image", {"model": C2I, "prompt": "x", "class_id": 207, "seed": 3})
    assert by_name.status is JobStatus.DONE, by_name.error
    assert studio.history.get_job(by_name.id).params["class_id"] == 207
    assert np.array_equal(pixels(by_name.outputs[0].path), pixels(by_id.outputs[0].path))


@pytest.mark.parametrize("model, condition", [(C2I, {"class_id": 1}), (T2I, {"prompt": "a red fox in snow"})])
def test_same_seed_same_image_other_seed_or_condition_differs(studio, model, condition):
    params = {"model": model, "prompt": "a red fox in snow", **condition}
    first = studio.run("image", {**params, "seed": 11})
    again = studio.run("image", {**params, "seed": 11})
    other_seed = studio.run("image", {**params, "seed": 12})
    other = dict(params, class_id=2) if model == C2I else dict(params, prompt="a blue whale at sea")
    other_condition = studio.run("image", {**other, "seed": 11})
    for job in (first, again, other_seed, other_condition):
        assert job.status is JobStatus.DONE, job.error
    assert np.array_equal(pixels(first.outputs[0].path), pixels(again.outputs[0].path))
    assert not np.array_equal(pixels(first.outputs[0].path), pixels(other_seed.outputs[0].path))
    assert not np.array_equal(pixels(first.outputs[0].path), pixels(other_condition.outputs[0].path))


def test_sampling_controls_change_the_picture(studio):
    base = {"model": T2I, "prompt": "a lighthouse", "seed": 5}
    plain = pixels(studio.run("image", base).outputs[0].path)
    for change in ({"cfg": 1.0}, {"temperature": 0.5}, {"top_k": 4}, {"top_p": 0.3}):
        job = studio.run("image", {**base, **change})
        assert job.status is JobStatus.DONE, job.error
        assert studio.history.get_job(job.id).params[next(iter(change))] == next(iter(change.values()))
        assert not np.array_equal(plain, pixels(job.outputs[0].path)), change


def test_batch_and_rerun_from_history(studio):
    job = studio.run("image", {"model": T2I, "prompt": "two kites", "num_images": 2, "seed": -1})
    assert job.status is JobStatus.DONE and len(job.outputs) == 2
    rerun = studio.run("image", studio.history.get_job(job.id).params)
    for a, b in zip(job.outputs, rerun.outputs):
        assert np.array_equal(pixels(a.path), pixels(b.path))


def test_progress_is_reported_per_row_of_tokens(studio):
    seen = []
    studio.jobs.add_listener(lambda job: seen.append((job.step, job.total_steps))
                             if job.stage in (Stage.STEPS, Stage.DECODING) else None)
    job = studio.run("image", {"model": C2I, "prompt": "tabby", "seed": 1})
    assert job.status is JobStatus.DONE, job.error
    rows = [step for step, total in seen if total == 16]
    assert rows == list(range(1, 17))  # one report per row of the 16x16 token grid


@pytest.mark.parametrize("params, message", [
    ({"model": C2I, "prompt": "a spaceship made of cheese"}, "not one of the 1000 ImageNet classes"),
    ({"model": C2I, "prompt": "goldn retriever"}, "Did you mean: golden retriever"),
    ({"model": C2I, "prompt": "x", "class_id": 1000}, "class_id"),
    ({"model": C2I, "prompt": "1200"}, "numbered 0 to 999"),
    ({"model": C2I, "prompt": "2 cats"}, "class 2 is 'great white shark', not 'cats'"),
    ({"model": C2I, "prompt": "² cats"}, "not one of the 1000 ImageNet classes"),
    ({"model": C2I, "prompt": "crane"}, "fits 2 ImageNet classes: 134 (crane), 517 (crane)"),
    ({"model": T2I, "prompt": "a cat", "steps": 30}, "no denoising steps"),
    ({"model": T2I, "prompt": "a cat", "negative_prompt": "dog"}, "takes no negative prompt"),
    ({"model": T2I, "prompt": "a cat", "class_id": 3}, "not an ImageNet class"),
    ({"model": T2I, "prompt": "a cat", "width": 128, "height": 128}, "Size 128x128"),
    ({"model": T2I, "prompt": "a cat", "temperature": 0}, "temperature"),
    ({"model": "tiny-lumina2", "prompt": "a cat", "top_k": 5}, "an option of Infinity and LlamaGen models"),
])
def test_bad_input_fails_with_a_clear_message_and_no_file(studio, params, message):
    job = studio.run("image", params)
    assert job.status is JobStatus.FAILED and message in job.error, job.error
    assert not list(studio.settings.outputs_dir.rglob("*.png"))
    assert studio.run("image", {"model": C2I, "prompt": "tabby", "seed": 1}).status is JobStatus.DONE


def test_text_model_pads_captions_on_the_left_as_the_original(studio):
    pipe = load_pipeline(studio.cards.get(T2I), studio.settings, None, studio.cards)
    prompts = ["a cat", "a much longer caption about a lighthouse"]
    features, mask = pipe.encode_prompts(prompts)
    # The original: right-padded T5 output, valid rows rotated to the end, mask flipped, padding zeroed.
    batch = pipe.tokenizer([p.lower() for p in prompts], max_length=16, padding="max_length", truncation=True,
                           return_tensors="pt")
    with torch.no_grad():
        raw = pipe.text_encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    for row, valid in enumerate(batch.attention_mask.sum(-1).tolist()):
        assert mask[row].tolist() == [0] * (16 - valid) + [1] * valid
        assert torch.allclose(features[row, 16 - valid:], raw[row, :valid])
        assert not features[row, : 16 - valid].any()


@pytest.mark.parametrize("placement", list(Placement))
def test_every_placement_gives_the_same_picture(studio, placement):
    """Full, model, group and sequential offload (onto the CPU here) all run the same computation."""
    card = studio.cards.get(T2I)
    reference = load_pipeline(card, studio.settings, None, studio.cards)
    expected = reference(prompts=["a kite"], generator=torch.Generator().manual_seed(4))[0]
    pipe = load_pipeline(card, studio.settings, None, studio.cards)
    apply_placement(pipe, placement, "cpu")
    got = pipe(prompts=["a kite"], generator=torch.Generator().manual_seed(4))[0]
    assert pipe.device == torch.device("cpu")
    assert np.array_equal(np.asarray(expected), np.asarray(got))
    assert park(pipe, placement) or placement in (Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD)


def test_offloaded_transformers_models_take_inputs_where_their_weights_are(studio):
    """MusicGen's generate() runs its text encoder before any hook on the whole model fires, so the
    bundle's device must stay the weights' device under model offload, not the execution device."""
    bundle = load_pipeline(studio.cards.get("tiny-musicgen"), studio.settings)
    bundle.enable_model_cpu_offload(device="meta")
    try:
        assert bundle.device == next(bundle.model.parameters()).device == torch.device("cpu")
    finally:
        bundle.remove_all_hooks()


def test_caption_masks_reach_the_sampler(studio):
    """The pipeline samples with the left-padded captions and their masks, exactly as generate() does
    when given both; without the masks the picture differs (padding would be attended to)."""
    pipe = load_pipeline(studio.cards.get(T2I), studio.settings, None, studio.cards)
    got = np.asarray(pipe(prompts=["a kite"], cfg_scale=4.0, generator=torch.Generator().manual_seed(9))[0])
    features, mask = pipe.encode_prompts(["a kite"])

    def sample(masks):
        tokens = generate(pipe.gpt, features, 256, cfg_scale=4.0, generator=torch.Generator().manual_seed(9),
                          emb_masks=masks)
        return np.asarray(pipe.decoder(tokens)[0].permute(1, 2, 0).mul(255).add(0.5).clamp(0, 255).byte())

    assert np.array_equal(got, sample(mask))
    assert not np.array_equal(got, sample(None))


def test_class_names_cover_imagenet():
    assert len(class_names()) == 1000 and class_names()[207] == "golden retriever"


# -- download from a hub (our own, on 127.0.0.1) and generate -----------------------------------------

def hub_card(card_id: str, repo: str, kind: str, **extra) -> dict:
    files = TINY_FILES[kind]
    engine = {**files, "text_encoder": "flan-test"} if kind == "t2i" else files
    return {"id": card_id, "title": f"LlamaGen test {kind}", "family": "llamagen", "tasks": ["image"],
            "source": {"repo": repo}, "library": "native", "pipeline": "llamagen", "dtype": "float32",
            "allow_patterns": [files["gpt_file"], files["vq_file"]], "ignore_patterns": [], "engine": engine,
            "memory_gb": 0.01, "license": "mit", "resolutions": ["64x64"], "min_size": 64, "max_size": 64,
            **({"requires": ["flan-test"]} if kind == "t2i" else {}), **extra}


def test_download_fetches_only_the_cards_files_and_its_text_encoder_then_generates(tmp_path, studio):
    import yaml
    from fakehub import FakeHub, hub_online

    from studio.history.installed import InstallStatus
    from studio.services import Studio
    from studio.settings import Settings

    def files_of(card_id):
        folder = snapshot(studio, card_id)
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    release = {**files_of(C2I), **files_of(T2I), "c2i_XL_384.pt": b"another model, never fetched" * 10,
               "README.md": b"# LlamaGen\n"}
    with FakeHub() as hub, hub_online():
        hub.add_repo("test-org/llamagen", release)
        hub.add_repo("test-org/flan-t5", files_of("tiny-flan-t5"))
        settings = Settings.load(env={}, home=tmp_path / "other-home", model_cache=tmp_path / "other-cache",
                                 hf_endpoint=hub.endpoint)
        settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
        flan = {"id": "flan-test", "title": "Flan test", "family": "t5", "tasks": ["component"],
                "source": {"repo": "test-org/flan-t5"}, "library": "transformers", "pipeline": "T5EncoderModel",
                "memory_gb": 0.01, "license": "apache-2.0"}
        cards = (flan, hub_card("lg-c2i", "test-org/llamagen", "c2i"), hub_card("lg-t2i", "test-org/llamagen", "t2i"))
        for data in cards:
            (settings.user_cards_dir / f"{data['id']}.yaml").write_text(yaml.safe_dump(data))
        with Studio(settings) as hub_studio:
            assert not hub_studio.cards.problems
            state = hub_studio.downloads.enqueue("lg-t2i")
            assert state.wait(60) and state.status is InstallStatus.READY, state.error
            text_encoder = hub_studio.downloads.state("flan-test")
            assert text_encoder is not None, "the required text encoder was not queued with the model"
            assert text_encoder.wait(60) and text_encoder.status is InstallStatus.READY, text_encoder.error
            assert hub.gets("test-org/llamagen", "c2i_XL_384.pt") == []
            assert hub.gets("test-org/llamagen", "README.md") == []
            assert hub.gets("test-org/llamagen", "c2i_tiny.pt") == []  # the t2i card's files only
            job = hub_studio.run("image", {"model": "lg-t2i", "prompt": "a red fox", "seed": 1})
            assert job.status is JobStatus.DONE, job.error

            state = hub_studio.downloads.enqueue("lg-c2i")
            assert state.wait(60) and state.status is InstallStatus.READY, state.error
            job = hub_studio.run("image", {"model": "lg-c2i", "prompt": "tabby", "seed": 1})
            assert job.status is JobStatus.DONE, job.error
            # Same weights as the built-in tiny model, same seed: the same picture.
            builtin = studio.run("image", {"model": C2I, "prompt": "tabby", "seed": 1})
            assert np.array_equal(pixels(job.outputs[0].path), pixels(builtin.outputs[0].path))

            # Two models share the repo: removing one leaves the other whole (the shared VQ file too).
            assert hub_studio.downloads.remove("lg-c2i") > 0
            assert not is_available(hub_studio.cards.get("lg-c2i"), settings)
            assert is_available(hub_studio.cards.get("lg-t2i"), settings)
            again = hub_studio.run("image", {"model": "lg-t2i", "prompt": "a red fox", "seed": 1})
            assert again.status is JobStatus.DONE, again.error


def test_a_checkpoint_that_does_not_fit_its_card_is_refused_clearly(tmp_path, studio):
    """A file that holds another model than the card says: a clear failure naming the mismatch."""
    import shutil

    import yaml

    folder = snapshot(studio, C2I)
    repo = tmp_path / "other-cache" / "models--test-org--wrong"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    shutil.copy(folder / "vq_tiny.pt", repo / "snapshots" / "abc" / "vq_tiny.pt")
    # A t2i GPT file under the c2i card's name.
    shutil.copy(snapshot(studio, T2I) / "t2i_tiny.pt", repo / "snapshots" / "abc" / "c2i_tiny.pt")
    from studio.settings import Settings
    from studio.services import Studio

    settings = Settings.load(env={}, home=tmp_path / "other-home", model_cache=tmp_path / "other-cache")
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    (settings.user_cards_dir / "wrong.yaml").write_text(yaml.safe_dump(hub_card("wrong", "test-org/wrong", "c2i")))
    damaged = tmp_path / "other-cache" / "models--test-org--damaged" / "snapshots" / "abc"
    damaged.mkdir(parents=True)
    (damaged.parent.parent / "refs").mkdir()
    (damaged.parent.parent / "refs" / "main").write_text("abc")
    shutil.copy(folder / "vq_tiny.pt", damaged / "vq_tiny.pt")
    (damaged / "c2i_tiny.pt").write_bytes((folder / "c2i_tiny.pt").read_bytes()[:5000])  # a cut-off download
    damaged_card = hub_card("damaged", "test-org/damaged", "c2i")
    (settings.user_cards_dir / "damaged.yaml").write_text(yaml.safe_dump(damaged_card))
    with Studio(settings) as other:
        job = other.run("image", {"model": "wrong", "prompt": "tabby", "seed": 1})
        assert job.status is JobStatus.FAILED
        assert "c2i_tiny.pt does not fit the GPT its card describes" in job.error, job.error
        job = other.run("image", {"model": "damaged", "prompt": "tabby", "seed": 1})
        assert job.status is JobStatus.FAILED
        assert "cannot read c2i_tiny.pt (damaged or incomplete download?)" in job.error, job.error
        assert other.run("image", {"model": C2I, "prompt": "tabby", "seed": 1}).status is JobStatus.DONE
