"""MemoryScheduler: owns every loaded pipeline and decides where its weights live.

Every job gets its pipeline through `acquire(card, working_bytes)`. The scheduler:
- loads it (or re-uses the resident one) and measures its footprint from its tensors;
- picks the most generous placement (full, model/group/sequential offload) whose peak device use,
  plus the job's working memory, fits the device budget once unlocked models are moved out;
- moves other unlocked models out least-recently-used first: device -> RAM ("parked"), and drops
  parked ones beyond the RAM budget;
- never moves a model that is in use (locked by a running job);
- counts a module shared by two pipelines (the same checkpoint, loaded once) once.

`step_down(card)` is the out-of-memory recovery: free everything else and re-place the model with
the next more frugal placement. Budgets are bytes; None means unlimited.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..zoo.cards import ModelCard
from .footprint import Footprint, tensor_bytes
from .placement import LADDER, Placement, apply_placement, more_frugal, park, torch_components

log = logging.getLogger(__name__)

Loader = Callable[[ModelCard], Any]
BudgetSource = Callable[[int], "int | None"]  # bytes the studio holds on the device -> budget


@dataclass
class _Entry:
    card: ModelCard
    pipeline: Any
    footprint: Footprint
    placement: Placement | None = None  # None: parked in RAM, no hooks
    locks: int = 0
    last_used: float = 0.0

    def modules(self) -> dict[int, int]:
        return {id(m): tensor_bytes(m) for m in torch_components(self.pipeline).values()}


@dataclass(frozen=True)
class Lease:
    """What a job gets: the pipeline and the placement it runs under."""

    pipeline: Any
    placement: Placement


@dataclass(frozen=True)
class ResidentInfo:
    """One row of the memory panel."""

    card_id: str
    title: str
    where: str  # "device" or "RAM"
    placement: str
    bytes: int
    in_use: bool


class MemoryScheduler:
    def __init__(self, loader: Loader, *, device: str = "cpu", device_budget: BudgetSource | int | None = None,
                 ram_budget: int | None = None, placement_for: Callable[[ModelCard], Placement | None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 estimate_gb: Callable[[ModelCard], float] | None = None) -> None:
        self._loader = loader
        # A card's memory before it is loaded (then the footprint measured from its tensors): its memory_gb,
        # or as the Studio scales it for a quantized transformer (runtime/quantize.estimate_gb).
        self._estimate_gb = estimate_gb or (lambda card: card.memory_gb)
        self.device = device
        self._device_budget = device_budget
        self.ram_budget = ram_budget
        self._placement_for = placement_for or (lambda card: None)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._mutex = threading.RLock()

    # -- accounting ---------------------------------------------------------------------------

    def device_budget(self) -> int | None:
        if callable(self._device_budget):
            return self._device_budget(self.device_used())
        return self._device_budget

    def device_used(self, exclude: str | None = None) -> int:
        """Weights the studio holds on the device: fully placed models (each module once) plus the
        peak of offloaded models that are running right now."""
        modules: dict[int, int] = {}
        peaks = 0
        for card_id, entry in self._entries.items():
            if card_id == exclude or entry.placement is None:
                continue
            if entry.placement is Placement.FULL:
                modules.update(entry.modules())
            elif entry.locks:
                peaks += entry.footprint.device_bytes(entry.placement)
        return sum(modules.values()) + peaks

    def ram_used(self) -> int:
        """Weights of parked models (in RAM, ready to move back without a disk read), each module once."""
        modules: dict[int, int] = {}
        for entry in self._entries.values():
            if entry.placement is None:
                modules.update(entry.modules())
        return sum(modules.values())

    # -- the one entry point --------------------------------------------------------------------

    @contextmanager
    def acquire(self, card: ModelCard, working_bytes: int = 0) -> Iterator[Lease]:
        """The card's pipeline placed on the device, locked against eviction for the block."""
        with self._mutex:
            entry = self._entries.get(card.id)
            if entry is None:
                log.info("loading %s", card.id)
                pipeline = self._loader(card)
                entry = _Entry(card, pipeline, Footprint.measure(pipeline))
                self._entries[card.id] = entry
            self._place(entry, self._choose(entry, working_bytes), working_bytes)
            entry.locks += 1
            lease = Lease(entry.pipeline, entry.placement)  # type: ignore[arg-type]
        try:
            yield lease
        finally:
            with self._mutex:
                # An out-of-memory step-down may have replaced the entry with a reloaded one.
                live = self._entries.get(card.id, entry)
                live.locks -= 1
                live.last_used = self._clock()

    def step_down(self, card: ModelCard, working_bytes: int = 0) -> Lease | None:
        """After an out-of-memory error: move everything else out and re-place this model one step
        more frugally. Returns the new lease, or None when it is already the most frugal."""
        with self._mutex:
            entry = self._entries[card.id]
            for other in self._lru(exclude=card.id):
                self._evict(other)
            _empty_device_cache()
            lower = more_frugal(entry.placement or Placement.FULL)
            if lower is None:
                return None
            self._unplace(entry)
            entry = self._entries.get(card.id) or self._reload(entry)
            apply_placement(entry.pipeline, lower, self.device)
            entry.placement = lower
            return Lease(entry.pipeline, lower)

    def need_bytes(self, card: ModelCard, placement: Placement, working_bytes: int) -> int:
        with self._mutex:
            entry = self._entries.get(card.id)
            weights = entry.footprint.device_bytes(placement) if entry else int(self._estimate_gb(card) * 2**30)
            return weights + working_bytes

    # -- decisions --------------------------------------------------------------------------------

    def _choose(self, entry: _Entry, working: int) -> Placement:
        return self.choose(entry.card, entry.footprint, working)

    def choose(self, card: ModelCard, footprint: Footprint, working: int) -> Placement:
        """The most generous placement under which a pipeline of this footprint, plus `working`
        bytes, fits the device budget beside the other models in use (the card may force one)."""
        forced = self._placement_for(card)
        if forced is not None:
            return forced
        budget = self.device_budget()
        if budget is None:
            return Placement.FULL
        with self._mutex:  # what cannot be moved out: other models in use
            pinned = sum(e.footprint.device_bytes(e.placement) for cid, e in self._entries.items()
                         if cid != card.id and e.locks and e.placement is not None)
        for placement in LADDER:
            if pinned + footprint.device_bytes(placement) + working <= budget:
                return placement
        log.warning("%s does not fit the device budget under any placement; trying the most frugal", card.id)
        return LADDER[-1]

    def _place(self, entry: _Entry, wanted: Placement, working: int) -> None:
        if entry.placement is not None and entry.placement is not wanted:
            self._unplace(entry)
            entry = self._entries.get(entry.card.id) or self._reload(entry)
        self._separate_shared(entry, wanted)
        need = entry.footprint.device_bytes(wanted) + working
        budget = self.device_budget()
        if budget is not None:
            for other in self._lru(exclude=entry.card.id):
                if self.device_used(exclude=entry.card.id) + need <= budget:
                    break
                if other.placement is Placement.FULL:
                    self._evict(other)
        if entry.placement is None:
            apply_placement(entry.pipeline, wanted, self.device)
            entry.placement = wanted
        self._enforce_ram_budget()

    def _separate_shared(self, entry: _Entry, wanted: Placement) -> None:
        """Offload hooks on a module shared with another placed pipeline would pull it from under
        that pipeline: such a neighbour is parked first."""
        mine = set(entry.modules())
        for other in self._lru(exclude=entry.card.id):
            if other.placement is not None and mine & set(other.modules()):
                if wanted is not Placement.FULL or other.placement is not Placement.FULL:
                    self._evict(other)

    def _lru(self, exclude: str) -> list[_Entry]:
        """Unlocked entries other than `exclude`, least recently used first."""
        others = [e for cid, e in self._entries.items() if cid != exclude and e.locks == 0]
        return sorted(others, key=lambda e: e.last_used)

    # -- moves --------------------------------------------------------------------------------------

    def _evict(self, entry: _Entry) -> None:
        """Device -> RAM (or out entirely, when its hooks cannot be removed)."""
        if entry.placement is None:
            return
        log.info("parking %s (%s) in RAM", entry.card.id, entry.placement.value)
        self._unplace(entry)
        _empty_device_cache()

    def _unplace(self, entry: _Entry) -> None:
        shared_on_device = self._modules_held_elsewhere(entry)
        if entry.placement is Placement.FULL and shared_on_device:
            for module in torch_components(entry.pipeline).values():
                if id(module) not in shared_on_device:
                    module.to("cpu")
        elif entry.placement is not None and not park(entry.pipeline, entry.placement):
            del self._entries[entry.card.id]  # reloaded from disk next time
            gc.collect()
            return
        entry.placement = None

    def _modules_held_elsewhere(self, entry: _Entry) -> set[int]:
        held: set[int] = set()
        for cid, other in self._entries.items():
            if cid != entry.card.id and other.placement is Placement.FULL:
                held.update(other.modules())
        return held & set(entry.modules())

    def _reload(self, entry: _Entry) -> _Entry:
        fresh = _Entry(entry.card, self._loader(entry.card), entry.footprint, locks=entry.locks,
                       last_used=entry.last_used)
        fresh.footprint = Footprint.measure(fresh.pipeline)
        self._entries[entry.card.id] = fresh
        return fresh

    def _enforce_ram_budget(self) -> None:
        if self.ram_budget is None:
            return
        for entry in self._lru(exclude=""):
            if self.ram_used() <= self.ram_budget:
                return
            if entry.placement is None:
                log.info("dropping %s from RAM (over the RAM budget)", entry.card.id)
                del self._entries[entry.card.id]
        gc.collect()

    # -- the memory panel -------------------------------------------------------------------------

    def residents(self) -> list[ResidentInfo]:
        with self._mutex:
            return [ResidentInfo(e.card.id, e.card.title, "RAM" if e.placement is None else self.device,
                                 e.placement.value if e.placement else "parked", e.footprint.total, e.locks > 0)
                    for e in sorted(self._entries.values(), key=lambda e: -e.last_used)]

    def resident(self) -> list[str]:
        """Card ids of the loaded pipelines, least recently used first."""
        with self._mutex:
            return [e.card.id for e in sorted(self._entries.values(), key=lambda e: e.last_used)]

    def whereabouts(self, card_id: str) -> str:
        """Where a job's model comes from before it runs: "already on <device>", "from RAM" (parked
        off the device, moved back) or "from disk" (not loaded)."""
        with self._mutex:
            entry = self._entries.get(card_id)
            if entry is None:
                return "from disk"
            return "from RAM" if entry.placement is None else f"already on {self.device}"

    def placement_of(self, card_id: str) -> Placement | None:
        with self._mutex:
            entry = self._entries.get(card_id)
            return entry.placement if entry else None

    def free_all(self) -> int:
        """Drop every model that is not in use; returns the bytes released."""
        with self._mutex:
            freed = 0
            for entry in self._lru(exclude=""):
                freed += entry.footprint.total
                if entry.placement is not None:
                    self._unplace(entry)
                self._entries.pop(entry.card.id, None)
            gc.collect()
            _empty_device_cache()
            return freed


def _empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
