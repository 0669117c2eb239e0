"""Upscaling: the tiny ESRGAN through the one job path (size, metadata, exact re-runs, tiles), the
native RRDBNet's reading of every published layout, the real x4plus config, bad inputs, the CLI, the
named API's endpoint and upscaling a Gallery output."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from studio.engines.esrgan.rrdbnet import RRDBConfig, RRDBNet, config_from, load_rrdbnet, to_basicsr
from studio.engines.esrgan.tiles import upscale
from studio.errors import ModelNotAvailable
from studio.families.upscaler.run import spandrel_module
from studio.media import read_png_metadata
from studio.tasks.upscale import UpscaleSpec
from studio.zoo.builtin_esrgan import TINY_SIZES, tiny_esrgan_state

from helpers import pixels

SPANDREL = spandrel_module() is not None


def _picture(path, width=40, height=28, parameters=None):
    rng = np.random.default_rng(7)
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(path, pnginfo=info)
    return path


@pytest.fixture
def source(tmp_path):
    return _picture(tmp_path / "cat.png")


def _done(job):
    assert job.error is None, job.error
    return job


def test_tiny_esrgan_makes_x4_and_a_chosen_scale_with_metadata(studio, source):
    job = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source)}))
    (out,) = [o for o in job.outputs if o.kind == "image"]
    assert (out.width, out.height) == (160, 112) and Image.open(out.path).size == (160, 112)
    meta = read_png_metadata(out.path)
    assert meta.infotext.fields["Postprocess upscaler"] == "tiny-esrgan"
    assert meta.infotext.fields["Postprocess upscale by"] == "4"
    assert meta.infotext.prompt == "upscale of cat.png" == job.spec.prompt
    assert meta.job["task"] == "upscale" and meta.job["params"]["scale"] == 4.0
    # spandrel, where it is installed (the `upscale` extra), else the studio's own RRDBNet.
    assert meta.job["used"]["upscaler"] == ("spandrel ESRGAN" if SPANDREL else "native RRDBNet")
    assert meta.job["used"]["native_scale"] == 4
    assert pixels(out.path).std() > 5  # a picture, not a flat fill

    half = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source), "scale": 2.5}))
    assert (half.outputs[0].width, half.outputs[0].height) == (100, 70)
    assert read_png_metadata(half.outputs[0].path).infotext.fields["Postprocess upscale by"] == "2.5"
    assert half.outputs[0].width * 4 // 2.5 == 160  # Lanczos from the model's x4 output
    assert read_png_metadata(half.outputs[0].path).job["used"]["resize"] == "lanczos"


def test_source_parameters_are_kept_and_a_rerun_is_exact(studio, tmp_path):
    text = "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 40x28"
    src = _picture(tmp_path / "fox.png", parameters=text)
    job = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(src), "tile": 16, "tile_overlap": 8}))
    meta = read_png_metadata(job.outputs[0].path)
    assert meta.raw["parameters"].startswith(text + ", Postprocess upscaler: tiny-esrgan")
    assert meta.infotext.prompt == "a red fox" and meta.infotext.fields["Seed"] == "42"
    assert meta.infotext.fields["Postprocess upscale by"] == "4"
    again = studio.gallery.rerun(job.id)
    again.wait(60)
    _done(again)
    assert np.array_equal(pixels(again.outputs[0].path), pixels(job.outputs[0].path))  # the file's job id differs
    assert read_png_metadata(again.outputs[0].path).raw["parameters"] == meta.raw["parameters"]
    assert again.spec.model_dump() == job.spec.model_dump()


def test_tiles_give_the_untiled_pixels(studio, source):
    """With an overlap past the receptive radius (2 blocks: 33.25 px) every tile sees what the whole
    image shows it: the same bytes, allowing one level where float rounding lands a value on a .5."""
    whole = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source), "tile": 0}))
    tiled = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source), "tile": 16,
                                         "tile_overlap": 40}))
    assert tiled.total_steps == 6 and tiled.step == 6  # 3 x 2 tiles: a step per tile
    a, b = pixels(whole.outputs[0].path).astype(int), pixels(tiled.outputs[0].path).astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.001
    # A small overlap is close but not the same: the overlap is what makes tiles seamless.
    seamy = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source), "tile": 16, "tile_overlap": 0}))
    assert (pixels(seamy.outputs[0].path).astype(int) != a).mean() > 0.01


def test_receptive_radius_of_the_tiny_model():
    assert RRDBConfig.for_scale(4, **TINY_SIZES).receptive_radius() == 33.25


def _old_layout(state):
    """The original ESRGAN's `model.N` names for a BasicSR x4 state dict (its old-arch checkpoints)."""
    old = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "body":
            old[f"model.1.sub.{parts[1]}.RDB{parts[2][-1]}.{parts[3]}.0.{parts[4]}"] = value
        else:
            index = {"conv_first": "model.0", "conv_body": f"model.1.sub.{TINY_SIZES['num_block']}",
                     "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
            old[f"{index[parts[0]]}.{parts[1]}"] = value
    return old


def test_native_rrdbnet_reads_every_layout(tmp_path):
    state = tiny_esrgan_state()
    x = torch.rand(1, 3, 12, 10)
    reference = RRDBNet(RRDBConfig.for_scale(4, **TINY_SIZES))
    reference.load_state_dict(state)
    expected = reference.eval()(x)
    later = {k.replace("conv_body", "trunk_conv").replace("conv_up", "upconv").replace("conv_hr", "HRconv")
             for k in state}  # the ESRGAN repo's later names
    later = {(f"RRDB_trunk.{k[5:].replace('.rdb', '.RDB')}" if k.startswith("body.") else k): state[k.replace(
        "trunk_conv", "conv_body").replace("upconv", "conv_up").replace("HRconv", "conv_hr")] for k in later}
    files = {"wrapped.pth": {"params_ema": state}, "plain.pth": state, "old.pth": _old_layout(state),
             "later.pth": later, "flat.safetensors": {f"params_ema.{k}": v for k, v in state.items()}}
    for name, content in files.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file
            save_file(content, str(path))
        else:
            torch.save(content, path)
        model = load_rrdbnet(path)
        assert model.config == reference.config, name
        torch.testing.assert_close(model(x), expected, msg=name)
    assert to_basicsr(_old_layout(state)).keys() == state.keys()


def test_scale_and_sizes_are_read_off_the_tensors():
    for scale in (1, 2, 4):
        config = RRDBConfig.for_scale(scale, num_feat=16, num_block=3, num_grow_ch=8)
        with torch.device("meta"):
            state = RRDBNet(config).state_dict()
        assert config_from(state) == config and config.scale == scale
    x2 = RRDBNet(RRDBConfig.for_scale(2, num_feat=8, num_block=1, num_grow_ch=4)).eval()
    assert x2(torch.rand(1, 3, 8, 6)).shape == (1, 3, 16, 12)


def test_real_x4plus_config_on_the_meta_device():
    with torch.device("meta"):
        model = RRDBNet(RRDBConfig())  # RealESRGAN_x4plus: 23 blocks, 64 features, 32 growth, x4
    assert sum(p.numel() for p in model.parameters()) == 16_697_987
    assert model.scale == 4 and config_from(model.state_dict()) == RRDBConfig()


def test_tiled_upscale_of_a_folded_model_keeps_the_size():
    net = RRDBNet(RRDBConfig.for_scale(2, num_feat=8, num_block=1, num_grow_ch=4)).eval()
    image = Image.fromarray((np.random.default_rng(1).random((13, 11, 3)) * 255).astype(np.uint8))
    out = upscale(net, image, 2, tile=6, overlap=4, fold=2)
    assert out.size == (22, 26)


def test_real_card_and_spec_defaults(studio):
    card = studio.cards.get("real-esrgan-x4plus")
    assert card.source.repo == "Comfy-Org/Real-ESRGAN_repackaged"
    assert card.allow_patterns == ["RealESRGAN_x4plus.safetensors"] and card.engine["scale"] == 4
    assert UpscaleSpec.defaults_for(card)["scale"] == 4.0
    assert UpscaleSpec.defaults_for(studio.cards.get("tiny-esrgan"))["tile"] == 256


# -- bad input: a clear message, a failed row, no file, the worker alive --------------------------------

def _refused(studio, params, *words):
    job = studio.run("upscale", {"model": "tiny-esrgan", **params})
    assert job.error is not None and all(w in job.error for w in words), job.error
    row = studio.history.get_job(job.id)
    assert row.status.value == "failed" and not row.assets
    assert not (studio.settings.outputs_dir / "upscale").exists()  # no file, not even a partial one
    return job


def test_bad_inputs_are_refused_by_name_and_the_worker_lives_on(studio, tmp_path, source):
    _refused(studio, {}, "add an image to upscale")
    _refused(studio, {"image": str(tmp_path / "gone.png")}, "missing")
    (tmp_path / "notes.png").write_text("not a picture")
    _refused(studio, {"image": str(tmp_path / "notes.png")}, "not an image")
    cut = tmp_path / "cut.png"
    cut.write_bytes(source.read_bytes()[:200])
    _refused(studio, {"image": str(cut)}, "damaged")
    # Refused from the header, before a pixel is decoded: x4 would be past the card's 2048x2048.
    big = tmp_path / "big.png"
    Image.new("1", (3000, 3000)).save(big)  # 1 bit a pixel: a small file with a big header
    _refused(studio, {"image": str(big)}, "would be 12000x12000", "at most 4.2 MP", "smaller scale")
    # A scale below the model's own is a resize after it: the x4 picture must still fit (a 3.2 GB canvas on x4plus).
    _refused(studio, {"image": str(big), "scale": 1}, "x4 would be 12000x12000")
    wide = _picture(tmp_path / "wide.png", 600, 400)
    _refused(studio, {"image": str(wide), "scale": 6}, "would be 3600x2400")
    _refused(studio, {"image": str(source), "scale": 9}, "scale")
    _refused(studio, {"image": str(source), "negative_prompt": "blur"}, "takes no negative prompt")
    _refused(studio, {"image": str(source), "tile": 4}, "too small")
    assert _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source)})).outputs


