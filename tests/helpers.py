"""Small helpers the tests share (fixtures live in conftest)."""

from __future__ import annotations

import socket
from pathlib import Path

FAST_STEPS = 3


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_params(**overrides):
    params = {"model": "tiny-lumina-next", "prompt": "a lighthouse at dusk, oil on canvas", "steps": FAST_STEPS,
              "seed": 1234, "width": 256, "height": 256}
    params.update(overrides)
    return params


def builders_from(module: str) -> dict:
    """The built-in builders the model families declare from one module (e.g. studio.zoo.builtin_video)."""
    from studio.families import FAMILIES, resolve

    return {name: resolve(hook) for family in FAMILIES.all() for name, hook in family.builders.items()
            if hook.partition(":")[0] == module}


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def save_and_reload(builder, folder: Path):
    """Build a tiny model, save it the standard way and load it back as a download would be: (built, loaded)."""
    original = builder()
    original.save_pretrained(folder, safe_serialization=True)
    loaded = type(original).from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    return original, loaded


def assert_small_safetensors(folder: Path, limit: int = 5_000_000) -> None:
    """Weights only as safetensors (never pickles), and the whole folder under `limit` bytes."""
    weights = [p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < limit


def pixels(path):
    """An output picture's RGB pixels."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def snapshot(studio, card_id: str) -> Path:
    """The folder of a card's files in the studio's model cache (built in or downloaded), offline."""
    from huggingface_hub import snapshot_download

    from studio.runtime.loader import resolve_source

    repo, revision = resolve_source(studio.cards.get(card_id), studio.settings)
    return Path(snapshot_download(repo, revision=revision, cache_dir=str(studio.settings.model_cache),
                                  local_files_only=True))


def files_asked_for(hub) -> dict[str, set[str]]:
    """Every file of each repo the fake hub was asked about (GET or HEAD)."""
    asked: dict[str, set[str]] = {}
    for request in hub.requests:
        if request.filename is not None:
            asked.setdefault(request.repo_id, set()).add(request.filename)
    return asked


def snapshot_files(studio, repo: str) -> set[str]:
    """The files of the one snapshot of `repo` in the studio's model cache."""
    from studio.zoo.hub import repo_folder

    [folder] = (repo_folder(studio.settings.model_cache, repo) / "snapshots").iterdir()
    return {p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()}


# A model the catalogue lists but the studio cannot run yet, as a card in a data folder's own card
# directory (every shipped model runs, so the tests of "not yet runnable" bring their own).
LISTED_ONLY = "flag-dit-preview"
LISTED_ONLY_TITLE = "Flag-DiT Preview 9B"


def write_listed_only_card(settings) -> None:
    folder = settings.user_cards_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{LISTED_ONLY}.yaml").write_text(
        f"id: {LISTED_ONLY}\ntitle: \"{LISTED_ONLY_TITLE}\"\nfamily: flag-dit-preview\ntasks: [image]\n"
        "source: {repo: example-org/flag-dit-preview}\nlibrary: native\npipeline: flag-dit-preview\n"
        "memory_gb: 30\nlicense: apache-2.0\nrunnable: false\n")


def kept(recorded, given) -> bool:
    """Whether a job recorded its own copy of the file it was given: an absolute path under the outputs'
    inputs/ folder, with the same name and bytes (tasks/inputs.keep_inputs)."""
    recorded, given = Path(recorded), Path(given)
    return (recorded.is_absolute() and recorded.parent.parent.name == "inputs" and recorded.name == given.name
            and recorded.read_bytes() == given.read_bytes())


LORA_TRANSFORMERS = {"tiny-lumina2": "Lumina2Transformer2DModel", "tiny-lumina-next": "LuminaNextDiT2DModel",
                     "tiny-wan": "WanTransformer3DModel", "tiny-cogvideox": "CogVideoXTransformer3DModel"}


def make_lora(studio, model: str, name: str, seed: int = 0, layout: str = "diffusers", rank: int = 4,
              targets=("to_q", "to_v")) -> str:
    """A LoRA for the tiny model's transformer, written to the LoRA folder in `layout`: peft's state dict
    (lora_A/lora_B under `transformer.`) or kohya's (lora_unet_*, lora_down/lora_up, alpha)."""
    import diffusers
    import torch
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    model_cls = getattr(diffusers, LORA_TRANSFORMERS[model])
    transformer = model_cls.from_pretrained(snapshot(studio, model) / "transformer")
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False)
    inject_adapter_in_model(config, transformer)
    state = get_peft_model_state_dict(transformer)
    if layout == "diffusers":
        tensors = {f"transformer.{k}": v.contiguous() for k, v in state.items()}
    else:
        tensors = {}
        for key, value in state.items():
            base, _, part = key.rpartition(".lora_")
            stem = "lora_unet_" + base.replace(".", "_")
            tensors[f"{stem}.lora_{'down' if part.startswith('A') else 'up'}.weight"] = value.contiguous()
            tensors[f"{stem}.alpha"] = torch.tensor(float(rank))
    studio.settings.lora_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(studio.settings.lora_dir / f"{name}.safetensors"))
    return name


def cli_generated_png(capsys, home: Path, model_cache: Path, *flags: str) -> Path:
    """`studio generate image FLAGS` through the CLI's main in this process (the console script in a process
    of its own: test_cli.py); the PNG it printed last. Fails with its stderr if it did not exit 0."""
    from studio.cli import main

    code = main(["generate", "image", "--home", str(home), "--model-cache", str(model_cache), *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


class Clock:
    """A clock for the memory scheduler's LRU that ticks once a reading: the order of use, never a tie."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1
        return self.now
