"""Infinity in the Image task, end to end with the built-in tiny model: the official file layout,
loading it as a download loads, jobs (metadata, determinism, controls, every 0.06M aspect ratio,
progress per scale), bad input, a wrong VAE pairing, the Image tab, the CLI and the named API."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from studio.engines.infinity.schedules import size_names
from studio.history import JobStatus
from studio.history.search import JobFilter
from studio.job import Stage
from studio.media import read_png_metadata
from studio.runtime.loader import load_pipeline

from helpers import cli_generated_png, pixels, snapshot

TINY = "tiny-infinity"


def test_builtins_are_written_like_the_official_release(studio):
    transformer = snapshot(studio, TINY) / "infinity_tiny.pth"
    vae = snapshot(studio, "tiny-infinity-vae") / "infinity_vae_tiny.pth"
    assert zipfile.is_zipfile(transformer) and zipfile.is_zipfile(vae)
    state = torch.load(transformer, map_location="cpu", weights_only=True)  # a plain state dict
    assert state["word_embed.weight"].shape == (64, 4) and "block_chunks.1.module.0.sa.scale_mul_1H11" in state
    vae_file = torch.load(vae, map_location="cpu", weights_only=True)
    assert set(vae_file) == {"vae"} and "decoder.conv_in.weight" in vae_file["vae"]  # the plain spelling
    assert (snapshot(studio, "tiny-infinity-t5") / "config.json").is_file()


def test_loads_through_the_model_loader(studio):
    pipe = load_pipeline(studio.cards.get(TINY), studio.settings, None, studio.cards)
    assert list(pipe.components) == ["text_encoder", "tokenizer", "transformer", "vae"]
    assert pipe.transformer.config.d_vae == pipe.vae.config.codebook_dim == 4 and pipe.pn == "0.06M"


def test_flan_t5_runs_in_float16_when_the_model_runs_in_half_precision(studio):
    """The reference encodes prompts with flan-t5 in float16 (run_infinity.py:153; train.py:242 too),
    whatever the transformer's dtype; in float32 it stays float32."""
    from studio.engines.infinity.pipeline import _read_text_encoder

    folder = snapshot(studio, "tiny-infinity-t5")
    encoder, tokenizer = _read_text_encoder(folder, 128, torch.bfloat16)
    assert encoder.dtype == torch.float16
    features = encoder(**tokenizer(["a lighthouse"], return_tensors="pt")).last_hidden_state
    assert features.dtype == torch.float16 and torch.isfinite(features).all()
    assert _read_text_encoder(folder, 128, torch.float32)[0].dtype == torch.float32


def test_job_makes_a_png_with_its_metadata_and_reruns_exactly(studio):
    job = studio.run("image", {"model": TINY, "prompt": "a lighthouse", "seed": 3, "num_images": 2})
    assert job.status is JobStatus.DONE, job.error
    assert len(job.outputs) == 2
    with Image.open(job.outputs[0].path) as im:
        assert im.size == (256, 256) and im.mode == "RGB"
    fields = read_png_metadata(job.outputs[0].path).infotext.fields
    assert fields["Sampler"] == "Infinity (bitwise VAR)" and fields["CFG scale"] == "4.0"
    assert fields["Tau"] == "0.5" and fields["Top-k"] == "900" and fields["Top-p"] == "0.97"
    assert fields["Scales"] == "7" and fields["VAE"] == "infinity_vae_tiny" and "Steps" not in fields
    rerun = studio.run("image", studio.history.get_job(job.id).params)
    for a, b in zip(job.outputs, rerun.outputs):
        assert np.array_equal(pixels(a.path), pixels(b.path))
    # Image 2 of the batch is what seed + 1 makes alone.
    alone = studio.run("image", {"model": TINY, "prompt": "a lighthouse", "seed": 4})
    assert np.array_equal(pixels(job.outputs[1].path), pixels(alone.outputs[0].path))


