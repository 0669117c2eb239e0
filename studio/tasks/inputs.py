"""Files a user brings to a job (a start image, an end frame, a mask): read with the pixel count checked
from the header before anything is decoded, so a huge or corrupt upload is refused with a clear message."""

from __future__ import annotations

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


def keep_file(source: Path, outputs_dir: Path) -> Path:
    """A copy of `source` at outputs/inputs/<sha256[:16]><ext>, written atomically; a file already there
    with that name is kept when its content is the same (a re-run), and never overwritten when it is not
    (the full hash names the copy then)."""
    import hashlib
    import os
    import tempfile

    folder = Path(outputs_dir) / INPUTS_FOLDER
    if source.parent.resolve() == folder.resolve():
        return source  # already kept (a re-run of a job that recorded its copy)
    digest = hashlib.sha256()
    with source.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    ext = source.suffix.lower()[:10] if source.suffix[1:].isalnum() else ""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (digest.hexdigest()[:16], digest.hexdigest()):
        target = folder / f"{name}{ext}"
        if target.exists():
            if hashlib.sha256(target.read_bytes()).hexdigest() == digest.hexdigest():
                return target
            continue
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    out.write(block)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target
    raise InvalidInput(f"{source.name!r} cannot be kept with the job: {folder} holds other files under its names")


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
