"""MemoryScheduler: owns every loaded pipeline and decides which stay resident.

Every job gets its pipeline through `acquire(card)`, which loads it (or re-uses the resident one),
and holds it locked while the job runs: a model in use is never evicted. This first version keeps
at most `max_resident` pipelines and evicts the least recently used unlocked one to make room; byte
budgets, offload policies and OOM recovery build on this same interface.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..zoo.cards import ModelCard

log = logging.getLogger(__name__)

Loader = Callable[[ModelCard], Any]


class MemoryScheduler:
    def __init__(self, loader: Loader, max_resident: int = 1) -> None:
        if max_resident < 1:
            raise ValueError("max_resident must be at least 1")
        self._loader = loader
        self._max_resident = max_resident
        self._resident: OrderedDict[str, Any] = OrderedDict()  # card id -> pipeline, LRU first
        self._locks: dict[str, int] = {}
        self._mutex = threading.RLock()

    @contextmanager
    def acquire(self, card: ModelCard) -> Iterator[Any]:
        """The loaded pipeline for `card`, locked against eviction for the duration of the block."""
        with self._mutex:
            pipeline = self._resident.get(card.id)
            if pipeline is None:
                self._make_room()
                log.info("loading %s", card.id)
                pipeline = self._loader(card)
                self._resident[card.id] = pipeline
            self._resident.move_to_end(card.id)
            self._locks[card.id] = self._locks.get(card.id, 0) + 1
        try:
            yield pipeline
        finally:
            with self._mutex:
                self._locks[card.id] -= 1

    def _make_room(self) -> None:
        for card_id in list(self._resident):
            if len(self._resident) < self._max_resident:
                break
            if self._locks.get(card_id, 0) == 0:
                self._evict(card_id)

    def _evict(self, card_id: str) -> None:
        log.info("evicting %s", card_id)
        del self._resident[card_id]
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a hard dependency
            pass

    def resident(self) -> list[str]:
        """Card ids of the loaded pipelines, least recently used first."""
        with self._mutex:
            return list(self._resident)

    def free_all(self) -> None:
        """Drop every pipeline that is not in use."""
        with self._mutex:
            for card_id in list(self._resident):
                if self._locks.get(card_id, 0) == 0:
                    self._evict(card_id)
