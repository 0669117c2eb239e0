"""Every knob of the studio in one place: paths, network, device and dtype.

Values come from (highest first) explicit overrides (CLI flags), environment variables, defaults.
Nothing else in the code base reads the environment for these.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import platformdirs

from .errors import InvalidInput

REPO_ROOT = Path(__file__).resolve().parents[1]

_DTYPES = {"auto", "float32", "float16", "bfloat16"}
PLACEMENTS = ("auto", "full", "model_offload", "group_offload", "sequential_offload")
_DEVICES = ("auto", "cpu", "cuda", "mps")
# sdpa (native: the same, by diffusers' name), flash (flash-attn), sage (sageattention): runtime/attention.py
ATTENTION = ("sdpa", "native", "flash", "sage")
# Weight-only quantization of the transformer (runtime/quantize.py); "auto": what the card says (else none).
QUANTIZATIONS = ("auto", "none", "int8", "fp8")


LOST_JOBS = ("interrupt", "requeue")


def _check_devices(devices: str) -> None:
    """Each worker's device (or group, members joined by +) is one the studio knows; no GPU serves two."""
    if devices == "auto":
        return
    seen: set[str] = set()
    entries = [d.strip() for d in devices.split(",")]
    if not all(entries):
        raise InvalidInput(f"devices: an empty entry in {devices!r} (write cuda:0,cuda:1)")
    for entry in entries:
        for member in entry.split("+"):
            member = "cuda:0" if member == "cuda" else member  # the same GPU as cuda:0
            kind, _, index = member.partition(":")
            if kind not in _DEVICES[1:] or (index and not index.isdigit()) or (kind == "cpu" and index):
                raise InvalidInput(f"devices: {member!r} is not a device (cpu, cuda, cuda:N or mps)")
            # CPU workers share the RAM (each with its own budget); a GPU is one worker's.
            if member != "cpu" and member in seen:
                raise InvalidInput(f"devices: {member} is named twice; each GPU belongs to one worker")
            seen.add(member)


def parse_quantization(value: str) -> tuple[str, dict[str, str]]:
    """`int8`, `wan2.1-t2v-14b=int8,cogvideox-5b=fp8` or both (`none,wan2.1-t2v-14b=int8`): the mode for
    every model and the per-model ones, each checked."""
    every, per_model = "auto", {}
    for part in filter(None, (p.strip() for p in str(value).split(","))):
        model, _, mode = part.rpartition("=")
        model, mode = model.strip(), mode.strip()
        if mode not in QUANTIZATIONS:
            raise InvalidInput(f"quantization must be one of {', '.join(QUANTIZATIONS)} (or MODEL=MODE pairs, "
                               f"comma-separated), got {part!r}")
        if not model:
            every = mode
        elif not all(c.isalnum() or c in "._-" for c in model):
            raise InvalidInput(f"quantization: {model!r} is not a model id (MODEL=MODE, e.g. wan2.1-t2v-14b=int8)")
        else:
            per_model[model] = mode
    return every, per_model


