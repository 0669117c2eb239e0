"""How many bytes a card's Download would fetch, and how many of them are already here.

The hub's file listing (`fetch_plan`: the files the card needs, with sizes) is asked for one card at
a time, when someone looks at that card, never for the whole catalogue: listing every row would be
slow and need the network. The question runs on a background thread with a short timeout, so a
caller (the Models tab's timer, its picker) never waits longer than it chose to; the answer is
remembered for the process (a download's own plan refreshes it), a failure only for a minute so
that the size appears once the network is back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .cards import ModelCard
from .hub import DownloadError, RepoPlan, fetch_plan

# An answer from the hub takes well under a second; past this the hub is as good as unreachable.
HUB_TIMEOUT_S = 5.0
RETRY_FAILED_S = 60.0


@dataclass(frozen=True)
class HubAnswer:
    """The hub's listing for one card: its plan, or why there is none."""

    plan: RepoPlan | None
    error: str | None
    at: float


@dataclass(frozen=True)
class DownloadSize:
    """What Download would fetch for a card: its files and those of the components it needs that are
    not here yet. `total` is None while unknown: `pending` (still asking the hub) or `error` (why)."""

    total: int | None
    present: int  # bytes of those files on disk, finished or partial (unknown total: its repo's files)
    pending: bool = False
    error: str | None = None
    components: tuple[str, ...] = ()  # titles of the required cards counted in

    @property
    def known(self) -> bool:
        return self.total is not None


class SizeLookup:
    """Asks the hub for cards' plans in the background and remembers the answers."""

    def __init__(self, endpoint: str, token: Callable[[], str | None], timeout: float = HUB_TIMEOUT_S) -> None:
        self._endpoint = endpoint
        self._token = token
        self.timeout = timeout
        self._answers: dict[str, HubAnswer] = {}
        self._asking: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def remember(self, card_id: str, plan: RepoPlan) -> None:
        with self._lock:
            self._answers[card_id] = HubAnswer(plan, None, time.monotonic())

    def answers(self, cards: Iterable[ModelCard], wait: float = 0.0) -> dict[str, HubAnswer | None]:
        """Each card's answer; a card not known yet is asked for, and waited on up to `wait` seconds
        in all; None for those still being asked."""
        cards = list(cards)
        events = [self._ask(card) for card in cards]
        deadline = time.monotonic() + wait
        for event in events:
            if event is not None:
                event.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return {card.id: self._answers.get(card.id) for card in cards}

    def _ask(self, card: ModelCard) -> threading.Event | None:
        """Start asking the hub about `card` unless a fresh answer is here; the event is set on the answer."""
        with self._lock:
            answer = self._answers.get(card.id)
            fresh = answer is not None and (answer.plan is not None or time.monotonic() - answer.at < RETRY_FAILED_S)
            if fresh:
                return None
            if card.id in self._asking:
                return self._asking[card.id]
            done = self._asking[card.id] = threading.Event()
        threading.Thread(target=self._lookup, args=(card, done), name=f"studio-size-{card.id}", daemon=True).start()
        return done

    def _lookup(self, card: ModelCard, done: threading.Event) -> None:
        try:
            answer = HubAnswer(fetch_plan(card, self._endpoint, self._token(), timeout=self.timeout), None,
                               time.monotonic())
        except DownloadError as err:
            answer = HubAnswer(None, str(err), time.monotonic())
        except Exception as err:  # a size is a courtesy: it never breaks the page
            answer = HubAnswer(None, f"{type(err).__name__}: {err}", time.monotonic())
        with self._lock:
            self._answers[card.id] = answer
            self._asking.pop(card.id, None)
        done.set()
