"""VideoX-Fun's own Wan2.1-Fun checkpoints (InP: start and end frame; Control: a control clip, optionally
from a start image) in their original layout: VideoX-Fun's config.json + safetensors in the original Wan
key names, converted on load to diffusers' WanTransformer3DModel, with umT5 + VAE and CLIP from component
cards. What a user notices: the clip comes out with the frames and fps asked for, the inputs change it,
the same seed gives the same clip, a bad control clip is refused without killing the worker, and a
download fetches the transformer's two files and the components' folders only, never the .pth pickles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakehub import FakeHub, hub_online
from helpers import files_asked_for, files_under, snapshot, snapshot_files

from studio.errors import ModelNotAvailable
from studio.history import JobStatus
from studio.history.installed import InstallStatus
from studio.media_av import read_video, save_mp4
from studio.services import Studio
from studio.settings import Settings
from studio.tasks.video import VideoSpec
from studio.zoo.availability import is_ready

INP, CONTROL, CONTROL_REF = "tiny-wan-fun-inp", "tiny-wan-fun-control", "tiny-wan-fun-control-ref"
HEIGHT, WIDTH = 32, 48


def frames_of(path) -> np.ndarray:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader])


@pytest.fixture
def picture(tmp_path):
    def make(seed: int, size=(WIDTH, HEIGHT)) -> str:
        path = tmp_path / f"picture-{seed}.png"
        Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")).save(path)
        return str(path)
    return make


@pytest.fixture
def clip(tmp_path):
    def make(seed: int, frames: int = 9, size=(WIDTH, HEIGHT)) -> str:
        name = tmp_path / f"control-{seed}-{frames}-{size[0]}.mp4"
        if name.exists():  # the same clip asked for again
            return str(name)
        pixels = (np.random.default_rng(seed).random((frames, size[1], size[0], 3)) * 255).astype(np.uint8)
        return str(save_mp4(pixels, tmp_path, name.name, fps=16, title="pose", job={}).path)
    return make


def params(model: str, **extra) -> dict:
    return {"model": model, "prompt": "a dancer turning in a sunlit garden", "steps": 2, "seed": 7, **extra}


def done(job):
    assert job.status is JobStatus.DONE, job.error
    return job


# -- the files: VideoX-Fun's layout, loaded as a download is ------------------------------------------------

@pytest.mark.parametrize("card_id, in_dim", [(INP, 36), (CONTROL, 48)])
def test_the_tiny_checkpoints_are_in_videox_funs_original_layout(studio, card_id, in_dim):
    from safetensors import safe_open

    folder = snapshot(studio, card_id)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "WanModel" and config["in_dim"] == in_dim and config["model_type"] == "i2v"
    with safe_open(str(folder / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
        assert weights.get_tensor("patch_embedding.weight").shape[1] == in_dim
    assert {"patch_embedding.weight", "head.modulation", "head.head.weight", "blocks.0.self_attn.q.weight",
            "blocks.1.cross_attn.k_img.weight", "blocks.0.modulation", "img_emb.proj.1.weight"} <= keys
    assert not [k for k in keys if k.startswith(("condition_embedder", "proj_out", "scale_shift_table"))]


@pytest.mark.parametrize("card_id, cls, in_dim", [(INP, "WanFunInpaintPipeline", 36),
                                                   (CONTROL, "WanFunControlPipeline", 48)])
def test_they_load_through_the_conversion_a_download_takes(studio, card_id, cls, in_dim):
    from safetensors.torch import load_file

    from studio.runtime.loader import load_pipeline

    card = studio.cards.get(card_id)
    pipe = load_pipeline(card, studio.settings, cards=studio.cards)
    assert type(pipe).__name__ == cls and type(pipe.transformer).__name__ == "WanTransformer3DModel"
    assert pipe.transformer.config.in_channels == in_dim and pipe.transformer.config.image_dim == 32
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler" and pipe.scheduler.config.shift == 5.0
    original = load_file(str(snapshot(studio, card_id) / "diffusion_pytorch_model.safetensors"))
    moved = pipe.transformer.state_dict()
    assert len(moved) == len(original)  # nothing dropped, nothing made up
    for old, new in [("head.modulation", "scale_shift_table"), ("patch_embedding.weight", "patch_embedding.weight"),
                     ("blocks.0.self_attn.q.weight", "blocks.0.attn1.to_q.weight"),
                     ("blocks.1.cross_attn.v_img.weight", "blocks.1.attn2.add_v_proj.weight"),
                     ("blocks.0.norm3.weight", "blocks.0.norm2.weight"),
                     ("img_emb.proj.3.weight", "condition_embedder.image_embedder.ff.net.2.weight")]:
        assert torch.equal(moved[new], original[old]), (old, new)


# -- InP: start and end frame ------------------------------------------------------------------------------

def test_inp_makes_the_clip_asked_for_and_reruns_exactly(studio, picture):
    job = done(studio.run("video", params(INP, image=picture(1), frames=13, fps=12)))
    assert [o.kind for o in job.outputs] == ["video", "poster", "input"]
    info = read_video(job.outputs[0].path)
    assert (info.frames, info.fps, info.width, info.height) == (13, 12, WIDTH, HEIGHT)
    recorded = studio.history.get_job(job.id).params
    assert recorded["shift"] == 5.0 and recorded["cfg"] == 6.0  # the card's defaults, from VideoX-Fun's script
    again = studio.gallery.rerun(job.id)
    again.wait(120)
    assert again.status is JobStatus.DONE, again.error
    assert np.array_equal(frames_of(job.outputs[0].path), frames_of(again.outputs[0].path))


def test_an_end_frame_changes_the_clip(studio, picture):
    plain = done(studio.run("video", params(INP, image=picture(1))))
    ended = done(studio.run("video", params(INP, image=picture(1), end_image=picture(2))))
    other = done(studio.run("video", params(INP, image=picture(1), end_image=picture(3))))
    a, b, c = (frames_of(j.outputs[0].path) for j in (plain, ended, other))
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
    assert studio.history.get_job(ended.id).params["end_image"].endswith("picture-2.png")


def test_the_end_frame_condition_is_videox_funs(studio):
    """diffusers' image-to-video condition with `last_image` is the one VideoX-Fun's InP pipeline builds
    from get_image_to_video_latent(start, end): the mask (1 = known) on the first frame (repeated 4x) and
    the last, and the VAE latents of [start, grey..., end] (unknown frames are 0 in [-1, 1])."""
    from studio.runtime.loader import load_pipeline

    pipe = load_pipeline(studio.cards.get(INP), studio.settings, cards=studio.cards)
    frames, h, w = 9, HEIGHT, WIDTH
    start, end = torch.rand(1, 3, h, w) * 2 - 1, torch.rand(1, 3, h, w) * 2 - 1
    _, condition = pipe.prepare_latents(start, 1, 16, h, w, frames, torch.float32, torch.device("cpu"),
                                        torch.Generator().manual_seed(0), last_image=end)
    # VideoX-Fun: input_video_mask 0 (known) at the first and last frame, 255 elsewhere; the pipeline's
    # mask_condition is that / 255, its first frame repeated 4 times, folded into 4 channels per latent
    # frame, and the transformer sees 1 - mask_condition.
    mask = torch.ones(1, 1, frames, h // 8, w // 8)
    mask[:, :, 0] = mask[:, :, -1] = 0
    mask = torch.cat([mask[:, :, :1].repeat_interleave(4, dim=2), mask[:, :, 1:]], dim=2)
    mask = mask.view(1, (frames + 3) // 4, 4, h // 8, w // 8).transpose(1, 2)
    assert torch.equal(condition[:, :4], 1 - mask)
    video = torch.cat([start.unsqueeze(2), torch.zeros(1, 3, frames - 2, h, w), end.unsqueeze(2)], dim=2)
    mode = pipe.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, 16, 1, 1, 1)
    assert torch.allclose(condition[:, 4:], (mode - mean) / std, atol=1e-5)  # VideoX-Fun's VAE scales so


def test_clip_sees_the_whole_start_frame(studio):
    """VideoX-Fun squeezes the whole frame into CLIP's square; diffusers' processor alone would crop the
    sides of a wide frame away. So a change at the frame's left edge reaches the image features."""
    from studio.runtime.loader import load_pipeline

    pipe = load_pipeline(studio.cards.get(INP), studio.settings, cards=studio.cards)
    pixels = (np.random.default_rng(0).random((HEIGHT, WIDTH, 3)) * 255).astype("uint8")
    edited = pixels.copy()
    edited[:, :6] = 255 - edited[:, :6]  # the 6 leftmost columns: outside a 32x32 centre crop
    with torch.no_grad():
        a, b = (pipe.encode_image(Image.fromarray(p)) for p in (pixels, edited))
        cropped = [pipe.image_encoder(**pipe.image_processor(images=Image.fromarray(p), return_tensors="pt"),
                                      output_hidden_states=True).hidden_states[-2] for p in (pixels, edited)]
    assert torch.equal(cropped[0], cropped[1])  # what the stock processor sees: no difference
    assert not torch.allclose(a, b)
    assert torch.equal(pipe.encode_image([Image.fromarray(pixels), Image.fromarray(edited)]), a)  # start only


