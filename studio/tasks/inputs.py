"""Files a user brings to a job (a start image, an end frame, a mask): read with the pixel count checked
from the header before anything is decoded, so a huge or corrupt upload is refused with a clear message."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InvalidInput, MediaError
from ..media import MAX_DECODE_PIXELS, check_pixels
from ..zoo.cards import ModelCard


def input_pixel_limit(card: ModelCard) -> int:
    """The most pixels an input image or video frame may have for this model: four times its largest
    side, squared (it is resized to the job's size anyway), and never past what the studio decodes."""
    return min(MAX_DECODE_PIXELS, (4 * card.max_size) ** 2)


def load_input_image(path: str | None, card: ModelCard, what: str = "start image", mode: str | None = "RGB"
                     ) -> Image.Image:
    """The uploaded start image (or end frame, reference, mask: `what`) in `mode` (None: as stored, alpha
    kept), or a clear error if it is missing or not an image."""
    if not path:
        raise InvalidInput(f"this model turns an image into a video: add a {what}")
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"the {what} {file.name!r} is missing (upload it again)")
    try:
        with Image.open(file) as im:  # reads the header only: the size is known before anything is decoded
            check_pixels(*im.size, input_pixel_limit(card), f"the image {file.name!r}")
            return im.convert(mode) if mode else im.copy()
    except MediaError as err:
        raise InvalidInput(str(err)) from None
    except Image.DecompressionBombError:
        raise InvalidInput(f"{file.name!r} has more pixels than the studio decodes: scale it down first") from None
    except Exception:
        raise InvalidInput(f"{file.name!r} is not an image the studio can read (use PNG, JPEG or WebP)") from None


INPUTS_FOLDER = "inputs"  # under the outputs folder: the files jobs were given, content-addressed


def _safe_name(name: str) -> str:
    """A file name that is safe in any folder: letters, digits, '.', '-' and '_' only, at most 100 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[-100:]
    return cleaned or "input"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def keep_file(source: Path, outputs_dir: Path) -> Path:
    """A copy of `source` at outputs/inputs/<sha256[:16]>/<its name>, written atomically (a temporary file
    renamed into place). Content-addressed by the folder: a re-run, or the same upload again, finds its copy;
    a file already there with other content is never overwritten (the full hash names the folder then).
    The name is kept so the job still says which file it was given."""
    root = Path(outputs_dir) / INPUTS_FOLDER
    if root.resolve() in source.resolve().parents:
        return source  # already kept (a re-run of a job that recorded its copy)
    digest = _sha256(source)
    name = _safe_name(source.name)
    for folder in (root / digest[:16], root / digest):
        target = folder / name
        if target.exists():
            if _sha256(target) == digest:
                return target
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target
    raise InvalidInput(f"{source.name!r} cannot be kept with the job: {root} holds other files under its names")


def keep_inputs(spec: Any, outputs_dir: Path) -> Any:
    """The spec with every file field its task declares (`TaskSpec.FILES`) pointing at the job's own copy
    under the outputs folder, so a re-run (gallery, `studio history rerun`) still has its inputs after the
    upload's temporary file is gone."""
    update = {}
    for name in type(spec).FILES:
        value = getattr(spec, name, None)
        if value and Path(value).is_file():
            update[name] = str(keep_file(Path(value), outputs_dir))
    return spec.model_copy(update=update) if update else spec