def test_an_upscaler_file_that_is_not_an_rrdbnet_is_named(tmp_path):
    bad = tmp_path / "swinir.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(8, 3, 3, 3), "layers.0.attn.qkv.weight": torch.zeros(2)}},
               bad)
    with pytest.raises(ModelNotAvailable, match="not an ESRGAN / Real-ESRGAN .RRDBNet. upscaler: its keys do not fit"):
        load_rrdbnet(bad)
    pickled = tmp_path / "evil.pth"
    torch.save({"params_ema": {"x": torch.zeros(1)}, "args": argparse.Namespace(scale=4)}, pickled)
    with pytest.raises(ModelNotAvailable, match="not loaded for safety"):
        load_rrdbnet(pickled)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelNotAvailable, match="cannot read junk.safetensors"):
        load_rrdbnet(tmp_path / "junk.safetensors")


def test_an_incompatible_file_fails_its_job_and_the_worker_lives_on(studio, source):
    from studio.runtime.loader import resolve_source
    from studio.zoo.builtin_esrgan import WEIGHTS_FILE

    card = studio.cards.get("tiny-esrgan")
    repo, revision = resolve_source(card, studio.settings)
    snapshot = studio.settings.model_cache / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    weights = snapshot / WEIGHTS_FILE
    kept = weights.read_bytes()
    try:
        torch.save({"params_ema": {"net.0.weight": torch.zeros(4, 3, 3, 3)}}, weights)
        job = studio.run("upscale", {"model": "tiny-esrgan", "image": str(source)})
        said = "not an upscaler spandrel knows" if SPANDREL else "not an ESRGAN / Real-ESRGAN (RRDBNet) upscaler"
        assert job.error and said in job.error
        assert not studio.history.get_job(job.id).assets
    finally:
        weights.write_bytes(kept)
    assert _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source)})).outputs