def test_inp_needs_a_start_image_and_only_inp_takes_an_end_frame(studio, picture, clip):
    missing = studio.run("video", params(INP))
    assert missing.status is JobStatus.FAILED and "add a start image" in missing.error
    refused = studio.run("video", params("tiny-wan-i2v", image=picture(1), end_image=picture(2)))
    assert refused.status is JobStatus.FAILED and "takes no end frame" in refused.error
    refused = studio.run("video", params(CONTROL, control_video=clip(1), end_image=picture(2)))
    assert refused.status is JobStatus.FAILED and "takes no end frame" in refused.error
    assert files_under(studio.settings.outputs_dir) == []


def test_the_video_tab_shows_the_inputs_each_fun_model_takes(studio):
    inp, control, ref = (VideoSpec.takes(studio.cards.get(c)) for c in (INP, CONTROL, CONTROL_REF))
    assert {"image", "end_image"} <= inp and not {"control_video", "reference_image"} & inp
    assert {"image", "control_video"} <= control and not {"end_image", "reference_image"} & control
    assert {"image", "control_video", "reference_image"} <= ref and not {"end_image", "control_scale"} & ref


def test_the_video_tab_offers_the_end_image_for_inp_and_sends_it(studio, picture):
    import gradio as gr

    from studio.ui.video_tab import build

    with gr.Blocks():
        form = build(studio)
    by_id = {getattr(c, "elem_id", None): c for c in form.inputs}
    end, start, control = by_id["video-end-image"], by_id["video-image"], by_id["video-control"]
    assert isinstance(end, gr.Image) and end.type == "filepath"
    inp, ctrl = form.model_updates(INP), form.model_updates(CONTROL)
    assert inp[end]["visible"] is True and inp[start]["label"] == "Start image"
    assert ctrl[end]["visible"] is False and ctrl[start]["label"] == "Start image (optional)"
    assert form.model_updates("tiny-wan-i2v")[end]["visible"] is False

    values = {c: getattr(c, "value", None) for c in form.inputs}
    values.update({form.model: INP, form.fields["prompt"]: "a kite", form.fields["seed"]: 4,
                   form.fields["steps"]: 2, start: picture(1), end: picture(2), control: None})
    sent = form.read(*[values[c] for c in form.inputs])
    assert sent["image"] == picture(1) and sent["end_image"] == picture(2)
    done(studio.run("video", sent))
    values[form.model] = "tiny-wan-i2v"  # an end image left in the hidden upload is not sent to a model without one
    assert "end_image" not in form.read(*[values[c] for c in form.inputs])