def _default_hf_cache() -> Path:
    # huggingface_hub resolves HF_HOME / HF_HUB_CACHE for us; models that diffusers or
    # transformers already downloaded there are reused as they are.
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class Settings:
    home: Path
    outputs_dir: Path
    model_cache: Path
    model_zoo_dir: Path
    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"
    dtype: str = "auto"
    # Memory: None means measured (free VRAM) or a share of system RAM; see runtime.budgets.
    vram_budget_gb: float | None = None
    ram_budget_gb: float | None = None
    placement: str = "auto"  # or one of runtime.placement.Placement, for every model
    fp8: bool = False  # store transformer weights in fp8 for models whose card allows it
    # torchao weight-only int8 / fp8 of the transformer: for every model, and/or per model (MODEL=MODE pairs)
    quantization: str = "auto"
    attention: str = "sdpa"  # or "flash" / "sage" on CUDA with their package (runtime/attention.py)
    compile: bool = False
    channels_last: bool = False
    hf_endpoint: str = "https://huggingface.co"
    # Access token for gated repos; HF_TOKEN, else the token `hf auth login` stored.
    hf_token: str | None = field(default=None, repr=False)
    presets_dir: Path = REPO_ROOT / "presets"  # the shipped prompt libraries and style templates
    max_upload_mb: int = 500  # the largest file a browser may upload (a video to restyle, a start image)
    # The LoRA folder: its .safetensors files are the LoRAs a job names (zoo/loras.py); default <home>/loras.
    lora_dir: Path | None = None
    preview_every: int = 2  # a live preview of the prediction every N steps while sampling; 0 = off (docs/preview.md)
    # One worker per entry, comma-separated: cuda:0,cuda:1 (a group of GPUs for one worker: cuda:0+cuda:1);
    # "auto": the device setting when it names one, else every visible GPU, else the one best device.
    devices: str = "auto"
    # The queue and history: "" = the SQLite file <home>/studio.db; a postgresql:// URL for a database that
    # workers on several hosts share (docs/several_machines.md).
    database: str = field(default="", repr=False)
    lease_s: float = 15.0  # a worker silent this long is dead; its running job is ended (or re-queued)
    lost_jobs: str = "interrupt"  # what a dead worker's running job becomes: "interrupt" or "requeue"
    run_worker: bool = True  # False: this process only submits and follows (`serve --no-worker`)
    # Which workers share this process table (a dead one's pid is checked at once, not after its lease):
    # "" = hostname + boot id; set it per container when containers share a hostname and a kernel.
    host_id: str = ""

    @property
    def db_path(self) -> Path:
        return self.home / "studio.db"

    @property
    def db_target(self) -> Path | str:
        """What the history opens: the database URL when one is set, else the SQLite file."""
        return self.database or self.db_path

    def worker_devices(self) -> list[str]:
        """The device (or device group) of each worker this process runs, in order."""
        if self.devices != "auto":
            return [d.strip() for d in self.devices.split(",") if d.strip()]
        if self.device not in ("auto", "cuda"):
            return [self.device]
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return [self.torch_device()]

    @property
    def user_cards_dir(self) -> Path:
        return self.home / "model_cards"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Settings from the environment (`STUDIO_*`), then `overrides` where they are not None."""
        env = os.environ if env is None else env
        # Paths under the data folder follow an overridden home, not the environment's.
        home = Path(overrides.get("home") or env.get("STUDIO_HOME")
                    or platformdirs.user_data_dir("studio", appauthor=False))
        values: dict[str, Any] = {
            "home": home,
            "outputs_dir": Path(env["STUDIO_OUTPUTS"]) if env.get("STUDIO_OUTPUTS") else home / "outputs",
            "model_cache": Path(env["STUDIO_MODEL_CACHE"]) if env.get("STUDIO_MODEL_CACHE") else _default_hf_cache(),
            "model_zoo_dir": Path(env.get("STUDIO_MODEL_ZOO") or REPO_ROOT / "model_zoo"),
            "host": env.get("STUDIO_HOST", cls.host),
            "port": env.get("STUDIO_PORT", cls.port),
            "device": env.get("STUDIO_DEVICE", cls.device),
            "dtype": env.get("STUDIO_DTYPE", cls.dtype),
            "vram_budget_gb": env.get("STUDIO_VRAM_BUDGET_GB") or None,
            "ram_budget_gb": env.get("STUDIO_RAM_BUDGET_GB") or None,
            "placement": env.get("STUDIO_PLACEMENT", cls.placement),
            "fp8": env.get("STUDIO_FP8", "0").lower() in ("1", "true", "yes", "on"),
            "quantization": env.get("STUDIO_QUANTIZATION", cls.quantization),
            "attention": env.get("STUDIO_ATTENTION", cls.attention),
            "compile": env.get("STUDIO_COMPILE", "0").lower() in ("1", "true", "yes", "on"),
            "channels_last": env.get("STUDIO_CHANNELS_LAST", "0").lower() in ("1", "true", "yes", "on"),
            "hf_endpoint": (env.get("HF_ENDPOINT") or cls.hf_endpoint).rstrip("/"),
            "hf_token": env.get("HF_TOKEN") or None,
            "presets_dir": Path(env.get("STUDIO_PRESETS") or REPO_ROOT / "presets"),
            "max_upload_mb": env.get("STUDIO_MAX_UPLOAD_MB", cls.max_upload_mb),
            "lora_dir": Path(env["STUDIO_LORA_DIR"]) if env.get("STUDIO_LORA_DIR") else home / "loras",
            "preview_every": env.get("STUDIO_PREVIEW_EVERY", cls.preview_every),
            "devices": env.get("STUDIO_DEVICES", cls.devices),
            "database": env.get("STUDIO_DB_URL", cls.database),
            "lease_s": env.get("STUDIO_LEASE_S", cls.lease_s),
            "lost_jobs": env.get("STUDIO_LOST_JOBS", cls.lost_jobs),
            "host_id": env.get("STUDIO_HOST_ID", cls.host_id),
            "run_worker": env.get("STUDIO_NO_WORKER", "0").lower() not in ("1", "true", "yes", "on"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls._validated(values)

    @classmethod
    def _validated(cls, values: dict[str, Any]) -> "Settings":
        try:
            port = int(values["port"])
        except (TypeError, ValueError):
            raise InvalidInput(f"port must be a number, got {values['port']!r}") from None
        if not 1 <= port <= 65535:
            raise InvalidInput(f"port must be between 1 and 65535, got {port}")
        device = str(values["device"])
        if device.split(":")[0] not in _DEVICES:
            raise InvalidInput(f"device must be one of {', '.join(_DEVICES)} (or cuda:N), got {device!r}")
        if values["dtype"] not in _DTYPES:
            raise InvalidInput(f"dtype must be one of {', '.join(sorted(_DTYPES))}, got {values['dtype']!r}")
        for key in ("vram_budget_gb", "ram_budget_gb"):
            if values.get(key) is not None:
                try:
                    values[key] = float(values[key])
                except (TypeError, ValueError):
                    raise InvalidInput(f"{key} must be a number of GB, got {values[key]!r}") from None
                if values[key] <= 0:
                    raise InvalidInput(f"{key} must be more than 0 GB")
        if values["placement"] not in PLACEMENTS:
            raise InvalidInput(f"placement must be one of {', '.join(PLACEMENTS)}, got {values['placement']!r}")
        if values["attention"] not in ATTENTION:
            raise InvalidInput(f"attention must be one of {', '.join(ATTENTION)}, got {values['attention']!r}")
        parse_quantization(values.get("quantization", "auto"))
        try:
            values["max_upload_mb"] = int(values["max_upload_mb"])
        except (TypeError, ValueError):
            raise InvalidInput(f"max_upload_mb must be a whole number of MB, got {values['max_upload_mb']!r}") from None
        if values["max_upload_mb"] < 1:
            raise InvalidInput("max_upload_mb must be at least 1")
        if values.get("lora_dir") is None:
            values["lora_dir"] = Path(values["home"]) / "loras"
        try:
            values["preview_every"] = int(values["preview_every"])
        except (TypeError, ValueError):
            raise InvalidInput(f"preview_every must be a whole number of steps (0 = off), got "
                               f"{values['preview_every']!r}") from None
        if values["preview_every"] < 0:
            raise InvalidInput("preview_every must be 0 (off) or more steps")
        _check_devices(str(values.get("devices") or "auto"))
        values["devices"] = str(values.get("devices") or "auto")
        database = str(values.get("database") or "")
        if database and not database.startswith(("postgresql://", "postgres://", "postgresql+psycopg://", "sqlite:///")):
            raise InvalidInput("database must be a postgresql://user:password@host/name URL (or empty for the "
                               "SQLite file in the data folder)")
        values["database"] = database
        try:
            values["lease_s"] = float(values["lease_s"])
        except (TypeError, ValueError):
            raise InvalidInput(f"lease_s must be a number of seconds, got {values['lease_s']!r}") from None
        if not 0.2 <= values["lease_s"] <= 3600:
            raise InvalidInput("lease_s must be between 0.2 and 3600 seconds")
        if values["lost_jobs"] not in LOST_JOBS:
            raise InvalidInput(f"lost_jobs must be one of {', '.join(LOST_JOBS)}, got {values['lost_jobs']!r}")
        path_keys = ("home", "outputs_dir", "model_cache", "model_zoo_dir", "presets_dir", "lora_dir")
        paths = {k: Path(values[k]).expanduser().resolve() for k in path_keys}
        return cls(**{**values, **paths, "port": port, "device": device})

    def replace(self, **changes: Any) -> "Settings":
        return self._validated({**dataclasses.asdict(self), **changes})

    def ensure_dirs(self) -> None:
        for path in (self.home, self.outputs_dir, self.model_cache, self.user_cards_dir, self.lora_dir):
            path.mkdir(parents=True, exist_ok=True)

    def torch_device(self) -> str:
        """The device jobs run on: the setting, or the best one present when it is "auto"."""
        if self.device != "auto":
            return self.device
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def torch_dtype(self, preferred: str):
        """The dtype to load a model in: the setting, else the card's preference on an accelerator.

        On the CPU half precision is slow and some ops lack kernels, so "auto" means float32 there.
        """
        import torch

        name = self.dtype
        if name == "auto":
            name = "float32" if self.torch_device() == "cpu" else preferred
        return getattr(torch, name)
