"""Write outputs atomically with embedded metadata that other tools read, and read it back.

Every PNG carries two text chunks: `parameters`, the A1111 "infotext" that A1111, Civitai, InvokeAI
and ComfyUI readers understand, and `studio_job`, our full job as JSON so a job can be re-run
exactly. Files appear under the outputs dir only once complete: a crash or a full disk never leaves
a half-written image that the gallery or another tool could pick up.

Each job also gets one small WebP thumbnail, made once when it is saved, that the gallery shows.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable

from PIL import Image, PngImagePlugin

from studio.errors import MediaError

# No image is decoded past this many pixels (a 420 KB PNG can hold 12000x12000): Pillow refuses at
# open, before decoding, anything over twice its MAX_IMAGE_PIXELS — which Gradio's upload handling
# goes through too. Decoders with a model at hand check against a tighter, model-derived limit.
MAX_DECODE_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS // 2

PARAMETERS_KEY = "parameters"  # A1111's PNG text key, read by A1111, Civitai, InvokeAI, ComfyUI readers
JOB_KEY = "studio_job"  # our full job JSON

_NEGATIVE = "Negative prompt:"
# A1111's own pattern (modules/infotext_utils.py); matching it exactly keeps us readable by its parsers.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_KEY = re.compile(r"\w[\w \-/]+")
_RE_TASK = re.compile(r"[a-z0-9_]+")
_RE_JOB_ID = re.compile(r"[A-Za-z0-9_-]+")

THUMBNAIL_PX = 320  # longest side; the gallery grid shows them at about half that, sharp on HiDPI screens
# zlib level of every PNG: ComfyUI's 4, not Pillow's 6. On a 1024² picture 6 takes ~3x as long (~480 vs ~140 ms
# on a 2-core box, on the saver thread) for files within a few percent of the same size. The thumbnail's WebP
# uses method 0 (fastest): at quality 82 and 320 px its files come out the same size as method 4's.
PNG_LEVEL = 4
# Which output a job's thumbnail is made from, best first: the picture itself, a video's poster frame,
# a sound's waveform picture, an anagram's animation.
THUMBNAIL_SOURCES = ("image", "poster", "waveform", "animation")


@dataclass(frozen=True)
class Infotext:
    prompt: str
    negative_prompt: str
    fields: dict[str, str]


@dataclass(frozen=True)
class SavedFile:
    path: Path  # absolute path of the written file
    relpath: str  # POSIX path relative to the outputs dir (what the DB stores)
    kind: str
    mime: str
    width: int | None
    height: int | None
    bytes: int
    sha256: str  # hex digest of the file's bytes as written
    duration_s: float | None = None  # video and audio
    # The picture the file was encoded from, while the job's saver still needs it (its thumbnail is
    # made from this rather than by decoding the file just written); dropped before a front end sees it.
    picture: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PngMetadata:
    infotext: Infotext | None  # parsed `parameters` chunk, None if absent
    job: dict[str, Any] | None  # parsed `studio_job` JSON, None if absent or not valid JSON
    raw: dict[str, str]  # every text chunk (other tools' keys, e.g. ComfyUI "prompt"/"workflow")


def _quote(value: object) -> str:
    s = str(value)
    # A1111 quotes on , \n and : only; a leading quote or edge whitespace would not survive parsing either.
    if any(c in s for c in ",\n:") or s.startswith('"') or s != s.strip():
        return json.dumps(s, ensure_ascii=False)
    return s


def format_infotext(prompt: str, negative_prompt: str, fields: Mapping[str, object]) -> str:
    """A1111 infotext: prompt, optional `Negative prompt:` line, then `Key: value, ...`."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if not _RE_KEY.fullmatch(key):
            raise ValueError(f"infotext field name {key!r} would not parse back; use letters, digits, spaces, - or /")
        parts.append(f"{key}: {_quote(value)}")
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    if parts:
        lines.append(", ".join(parts))
    return "\n".join(lines)