# -- Control: the clip, and an optional start image ---------------------------------------------------------

def test_control_follows_its_clip_and_reruns_exactly(studio, clip):
    job = done(studio.run("video", params(CONTROL, control_video=clip(1), fps=8)))
    info = read_video(job.outputs[0].path)
    assert (info.frames, info.fps, info.width, info.height) == (9, 8, WIDTH, HEIGHT)
    assert [o.kind for o in job.outputs] == ["video", "poster", "input"]  # input: the clip's first frame
    other = done(studio.run("video", params(CONTROL, control_video=clip(2), fps=8)))
    same = done(studio.run("video", params(CONTROL, control_video=clip(1), fps=8)))
    assert not np.array_equal(frames_of(job.outputs[0].path), frames_of(other.outputs[0].path))
    assert np.array_equal(frames_of(job.outputs[0].path), frames_of(same.outputs[0].path))


def test_a_start_image_changes_the_controlled_clip(studio, clip, picture):
    plain = done(studio.run("video", params(CONTROL, control_video=clip(1))))
    started = done(studio.run("video", params(CONTROL, control_video=clip(1), image=picture(4))))
    assert not np.array_equal(frames_of(plain.outputs[0].path), frames_of(started.outputs[0].path))


def test_v1_1_control_keeps_a_reference_image(studio, clip, picture):
    """V1.1's ref_conv tokens are there with or without a reference image (zeros without, as VideoX-Fun)."""
    plain = done(studio.run("video", params(CONTROL_REF, control_video=clip(1))))
    kept = done(studio.run("video", params(CONTROL_REF, control_video=clip(1), reference_image=picture(5))))
    other = done(studio.run("video", params(CONTROL_REF, control_video=clip(1), reference_image=picture(6))))
    a, b, c = (frames_of(j.outputs[0].path) for j in (plain, kept, other))
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
    assert read_video(kept.outputs[0].path).frames == 9
    refused = studio.run("video", params(CONTROL, control_video=clip(1), reference_image=picture(5)))
    assert refused.status is JobStatus.FAILED and "takes no reference image" in refused.error


