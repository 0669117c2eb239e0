""""Add a model": any diffusers text-to-image or text-to-video repo on the hub becomes a user card.

The repo's `model_index.json` names its pipeline class; the card is written as YAML into the data
folder's card directory, where the registry picks it up like a shipped card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..errors import InvalidInput, StudioError
from ..settings import Settings
from .cards import CardRegistry, ModelCard
from .hub import DownloadError, explain_hub_error

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def pipeline_task(class_name: str) -> str:
    """'image' or 'video' for a diffusers text-to-X pipeline class; InvalidInput for anything else."""
    import diffusers
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    cls = getattr(diffusers, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise InvalidInput(f"{class_name} is not a pipeline class this version of diffusers knows")
    if cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values():
        return "image"
    name = class_name.lower()
    if "video" in name and not any(word in name for word in ("img2", "image2", "imagetovideo", "video2", "videotovideo",
                                                               "control", "inpaint")):
        return "video"
    raise InvalidInput(f"{class_name} is not a text-to-image or text-to-video pipeline")


def card_id_for(repo_id: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", repo_id.lower().replace("/", "--"))[:64].strip("-.")


def add_user_card(repo_id: str, settings: Settings, registry: CardRegistry) -> ModelCard:
    """Look the repo up on the hub, write its card into the user card folder, and register it."""
    from huggingface_hub import HfApi, hf_hub_download

    repo_id = repo_id.strip()
    if not REPO_ID.match(repo_id):
        raise InvalidInput(f"{repo_id!r} is not a Hugging Face repo id (it looks like owner/name)")
    card_id = card_id_for(repo_id)
    if card_id in registry.cards:
        raise InvalidInput(f"{repo_id} is already in the studio as {registry.cards[card_id].title}")
    token = settings.hf_token
    try:
        info = HfApi(endpoint=settings.hf_endpoint, token=token or False).model_info(repo_id, files_metadata=True)
        index = Path(hf_hub_download(repo_id, "model_index.json", revision=info.sha, cache_dir=settings.model_cache,
                                     endpoint=settings.hf_endpoint, token=token or False))
    except Exception as err:
        raise DownloadError(explain_hub_error(err, repo_id, settings.hf_endpoint)) from err
    class_name = json.loads(index.read_text()).get("_class_name", "")
    task = pipeline_task(class_name)
    weights = sum(s.size or 0 for s in info.siblings or [] if s.rfilename.endswith(".safetensors"))
    data = {
        "id": card_id,
        "title": repo_id,
        "family": "diffusers",
        "tasks": [task],
        "source": {"repo": repo_id, "revision": "main"},
        "library": "diffusers",
        "pipeline": class_name,
        "dtype": "bfloat16",
        # Weights plus room for activations: a rough guess until the scheduler measures it.
        "memory_gb": round(max(weights / 2**30 * 1.3, 0.5), 1),
        "license": (info.card_data or {}).get("license", "unknown") if info.card_data else "unknown",
        "gated": bool(info.gated),
        "homepage": f"{settings.hf_endpoint}/{repo_id}",
        "runnable": task == "image",  # the Video tab arrives later
        "description": f"Added by you from {repo_id} ({class_name}).",
    }
    card = ModelCard.model_validate(data)
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    path = settings.user_cards_dir / f"{card_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    registry.cards[card.id] = card
    return card


def remove_user_card(card_id: str, settings: Settings, registry: CardRegistry) -> None:
    path = settings.user_cards_dir / f"{card_id_for(card_id)}.yaml"
    if card_id not in registry.cards or not path.exists():
        raise StudioError(f"{card_id} is not a model you added")
    path.unlink()
    del registry.cards[card_id]