def parse_infotext(text: str) -> Infotext:
    """Reverse of `format_infotext`; also reads infotext written by A1111 itself. Never raises."""
    *lines, last = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    matches = _RE_PARAM.findall(last)
    # Like A1111: fewer than 3 `key: value` pairs means the last line is still prompt text.
    if len(matches) < 3:
        lines.append(last)
        matches = []
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        if negative is None and line.startswith(_NEGATIVE):
            rest = line[len(_NEGATIVE):]
            negative = [rest[1:] if rest.startswith(" ") else rest]
        elif negative is not None:
            negative.append(line)
        else:
            prompt.append(line)
    fields: dict[str, str] = {}
    for key, value in matches:
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = str(json.loads(value))
            except ValueError:
                pass  # keep it verbatim, as A1111 does
        fields[key] = value
    return Infotext("\n".join(prompt), "\n".join(negative or []), fields)


def output_relpath(task: str, job_id: str, index: int, ext: str, when: datetime) -> str:
    """`task/YYYY-MM-DD/job-NN.ext`; built only from ids so prompt text never reaches the filesystem."""
    for what, value, pattern in (("task name", task, _RE_TASK), ("job id", job_id, _RE_JOB_ID),
                                 ("file extension", ext, _RE_TASK)):
        if not pattern.fullmatch(value):
            raise ValueError(f"{what} {value!r} must match {pattern.pattern}")
    if index < 0:
        raise ValueError(f"output index must be >= 0, got {index}")
    return f"{task}/{when:%Y-%m-%d}/{job_id}-{index:02d}.{ext}"


def _resolve_target(outputs_dir: Path, relpath: str) -> Path:
    pure = PurePosixPath(relpath)
    if (not relpath or "\\" in relpath or pure.is_absolute() or ".." in pure.parts
            or re.match(r"^[A-Za-z]:", relpath) or relpath.endswith("/")):
        raise MediaError(f"output path {relpath!r} must be a relative POSIX file path without '..'")
    root = outputs_dir.resolve()
    target = (root / pure).resolve()
    # resolve() follows symlinks, so a linked folder pointing elsewhere is caught here too.
    if target == root or not target.is_relative_to(root):
        raise MediaError(f"output path {relpath!r} points outside the outputs folder {root}")
    return target


PARTIAL_SUFFIX = ".part"  # what _write_atomic's temporary files end with, until published


# The names _write_atomic (".<job>-NN.ext.<random>.part", ".<job>.webp.<random>.part") and the
# gallery's export (".export-<random>.zip.part") give their temporary files.
_RE_PARTIAL = re.compile(r"\.([0-9a-f]{32}(-\d{2})?\.[a-z0-9]+|export-[a-z0-9_]+\.zip)\.[a-z0-9_]+\.part")


def remove_partial_files(outputs_dir: Path) -> int:
    """Delete the temporary files of writes that never finished (the process was killed mid-write).

    Only files named the way this studio names its temporary files are touched (the outputs folder
    may be shared with other programs); the queue's owner calls this before its worker starts."""
    count = 0
    if not Path(outputs_dir).is_dir():
        return 0
    for path in Path(outputs_dir).rglob(f".*{PARTIAL_SUFFIX}"):
        if _RE_PARTIAL.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()
                count += 1
    return count


