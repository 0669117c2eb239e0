"""VideoX-Fun's Wan2.1-Fun V1.1 Control-Camera: a camera trajectory file (CameraCtrl / RealEstate10K poses)
read into per-frame Plücker rays, VideoX-Fun's `control_adapter` (SimpleAdapter) loaded beside diffusers'
transformer and added to the patch embeddings. What a user notices: the clip comes out with the frames and
fps asked for, another trajectory gives another clip, the same seed the same clip, a bad camera file is
refused naming its line without killing the worker; and the embedding is VideoX-Fun's formula."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import files_under, kept, snapshot

from studio.errors import InvalidInput, ModelNotAvailable
from studio.history import JobStatus
from studio.media_av import read_video
from studio.tasks.video import VideoSpec

CAMERA, CONTROL = "tiny-wan-fun-camera", "tiny-wan-fun-control"
HEIGHT, WIDTH = 32, 48
MIRROR = Path("/work/.mirror/aigc-apps+VideoX-Fun/repo")  # a fetched VideoX-Fun, where this machine has one


def frames_of(path) -> np.ndarray:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader])


def pose_line(i: int, w2c: np.ndarray, fx=0.532139961, fy=0.946026558, cx=0.5, cy=0.5) -> str:
    return " ".join(str(v) for v in [i, fx, fy, cx, cy, 0, 0, *np.asarray(w2c, dtype=float).reshape(-1)])


def translation(i: int, step: tuple[float, float, float]) -> np.ndarray:
    return np.hstack([np.eye(3), np.asarray(step, dtype=float).reshape(3, 1) * i])


def orbit(i: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees * i)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return np.hstack([rot, np.array([[0.1 * i], [0.02 * i], [0.3]])])


@pytest.fixture
def trajectory(tmp_path):
    """A camera file as VideoX-Fun's assets are written: a header line, then one pose per frame."""
    def make(name: str, frames: int = 9, pose=lambda i: translation(i, (0.0, 1 / 54, 0.0)), header="header") -> str:
        path = tmp_path / f"{name}.txt"
        path.write_text("\n".join([header, *(pose_line(i, pose(i)) for i in range(frames))]) + "\n")
        return str(path)
    return make


def params(**extra) -> dict:
    return {"model": CAMERA, "prompt": "a garden, the camera moving", "steps": 2, "seed": 7, **extra}


def done(job):
    assert job.status is JobStatus.DONE, job.error
    return job


# -- the file: VideoX-Fun's layout and names, loaded and used --------------------------------------------------