def test_the_reference_tokens_go_before_the_video_as_a_frame_of_their_own(studio):
    """What VideoX-Fun's `full_ref` builds: one sequence [ref tokens, video tokens] with RoPE over F + 1
    frames (the reference at frame 0), the reference's outputs dropped. Checked against that sequence put
    together by hand from the transformer's own parts."""
    from studio.runtime.loader import load_pipeline

    pipe = load_pipeline(studio.cards.get(CONTROL_REF), studio.settings, cards=studio.cards)
    model, ref_conv = pipe.transformer, pipe.ref_conv
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 3, 4, 6, generator=gen)
    ref = ref_conv(torch.randn(1, 16, 4, 6, generator=gen)).unsqueeze(2)
    text = torch.randn(1, 5, 32, generator=gen)
    image = torch.randn(1, 17, 32, generator=gen)
    t = torch.tensor([500.0])
    with torch.no_grad():
        hook = model.patch_embedding.register_forward_hook(lambda m, a, out: torch.cat([ref, out[:, :, 1:]], 2))
        try:
            hooked = model(torch.cat([torch.zeros_like(x[:, :, :1]), x], 2), t, text, image, return_dict=False)[0]
        finally:
            hook.remove()
        tokens = torch.cat([ref, model.patch_embedding(x)], dim=2).flatten(2).transpose(1, 2)
        rope = model.rope(torch.zeros(1, 48, 4, 4, 6))  # F + 1 = 4 frames
        temb, proj, ctx, ctx_img = model.condition_embedder(t, text, image)
        ctx = torch.cat([ctx_img, ctx], dim=1)
        for block in model.blocks:
            tokens = block(tokens, ctx, proj.unflatten(1, (6, -1)), rope)
        shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        out = model.proj_out(model.norm_out(tokens) * (1 + scale) + shift)[:, 6:]  # the 2x3 ref tokens dropped
        by_hand = out.reshape(1, 3, 2, 3, 1, 2, 2, 16).permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5)
    assert torch.allclose(hooked[:, :, 1:], by_hand.flatten(2, 3), atol=1e-5)


def test_a_bad_control_clip_is_refused_and_the_worker_lives_on(studio, clip, tmp_path):
    short = studio.run("video", params(CONTROL, control_video=clip(1, frames=5)))
    assert short.status is JobStatus.FAILED and "the input video has 5 frames; this job needs 9" in short.error
    # Frames bigger than the model reads (4x its largest side, squared) are refused before decoding.
    huge = studio.run("video", params(CONTROL, control_video=clip(1, frames=2, size=(1040, 1040))))
    assert huge.status is JobStatus.FAILED and "1040x1040" in huge.error and "scale it down" in huge.error
    fake = tmp_path / "pose.mp4"
    fake.write_bytes(b"not a video")
    unreadable = studio.run("video", params(CONTROL, control_video=str(fake)))
    assert unreadable.status is JobStatus.FAILED and "not a video the studio can read" in unreadable.error
    none = studio.run("video", params(CONTROL))
    assert none.status is JobStatus.FAILED and "add one" in none.error
    assert files_under(studio.settings.outputs_dir) == []
    done(studio.run("video", params(CONTROL, control_video=clip(1))))  # the worker is still there


# examples/wan2.1_fun/predict_i2v.py and predict_v2v_control(_ref).py: sample_size is [height, width];
# shift 5 is wan_civitai.yaml's, what their "Flow" sampler runs.
SCRIPT_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
                   "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的"
                   "脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，"
                   "背景人很多，倒着走")
SCRIPTS = {"wan-fun-inp": {"width": 832, "height": 480, "frames": 81, "fps": 16, "steps": 50, "cfg": 6.0},
           "wan-fun-control": {"width": 480, "height": 832, "frames": 49, "fps": 16, "steps": 50, "cfg": 6.0}}


