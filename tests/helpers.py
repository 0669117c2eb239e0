"""Small helpers the tests share (fixtures live in conftest)."""

from __future__ import annotations

from pathlib import Path

FAST_STEPS = 3


def image_params(**overrides):
    params = {"model": "tiny-lumina-next", "prompt": "a lighthouse at dusk, oil on canvas", "steps": FAST_STEPS,
              "seed": 1234, "width": 256, "height": 256}
    params.update(overrides)
    return params


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
