"""Model cards: what a model is, where its weights come from, and its default parameters.

Cards are YAML files, one per model: the shipped ones in `model_zoo/`, the user's own in the data
dir. A malformed card is reported by file and reason; the others still load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import UnknownModel
from ..families import check_card

# libyaml's safe loader where PyYAML was built with it (its wheels are): the same documents, about ten
# times faster than the pure-Python one, which every command that reads the ~95 cards feels.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

log = logging.getLogger(__name__)

CARD_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class CardSource(BaseModel):
    """Where the weights come from: a Hugging Face repo, or a built-in builder (offline tiny models)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = "main"
    builtin: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "CardSource":
        if (self.repo is None) == (self.builtin is None):
            raise ValueError("source needs exactly one of 'repo' (a Hugging Face repo id) or 'builtin'")
        return self


class TransformerGGUF(BaseModel):
    """A community GGUF file the card's transformer is loaded from (runtime/gguf_transformer.py): `file`
    in the component card `card` (which downloads only that file); the rest of the pipeline comes from
    the card's own (diffusers) source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    card: str = Field(pattern=CARD_ID_PATTERN)
    file: str = Field(pattern=r"^[^/\\]+\.gguf$")


class LoraSource(BaseModel):
    """A LoRA card's adapter (`tasks: [lora]`): the one safetensors file in the repo that holds it
    (zoo/loras.py). The card's `family:` is the base model's family."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(pattern=r"^[\w.+-]+(/[\w.+-]+)*\.safetensors$")

    @model_validator(mode="after")
    def _no_parent(self) -> "LoraSource":
        if ".." in self.file.split("/"):
            raise ValueError("lora.file: a path inside the repo, without '..'")
        return self


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=CARD_ID_PATTERN)
    title: str = Field(min_length=1)
    family: str  # the model family that loads and runs it (studio.families)
    tasks: list[str] = Field(min_length=1)
    source: CardSource
    # The class that loads it: a diffusers pipeline, a transformers model, or a native engine's name.
    library: Literal["diffusers", "transformers", "native"] = "diffusers"
    pipeline: str
    # Weight variant to fetch when the repo has one (e.g. "fp16": `*.fp16.safetensors`).
    variant: str | None = None
    # Which repo files a download fetches; None means the library's usual set (see zoo.hub).
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
    # Placement override for this model (None: the scheduler decides from footprint and budget).
    placement: Literal["full", "model_offload", "group_offload", "sequential_offload"] | None = None
    # The transformer tolerates fp8 weight storage (VideoX-Fun's qfloat8 modes), used when Settings.fp8
    # (layerwise casting; on for Lumina-T2I only: docs/quantization.md says why it is safe there).
    fp8_ok: bool = False
    # Weight-only quantization of the transformer when Settings.quantization is "auto" (runtime/quantize.py).
    quantization: Literal["none", "int8", "fp8"] | None = None
    # The transformer from a GGUF file instead of the source's own weights (a card of its own, in `requires`).
    transformer_gguf: TransformerGGUF | None = None
    # A LoRA card's file (tasks: [lora]): downloaded like a component, loaded into a model of its family.
    lora: LoraSource | None = None
    # GB of the transformer's weights in bf16, part of memory_gb: scaled when it is quantized.
    transformer_gb: float | None = Field(default=None, gt=0)
    memory_gb: float = Field(gt=0)
    # Activation memory a job needs on top of the weights, per megapixel of output (batch of 1).
    working_gb_per_mpx: float = Field(default=1.0, ge=0)
    license: str
    gated: bool = False
    homepage: str = ""
    tiny: bool = False
    # A built-in model trained on the studio's simple scenes (studio/minis): tiny, yet it follows such captions.
    mini: bool = False
    runnable: bool = True
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    # A native engine's description of its model (files, architecture), checked by that engine.
    engine: dict[str, Any] = Field(default_factory=dict)
    # Ids of component cards this model also loads (a text encoder kept in another repo): downloaded with it.
    requires: list[str] = Field(default_factory=list)
    resolutions: list[str] = Field(default_factory=list)
    # Sizes beyond the training resolution that the model extrapolates to (shown marked as such).
    extrapolation: list[str] = Field(default_factory=list)
    size_multiple: int = Field(default=16, gt=0)
    min_size: int = Field(default=64, gt=0)
    max_size: int = Field(default=4096, gt=0)

    @model_validator(mode="after")
    def _check_resolutions(self) -> "ModelCard":
        for res in [*self.resolutions, *self.extrapolation]:
            width, height = parse_size(res)
            problem = self.size_problem(width, height)
            if problem:
                raise ValueError(f"resolution preset {res}: {problem}")
        if self.transformer_gguf is not None and self.transformer_gguf.card not in self.requires:
            raise ValueError(f"transformer_gguf: the card {self.transformer_gguf.card!r} holding the GGUF file "
                             "must also be in `requires` (so Download fetches it)")
        if ("lora" in self.tasks) != (self.lora is not None):
            raise ValueError("a LoRA card has `tasks: [lora]` and a `lora: {file: NAME.safetensors}`, both or neither")
        if self.lora is not None and (self.runnable or self.allow_patterns != [self.lora.file]):
            raise ValueError("a LoRA card is `runnable: false` and downloads its file only "
                             "(`allow_patterns: [<lora.file>]`)")
        check_card(self)  # its family's word on whether it can run this card as written
        return self

    def size_problem(self, width: int, height: int) -> str | None:
        """Why this model cannot make a width x height output, or None if it can."""
        m = self.size_multiple
        if width % m or height % m:
            return f"width and height must be multiples of {m} for {self.title}"
        for side in (width, height):
            if not self.min_size <= side <= self.max_size:
                return f"each side must be between {self.min_size} and {self.max_size} pixels for {self.title}"
        return None


