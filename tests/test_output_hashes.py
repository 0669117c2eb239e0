"""Behaviour pinned across refactors: a fixed set of jobs (every family, fixed seeds) must keep giving
the very same pictures, frames and samples. The hashes in data/output_hashes.json were recorded
before the family registry (issue 16) moved the code that makes them; a change to any of them means
a user re-running an old job would get something else.

Hashes are of the decoded content (pixels, video frames, audio samples), not of the files, whose
metadata names the job. Run with STUDIO_RECORD_HASHES=1 to write the file anew (only on purpose).

The same code gives other bits on a CPU whose kernels torch picks differently: AVX-512 machines sum in
another order than AVX2 ones (ATen's vector kernels, MKL and oneDNN all dispatch by it). So each CPU
capability torch reports has its own recording (`output_hashes.json` for AVX2, where they were first
recorded; `output_hashes.avx512.json`, `output_hashes.avx512-amx.json`...), each pinning what that kind of
machine gives.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from studio.history import JobStatus

def _recording() -> Path:
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()
    if capability == "avx512" and _cpu_has("amx_tile"):
        # Xeons with AMX (Sapphire Rapids on) give other float32 bits than older AVX-512 ones under the same
        # torch, even with oneDNN held to AVX-512 VNNI and MKL to AVX-512: MKL tunes its kernels per model.
        capability = "avx512-amx"
    name = "output_hashes.json" if capability == "avx2" else f"output_hashes.{capability}.json"
    return Path(__file__).parent / "data" / name


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return any(line.startswith("flags") and flag in line.split() for line in info)
    except OSError:
        return False


HASHES = _recording()

JOBS: dict[str, tuple[str, dict]] = {
    "lumina-next": ("image", {"model": "tiny-lumina-next", "prompt": "a lighthouse at dusk", "steps": 3,
                              "seed": 11, "width": 256, "height": 256}),
    "lumina-next-options": ("image", {"model": "tiny-lumina-next", "prompt": "a lighthouse at dusk", "steps": 3,
                                      "seed": 11, "width": 384, "height": 384, "solver": "euler",
                                      "proportional_attn": False, "cfg_mode": "plain", "shift": 2.0}),
    "lumina2": ("image", {"model": "tiny-lumina2", "prompt": "a red kite over a field", "steps": 3, "seed": 12,
                          "num_images": 2}),
    "llamagen-c2i": ("image", {"model": "tiny-llamagen-c2i", "prompt": "golden retriever", "seed": 13,
                               "top_k": 50}),
    "llamagen-t2i": ("image", {"model": "tiny-llamagen-t2i", "prompt": "a blue bicycle", "seed": 14,
                               "temperature": 0.9, "top_p": 0.9}),
    "lumina-t2i": ("image", {"model": "tiny-lumina-t2i", "prompt": "a lighthouse at dusk", "steps": 3, "seed": 23,
                             "width": 208, "height": 208, "solver": "dopri5"}),
    "compose": ("compose", {"model": "tiny-lumina-next", "grid_rows": 1, "grid_cols": 2,
                            "captions": ["a forest", "a lake"], "steps": 3, "seed": 15}),
    "anagram": ("anagram", {"model": "tiny-lumina-next", "prompts": ["an old man", "a mountain"],
                            "views": ["identity", "rotate_180"], "steps": 3, "seed": 16, "width": 256,
                            "height": 256}),
    "anagram-lumina2": ("anagram", {"model": "tiny-lumina2", "prompts": ["a cat", "a dog"],
                                    "views": ["identity", "flip_vertical"], "steps": 3, "seed": 17}),
    "wan": ("video", {"model": "tiny-wan", "prompt": "waves on a beach", "steps": 2, "seed": 18, "frames": 9}),
    "cogvideox": ("video", {"model": "tiny-cogvideox", "prompt": "waves on a beach", "steps": 2, "seed": 19,
                            "frames": 9}),
    "stable-audio": ("audio", {"model": "tiny-stable-audio", "prompt": "rain on a roof", "steps": 3, "seed": 20,
                               "seconds": 1.5}),
    "audioldm2": ("audio", {"model": "tiny-audioldm2", "prompt": "rain on a roof", "steps": 3, "seed": 21,
                            "seconds": 1.5}),
    "musicgen": ("music", {"model": "tiny-musicgen", "prompt": "lo-fi piano", "seed": 22, "seconds": 1.5,
                           "top_k": 20}),
}


def content_hash(path: Path) -> str:
    """sha256 of what a person sees or hears in the file."""
    digest = hashlib.sha256()
    if path.suffix in (".png", ".gif"):
        with Image.open(path) as im:
            for index in range(getattr(im, "n_frames", 1)):
                im.seek(index)
                digest.update(np.asarray(im.convert("RGB")).tobytes())
    elif path.suffix == ".mp4":
        import imageio_ffmpeg

        for frame in list(imageio_ffmpeg.read_frames(str(path)))[1:]:
            digest.update(frame)
    elif path.suffix in (".wav", ".flac"):
        data, rate = soundfile.read(path, dtype="int16")
        digest.update(str(rate).encode())
        digest.update(data.tobytes())
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def job_hashes(studio, task: str, params: dict) -> list[str]:
    job = studio.run(task, params)
    assert job.status is JobStatus.DONE, job.error
    return [f"{saved.kind}:{content_hash(saved.path)}" for saved in job.outputs]


def test_fixed_jobs_give_the_recorded_outputs(studio):
    got = {name: job_hashes(studio, task, params) for name, (task, params) in JOBS.items()}
    if os.environ.get("STUDIO_RECORD_HASHES") == "1":
        HASHES.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip("hashes recorded")
    if not HASHES.exists():
        pytest.skip(f"no recording for this CPU's kernels ({HASHES.name}): record one with STUDIO_RECORD_HASHES=1")
    expected = json.loads(HASHES.read_text())
    changed = {name: (expected.get(name), hashes) for name, hashes in got.items() if expected.get(name) != hashes}
    assert not changed, f"outputs changed for: {', '.join(changed)}"