def test_each_control_changes_the_picture(studio):
    base = {"model": TINY, "prompt": "a lighthouse", "seed": 5}
    plain = pixels(studio.run("image", base).outputs[0].path)
    for change in ({"seed": 6}, {"prompt": "a red fox"}, {"cfg": 1.0}, {"tau": 1.5}, {"top_k": 1},
                   {"top_p": 0.6}, {"negative_prompt": "blurry"}):
        job = studio.run("image", {**base, **change})
        assert job.status is JobStatus.DONE, job.error
        assert not np.array_equal(plain, pixels(job.outputs[0].path)), change


def test_every_aspect_ratio_of_the_table_generates_its_size(studio):
    for size in size_names("0.06M"):
        width, height = map(int, size.split("x"))
        job = studio.run("image", {"model": TINY, "prompt": "a cat", "seed": 1, "width": width, "height": height})
        assert job.status is JobStatus.DONE, (size, job.error)
        with Image.open(job.outputs[0].path) as im:
            assert im.size == (width, height)


def test_progress_is_reported_per_scale(studio):
    seen = []
    studio.jobs.add_listener(lambda job: seen.append((job.step, job.total_steps))
                             if job.stage in (Stage.STEPS, Stage.DECODING) else None)
    assert studio.run("image", {"model": TINY, "prompt": "a cat", "seed": 1}).status is JobStatus.DONE
    assert [step for step, total in seen if total == 7] == list(range(1, 8))


@pytest.mark.parametrize("params, message", [
    ({"width": 512, "height": 512}, "one size per aspect ratio"),
    ({"width": 320, "height": 320}, "256x256, 432x144"),
    ({"tau": 0}, "tau"),
    ({"tau": -1}, "tau"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"cfg": float("nan")}, "cfg"),
    ({"cfg": float("inf")}, "cfg"),
    ({"steps": 20}, "no denoising steps"),
])
def test_bad_input_fails_with_a_clear_message_and_no_file(studio, params, message):
    job = studio.run("image", {"model": TINY, "prompt": "a cat", "seed": 1, **params})
    assert job.status is JobStatus.FAILED and message in job.error, job.error
    assert not list(studio.settings.outputs_dir.rglob("*.png"))
    assert studio.run("image", {"model": TINY, "prompt": "a cat", "seed": 1}).status is JobStatus.DONE


def _repo(cache: Path, name: str, files: dict[str, Path | bytes]) -> None:
    snap = cache / f"models--test-org--{name}" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc")
    for file, source in files.items():
        (snap / file).write_bytes(source if isinstance(source, bytes) else source.read_bytes())


def _card(card_id: str, repo: str, engine_changes: dict, requires: list[str]) -> dict:
    card = yaml.safe_load((Path(__file__).parent.parent / "model_zoo" / "tiny-infinity.yaml").read_text())
    del card["tiny"]
    card.update(id=card_id, title=card_id, source={"repo": f"test-org/{repo}"}, requires=requires,
                engine={**card["engine"], **engine_changes})
    return card


