"""Outputs are written atomically with metadata other tools can read back."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from studio import media
from studio.errors import MediaError
from studio.media import (
    JOB_KEY,
    PARAMETERS_KEY,
    Infotext,
    format_infotext,
    output_relpath,
    parse_infotext,
    read_png_metadata,
    save_png,
)

FIELDS = {"Steps": 30, "Sampler": "Euler", "CFG scale": 4.0, "Seed": 123, "Size": "1024x1024",
          "Model": "tiny-lumina-next"}


def _image(w: int = 24, h: int = 16, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# --- infotext -------------------------------------------------------------------------------------

def test_format_matches_a1111_layout() -> None:
    text = format_infotext("a cat", "blurry", FIELDS)
    assert text == ("a cat\nNegative prompt: blurry\n"
                    "Steps: 30, Sampler: Euler, CFG scale: 4.0, Seed: 123, Size: 1024x1024, Model: tiny-lumina-next")


def test_format_omits_empty_negative_and_none_values() -> None:
    text = format_infotext("a cat", "", {**FIELDS, "Lora": None})
    assert "Negative prompt" not in text and "Lora" not in text
    assert text.splitlines()[0] == "a cat" and len(text.splitlines()) == 2


@pytest.mark.parametrize(
    ("prompt", "negative"),
    [
        ("a cat, sitting: on a mat", "ugly, bad: hands"),
        ('she said "hello, world" \\ backslash', 'no "quotes"'),
        ("line one\nline two\n\nline four", ""),
        ("a cat 🐱🚀 at night", "低质量, 模糊"),
        ("一只在月光下的猫，水墨画风格", "multi\nline\nnegative"),
        ("", "only a negative"),
        ("", ""),
        ("  leading and trailing spaces  ", " spaced negative "),
        ("Steps: 1, Sampler: x, Seed: 2\nprompt looks like params on first line", ""),
    ],
)
def test_round_trip_tricky_prompts(prompt: str, negative: str) -> None:
    parsed = parse_infotext(format_infotext(prompt, negative, FIELDS))
    assert parsed == Infotext(prompt, negative, {k: str(v) for k, v in FIELDS.items()})


def test_round_trip_values_with_commas_colons_quotes_newlines() -> None:
    fields = {**FIELDS, "Lora hashes": "a: 1, b: 2", "Note": 'say "hi"\nagain', "Quoted": '"x"',
              "Style": "水墨, 🐉", "Empty": ""}
    parsed = parse_infotext(format_infotext("p", "n", fields))
    assert parsed.fields == {k: str(v) for k, v in fields.items()}
    assert list(parsed.fields) == list(fields)  # order kept


def test_parses_infotext_written_by_a1111() -> None:
    text = (
        "masterpiece, best quality, 1girl, (smile:1.2), <lora:detail:0.6>\n"
        "Negative prompt: lowres, bad anatomy\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
        'Model hash: 45dee52b, Model: v1-5-pruned-emaonly, Lora hashes: "a: 1, b: 2", Version: v1.6.0'
    )
    info = parse_infotext(text)
    assert info.prompt == "masterpiece, best quality, 1girl, (smile:1.2), <lora:detail:0.6>"
    assert info.negative_prompt == "lowres, bad anatomy"
    assert info.fields == {
        "Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "1234567890", "Size": "512x768",
        "Model hash": "45dee52b", "Model": "v1-5-pruned-emaonly", "Lora hashes": "a: 1, b: 2",
        "Version": "v1.6.0",
    }


def test_last_line_with_fewer_than_three_params_is_prompt() -> None:
    info = parse_infotext("a photo\nstyle: noir, mood: dark")
    assert info == Infotext("a photo\nstyle: noir, mood: dark", "", {})


def test_format_rejects_field_names_that_would_not_parse() -> None:
    with pytest.raises(ValueError):
        format_infotext("p", "", {"Bad, key": 1})


# --- output_relpath -------------------------------------------------------------------------------

def test_output_relpath_layout() -> None:
    when = datetime(2024, 3, 5, 13, 45)
    assert output_relpath("image", "job_Ab-12", 3, "png", when) == "image/2024-03-05/job_Ab-12-03.png"


@pytest.mark.parametrize(
    ("task", "job_id", "ext"),
    [
        ("../image", "j1", "png"), ("Image", "j1", "png"), ("image", "../../etc", "png"),
        ("image", "a cat, sitting", "png"), ("image", "", "png"), ("image", "j1", "p.ng"),
        ("image", "j1\n", "png"), ("image", "j/1", "png"), ("", "j1", "png"),
    ],
)
def test_output_relpath_rejects_bad_parts(task: str, job_id: str, ext: str) -> None:
    with pytest.raises(ValueError):
        output_relpath(task, job_id, 0, ext, datetime(2024, 1, 1))


# --- save_png / read_png_metadata -----------------------------------------------------------------

def test_save_and_read_back(tmp_path: Path) -> None:
    img = _image(24, 16)
    prompt, negative = "一只猫, on a mat: 🐱\nsecond line", "blurry, 低质量"
    fields = {**FIELDS, "Size": "24x16", "Lora hashes": "a: 1, b: 2"}
    infotext = format_infotext(prompt, negative, fields)
    job = {"id": "j1", "task": "image", "prompt": prompt, "params": {"steps": 30, "cfg": 4.0}, "tags": ["猫"]}
    rel = output_relpath("image", "j1", 0, "png", datetime(2024, 3, 5))

    saved = save_png(img, tmp_path, rel, infotext=infotext, job=job)

    assert saved.path == (tmp_path / rel).resolve() and saved.path.is_absolute() and saved.path.is_file()
    assert saved.relpath == rel
    assert (saved.kind, saved.mime, saved.width, saved.height) == ("image", "image/png", 24, 16)
    data = saved.path.read_bytes()
    assert saved.bytes == len(data)
    assert saved.sha256 == hashlib.sha256(data).hexdigest()
    with Image.open(saved.path) as back:
        assert back.format == "PNG" and back.size == (24, 16)
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(img))

    meta = read_png_metadata(saved.path)
    assert meta.infotext == Infotext(prompt, negative, {k: str(v) for k, v in fields.items()})
    assert meta.job == job
    assert meta.raw[PARAMETERS_KEY] == infotext
    assert json.loads(meta.raw[JOB_KEY]) == job
    assert _files(tmp_path) == [saved.path]  # no temp files left behind


def test_rgba_and_grayscale_pixels_survive(tmp_path: Path) -> None:
    for i, mode in enumerate(["RGBA", "L"]):
        img = _image(8, 8, "RGB").convert(mode)
        saved = save_png(img, tmp_path, f"x/{i}.png", infotext="p", job={})
        with Image.open(saved.path) as back:
            assert back.mode == mode and np.array_equal(np.asarray(back), np.asarray(img))


def test_read_keeps_other_tools_chunks(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", '{"3": {"class_type": "KSampler"}}')
    info.add_text("workflow", '{"nodes": []}')
    info.add_text(JOB_KEY, "{not json")
    path = tmp_path / "comfy.png"
    _image().save(path, pnginfo=info)
    meta = read_png_metadata(path)
    assert meta.infotext is None and meta.job is None
    assert meta.raw["prompt"] == '{"3": {"class_type": "KSampler"}}' and meta.raw["workflow"] == '{"nodes": []}'


def test_read_png_without_text(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    _image().save(path)
    meta = read_png_metadata(path)
    assert (meta.infotext, meta.job, meta.raw) == (None, None, {})


def test_read_missing_or_not_png(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist"):
        read_png_metadata(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(MediaError, match="PNG"):
        read_png_metadata(tmp_path / "junk.png")
    _image().save(tmp_path / "photo.jpg")
    with pytest.raises(MediaError, match="not a PNG"):
        read_png_metadata(tmp_path / "photo.jpg")


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG\r\n\x1a\n partial")  # type: ignore[attr-defined]
        raise OSError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(MediaError, match="encoder exploded") as err:
        save_png(_image(), tmp_path, "image/2024-01-01/j1-00.png", infotext="p", job={"id": "j1"})
    assert isinstance(err.value.__cause__, OSError)
    assert _files(tmp_path) == []


def test_disk_full_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(media.os, "fsync", no_space)
    with pytest.raises(MediaError, match="disk full"):
        save_png(_image(), tmp_path, "a/b.png", infotext="p", job={})
    assert _files(tmp_path) == []


def test_unwritable_mode_is_media_error(tmp_path: Path) -> None:
    img = Image.new("CMYK", (4, 4))
    with pytest.raises(MediaError):
        save_png(img, tmp_path, "c.png", infotext="p", job={})
    assert _files(tmp_path) == []


def test_unserialisable_job_is_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="JSON"):
        save_png(_image(), tmp_path, "c.png", infotext="p", job={"x": object()})
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    "rel", ["../escape.png", "a/../../escape.png", "/etc/evil.png", "a/..", "", "a\\b.png", "C:/x.png", "dir/"]
)
def test_bad_relpath_rejected(tmp_path: Path, rel: str) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    with pytest.raises(MediaError):
        save_png(_image(), out, rel, infotext="p", job={})
    assert _files(tmp_path) == []


def test_symlink_escape_rejected(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "outputs", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    try:
        os.symlink(elsewhere, out / "link")
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not available")
    with pytest.raises(MediaError, match="outside"):
        save_png(_image(), out, "link/x.png", infotext="p", job={})
    assert _files(elsewhere) == []


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    first = save_png(_image(), tmp_path, "a/x.png", infotext="first", job={"n": 1})
    before = first.path.read_bytes()
    with pytest.raises(MediaError, match="already exists"):
        save_png(_image(4, 4), tmp_path, "a/x.png", infotext="second", job={"n": 2})
    assert first.path.read_bytes() == before
    assert _files(tmp_path) == [first.path]
