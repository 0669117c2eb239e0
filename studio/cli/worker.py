"""`studio worker`: run jobs without the UI, one worker per device, until Ctrl-C or SIGTERM.

With `--db postgresql://...` (and an outputs folder every host shares) this is how a second machine
joins a studio: its workers claim from the same line, write their files into the shared outputs
folder, and every UI on every host shows them (docs/several_machines.md). With the SQLite default it
runs the queue of this machine's data folder, when no `studio serve` does already.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from ..errors import InvalidInput
from ..settings import Settings

STOP_GRACE_S = 8.0  # as `serve`: a running job gets this long to finish on SIGTERM, then it is interrupted


def run(settings: Settings) -> int:
    from ..services import Studio

    studio = Studio(settings)
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        studio.start(run_jobs=True)
        if not studio.owner:
            raise InvalidInput(f"another studio process already runs the queue of {settings.home} (SQLite: one "
                               "process per data folder). To run workers on several processes or machines, "
                               "give them all --db postgresql://... (docs/several_machines.md)")
        where = settings.database.split("@")[-1] if settings.database else str(settings.db_path)
        print(f"studio worker: {len(studio.devices)} worker(s) on {', '.join(studio.devices)}, queue {where}, "
              f"outputs {settings.outputs_dir}", flush=True)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        studio.close(job_grace_s=STOP_GRACE_S)
    print("studio worker: stopped", file=sys.stderr, flush=True)
    return 0