# What the studio names its outputs (`task/YYYY-MM-DD/<uuid4 hex>-NN.ext`) and thumbnails
# (`thumbnails/YYYY-MM-DD/<uuid4 hex>.webp`): only such files are ever swept as orphans.
_RE_OUTPUT_NAME = re.compile(r"[0-9a-f]{32}(-[0-9]{2,})?\.[a-z0-9]+")
_RE_DATE_DIR = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def studio_named_files(outputs_dir: Path) -> list[str]:
    """The files under `outputs_dir` named the way the studio names its outputs, as relative paths."""
    root = Path(outputs_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.glob("*/*/*"):
        task_dir, date_dir = path.parent.parent.name, path.parent.name
        if (_RE_TASK.fullmatch(task_dir) and _RE_DATE_DIR.fullmatch(date_dir) and _RE_OUTPUT_NAME.fullmatch(path.name)
                and path.is_file() and not path.is_symlink()):
            found.append(path.relative_to(root).as_posix())
    return found


def remove_orphans(outputs_dir: Path, owned: set[str]) -> int:
    """Delete studio-named outputs that no job row owns (`owned`: every recorded asset path), left by
    a process killed between writing a job's files and recording them. Nothing else is touched: other
    programs' files in the folder, anything not named like the studio's outputs, symlinks."""
    count = 0
    for relpath in studio_named_files(outputs_dir):
        if relpath not in owned:
            with contextlib.suppress(OSError):
                (Path(outputs_dir) / relpath).unlink()
                count += 1
    return count


def remove_job_leftovers(outputs_dir: Path, job_id: str) -> int:
    """Delete the files an earlier attempt of job `job_id` wrote but never recorded (its worker died between
    writing and recording), so a retry can write its own. Output names hold the job id and nothing else of
    the job (see output_relpath), so no other job's file can match; the date folder is the day that attempt
    saved, which may not be today, so every date folder is looked in."""
    if not _RE_JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} must match {_RE_JOB_ID.pattern}")
    count = 0
    for path in Path(outputs_dir).glob(f"*/*/{job_id}*"):
        if (_RE_DATE_DIR.fullmatch(path.parent.name) and _RE_OUTPUT_NAME.fullmatch(path.name)
                and re.split(r"[-.]", path.name, maxsplit=1)[0] == job_id and path.is_file() and not path.is_symlink()):
            with contextlib.suppress(OSError):
                path.unlink()
                count += 1
    return count


def _fsync_dir(path: Path) -> None:
    try:  # makes the rename itself durable; not possible on every OS/filesystem, so best effort
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _job_json(job: Mapping[str, Any], relpath: str) -> str:
    try:
        return json.dumps(dict(job), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise MediaError(f"job metadata for {relpath} cannot be stored as JSON: {exc}") from exc


def _write_atomic(outputs_dir: Path, relpath: str, write: Callable[[BinaryIO], None] | None = None, *,
                  write_path: Callable[[str], None] | None = None) -> tuple[Path, int, str]:
    """Run `write` (into an open file) or `write_path` (given a path, for tools like ffmpeg) into a
    temporary file beside the target and publish it complete, or not at all.

    Returns (path, bytes, sha256 of what reached the disk)."""
    target = _resolve_target(Path(outputs_dir), relpath)
    if target.exists():
        raise MediaError(f"output file {target} already exists; refusing to overwrite it")
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent)
        digest = hashlib.sha256()
        if write_path is not None:
            os.close(fd)
            write_path(tmp)
            fd = os.open(tmp, os.O_RDWR)
        with os.fdopen(fd, "r+b") as f:
            if write is not None:
                write(f)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)  # hash what actually reached the file, not what we meant to write
            size = 0
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        try:  # link() fails if the name exists, so a racing writer can never be overwritten
            os.link(tmp, target)
        except OSError as exc:
            if isinstance(exc, FileExistsError) or target.exists():
                raise MediaError(f"output file {target} already exists; refusing to overwrite it") from None
            os.replace(tmp, target)  # filesystem without hard links
        else:
            with contextlib.suppress(OSError):  # the final file is complete; a stray link is harmless
                os.unlink(tmp)
        tmp = None
        _fsync_dir(target.parent)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, MediaError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise MediaError(f"disk full while writing {target}; free some space and retry") from exc
        raise MediaError(f"could not write {target}: {exc}") from exc
    return target, size, digest.hexdigest()


