"""MusicGen Melody's processor without torchaudio: the checkpoint's own tokenizer for the text, and
its chroma settings (`preprocessor_config.json`) for the melody, computed by studio.engines.chroma.

transformers' MusicgenMelodyProcessor would do both, but its feature extractor needs torchaudio,
which has no CPU wheel here; the tokenizer and the settings load from the same files, through the
same `from_pretrained(repo, revision=, cache_dir=, local_files_only=True)` as any download."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...engines.chroma import MelodyChroma
from . import MELODY


@dataclass
class MelodyProcessor:
    """The text side as a MusicgenMelodyProcessor has it (called with `text=`), and `chroma` for a
    melody clip's `input_features`."""

    tokenizer: Any
    chroma: MelodyChroma

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer(*args, **kwargs)


def load_melody_processor(repo_id: str, **where: Any) -> MelodyProcessor:
    from transformers import AutoTokenizer
    from transformers.utils import cached_file

    tokenizer = AutoTokenizer.from_pretrained(repo_id, **where)
    config_file = cached_file(repo_id, "preprocessor_config.json", **where)
    try:
        config = json.loads(open(config_file, encoding="utf-8").read())
    except ValueError as err:
        raise ValueError(f"{repo_id}: preprocessor_config.json is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{repo_id}: preprocessor_config.json does not hold the feature extractor's settings")
    return MelodyProcessor(tokenizer=tokenizer, chroma=MelodyChroma.from_config(config))


def processor(card: Any, repo_id: str, **where: Any) -> Any:
    """The `processor` hook: ours for the melody models, the library's for the others."""
    if card.pipeline == MELODY:
        return load_melody_processor(repo_id, **where)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(repo_id, **where)
