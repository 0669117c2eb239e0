"""Reading Lumina-T2Audio/T2Music Lightning checkpoints (studio/engines/lumina_audio/checkpoint.py).

The files are written here with torch.save, as Lightning writes them: a dict with the state dict,
the counters as numpy scalars (`np.int64`, `np.float64`: the globals numpy's `multiarray.scalar`,
`numpy.dtype` and `_codecs.encode` of the real 324.ckpt) and the hyper-parameters. Hostile files
must be refused before their payload runs.
"""

from __future__ import annotations

import collections
import os
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.engines.lumina_audio import checkpoint
from studio.errors import ModelNotAvailable


def _state_dict() -> dict:
    return {
        "model.diffusion_model.x_embedder.weight": torch.ones(4, 3),
        "model.diffusion_model.final_layer.linear.bias": torch.zeros(3),
        "first_stage_model.decoder.conv_in.weight": torch.full((2, 2, 5), 2.0),
        "first_stage_model.post_quant_conv.weight": torch.ones(2, 2, 1),
        "first_stage_model.encoder.conv_in.weight": torch.ones(2, 2, 5),  # not needed: dropped
        "first_stage_model.quant_conv.weight": torch.ones(4, 4, 1),
        "cond_stage_model.caption_encoder.projection.linear1.weight": torch.ones(8, 6),
        "cond_stage_model.t5_transformer.shared.weight": torch.ones(10, 8),
        "scale_factor": torch.tensor(0.8125),
        "model_ema.decay": torch.tensor(0.999),
    }


def _lightning(state_dict: dict | None = None) -> dict:
    return {
        "epoch": 3,
        "global_step": np.int64(5),
        "pytorch-lightning_version": "1.7.7",
        "state_dict": _state_dict() if state_dict is None else state_dict,
        "optimizer_states": [{"state": {0: {"step": np.int64(5), "exp_avg": torch.zeros(3)}},
                              "param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.999)}]}],
        "lr_schedulers": [{"base_lrs": [np.float32(1e-4)], "last_epoch": np.int32(5)}],
        "hyper_parameters": {"linear_start": np.float64(0.00085), "scale_by_std": True,
                             "dtype_seen": np.dtype("float64"), "channels": 20},
    }


def _save(tmp_path: Path, obj, name: str = "324.ckpt", **kw) -> Path:
    path = tmp_path / name
    torch.save(obj, path, **kw)
    return path


def test_lightning_checkpoint_with_numpy_scalars_loads(tmp_path):
    path = _save(tmp_path, _lightning())
    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert {"numpy.dtype", "numpy._core.multiarray.scalar"} <= found  # what the real file names
    ckpt = checkpoint.read_checkpoint(path, "Lumina-T2Audio")
    assert sorted(ckpt.backbone) == ["final_layer.linear.bias", "x_embedder.weight"]
    assert sorted(ckpt.vae_decoder) == ["decoder.conv_in.weight", "post_quant_conv.weight"]
    assert torch.equal(ckpt.vae_decoder["decoder.conv_in.weight"], torch.full((2, 2, 5), 2.0))
    assert sorted(ckpt.text) == ["caption_encoder.projection.linear1.weight", "t5_transformer.shared.weight"]
    assert ckpt.scale_factor == 0.8125
    assert ckpt.meta == {"epoch": 3, "global_step": 5} and type(ckpt.meta["global_step"]) is int
    assert ckpt.unused == ["model_ema.decay"]


def test_legacy_format_and_numpy_1_names_load(tmp_path):
    # The legacy (non-zip) format cannot be memory-mapped: read plainly.
    path = _save(tmp_path, _lightning(), _use_new_zipfile_serialization=False)
    assert checkpoint.read_checkpoint(path, "T").scale_factor == 0.8125
    # A file written by numpy 1.x names numpy.core.multiarray.scalar: rename it in the pickle.
    path = _save(tmp_path, _lightning(), "np1.ckpt")
    renamed = tmp_path / "np1_renamed.ckpt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(renamed, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            dst.writestr(info, data)
    assert "numpy.core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(renamed)
    assert checkpoint.read_checkpoint(renamed, "T").meta["global_step"] == 5


class _Hostile:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_reduce_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    hostile = _Hostile()
    hostile.marker = marker
    data = _lightning()
    data["callbacks"] = {"ModelCheckpoint": hostile}
    path = _save(tmp_path, data)
    with pytest.raises(ModelNotAvailable, match=r"324\.ckpt holds (posix|os|nt)\.system, which is not allowed"):
        checkpoint.read_checkpoint(path, "Lumina-T2Audio")
    assert not marker.exists()


@pytest.mark.parametrize("obj, name", [(types.SimpleNamespace(a=1), "types.SimpleNamespace"),
                                       (np.arange(3), "numpy._core.multiarray._reconstruct")])
def test_other_globals_are_refused_with_the_reason(tmp_path, obj, name):
    data = _lightning()
    data["hyper_parameters"]["extra"] = obj
    path = _save(tmp_path, data)
    with pytest.raises(ModelNotAvailable, match=rf"holds {name.replace('.', r'[.]')}, which is not allowed"):
        checkpoint.read_checkpoint(path, "T")


def test_ordered_dict_state_dict_is_fine(tmp_path):
    # torch allows OrderedDict by default (it is how module state dicts come).
    path = _save(tmp_path, _lightning(collections.OrderedDict(_state_dict())))
    assert checkpoint.read_checkpoint(path, "T").scale_factor == 0.8125


def test_lfs_pointer_truncated_missing_and_wrong_content(tmp_path):
    lfs = tmp_path / "324.ckpt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 7770000000\n")
    with pytest.raises(ModelNotAvailable, match="Git LFS pointer"):
        checkpoint.read_checkpoint(lfs, "Lumina-T2Audio")
    whole = _save(tmp_path, _lightning(), "whole.ckpt").read_bytes()
    for cut, label in ((len(whole) // 2, "half"), (10, "ten"), (0, "empty")):
        part = tmp_path / f"{label}.ckpt"
        part.write_bytes(whole[:cut])
        with pytest.raises(ModelNotAvailable, match="damaged or incomplete download"):
            checkpoint.read_checkpoint(part, "Lumina-T2Audio")
    with pytest.raises(ModelNotAvailable, match="not in the model cache"):
        checkpoint.read_checkpoint(tmp_path / "absent.ckpt", "Lumina-T2Audio")
    with pytest.raises(ModelNotAvailable, match="not a Lightning checkpoint"):
        checkpoint.read_checkpoint(_save(tmp_path, _state_dict(), "plain.ckpt"), "T")


def test_split_refusals():
    sd = _state_dict()
    del sd["scale_factor"]
    with pytest.raises(ModelNotAvailable, match="no scale_factor"):
        checkpoint.split_state_dict(sd)
    sd = _state_dict()
    sd["scale_factor"] = torch.tensor(-1.0)
    with pytest.raises(ModelNotAvailable, match="not a positive number"):
        checkpoint.split_state_dict(sd)
    sd = {k: v for k, v in _state_dict().items() if not k.startswith("model.diffusion_model.")}
    with pytest.raises(ModelNotAvailable, match="the DiT"):
        checkpoint.split_state_dict(sd)
