"""Video and audio outputs: written atomically with the job embedded, and read back.

- MP4 (H.264, yuv420p, through imageio-ffmpeg's ffmpeg): the job JSON in the container's `comment`
  tag and the prompt in `title` (`-movflags +use_metadata_tags` keeps them in MP4), which ffprobe,
  players and other tools show.
- WAV or FLAC (through soundfile): the prompt in `title`, the job JSON in `comment`.
- A waveform picture for audio, a poster frame for video: the pictures a gallery shows.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw

from .errors import MediaError
from .media import SavedFile, _job_json, _write_atomic

AUDIO_FORMATS = {"wav": ("WAV", "PCM_16", "audio/wav"), "flac": ("FLAC", "PCM_16", "audio/flac")}


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def save_mp4(frames: np.ndarray, outputs_dir: Path, relpath: str, *, fps: int, title: str,
             job: Mapping[str, Any]) -> SavedFile:
    """frames: uint8 array (frames, height, width, 3)."""
    import imageio_ffmpeg

    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MediaError(f"a video needs uint8 frames shaped (n, height, width, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    comment = _job_json(job, relpath)

    def encode(path: str) -> None:
        writer = imageio_ffmpeg.write_frames(
            path, (width, height), fps=fps, codec="libx264", quality=8, macro_block_size=1,
            output_params=["-f", "mp4", "-movflags", "+faststart+use_metadata_tags",
                           "-metadata", f"title={title[:500]}", "-metadata", f"comment={comment}"])
        writer.send(None)
        for frame in frames:
            writer.send(frame)
        writer.close()

    path, size, sha = _write_atomic(outputs_dir, relpath, write_path=encode)
    return SavedFile(path=path, relpath=PurePosixPath(relpath).as_posix(), kind="video", mime="video/mp4",
                     width=width, height=height, bytes=size, sha256=sha, duration_s=count / fps)


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    tags: dict[str, str]

    @property
    def job(self) -> dict | None:
        try:
            return json.loads(self.tags.get("comment", ""))
        except ValueError:
            return None


def read_video(path: Path) -> VideoInfo:
    """Decode a video back: frame count, fps, size and its metadata tags."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video file {path} does not exist")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        count = sum(1 for _ in reader)
    except Exception as exc:
        raise MediaError(f"{path} could not be read as a video: {exc}") from exc
    dump = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, timeout=60).stdout
    tags: dict[str, str] = {}
    for line in dump.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith(";"):
            tags[key.strip().lower()] = re.sub(r"\\(.)", r"\1", value)  # ffmetadata escapes =;#\ and newlines
    width, height = meta["size"]
    return VideoInfo(frames=count, fps=float(meta["fps"]), width=width, height=height,
                     duration_s=count / float(meta["fps"]), tags=tags)


def save_audio(waveform: np.ndarray, sample_rate: int, outputs_dir: Path, relpath: str, *, fmt: str, title: str,
               job: Mapping[str, Any]) -> SavedFile:
    """waveform: float array (channels, samples) in [-1, 1]."""
    import soundfile as sf

    if fmt not in AUDIO_FORMATS:
        raise MediaError(f"audio format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}")
    container, subtype, mime = AUDIO_FORMATS[fmt]
    data = np.asarray(waveform, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    if not np.isfinite(data).all():
        raise MediaError("the model produced audio with NaN or infinite samples; nothing was saved")
    comment = _job_json(job, relpath)

    def write(f: Any) -> None:
        with sf.SoundFile(f, mode="w", samplerate=int(sample_rate), channels=data.shape[0], format=container,
                          subtype=subtype) as out:
            out.title = title[:500]
            out.comment = comment
            out.software = "studio"
            out.write(np.clip(data.T, -1.0, 1.0))

    path, size, sha = _write_atomic(outputs_dir, relpath, write)
    return SavedFile(path=path, relpath=PurePosixPath(relpath).as_posix(), kind="audio", mime=mime, width=None,
                     height=None, bytes=size, sha256=sha, duration_s=data.shape[1] / sample_rate)


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    samples: int
    title: str
    comment: str

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate

    @property
    def job(self) -> dict | None:
        try:
            return json.loads(self.comment)
        except ValueError:
            return None


def read_audio(path: Path) -> AudioInfo:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            return AudioInfo(f.samplerate, f.channels, f.frames, f.title or "", f.comment or "")
    except Exception as exc:
        raise MediaError(f"{path} could not be read as audio: {exc}") from exc


def waveform_picture(waveform: np.ndarray, width: int = 800, height: int = 200) -> Image.Image:
    """Min/max per pixel column, one lane per channel, on a dark background."""
    data = np.asarray(waveform, dtype=np.float32)
    data = data[None] if data.ndim == 1 else data
    picture = Image.new("RGB", (width, height), (24, 26, 33))
    draw = ImageDraw.Draw(picture)
    lane = height / data.shape[0]
    for c, channel in enumerate(data):
        columns = np.array_split(channel, width) if channel.size >= width else [channel] * width
        middle = lane * (c + 0.5)
        for x, column in enumerate(columns):
            low, high = (float(column.min()), float(column.max())) if column.size else (0.0, 0.0)
            draw.line([(x, middle - high * lane / 2), (x, middle - low * lane / 2)], fill=(122, 162, 247))
    return picture


def poster_frame(frames: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(frames[0], dtype=np.uint8))