def test_the_cli_upscales(settings, source, capsys):
    from studio.cli import main

    code = main(["generate", "upscale", "--model", "tiny-esrgan", "--image", str(source), "--scale", "2",
                 "--home", str(settings.home), "--model-cache", str(settings.model_cache)])
    out = capsys.readouterr().out
    assert code == 0, out
    path = out.strip().splitlines()[-1]
    assert Image.open(path).size == (80, 56)


def test_upscaling_a_gallery_output(studio, source):
    from studio.ui.results import picked_path

    made = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": str(source), "scale": 1}))
    record = studio.history.get_job(made.id)
    shown = [str(studio.gallery.path(a)) for a in studio.gallery.outputs(record) if a.mime.startswith("image/")]
    # What the Gallery's detail view holds, as the "Send to upscale" button reads it, upscaled again.
    path = picked_path([(p, None) for p in shown], 0)
    again = _done(studio.run("upscale", {"model": "tiny-esrgan", "image": path}))
    assert (again.outputs[0].width, again.outputs[0].height) == (160, 112)
    assert read_png_metadata(again.outputs[0].path).raw["parameters"].count("Postprocess upscaler") == 2


def test_upscale_image_takes_an_upload_and_submit_job_refuses_a_path(studio, source):
    from gradio_client import Client, handle_file

    from studio.ui.app import build_app
    from studio.ui.launch import launch_options

    from helpers import free_port

    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True,
                        **launch_options(studio.settings.replace(port=free_port()), None))
    try:
        client = Client(demo.local_url, verbose=False)
        named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        params = {p["parameter_name"]: p for p in named["/upscale_image"]["parameters"]}
        assert not params["image"]["parameter_has_default"] and "prompt" not in params
        result, status = client.predict(image=handle_file(str(source)), model="tiny-esrgan", scale=2,
                                        api_name="/upscale_image")
        assert "Done" in status and "80x56" in status, status
        assert Image.open(result[0]["image"]).size == (80, 56)
        with pytest.raises(Exception, match="image: send input files through /upscale_image, not as paths"):
            client.predict("upscale", {"model": "tiny-esrgan", "image": str(source)}, api_name="/submit_job")
    finally:
        demo.close()


def test_a_picture_narrower_than_the_models_fold_is_padded_not_refused():
    """x2 / x1 RRDBNets fold pixels (pixel_unshuffle) and pad the picture to a multiple of the fold: by
    reflection, as Real-ESRGAN does, or, for a side too short to reflect, by its edge."""
    def nearest_x2(x):
        return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    thin = Image.fromarray(np.arange(5, dtype=np.uint8).reshape(5, 1, 1).repeat(3, -1) * 10)  # 1 px wide
    out = upscale(nearest_x2, thin, 2, tile=0, overlap=0, fold=2)
    assert out.size == (2, 10)
    assert np.array_equal(np.asarray(out)[::2, 0], np.asarray(thin)[:, 0])