def test_the_tiny_camera_checkpoint_has_videox_funs_names_and_config(studio):
    from safetensors import safe_open

    folder = snapshot(studio, CAMERA)
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "WanModel" and config["in_dim"] == 32
    assert config["add_control_adapter"] is True and config["in_dim_control_adapter"] == 24
    with safe_open(str(folder / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        adapter = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys() if "control_adapter" in k}
    assert adapter == {"control_adapter.conv.weight": (32, 24 * 64, 2, 2), "control_adapter.conv.bias": (32,),
                       "control_adapter.residual_blocks.0.conv1.weight": (32, 32, 3, 3),
                       "control_adapter.residual_blocks.0.conv1.bias": (32,),
                       "control_adapter.residual_blocks.0.conv2.weight": (32, 32, 3, 3),
                       "control_adapter.residual_blocks.0.conv2.bias": (32,)}


def test_the_adapter_weights_are_loaded_and_used(studio, trajectory):
    from safetensors.torch import load_file

    from studio.engines.wan_fun.trajectory import camera_latents
    from studio.runtime.loader import load_pipeline

    pipe = load_pipeline(studio.cards.get(CAMERA), studio.settings, cards=studio.cards)
    assert type(pipe.control_adapter).__name__ == "ControlAdapter" and pipe.transformer.config.in_channels == 32
    original = load_file(str(snapshot(studio, CAMERA) / "diffusion_pytorch_model.safetensors"))
    loaded = pipe.control_adapter.state_dict()
    assert {f"control_adapter.{k}" for k in loaded} == {k for k in original if k.startswith("control_adapter.")}
    assert all(torch.equal(v, original[f"control_adapter.{k}"]) for k, v in loaded.items())
    # Everything else is the transformer's: nothing dropped.
    assert len(pipe.transformer.state_dict()) + len(loaded) == len(original)

    camera = camera_latents(trajectory("up"), 9, WIDTH, HEIGHT)
    assert camera.shape == (1, 24, 3, HEIGHT, WIDTH)

    def clip() -> np.ndarray:
        return pipe("a garden", control_camera=camera, height=HEIGHT, width=WIDTH, num_frames=9,
                    num_inference_steps=2, generator=torch.Generator().manual_seed(3)).frames[0]
    before = clip()
    assert np.array_equal(before, clip())
    with torch.no_grad():
        pipe.control_adapter.residual_blocks[0].conv2.bias.add_(0.5)
    # Same seed gives the same clip (above), so any change is the weight's: how large depends on the random
    # tiny model (on an AVX-512 CPU this one moves the frames by about 1e-7).
    assert not np.array_equal(before, clip())
    with torch.no_grad():
        pipe.control_adapter.residual_blocks[0].conv2.bias.sub_(0.5)
        pipe.control_adapter.conv.weight.mul_(3.0)
    assert not np.array_equal(before, clip())


def test_the_adapter_features_are_added_to_the_patch_embeddings(studio):
    """VideoX-Fun's forward: x = patch_embedding(x) + control_adapter(y_camera), same grid."""
    from studio.runtime.loader import load_pipeline

    pipe = load_pipeline(studio.cards.get(CAMERA), studio.settings, cards=studio.cards)
    camera = torch.randn(1, 24, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    features = pipe.control_adapter(camera)
    x = torch.randn(1, 32, 3, HEIGHT // 8, WIDTH // 8)
    assert features.shape == pipe.transformer.patch_embedding(x).shape == (1, 32, 3, 2, 3)
    # SimpleAdapter by hand: PixelUnshuffle(8) per frame, the strided conv, one residual block.
    frame = torch.nn.functional.pixel_unshuffle(camera[:, :, 1], 8)
    conv = pipe.control_adapter.conv(frame)
    block = pipe.control_adapter.residual_blocks[0]
    assert torch.allclose(features[:, :, 1], conv + block.conv2(torch.relu(block.conv1(conv))), atol=1e-6)


# -- jobs ----------------------------------------------------------------------------------------------------

def test_a_camera_job_makes_the_clip_asked_for_and_trajectories_change_it(studio, trajectory):
    up, orbiting = trajectory("up"), trajectory("orbit", pose=lambda i: orbit(i, 4.0))
    job = done(studio.run("video", params(camera=up, fps=8)))
    info = read_video(job.outputs[0].path)
    assert (info.frames, info.fps, info.width, info.height) == (9, 8, WIDTH, HEIGHT)
    assert [o.kind for o in job.outputs] == ["video", "poster"]
    assert studio.history.get_job(job.id).params["camera"].endswith("up.txt")
    other = done(studio.run("video", params(camera=orbiting, fps=8)))
    same = done(studio.run("video", params(camera=up, fps=8)))
    assert not np.array_equal(frames_of(job.outputs[0].path), frames_of(other.outputs[0].path))
    assert np.array_equal(frames_of(job.outputs[0].path), frames_of(same.outputs[0].path))
    # More frames than the job uses: the first ones, as VideoX-Fun's [:video_length]. 13 frames: 13 poses.
    longer = done(studio.run("video", params(camera=trajectory("long", frames=20), frames=13)))
    assert read_video(longer.outputs[0].path).frames == 13


def test_a_start_image_changes_the_camera_clip(studio, trajectory, tmp_path):
    from PIL import Image

    picture = tmp_path / "start.png"
    Image.fromarray((np.random.default_rng(4).random((HEIGHT, WIDTH, 3)) * 255).astype("uint8")).save(picture)
    plain = done(studio.run("video", params(camera=trajectory("up"))))
    started = done(studio.run("video", params(camera=trajectory("up"), image=str(picture))))
    assert [o.kind for o in started.outputs] == ["video", "poster", "input"]
    assert not np.array_equal(frames_of(plain.outputs[0].path), frames_of(started.outputs[0].path))


def test_only_a_camera_model_takes_a_camera_file_and_it_needs_one(studio, trajectory):
    card = studio.cards.get(CAMERA)
    assert "camera" in VideoSpec.takes(card) and "control_video" not in VideoSpec.takes(card)
    none = studio.run("video", params())
    assert none.status is JobStatus.FAILED and "add a camera file" in none.error
    other = studio.run("video", {**params(camera=trajectory("up")), "model": CONTROL})
    assert other.status is JobStatus.FAILED and "takes no camera trajectory" in other.error


BAD = {
    "columns": ("header\n" + pose_line(0, np.eye(3, 4)) + "\n1 0.5 0.9 0.5 0.5 0 0 1 0 0\n", "line 3: 10 columns"),
    "number": ("header\n" + pose_line(0, np.eye(3, 4)).replace("0.5 0.5", "0.5 abc", 1) + "\n",
               "line 2: 'abc' is not a number"),
    "short": ("header\n" + "\n".join(pose_line(i, np.eye(3, 4)) for i in range(5)) + "\n",
              "has 5 poses; this job needs 9"),
    "singular": ("header\n" + pose_line(0, np.zeros((3, 4))) + "\n", "line 2: the world-to-camera rotation"),
    "focal": ("header\n" + pose_line(0, np.eye(3, 4), fx=0) + "\n", "line 2: the focal lengths"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_camera_file_is_refused_naming_the_line(studio, tmp_path, kind):
    text, message = BAD[kind]
    path = tmp_path / f"{kind}.txt"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message):  # what the job is checked with before it is queued
        VideoSpec.parse(params(camera=str(path))).resolved(studio.cards.get(CAMERA))
    job = studio.run("video", params(camera=str(path)))
    assert job.status is JobStatus.FAILED and message in job.error
    assert files_under(studio.settings.outputs_dir) == []


def test_a_camera_file_too_big_or_not_text_is_refused_and_the_worker_lives_on(studio, tmp_path, trajectory):
    from studio.engines.wan_fun.trajectory import MAX_CAMERA_BYTES

    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(MAX_CAMERA_BYTES + 1)
    job = studio.run("video", params(camera=str(big)))
    assert job.status is JobStatus.FAILED and f"{MAX_CAMERA_BYTES + 1:,} bytes" in job.error
    binary = tmp_path / "pose.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    job = studio.run("video", params(camera=str(binary)))
    assert job.status is JobStatus.FAILED and "is not text" in job.error
    missing = studio.run("video", params(camera=str(tmp_path / "gone.txt")))
    assert missing.status is JobStatus.FAILED and "missing" in missing.error
    assert files_under(studio.settings.outputs_dir) == []
    done(studio.run("video", params(camera=trajectory("up"))))  # the worker is still there


# -- the Plücker embedding: the formula, and VideoX-Fun's own code ------------------------------------------

def by_formula(poses: list[np.ndarray], fx: float, fy: float, cx: float, cy: float, width: int, height: int):
    """Written out: focal rescaled for aspect against 1280x720, c2w_i = w2c_0 @ inv(w2c_i) (c2w_0 = I), per
    pixel centre d = normalise(R @ ((x + .5 - cx) / fx, (y + .5 - cy) / fy, 1)), o = c2w's translation,
    channels (o x d, d)."""
    if 1280 / 720 > width / height:
        fx = height * (1280 / 720) * fx / width
    else:
        fy = width / (1280 / 720) * fy / height
    fx, fy, cx, cy = fx * width, fy * height, cx * width, cy * height
    w2c = [np.vstack([p, [0, 0, 0, 1]]) for p in poses]
    out = np.zeros((len(poses), 6, height, width))
    for f, m in enumerate(w2c):
        c2w = np.eye(4) if f == 0 else w2c[0] @ np.linalg.inv(m)
        for y in range(height):
            for x in range(width):
                d = np.array([(x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy, 1.0])
                d = c2w[:3, :3] @ (d / np.linalg.norm(d))
                out[f, :, y, x] = np.concatenate([np.cross(c2w[:3, 3], d), d])
    return out


def test_the_plucker_embedding_of_identity_poses_and_a_translation_is_the_formula(trajectory):
    from studio.engines.wan_fun.trajectory import plucker_embedding, read_camera_file

    width, height = 24, 16
    still = read_camera_file(trajectory("still", frames=5, pose=lambda i: np.eye(3, 4)), 5)
    emb = plucker_embedding(still, width, height).numpy()
    assert emb.shape == (5, 6, height, width)
    assert np.abs(emb[:, :3]).max() == 0  # every camera at the origin: no moment
    assert np.allclose(emb, by_formula([np.eye(3, 4)] * 5, 0.532139961, 0.946026558, 0.5, 0.5, width, height),
                       atol=1e-6)
    step = (0.05, -0.02, 0.1)
    moving = [translation(i, step) for i in range(5)]
    emb = plucker_embedding(read_camera_file(trajectory("move", 5, pose=lambda i: moving[i]), 5), width, height)
    expected = by_formula(moving, 0.532139961, 0.946026558, 0.5, 0.5, width, height)
    assert np.allclose(emb.numpy(), expected, atol=1e-6)
    # A pure translation keeps the directions and moves the centre to -t: moment (-t) x d.
    assert np.allclose(emb[3, 3:].numpy(), emb[0, 3:].numpy(), atol=1e-6)
    # A portrait job rescales fy instead of fx (VideoX-Fun's aspect rule).
    portrait = plucker_embedding(read_camera_file(trajectory("tall", 5, pose=lambda i: moving[i]), 5), 16, 32)
    assert np.allclose(portrait.numpy(), by_formula(moving, 0.532139961, 0.946026558, 0.5, 0.5, 16, 32), atol=1e-6)


def test_the_frames_are_packed_four_to_a_latent_frame_as_videox_fun_does():
    from studio.engines.wan_fun.trajectory import pack_latent_frames

    emb = torch.arange(9 * 6, dtype=torch.float32).view(9, 6, 1, 1).expand(9, 6, 2, 3)
    packed = pack_latent_frames(emb)
    assert packed.shape == (1, 24, 3, 2, 3)
    for c in range(6):
        for k in range(4):
            assert torch.equal(packed[0, c * 4 + k, 0], emb[0, c])  # the first frame, 4 times
            assert torch.equal(packed[0, c * 4 + k, 2], emb[4 + 1 + k, c])  # then frames 5..8


def _videox_fun_pose_code():
    """VideoX-Fun's own Camera, get_relative_pose, ray_condition and process_pose_file, taken from the
    fetched repo's videox_fun/data/utils.py (that module imports far more than numpy and torch)."""
    if not MIRROR.is_dir():
        pytest.skip("no fetched VideoX-Fun on this machine")
    try:
        source = subprocess.run(["git", "-C", str(MIRROR), "show", "HEAD:videox_fun/data/utils.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the fetched VideoX-Fun cannot be read")
    wanted = {"Camera", "custom_meshgrid", "get_relative_pose", "ray_condition", "process_pose_file"}
    nodes = [n for n in ast.parse(source).body if getattr(n, "name", None) in wanted]
    namespace = {"np": np, "torch": torch, "pver": type("pver", (), {"parse": staticmethod(lambda v: (1, 10))}),
                 "rearrange": lambda t, pattern: t.permute(0, 1, 3, 4, 2)}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "videox_fun/data/utils.py", "exec"), namespace)
    return namespace


def test_the_embedding_matches_videox_funs_own_process_pose_file(trajectory):
    reference = _videox_fun_pose_code()["process_pose_file"]
    from studio.engines.wan_fun.trajectory import camera_latents, plucker_embedding, read_camera_file

    for path, (width, height) in [(trajectory("orbit", 9, pose=lambda i: orbit(i, 3.0)), (48, 32)),
                                  (trajectory("up", 9), (32, 48))]:
        theirs = reference(path, width, height)  # F, H, W, 6
        ours = plucker_embedding(read_camera_file(path, 9), width, height)
        assert torch.allclose(ours.permute(0, 2, 3, 1), theirs, atol=1e-5)
        # And the predict script's [:video_length].permute([3, 0, 1, 2]).unsqueeze(0), packed as the pipeline does.
        video = theirs[:9].permute([3, 0, 1, 2]).unsqueeze(0)
        video = torch.concat([torch.repeat_interleave(video[:, :, 0:1], repeats=4, dim=2), video[:, :, 1:]],
                             dim=2).transpose(1, 2)
        b, f, c, h, w = video.shape
        video = video.contiguous().view(b, f // 4, 4, c, h, w).transpose(2, 3)
        video = video.contiguous().view(b, f // 4, c * 4, h, w).transpose(1, 2)
        assert torch.allclose(camera_latents(path, 9, width, height), video, atol=1e-5)


# -- real sizes, on the meta device ---------------------------------------------------------------------------

# VideoX-Fun's config.json for Wan2.1-Fun V1.1 1.3B Control-Camera as its code reads it: the 1.3B Fun shape,
# in_dim 32 (noise + start-image latents), add_control_adapter with VideoX-Fun's defaults.
REAL_13B_CAMERA = {"_class_name": "WanModel", "dim": 1536, "eps": 1e-06, "ffn_dim": 8960, "freq_dim": 256,
                   "in_dim": 32, "model_type": "i2v", "num_heads": 12, "num_layers": 30, "out_dim": 16,
                   "text_len": 512, "add_control_adapter": True, "in_dim_control_adapter": 24}
ADAPTER_13B, TOTAL_13B = 51_909_120, 1_616_313_152
ADAPTER_14B, TOTAL_14B = 503_331_840, 16_898_128_704


def test_the_real_camera_checkpoints_sizes(tmp_path):
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from studio.engines.wan_fun.convert import (FUN_DEFAULTS, ControlAdapter, convert_state, diffusers_config,
                                                original_layout)

    for extra, adapter_count, total in [({}, ADAPTER_13B, TOTAL_13B),
                                        ({"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40},
                                         ADAPTER_14B, TOTAL_14B)]:
        fun = {**FUN_DEFAULTS, **REAL_13B_CAMERA, **extra}
        layout = original_layout(fun)
        adapter = {k: s for k, s in layout.items() if k.startswith("control_adapter.")}
        with torch.device("meta"):
            module = ControlAdapter(24, fun["dim"], (2, 2))
            converted = convert_state({k: torch.empty(s) for k, s in layout.items() if k not in adapter}, "Camera")
        assert {f"control_adapter.{k}": tuple(v.shape) for k, v in module.state_dict().items()} == adapter
        assert sum(p.numel() for p in module.parameters()) == adapter_count
        with init_empty_weights():
            model = WanTransformer3DModel.from_config(diffusers_config(fun, None))
        assert {k: tuple(v.shape) for k, v in converted.items()} == \
            {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert sum(p.numel() for p in model.parameters()) + adapter_count == total
        assert sum(torch.Size(s).numel() for s in layout.values()) == total


def test_adapter_weights_that_do_not_match_are_refused_by_name(tmp_path):
    from safetensors.torch import save_file

    from studio.engines.wan_fun.convert import load_transformer
    from studio.zoo.builtin_wan_fun import tiny_fun_config, tiny_fun_state

    folder = tmp_path / "camera"
    folder.mkdir()
    config = tiny_fun_config(32, camera=True)
    (folder / "config.json").write_text(json.dumps(config))
    state = tiny_fun_state(32, 0, camera=True)
    del state["control_adapter.residual_blocks.0.conv2.bias"]
    state["control_adapter.residual_blocks.1.conv1.bias"] = torch.zeros(32)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelNotAvailable, match=r"missing: control_adapter.residual_blocks.0.conv2.bias.*"
                                                r"control_adapter.residual_blocks.1.conv1.bias"):
        load_transformer(folder, torch.float32, "Fun Camera")


def test_the_real_camera_cards_take_the_predict_scripts_defaults(studio):
    cards = [c for c in studio.cards.cards.values() if c.pipeline == "wan-fun-camera" and not c.tiny]
    assert sorted(c.id for c in cards) == ["wan2.1-fun-v1.1-1.3b-control-camera", "wan2.1-fun-v1.1-14b-control-camera"]
    for card in cards:
        values = VideoSpec.defaults_for(card)
        assert {k: values[k] for k in ("width", "height", "frames", "fps", "steps", "cfg", "shift")} == \
            {"width": 832, "height": 480, "frames": 81, "fps": 16, "steps": 50, "cfg": 6.0, "shift": 5.0}
        assert card.allow_patterns == ["config.json", "diffusion_pytorch_model.safetensors"]
        assert card.requires == ["wan2.1-umt5-vae", "wan2.1-clip-vit-h"] and card.runnable
        assert "camera" in VideoSpec.takes(card) and "reference_image" not in VideoSpec.takes(card)


# -- the Video tab, the API and the CLI ------------------------------------------------------------------------

def test_the_video_tab_offers_a_camera_upload_for_a_camera_model_and_sends_it(studio, trajectory):
    import gradio as gr

    from studio.ui.video_tab import build

    with gr.Blocks():
        form = build(studio)
    by_id = {getattr(c, "elem_id", None): c for c in form.inputs}
    camera, start = by_id["video-camera"], by_id["video-image"]
    assert isinstance(camera, gr.File) and camera.type == "filepath"
    shown = form.model_updates(CAMERA)
    assert shown[camera]["visible"] is True and shown[start]["label"] == "Start image (optional)"
    assert form.model_updates(CONTROL)[camera]["visible"] is False
    values = {c: getattr(c, "value", None) for c in form.inputs}
    values.update({form.model: CAMERA, form.fields["prompt"]: "a hall", form.fields["seed"]: 4,
                   form.fields["steps"]: 2, camera: trajectory("up")})
    sent = form.read(*[values[c] for c in form.inputs])
    assert sent["camera"] == trajectory("up") and "control_video" not in sent
    done(studio.run("video", sent))
    values[form.model] = CONTROL  # a camera file left in the hidden upload is not sent to a model without one
    assert "camera" not in form.read(*[values[c] for c in form.inputs])


def test_generate_video_takes_a_camera_upload_and_submit_job_refuses_a_path(studio, trajectory):
    from gradio_client import Client, handle_file

    from helpers import free_port
    from studio.ui.app import build_app
    from studio.ui.launch import launch_options

    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True,
                        **launch_options(studio.settings.replace(port=free_port()), None))
    try:
        client = Client(demo.local_url, verbose=False)
        named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert "camera" in {p["parameter_name"] for p in named["/generate_video"]["parameters"]}
        video, status = client.predict(prompt="a hall", model=CAMERA, camera=handle_file(trajectory("up")),
                                       steps=2, seed=3, api_name="/generate_video")
        assert "Done" in status, status
        [record] = studio.history.list_jobs()
        assert record.params["camera"].endswith("up.txt") and record.params["camera"] != trajectory("up")
        with pytest.raises(Exception, match="camera: send input files through /generate_video, not as paths"):
            client.predict("video", {"model": CAMERA, "prompt": "a hall", "camera": trajectory("up")},
                           api_name="/submit_job")
    finally:
        demo.close()


def test_studio_generate_video_takes_a_camera_file(tmp_path, model_cache, capsys, trajectory):
    from studio.cli import main
    from studio.history import HistoryStore

    home = tmp_path / "home"
    argv = ["generate", "video", "--home", str(home), "--model-cache", str(model_cache), "--model", CAMERA,
            "--prompt", "a hall", "--steps", "2", "--seed", "2", "--camera", trajectory("up")]
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip().splitlines()[0].endswith(": done")
    store = HistoryStore(home / "studio.db")
    try:
        [record] = store.list_jobs()
    finally:
        store.close()
    assert kept(record.params["camera"], trajectory("up"))