def test_the_real_cards_take_videox_funs_script_defaults(studio):
    cards = [c for c in studio.cards.cards.values() if c.pipeline in SCRIPTS and not c.tiny]
    assert len(cards) == 8
    for card in cards:
        values = VideoSpec.defaults_for(card)
        assert {k: values[k] for k in SCRIPTS[card.pipeline]} == SCRIPTS[card.pipeline], card.id
        assert values["shift"] == 5.0 and card.defaults["negative_prompt"] == SCRIPT_NEGATIVE, card.id
        assert card.requires == ["wan2.1-umt5-vae", "wan2.1-clip-vit-h"] and card.runnable, card.id
        assert card.engine.get("reference_image", False) == ("V1.1" in card.title and "Control" in card.title)


# -- what the converter refuses, and the real sizes -----------------------------------------------------------

def _write_checkpoint(folder: Path, config: dict, extra: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from studio.zoo.builtin_wan_fun import tiny_fun_state

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({**tiny_fun_state(config["in_dim"], 0), **extra}, str(folder / "diffusion_pytorch_model.safetensors"))


def test_weights_with_no_slot_are_refused_by_name_not_dropped(tmp_path):
    from studio.engines.wan_fun.convert import load_transformer
    from studio.zoo.builtin_wan_fun import TINY_WIDTH, tiny_fun_config

    # ref_conv weights whose config.json does not declare add_ref_conv: nothing would read them.
    ref = {"ref_conv.weight": torch.zeros(TINY_WIDTH, 16, 2, 2), "ref_conv.bias": torch.zeros(TINY_WIDTH)}
    _write_checkpoint(tmp_path / "ref", tiny_fun_config(48), ref)
    with pytest.raises(ModelNotAvailable, match=r"ref_conv.*weights ref_conv.bias, ref_conv.weight"):
        load_transformer(tmp_path / "ref", torch.float32, "Fun V1.1 Control")
    _write_checkpoint(tmp_path / "adapter", tiny_fun_config(48), {"control_adapter.conv.weight": torch.zeros(2)})
    with pytest.raises(ModelNotAvailable, match=r"camera adapter.*control_adapter.conv.weight"):
        load_transformer(tmp_path / "adapter", torch.float32, "Fun Camera")
    _write_checkpoint(tmp_path / "camera", {**tiny_fun_config(48), "add_control_adapter": True}, {})
    with pytest.raises(ModelNotAvailable, match="control_adapter"):
        load_transformer(tmp_path / "camera", torch.float32, "Fun Camera")
    _write_checkpoint(tmp_path / "short", tiny_fun_config(36), {})
    (tmp_path / "short" / "config.json").write_text(json.dumps({**tiny_fun_config(36), "num_layers": 3}))
    with pytest.raises(ModelNotAvailable, match="missing: blocks.2"):
        load_transformer(tmp_path / "short", torch.float32, "Fun InP")


# VideoX-Fun's config.json of Wan2.1-Fun-1.3B-InP / -Control (in_dim 36 / 48; both model_type "i2v").
REAL_13B = {"_class_name": "WanModel", "dim": 1536, "eps": 1e-06, "ffn_dim": 8960, "freq_dim": 256,
            "model_type": "i2v", "num_heads": 12, "num_layers": 30, "out_dim": 16, "text_len": 512}


@pytest.mark.parametrize("in_dim, count", [(36, 1_564_428_608), (48, 1_564_502_336)])
def test_the_real_1_3b_checkpoints_convert_to_diffusers_names_and_sizes(in_dim, count):
    """On the meta device: the original checkpoint's tensors, renamed by diffusers' converter, are exactly
    the parameters of WanTransformer3DModel(in_channels=in_dim, image_dim=1280, added_kv_proj_dim=1536)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from studio.engines.wan_fun.convert import FUN_DEFAULTS, convert_state, diffusers_config, original_layout

    fun = {**FUN_DEFAULTS, **REAL_13B, "in_dim": in_dim}
    with torch.device("meta"):
        converted = convert_state({k: torch.empty(s) for k, s in original_layout(fun).items()}, "Fun 1.3B")
    config = diffusers_config(fun, None)
    assert (config["in_channels"], config["image_dim"], config["added_kv_proj_dim"]) == (in_dim, 1280, 1536)
    with init_empty_weights():
        model = WanTransformer3DModel.from_config(config)
    expected = model.state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)
    assert sum(v.numel() for v in converted.values()) == sum(p.numel() for p in model.parameters()) == count
    if in_dim == 48:  # alibaba-pai/Wan2.1-Fun-1.3B-Control's file is 3,129,105,448 bytes: bf16 + a ~100 KB header
        assert 0 < 3_129_105_448 - 2 * count < 200_000
        # V1.1 Control: the same plus ref_conv, Conv2d(16, 1536, 2x2): 99,840 more.
        layout = original_layout({**fun, "add_ref_conv": True})
        assert layout["ref_conv.weight"] == (1536, 16, 2, 2)
        assert sum(torch.Size(s).numel() for s in layout.values()) == count + 99_840


# -- downloading: the transformer's two files, the components' folders, no pickles ---------------------------

def _bytes(name: str, size: int) -> bytes:
    return (name.encode() * (size // len(name) + 1))[:size]


FUN_REPO = "alibaba-pai/Wan2.1-Fun-1.3B-InP"
T2V = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
I2V = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
FUN_FILES = {"config.json": 401, "diffusion_pytorch_model.safetensors": 31_300, "Wan2.1_VAE.pth": 5_080,
             "models_t5_umt5-xxl-enc-bf16.pth": 11_360,
             "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth": 4_770,
             "google/umt5-xxl/tokenizer.json": 1_650, "google/umt5-xxl/spiece.model": 4_550, "README.md": 9_000,
             ".gitattributes": 1_600}
T2V_FILES = {"model_index.json": 500, "scheduler/scheduler_config.json": 480, "transformer/config.json": 560,
             "transformer/diffusion_pytorch_model.safetensors": 28_400, "text_encoder/config.json": 850,
             "text_encoder/model.safetensors.index.json": 2_100,
             "text_encoder/model-00001-of-00002.safetensors": 9_990,
             "text_encoder/model-00002-of-00002.safetensors": 1_400, "tokenizer/tokenizer.json": 1_640,
             "tokenizer/tokenizer_config.json": 1_100, "tokenizer/spiece.model": 4_540,
             "tokenizer/special_tokens_map.json": 1_030, "vae/config.json": 720,
             "vae/diffusion_pytorch_model.safetensors": 5_070, "README.md": 7_000}
I2V_FILES = {"model_index.json": 510, "image_encoder/config.json": 590, "image_encoder/model.safetensors": 12_600,
             "image_processor/preprocessor_config.json": 610, "transformer/config.json": 570,
             "transformer/diffusion_pytorch_model-00001-of-00002.safetensors": 40_000,
             "text_encoder/config.json": 851, "text_encoder/model-00001-of-00002.safetensors": 9_991,
             "vae/config.json": 721, "vae/diffusion_pytorch_model.safetensors": 5_071}
FETCHED = {
    FUN_REPO: {"config.json", "diffusion_pytorch_model.safetensors"},
    T2V: {"text_encoder/config.json", "text_encoder/model.safetensors.index.json",
          "text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors",
          "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "tokenizer/spiece.model",
          "tokenizer/special_tokens_map.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"},
    I2V: {"image_encoder/config.json", "image_encoder/model.safetensors", "image_processor/preprocessor_config.json"},
}


def test_a_download_fetches_the_transformer_and_the_component_folders_only(tmp_path):
    repos = {FUN_REPO: FUN_FILES, T2V: T2V_FILES, I2V: I2V_FILES}
    with FakeHub() as hub, hub_online():
        for repo, sizes in repos.items():
            hub.add_repo(repo, {name: _bytes(name, size) for name, size in sizes.items()})
        settings = Settings.load(env={}, home=tmp_path / "home", model_cache=tmp_path / "cache",
                                 hf_endpoint=hub.endpoint)
        with Studio(settings) as studio:
            card = studio.cards.get("wan2.1-fun-1.3b-inp")
            assert card.requires == ["wan2.1-umt5-vae", "wan2.1-clip-vit-h"]
            size = studio.downloads.size(card.id, wait=30)  # what the Models tab says Download fetches
            assert size.error is None
            assert size.total == sum(repos[repo][name] for repo, names in FETCHED.items() for name in names)
            studio.downloads.enqueue(card.id)
            for queued in ("wan2.1-umt5-vae", "wan2.1-clip-vit-h", card.id):
                state = studio.downloads.state(queued)
                assert state is not None and state.wait(30), queued
                assert state.status is InstallStatus.READY, (queued, state.error)
            # No .pth pickle, no second transformer, no docs.
            assert files_asked_for(hub) == FETCHED
            for repo, names in FETCHED.items():
                assert snapshot_files(studio, repo) == names, repo
            assert is_ready(card, studio.cards, studio.settings)
