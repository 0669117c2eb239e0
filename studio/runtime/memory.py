"""MemoryScheduler: owns every loaded pipeline and decides where its weights live.

Every job gets its pipeline through `acquire(card, working_bytes)`. The scheduler:
- loads it (or re-uses the resident one) and measures its footprint from its tensors, once: a move
  changes where a component's bytes are, never how many, so the books (what is on the device, what
  is parked) add up the sizes measured at load instead of walking every tensor on every request;
- picks the most generous placement (full, model/group/sequential offload) whose peak device use,
  plus the job's working memory, fits the device budget once unlocked models are moved out;
- moves other unlocked models out least-recently-used first: device -> RAM ("parked"), and drops
  parked ones beyond the RAM budget;
- never moves a model that is in use (locked by a running job);
- counts a module shared by two pipelines (the same checkpoint, loaded once) once.

`step_down(card)` is the out-of-memory recovery: free everything else and re-place the model with
the next more frugal placement. Budgets are bytes; None means unlimited.

A scheduler may own a device group (`device="cuda:0+cuda:1"`, runtime/multi_gpu.py): single-device
placements run on its first member, and a model that is not placed whole there but whose components fit
the members' budgets is loaded spread over them (`Spread.BALANCED`, diffusers' `device_map="balanced"`):
the loader is asked for it (`loader(card, device_map="balanced", max_memory={index: bytes})`), its books
count each component on the member diffusers put it on, and it is dropped, never `.to()`-moved, to free it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from ..zoo.cards import ModelCard
from . import multi_gpu
from .footprint import Footprint
from .placement import (GROUP_LADDER, LADDER, AnyPlacement, Placement, Spread, apply_placement, more_frugal, park,
                        torch_components)

log = logging.getLogger(__name__)

# card -> pipeline in RAM; a group's scheduler may also call it with device_map="balanced", max_memory={i: bytes}.
Loader = Callable[..., Any]
BudgetSource = Callable[[int], "int | None"]  # bytes the studio holds on the device -> budget


@dataclass
class _Entry:
    card: ModelCard
    pipeline: Any
    footprint: Footprint
    placement: AnyPlacement | None = None  # None: parked in RAM, no hooks
    locks: int = 0
    last_used: float = 0.0
    # id(component module) -> its bytes, from the footprint: the unit the books count, each module once
    # across pipelines that share it. Ids stay valid: the pipeline holds its modules as long as the entry.
    sizes: dict[int, int] = field(default_factory=dict)

    @classmethod
    def loaded(cls, card: ModelCard, pipeline: Any, **state: Any) -> "_Entry":
        """A freshly loaded pipeline, measured once."""
        footprint = Footprint.measure(pipeline)
        sizes = {id(m): footprint.components[name] for name, m in torch_components(pipeline).items()}
        return cls(card, pipeline, footprint, sizes=sizes, **state)

    def modules(self) -> dict[int, int]:
        return self.sizes


@dataclass(frozen=True)
class Lease:
    """What a job gets: the pipeline and the placement it runs under."""

    pipeline: Any
    placement: AnyPlacement


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
                 estimate_gb: Callable[[ModelCard], float] | None = None,
                 member_budgets: Sequence[BudgetSource | int] | None = None) -> None:
        """`device` may be a group (`cuda:0+cuda:1`): then `member_budgets` (one per member, as
        budgets.member_budgets gives them) say what each GPU holds, and `device_budget` defaults to their
        sum; without them `device_budget` is shared evenly among the members."""
        self._loader = loader
        # A card's memory before it is loaded (then the footprint measured from its tensors): its memory_gb,
        # or as the Studio scales it for a quantized transformer (runtime/quantize.estimate_gb).
        self._estimate_gb = estimate_gb or (lambda card: card.memory_gb)
        self.device = device
        self.members = multi_gpu.parse_device_group(device)
        self.primary = self.members[0]  # where single-device placements run
        self.group = len(self.members) > 1
        self._ladder = GROUP_LADDER if self.group else LADDER
        self._members = multi_gpu.member_budgets_of(self.members, device_budget, member_budgets)
        if device_budget is None and member_budgets is not None and self.group:
            device_budget = multi_gpu.group_total(member_budgets)  # type: ignore[arg-type]
        self._device_budget = device_budget
        self._measured: dict[str, Footprint] = {}  # card id -> footprint, kept after it is dropped
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
        """Weights the studio holds on the device (all members of a group): fully placed models (each
        module once), balanced ones, plus the peak of offloaded models that are running right now."""
        return sum(self.member_used(exclude))

    def member_used(self, exclude: str | None = None) -> list[int]:
        """`device_used` per member of the group (one number for a single device)."""
        modules: dict[int, int] = {}
        held = [0] * len(self.members)
        for card_id, entry in self._entries.items():
            if card_id == exclude or entry.placement is None:
                continue
            if entry.placement is Placement.FULL:
                modules.update(entry.modules())
            elif entry.placement is Spread.BALANCED:
                held = [a + b for a, b in zip(held, self._spread_bytes(entry))]
            elif entry.locks:
                held[0] += entry.footprint.device_bytes(entry.placement)
        held[0] += sum(modules.values())
        return held

    def member_budget(self, index: int) -> int | None:
        source = self._members[index]
        return source(self.device_used()) if callable(source) else source

    def _spread_bytes(self, entry: _Entry) -> list[int]:
        return multi_gpu.device_map_bytes(entry.pipeline, entry.footprint.components, self.members)

    def _pinned(self, card_id: str) -> list[int]:
        """Per member, what cannot be moved out: other models in use."""
        pinned = [0] * len(self.members)
        for cid, e in self._entries.items():
            if cid == card_id or not e.locks or e.placement is None:
                continue
            if e.placement is Spread.BALANCED:
                pinned = [a + b for a, b in zip(pinned, self._spread_bytes(e))]
            else:
                pinned[0] += e.footprint.device_bytes(e.placement)
        return pinned

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
                entry = self._load(card, working_bytes)
            # A re-placement may reload it (hooks that cannot be removed, a balanced load): the live entry.
            entry = self._place(entry, self._choose(entry, working_bytes), working_bytes)
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
            lower = more_frugal(entry.placement or Placement.FULL, self._ladder)
            if lower is Spread.BALANCED and not self._balanced_fits(entry.card, entry.footprint, working_bytes,
                                                                    [0] * len(self.members)):
                lower = more_frugal(lower, self._ladder)
            if lower is None:
                return None
            self._unplace(entry)
            if lower is Spread.BALANCED:
                self._entries.pop(card.id, None)
                entry = self._load_balanced(card, entry.footprint, working_bytes, locks=entry.locks,
                                            last_used=entry.last_used)
                return Lease(entry.pipeline, lower)
            entry = self._entries.get(card.id) or self._reload(entry)
            apply_placement(entry.pipeline, lower, self.primary)
            entry.placement = lower
            return Lease(entry.pipeline, lower)

    def need_bytes(self, card: ModelCard, placement: AnyPlacement, working_bytes: int) -> int:
        with self._mutex:
            entry = self._entries.get(card.id)
            weights = _device_bytes(entry.footprint, placement) if entry else int(self._estimate_gb(card) * 2**30)
            return weights + working_bytes

    # -- decisions --------------------------------------------------------------------------------

    def _choose(self, entry: _Entry, working: int) -> AnyPlacement:
        # A balanced model that still fits spread stays so: a reload costs more than the GPUs' hand-over.
        if entry.placement is Spread.BALANCED and self._placement_for(entry.card) is None:
            with self._mutex:
                if self._balanced_fits(entry.card, entry.footprint, working, self._pinned(entry.card.id)):
                    return Spread.BALANCED
        return self.choose(entry.card, entry.footprint, working)

    def choose(self, card: ModelCard, footprint: Footprint, working: int) -> AnyPlacement:
        """The most generous placement under which a pipeline of this footprint, plus `working`
        bytes, fits the device budget beside the other models in use (the card may force one). On a
        group: whole on the first member, else balanced over the members, else offloaded onto the first."""
        forced = self._placement_for(card)
        if forced is not None:
            return forced
        budget = self.device_budget()
        if budget is None:
            return Placement.FULL
        with self._mutex:  # what cannot be moved out: other models in use
            pinned = self._pinned(card.id)
            first = self.member_budget(0) if self.group else budget
            for placement in self._ladder:
                if placement is Spread.BALANCED:
                    if self._balanced_fits(card, footprint, working, pinned):
                        return placement
                elif first is None or pinned[0] + footprint.device_bytes(placement) + working <= first:
                    return placement
        log.warning("%s does not fit the device budget under any placement; trying the most frugal", card.id)
        return self._ladder[-1]

    def _room(self, working: int, taken: list[int]) -> list[int]:
        """Per member: its budget less `taken` and the job's working memory (activations may land on any
        member holding a component, so each keeps room for them)."""
        room = []
        for index, used in enumerate(taken):
            member = self.member_budget(index)
            room.append(2**62 if member is None else member - used - working)
        return room

    def _balanced_fits(self, card: ModelCard, footprint: Footprint, working: int, taken: list[int]) -> bool:
        if not self.group or card.library != "diffusers" or card.transformer_gguf is not None:
            return False  # device_map="balanced" is a diffusers pipeline's from_pretrained option
        room = multi_gpu.balanced_max_memory(self.members, self._room(working, taken))
        return multi_gpu.fits_balanced(footprint.components, room)

    def _place(self, entry: _Entry, wanted: AnyPlacement, working: int) -> _Entry:
        if wanted is Spread.BALANCED:
            if entry.placement is not Spread.BALANCED:
                self._unplace(entry)
                self._entries.pop(entry.card.id, None)  # its RAM copy goes: the balanced load reads the disk
                entry = self._load_balanced(entry.card, entry.footprint, working, last_used=entry.last_used)
            self._enforce_ram_budget()
            return entry
        if entry.placement is not None and entry.placement is not wanted:
            self._unplace(entry)
            entry = self._entries.get(entry.card.id) or self._reload(entry)
        self._separate_shared(entry, wanted)
        need = entry.footprint.device_bytes(wanted) + working
        budget = self.member_budget(0) if self.group else self.device_budget()
        if budget is not None:
            for other in self._lru(exclude=entry.card.id):
                if self.member_used(exclude=entry.card.id)[0] + need <= budget:
                    break
                if other.placement in (Placement.FULL, Spread.BALANCED):
                    self._evict(other)
        if entry.placement is None:
            apply_placement(entry.pipeline, wanted, self.primary)
            entry.placement = wanted
        self._enforce_ram_budget()
        return entry

    def _load(self, card: ModelCard, working: int) -> _Entry:
        """A card not resident: into RAM, or, on a group, straight onto the GPUs when its footprint (measured
        at an earlier load) says it will be balanced."""
        known = self._measured.get(card.id)
        if self.group and known is not None and self.choose(card, known, working) is Spread.BALANCED:
            return self._load_balanced(card, known, working)
        log.info("loading %s", card.id)
        entry = _Entry.loaded(card, self._loader(card))
        self._entries[card.id] = self._measured_entry(entry)
        return entry

    def _measured_entry(self, entry: _Entry) -> _Entry:
        self._measured[entry.card.id] = entry.footprint
        return entry

    def _load_balanced(self, card: ModelCard, footprint: Footprint, working: int, **state: Any) -> _Entry:
        """Make room on the members (least recently used out first), then load the card spread over them,
        with each member's room as diffusers' `max_memory`."""
        for other in self._lru(exclude=card.id):
            if self._balanced_fits(card, footprint, working, self.member_used(exclude=card.id)):
                break
            self._evict(other)
        room = self._room(working, self.member_used(exclude=card.id))
        max_memory = multi_gpu.balanced_max_memory(self.members, room)
        log.info("loading %s balanced over %s (max_memory %s)", card.id, self.device, max_memory)
        pipeline = self._loader(card, device_map="balanced", max_memory=max_memory)
        entry = _Entry.loaded(card, pipeline, placement=Spread.BALANCED, **state)
        self._entries[card.id] = self._measured_entry(entry)
        return entry

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
        fresh = _Entry.loaded(entry.card, self._loader(entry.card), locks=entry.locks, last_used=entry.last_used)
        self._entries[entry.card.id] = self._measured_entry(fresh)
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
            return [ResidentInfo(e.card.id, e.card.title, self._where(e),
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
            return "from RAM" if entry.placement is None else f"already on {self._where(entry)}"

    def _where(self, entry: _Entry) -> str:
        if entry.placement is None:
            return "RAM"
        if not self.group:
            return self.device
        return self.device if entry.placement is Spread.BALANCED else self.primary

    def placement_of(self, card_id: str) -> AnyPlacement | None:
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


def _device_bytes(footprint: Footprint, placement: AnyPlacement) -> int:
    """Footprint.device_bytes, and a balanced model's: all of it, on the group's devices."""
    return footprint.total if placement is Spread.BALANCED else footprint.device_bytes(placement)


def _empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
