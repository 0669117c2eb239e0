"""The model manager as people see it: status lines and sizes shared by the Models tab and the CLI,
and the `studio models list | info | download | remove` commands.

Everything goes through the same Studio services: cards, the download queue and the install records;
never the job queue, which these commands leave to the studio that runs it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Iterable, Sequence

from .errors import StudioError
from .history.installed import InstallStatus
from .zoo.availability import is_available, missing_requirements
from .runtime.quantize import estimate_gb
from .settings import Settings
from .zoo.cards import ModelCard
from .zoo.downloads import DownloadState, disk_bytes

if TYPE_CHECKING:
    from .services import Studio


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def progress_text(state: DownloadState) -> str:
    text = f"downloading {state.fraction:.0%} · {human_bytes(state.bytes_done)} of {human_bytes(state.bytes_total)}"
    if state.speed > 0:
        text += f" · {human_bytes(state.speed)}/s"
    if state.eta_s is not None:
        text += f" · {state.eta_s:.0f} s left"
    return text


def status_text(studio: Studio, card: ModelCard, detailed: bool = False) -> str:
    """The one-line status the Models tab and the CLI both show."""
    if card.source.builtin:
        return "built in"
    state = studio.downloads.state(card.id)
    if state is not None and state.status is InstallStatus.DOWNLOADING:
        return progress_text(state) if detailed else f"downloading {state.fraction:.0%}"
    if state is not None and state.status is InstallStatus.QUEUED:
        return "queued"
    if not card.runnable:
        suffix = "downloaded, " if is_available(card, studio.settings) else ""
        return f"{suffix}not yet runnable"
    record = studio.downloads.record(card.id)
    if record is not None:
        if record.status is InstallStatus.FAILED:
            return f"failed: {record.error}"
        if record.status is not InstallStatus.READY:
            return record.status.value
    elif not is_available(card, studio.settings):
        return "not downloaded"
    missing = missing_requirements(card, studio.cards, studio.settings)
    if missing:  # its own files are here, a component's are not (a gated text encoder refused, say)
        return f"needs {', '.join(c.title for c in missing)}: not downloaded"
    return "ready"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[str] = ()) -> list[str]:
    """Lines of aligned columns, each as wide as its widest cell (the header's included); the columns
    named in `right` align right, and the last column is not padded."""
    rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if name in right else cell.ljust(w) for cell, w, name in zip(row, widths, header)]
        lines.append("  ".join(cells[:-1] + [row[-1]]).rstrip())
    return lines


STATUS_CHARS = 40  # a long failure reason is cut here (`studio models info` shows it whole)


def _list(studio: Studio) -> int:
    rows = []
    for card in sorted(studio.cards.cards.values(), key=lambda c: c.id):
        size = disk_bytes(studio.settings, card)
        status = status_text(studio, card)
        status = status if len(status) <= STATUS_CHARS else status[:STATUS_CHARS - 1] + "…"
        rows.append((card.id, ",".join(card.tasks), status, human_bytes(size) if size else "", card.title))
    for line in table(("ID", "TASKS", "STATUS", "ON DISK", "TITLE"), rows, right=("ON DISK",)):
        print(line)
    for problem in studio.cards.problems:
        print(f"skipped {problem}", file=sys.stderr)
    return 0


def _info(studio: Studio, card: ModelCard) -> int:
    print(f"{card.title} ({card.id})")
    source = card.source.repo + f"@{card.source.revision}" if card.source.repo else f"built in ({card.source.builtin})"
    rows = {"status": status_text(studio, card), "source": source, "loads with": f"{card.library} {card.pipeline}",
            "tasks": ", ".join(card.tasks), "license": card.license + (" (gated)" if card.gated else ""),
            "memory": f"about {estimate_gb(card, studio.settings):.3g} GB",
            "on disk": human_bytes(disk_bytes(studio.settings, card)),
            "homepage": card.homepage}
    record = studio.downloads.record(card.id)
    if record and record.last_used_at:
        rows["last used"] = record.last_used_at.strftime("%Y-%m-%d %H:%M UTC")
    for key, value in rows.items():
        if value:
            print(f"  {key:11} {value}")
    if card.description:
        print(f"\n{card.description.strip()}")
    return 0


def _download(studio: Studio, card: ModelCard) -> int:
    from tqdm import tqdm

    state = studio.downloads.enqueue(card.id)
    bar = tqdm(total=0, unit="B", unit_scale=True, desc=card.id, file=sys.stderr)
    try:
        while not state.wait(0.2):
            if state.bytes_total and bar.total != state.bytes_total:
                bar.total = state.bytes_total
            bar.n = state.bytes_done
            bar.refresh()
    except KeyboardInterrupt:
        studio.downloads.cancel(card.id)
        state.wait(30)
        bar.close()
        print("cancelled; run the same command again to resume", file=sys.stderr)
        return 130
    bar.n = state.bytes_done
    bar.close()
    if state.status is not InstallStatus.READY:
        print(f"error: {state.error or state.status.value}", file=sys.stderr)
        return 1
    print(f"{card.id} ready ({human_bytes(state.bytes_total)})")
    return 0


class Catalog:
    """What `studio models list` and `info` read: the settings, the cards, the install records and the
    download states, built as services.Studio builds them, without the job side (memory scheduler,
    job queue, gallery), whose modules import torch: a listing starts in a fraction of the time.
    It starts nothing; `status_text` and the listing take it where they take a Studio."""

    def __init__(self, settings: Settings) -> None:
        from .history import HistoryStore
        from .history.installed import InstalledModels
        from .zoo.cards import CardRegistry
        from .zoo.downloads import DownloadManager

        settings.ensure_dirs()
        self.settings = settings
        self.cards = CardRegistry.load([settings.model_zoo_dir, settings.user_cards_dir])
        self.history = HistoryStore(settings.db_path)
        self.downloads = DownloadManager(settings, self.cards, InstalledModels(self.history.engine))

    def close(self) -> None:
        self.downloads.stop()
        self.history.close()


def run_cli(action: str, model_id: str | None, settings: Settings) -> int:
    """One `studio models` command. None of them takes the job queue or starts its worker (a pending
    job waits for the studio that runs the queue); only `download` starts the download queue, and
    only for its own model (interrupted downloads resume when the studio itself starts). `list` and
    `info` only read, from a Catalog; `download` and `remove` go through the Studio."""
    if action in ("list", "info"):
        studio: Studio | Catalog = Catalog(settings)
    else:
        from .services import Studio

        studio = Studio(settings)
    try:
        if action == "list":
            return _list(studio)
        card = studio.cards.get(model_id or "")
        if action == "info":
            return _info(studio, card)
        if action == "download":
            studio.downloads.start(resume=False)
            return _download(studio, card)
        if action == "remove":
            freed = studio.downloads.remove(card.id)
            print(f"removed {card.id} ({human_bytes(freed)} freed)")
            return 0
    finally:
        studio.close()
    raise StudioError(f"unknown action {action!r}")