def parse_size(text: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768). Raises ValueError on anything else."""
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 1024x1024, got {text!r}")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class CardProblem:
    file: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def _describe(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'card'}: {e['msg']}" for e in err.errors())


@dataclass
class CardRegistry:
    cards: dict[str, ModelCard] = field(default_factory=dict)
    problems: list[CardProblem] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # card id -> the file it came from

    @classmethod
    def load(cls, dirs: Iterable[Path]) -> "CardRegistry":
        registry = cls()
        for directory in dirs:
            if directory.is_dir():
                for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
                    registry._load_file(path)
        registry._check_requirements()
        for problem in registry.problems:
            log.warning("model card skipped: %s", problem)
        return registry

    def _load_file(self, path: Path) -> None:
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
            if not isinstance(data, dict):
                raise ValueError("a card must be a YAML mapping")
            card = ModelCard.model_validate(data)
        except yaml.YAMLError as err:
            self.problems.append(CardProblem(path, f"not valid YAML ({err})"))
            return
        except ValidationError as err:
            self.problems.append(CardProblem(path, _describe(err)))
            return
        except (OSError, ValueError) as err:
            self.problems.append(CardProblem(path, str(err)))
            return
        if card.id in self.cards:
            self.problems.append(CardProblem(path, f"duplicate id {card.id!r} (already defined by another card)"))
            return
        self.cards[card.id] = card
        self.files[card.id] = path

    def _check_requirements(self) -> None:
        """Drop cards that require, directly or through another card, a card nobody defined or
        themselves (they could never load); repeated until what is left is whole."""
        looping = [card_id for card_id in self.cards if self._requires_itself(card_id)]
        for card_id in looping:  # all found before any is dropped, so each is named for what it is
            del self.cards[card_id]
            self.problems.append(CardProblem(self.files.get(card_id, Path(card_id)),
                                             "requires itself (through its `requires` chain)"))
        changed = True
        while changed:
            changed = False
            for card in list(self.cards.values()):
                absent = [r for r in card.requires if r not in self.cards]
                if absent:
                    del self.cards[card.id]
                    self.problems.append(CardProblem(self.files.get(card.id, Path(card.id)),
                                                     f"requires unknown card(s): {', '.join(absent)}"))
                    changed = True

    def _requires_itself(self, card_id: str) -> bool:
        seen: set[str] = set()
        todo = list(self.cards[card_id].requires)
        while todo:
            current = todo.pop()
            if current == card_id:
                return True
            if current in seen or current not in self.cards:
                continue
            seen.add(current)
            todo.extend(self.cards[current].requires)
        return False

    def get(self, card_id: str) -> ModelCard:
        try:
            return self.cards[card_id]
        except KeyError:
            known = ", ".join(sorted(self.cards)) or "none"
            raise UnknownModel(f"Unknown model {card_id!r}. Known models: {known}.") from None

    def for_task(self, task: str) -> list[ModelCard]:
        """Cards that can run `task`, runnable ones first, tiny (offline) ones last."""
        cards = [c for c in self.cards.values() if task in c.tasks]
        return sorted(cards, key=lambda c: (not c.runnable, c.tiny, c.title))