def save_png(image: Image.Image, outputs_dir: Path, relpath: str, *,
             infotext: str, job: Mapping[str, Any]) -> SavedFile:
    """Write `image` to outputs_dir/relpath with metadata; the file appears complete or not at all."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, infotext)  # Pillow switches to iTXt (UTF-8) when not latin-1
    info.add_text(JOB_KEY, _job_json(job, relpath))
    path, size, sha = _write_atomic(outputs_dir, relpath, lambda f: image.save(f, format="PNG", pnginfo=info,
                                                                                compress_level=PNG_LEVEL))
    width, height = image.size
    return SavedFile(path=path, relpath=PurePosixPath(relpath).as_posix(), kind="image",
                     mime="image/png", width=width, height=height, bytes=size, sha256=sha, picture=image)


def save_gif(frames: list[Image.Image], outputs_dir: Path, relpath: str, *, job: Mapping[str, Any],
             frame_ms: int = 80) -> SavedFile:
    """An animated GIF (looping) with the job JSON in its comment block; complete or not at all."""
    if not frames:
        raise MediaError("an animation needs at least one frame")
    comment = _job_json(job, relpath).encode("utf-8")
    first, rest = frames[0], frames[1:]
    path, size, sha = _write_atomic(outputs_dir, relpath, lambda f: first.save(
        f, format="GIF", save_all=True, append_images=rest, duration=frame_ms, loop=0, comment=comment))
    width, height = first.size
    return SavedFile(path=path, relpath=PurePosixPath(relpath).as_posix(), kind="animation",
                     mime="image/gif", width=width, height=height, bytes=size, sha256=sha, picture=first)


def check_pixels(width: int, height: int, limit: int, what: str) -> None:
    """MediaError before decoding when an image (or a video frame) has more pixels than `limit`."""
    if width * height > limit:
        side = int(limit ** 0.5)
        raise MediaError(f"{what} is {width}x{height} ({width * height / 1e6:.0f} MP): the studio reads at most "
                         f"{limit / 1e6:.1f} MP (about {side}x{side}) here; scale it down first")


def read_png_metadata(path: Path) -> PngMetadata:
    """All text chunks of a PNG, with our two keys parsed."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image file {path} does not exist")
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise MediaError(f"{path} is a {im.format} file, not a PNG; only PNG metadata can be read")
            # Reading the chunks after the image data decodes it: only within bounds.
            check_pixels(*im.size, MAX_DECODE_PIXELS, Path(path).name)
            text = getattr(im, "text", {})  # includes chunks after the image data
            raw = {str(k): str(v) for k, v in text.items()}
    except MediaError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt/unknown files
        raise MediaError(f"{path} could not be read as a PNG image: {exc}") from exc
    infotext = parse_infotext(raw[PARAMETERS_KEY]) if PARAMETERS_KEY in raw else None
    try:
        job = json.loads(raw[JOB_KEY]) if JOB_KEY in raw else None
    except ValueError:
        job = None
    return PngMetadata(infotext=infotext, job=job if isinstance(job, dict) else None, raw=raw)


def thumbnail_relpath(job_id: str, when: datetime) -> str:
    """`thumbnails/YYYY-MM-DD/job.webp`: beside the outputs, named by job id only."""
    if not _RE_JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} must match {_RE_JOB_ID.pattern}")
    return f"thumbnails/{when:%Y-%m-%d}/{job_id}.webp"


def thumbnail_source(saved: list[SavedFile]) -> SavedFile | None:
    """The output a job's thumbnail is made from, or None when it has no picture at all."""
    for kind in THUMBNAIL_SOURCES:
        for item in saved:
            if item.kind == kind:
                return item
    return None


def save_thumbnail(source: Path | Image.Image, outputs_dir: Path, relpath: str) -> SavedFile:
    """A WebP no larger than THUMBNAIL_PX on its longest side, from a picture in memory or an image
    file (its first frame); atomic like every output."""
    if isinstance(source, Image.Image):
        thumb = source.convert("RGBA" if source.mode in ("RGBA", "LA", "P") else "RGB")  # a copy
    else:
        try:
            with Image.open(source) as im:
                im.seek(0)  # the first frame of an animation
                thumb = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
        except Exception as exc:
            raise MediaError(f"could not read {source} to make its thumbnail: {exc}") from exc
    thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    path, size, sha = _write_atomic(outputs_dir, relpath, lambda f: thumb.save(f, format="WEBP", quality=82,
                                                                                method=0))
    return SavedFile(path=path, relpath=PurePosixPath(relpath).as_posix(), kind="thumbnail", mime="image/webp",
                     width=thumb.width, height=thumb.height, bytes=size, sha256=sha)