def test_a_wrong_vae_a_truncated_or_a_foreign_file_is_refused_clearly(tmp_path, model_cache):
    from studio.services import Studio
    from studio.settings import Settings

    model = next(model_cache.rglob("infinity_tiny.pth"))
    vae = next(model_cache.rglob("infinity_vae_tiny.pth"))
    cache = tmp_path / "cache"
    shutil.copytree(model_cache, cache)
    # A VAE with 8-bit codes for a transformer that predicts 4 bits.
    from studio.engines.infinity.vae import BSQDecoder, VAEConfig
    wide = tmp_path / "wide.pth"
    torch.save({"vae": BSQDecoder(VAEConfig(codebook_dim=8, base_ch=32, ch_mult=(1, 1, 1, 1, 1))).state_dict()}, wide)
    _repo(cache, "inf", {"infinity_tiny.pth": model, "infinity_vae_tiny.pth": vae, "wide.pth": wide,
                         "cut.pth": model.read_bytes()[:4000], "swapped.pth": vae})
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=cache)
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    t5 = {"text_encoder": "tiny-infinity-t5"}
    wide_card = yaml.safe_load((Path(__file__).parent.parent / "model_zoo" / "tiny-infinity-vae.yaml").read_text())
    del wide_card["tiny"]
    wide_card.update(id="wide-vae", source={"repo": "test-org/inf"}, engine={"vae_file": "wide.pth", "codebook_dim": 8})
    (settings.user_cards_dir / "wide-vae.yaml").write_text(yaml.safe_dump(wide_card))
    cards = {"wrong-vae": ({"vae_file": "wide.pth", "vae": "wide-vae", **t5},
                           "wide.pth is a 8-bit BSQ VAE, but wrong-vae's transformer predicts 4 bits"),
             "cut": ({"file": "cut.pth", **t5}, "cannot read cut.pth"),
             "swapped": ({"file": "swapped.pth", **t5}, "swapped.pth is not an Infinity transformer checkpoint")}
    for card_id, (engine, _) in cards.items():
        vae_card = engine.get("vae", "tiny-infinity-vae")
        data = _card(card_id, "inf", {"vae": vae_card, **engine}, [vae_card, "tiny-infinity-t5"])
        data["allow_patterns"] = None
        (settings.user_cards_dir / f"{card_id}.yaml").write_text(yaml.safe_dump(data))
    with Studio(settings) as other:
        assert not other.cards.problems, other.cards.problems
        assert set(cards) <= set(other.cards.cards), sorted(p.name for p in settings.user_cards_dir.iterdir())
        for card_id, (_, message) in cards.items():
            job = other.run("image", {"model": card_id, "prompt": "a cat", "seed": 1})
            assert job.status is JobStatus.FAILED and message in job.error, (card_id, job.error)
        assert not list(settings.outputs_dir.rglob("*.png"))
        assert other.run("image", {"model": TINY, "prompt": "a cat", "seed": 1}).status is JobStatus.DONE


def test_runs_from_the_image_tab(studio):
    import gradio as gr

    from studio.ui.image_tab import build

    with gr.Blocks():
        form = build(studio)
    updates = form.model_updates(TINY)
    assert updates[form.fields["tau"]]["visible"] is True and updates[form.fields["tau"]]["value"] == 0.5
    assert updates[form.fields["steps"]]["visible"] is False
    values = {component: getattr(component, "value", None) for component in form.inputs}
    # What the browser shows once the model is picked (its size list and defaults), then what the user types.
    values.update({c: u["value"] for c, u in updates.items() if isinstance(u, dict) and "value" in u and c in values})
    values.update({form.model: TINY, form.fields["prompt"]: "a lamp", form.fields["seed"]: 3,
                   form.fields["tau"]: 0.8})
    params = form.read(*[values[c] for c in form.inputs])
    job = studio.run("image", params)
    assert job.status is JobStatus.DONE, job.error
    assert "Tau: 0.8" in read_png_metadata(job.outputs[0].path).raw["parameters"]


def test_runs_from_the_cli(tmp_path, model_cache, capsys):
    """`studio generate image` with this model's flags, through the CLI's main in this process."""
    png = cli_generated_png(capsys, tmp_path / "home", model_cache, "--model", TINY, "--prompt", "a lamp",
                            "--tau", "0.7", "--top-p", "0.9", "--size", "224x336", "--seed", "5")
    assert "Tau: 0.7" in read_png_metadata(png).raw["parameters"] and Image.open(png).size == (224, 336)


def test_runs_from_the_named_api(studio):
    from gradio_client import Client

    from studio.ui.app import build_app

    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        images, summary = client.predict(prompt="a lamp", model=TINY, seed=7, tau=0.6, api_name="/generate_image")
        assert "Done" in summary and len(images) == 1
        job = studio.gallery.page(JobFilter(), 1).jobs[0]
        assert job.params["tau"] == 0.6 and job.params["model"] == TINY
    finally:
        demo.close()
