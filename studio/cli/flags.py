"""Flags every command shares (the data folder, the device, the memory budgets) and the argparse
value parsers the commands use, each refusing a bad value with what it expected (argparse then
exits 2 with the message)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from ..settings import Settings

SETTINGS_KEYS = ("home", "outputs_dir", "model_cache", "device", "dtype", "vram_budget_gb", "ram_budget_gb",
                 "placement", "fp8", "quantization", "attention", "compile", "channels_last", "lora_dir",
                 "preview_every", "devices", "database", "lease_s", "lost_jobs")


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="data folder (history, outputs); env STUDIO_HOME")
    parser.add_argument("--outputs", dest="outputs_dir", help="outputs folder; env STUDIO_OUTPUTS")
    parser.add_argument("--model-cache", help="Hugging Face cache to load models from; env STUDIO_MODEL_CACHE")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps; env STUDIO_DEVICE")
    parser.add_argument("--dtype", help="auto, float32, float16 or bfloat16; env STUDIO_DTYPE")
    parser.add_argument("--vram-budget", dest="vram_budget_gb", type=float,
                        help="GB of GPU memory the studio may use (default: what is free)")
    parser.add_argument("--ram-budget", dest="ram_budget_gb", type=float,
                        help="GB of RAM for models parked off the GPU (default: half the RAM less 2 GB)")
    parser.add_argument("--placement", help="auto, full, model_offload, group_offload or sequential_offload")
    parser.add_argument("--fp8", action="store_true", default=None,
                        help="store transformer weights in fp8 for models that tolerate it")
    parser.add_argument("--quantization", metavar="MODE | MODEL=MODE,...",
                        help="weight-only quantization of the transformer (torchao): int8 (any device, ~1/2 of "
                             "bf16), fp8 (CUDA GPUs with fp8, compute capability 8.9+), none; auto (default): "
                             "the card's. For every model, or per model: wan2.1-t2v-14b=int8,cogvideox-5b=none; "
                             "env STUDIO_QUANTIZATION")
    parser.add_argument("--attention", help="sdpa (default), flash (CUDA + the flash extra) or sage (CUDA + "
                        "sageattention), on every diffusers model whose attention takes a backend")
    parser.add_argument("--lora-dir", help="LoRA folder: its .safetensors files are the LoRAs a job may name "
                        "(default: <home>/loras); env STUDIO_LORA_DIR")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the transformer")
    parser.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    parser.add_argument("--db", dest="database", metavar="URL",
                        help="the queue and history database: a postgresql://user:password@host/name URL that "
                             "workers on several machines share (default: the SQLite file in the data folder); "
                             "env STUDIO_DB_URL")
    parser.add_argument("--devices", help="one worker per entry: cuda:0,cuda:1 (a GPU group for one worker: "
                        "cuda:0+cuda:1); default every visible GPU, else the CPU; env STUDIO_DEVICES")
    parser.add_argument("--lease", dest="lease_s", type=float, metavar="SECONDS",
                        help="a worker silent this long is dead and its running job is ended (default "
                             f"{Settings.lease_s:g}); env STUDIO_LEASE_S")
    parser.add_argument("--lost-jobs", choices=("interrupt", "requeue"),
                        help="what a dead worker's running job becomes (default interrupt); env STUDIO_LOST_JOBS")
    parser.add_argument("--preview-every", type=int, metavar="N",
                        help="a live preview of the image being sampled every N steps, 0 = off "
                             f"(default {Settings.preview_every}); env STUDIO_PREVIEW_EVERY")


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the flags given (the rest from the environment and the defaults)."""
    return Settings.load(**{k: getattr(args, k, None) for k in SETTINGS_KEYS}, **extra)


def typed(kind: type) -> Callable[[str], Any]:
    """A parser for one value of `kind` (int, float, bool or str)."""
    def parse(text: str) -> Any:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None

    return parse


def pair(example: str) -> Callable[[str], tuple[int, int]]:
    """A parser for two whole numbers written AxB (`example` names them, e.g. 'WIDTHxHEIGHT')."""
    def parse(text: str) -> tuple[int, int]:
        from ..zoo.cards import parse_size  # the cards' reader (YAML, pydantic): only once a size is given

        try:
            return parse_size(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must look like {example}, got {text!r}") from None

    return parse


def input_file(text: str) -> str:
    """A file the job reads (a start image, a control clip): it must exist and be a file. Given as an
    absolute path, since the job may run in the studio process serving this folder, elsewhere."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text}")
    return str(path.resolve())


def key_value(text: str) -> tuple[str, Any]:
    """`key=value` for --param: the value as JSON when it parses (7, 0.5, true, ["a","b"]), else as text."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value
