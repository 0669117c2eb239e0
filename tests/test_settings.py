from pathlib import Path

import pytest

from studio.errors import InvalidInput
from studio.settings import Settings


def test_defaults_follow_the_data_folder(tmp_path):
    s = Settings.load(env={"STUDIO_HOME": str(tmp_path / "h"), "HF_HUB_CACHE": "/nope"})
    assert s.home == (tmp_path / "h").resolve()
    assert s.outputs_dir == s.home / "outputs"
    assert s.db_path == s.home / "studio.db"
    assert (s.host, s.port, s.device, s.dtype) == ("127.0.0.1", 7860, "auto", "auto")


def test_default_model_cache_is_the_hugging_face_cache(tmp_path):
    from huggingface_hub import constants

    s = Settings.load(env={"STUDIO_HOME": str(tmp_path)})
    assert s.model_cache == Path(constants.HF_HUB_CACHE).resolve()


def test_environment_then_flags(tmp_path):
    env = {"STUDIO_HOME": str(tmp_path / "env-home"), "STUDIO_PORT": "9000", "STUDIO_HOST": "0.0.0.0",
           "STUDIO_OUTPUTS": str(tmp_path / "out"), "STUDIO_MODEL_CACHE": str(tmp_path / "cache"),
           "STUDIO_DEVICE": "cpu", "STUDIO_DTYPE": "bfloat16"}
    s = Settings.load(env=env)
    assert (s.port, s.host, s.device, s.dtype) == (9000, "0.0.0.0", "cpu", "bfloat16")
    assert s.outputs_dir == (tmp_path / "out").resolve()
    assert s.model_cache == (tmp_path / "cache").resolve()
    flagged = Settings.load(env=env, port=7000, home=tmp_path / "flag-home", device=None)
    assert flagged.port == 7000 and flagged.device == "cpu"
    assert flagged.home == (tmp_path / "flag-home").resolve()


def test_a_flag_home_moves_the_derived_paths(tmp_path):
    s = Settings.load(env={"STUDIO_HOME": str(tmp_path / "a")}, home=tmp_path / "b")
    assert s.outputs_dir == (tmp_path / "b" / "outputs").resolve()


@pytest.mark.parametrize("override, message", [
    ({"port": "http"}, "port must be a number"),
    ({"port": 70000}, "between 1 and 65535"),
    ({"device": "tpu"}, "device must be one of"),
    ({"dtype": "int8"}, "dtype must be one of"),
])
def test_bad_values_are_explained(tmp_path, override, message):
    with pytest.raises(InvalidInput, match=message):
        Settings.load(env={"STUDIO_HOME": str(tmp_path)}, **override)


def test_cpu_runs_in_float32_whatever_the_card_prefers(tmp_path):
    import torch

    s = Settings.load(env={"STUDIO_HOME": str(tmp_path)}, device="cpu")
    assert s.torch_dtype("bfloat16") is torch.float32
    assert s.replace(dtype="bfloat16").torch_dtype("float16") is torch.bfloat16
