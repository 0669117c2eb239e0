"""Camera trajectories for Wan2.1-Fun Control-Camera: a RealEstate10K / CameraCtrl pose file read in
our own code, and the per-frame Plücker embedding VideoX-Fun computes from it.

The file (VideoX-Fun's asset/Pan_Left.txt, Zoom_In.txt, …) is text: a first line that is skipped (a
header or a source URL), then one line per frame of 19 numbers,
`frame_time fx fy cx cy 0 0 w2c` with the intrinsics normalised by the image size and w2c the
world-to-camera matrix's first three rows (row-major 3x4). `read_camera_file` checks it (size before
reading, UTF-8 text, column count, numbers, enough frames) and refuses with the line named; its
`InvalidInput` is what the job fails with. `plucker_embedding` is `videox_fun/data/utils.py`'s
`process_pose_file` + `ray_condition` (copied there from CameraCtrl): the focal length rescaled for the
aspect of the job against the poses' 1280x720, poses made relative to the first camera, per pixel
(centre, +0.5) the unit ray direction d in world space and its moment o x d -> 6 channels (o x d, d) per
frame at the job's pixel size. `pack_latent_frames` is `pipeline_wan_fun_control.py`'s layout for the
adapter: the first frame repeated 4x, then 4 consecutive frames' 6 channels stacked into 24 per latent
frame (channel c*4 + k for frame k of the group).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...errors import InvalidInput

# A trajectory of a few hundred frames is ~40 KB; anything over this is not one.
MAX_CAMERA_BYTES = 1 << 20
COLUMNS = 19  # frame_time fx fy cx cy 0 0 + the 3x4 w2c
# process_pose_file's defaults: the size the trajectories' intrinsics were written for.
POSE_WIDTH, POSE_HEIGHT = 1280, 720


def read_camera_file(path: str | Path | None, frames: int) -> list[list[float]]:
    """The first `frames` poses of a camera file (19 numbers each), or an InvalidInput naming the line."""
    if not path:
        raise InvalidInput("this model follows a camera trajectory: add a camera file (a CameraCtrl pose .txt)")
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"the camera file {file.name!r} is missing (upload it again)")
    size = file.stat().st_size
    if size > MAX_CAMERA_BYTES:  # checked before a byte is read
        raise InvalidInput(f"the camera file {file.name!r} is {size:,} bytes; a trajectory is at most "
                           f"{MAX_CAMERA_BYTES:,}")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the camera file {file.name!r} is not text (a CameraCtrl pose .txt)") from None
    if "\x00" in text:
        raise InvalidInput(f"the camera file {file.name!r} is not text (a CameraCtrl pose .txt)")
    lines = text.splitlines()
    poses: list[list[float]] = []
    for number, line in enumerate(lines[1:], start=2):  # line 1 is the header VideoX-Fun skips
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != COLUMNS:
            raise InvalidInput(f"the camera file {file.name!r}, line {number}: {len(fields)} columns; a pose line "
                               f"has {COLUMNS} (frame_time fx fy cx cy 0 0 and the 3x4 world-to-camera matrix)")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_number(v))
            raise InvalidInput(f"the camera file {file.name!r}, line {number}: {bad[:20]!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise InvalidInput(f"the camera file {file.name!r}, line {number}: a value is not finite")
        if values[1] <= 0 or values[2] <= 0:
            raise InvalidInput(f"the camera file {file.name!r}, line {number}: the focal lengths fx, fy must be > 0")
        if abs(_det3([values[7:10], values[11:14], values[15:18]])) < 1e-8:
            raise InvalidInput(f"the camera file {file.name!r}, line {number}: the world-to-camera rotation is "
                               "singular")
        poses.append(values)
        if len(poses) == frames:
            return poses
    raise InvalidInput(f"the camera file {file.name!r} has {len(poses)} poses; this job needs {frames} "
                       f"(one per frame)")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _det3(m: list[list[float]]) -> float:
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def intrinsics(poses: list[list[float]], width: int, height: int) -> Any:
    """(F, 4) fx, fy, cx, cy in pixels of the job's size, with process_pose_file's aspect correction."""
    import numpy as np

    params = np.asarray([p[1:5] for p in poses], dtype=np.float64)
    fx, fy, cx, cy = params.T.copy()
    pose_ratio, sample_ratio = POSE_WIDTH / POSE_HEIGHT, width / height
    if pose_ratio > sample_ratio:
        fx = height * pose_ratio * fx / width
    else:
        fy = width / pose_ratio * fy / height
    return np.stack([fx * width, fy * height, cx * width, cy * height], axis=1).astype(np.float32)


def relative_c2w(poses: list[list[float]]) -> Any:
    """(F, 4, 4) camera-to-world matrices relative to the first camera (CameraCtrl's get_relative_pose)."""
    import numpy as np

    w2c = np.tile(np.eye(4), (len(poses), 1, 1))
    w2c[:, :3, :] = np.asarray([p[7:] for p in poses], dtype=np.float64).reshape(-1, 3, 4)
    c2w = np.linalg.inv(w2c)
    rel = [np.eye(4)] + [w2c[0] @ c2w[i] for i in range(1, len(poses))]
    return np.asarray(rel, dtype=np.float32)


def plucker_embedding(poses: list[list[float]], width: int, height: int) -> Any:
    """(F, 6, H, W) float32 Plücker rays per frame: channels (o x d, d), d the unit world-space direction
    through pixel centre (x + 0.5, y + 0.5), o the camera centre (relative to the first camera)."""
    import torch

    k = torch.as_tensor(intrinsics(poses, width, height))  # F, 4
    c2w = torch.as_tensor(relative_c2w(poses))  # F, 4, 4
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    fx, fy, cx, cy = (k[:, i].view(-1, 1, 1) for i in range(4))
    directions = torch.stack([(xs - cx) / fx, (ys - cy) / fy, torch.ones_like(xs - cx)], dim=-1)  # F, H, W, 3
    directions = directions / directions.norm(dim=-1, keepdim=True)
    rays_d = directions @ c2w[:, None, :3, :3].transpose(-1, -2)  # F, H, W, 3
    rays_o = c2w[:, None, None, :3, 3].expand_as(rays_d)
    plucker = torch.cat([torch.linalg.cross(rays_o, rays_d, dim=-1), rays_d], dim=-1)
    return plucker.permute(0, 3, 1, 2).contiguous()


def pack_latent_frames(embedding: Any) -> Any:
    """(F, 6, H, W) with F = 4k+1 -> (1, 24, k+1, H, W): the adapter's input, as VideoX-Fun packs it."""
    import torch

    video = embedding.permute(1, 0, 2, 3).unsqueeze(0)  # 1, 6, F, H, W (the predict script's layout)
    video = torch.cat([video[:, :, :1].repeat_interleave(4, dim=2), video[:, :, 1:]], dim=2).transpose(1, 2)
    b, f, c, h, w = video.shape
    video = video.contiguous().view(b, f // 4, 4, c, h, w).transpose(2, 3)
    return video.contiguous().view(b, f // 4, c * 4, h, w).transpose(1, 2)


def camera_latents(path: str | Path, frames: int, width: int, height: int) -> Any:
    """A camera file as the adapter's input for a job: (1, 24, latent frames, height, width)."""
    return pack_latent_frames(plucker_embedding(read_camera_file(path, frames), width, height))
