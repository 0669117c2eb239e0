"""Which studio process runs the job queue: the one holding an exclusive lock on `<home>/studio.lock`.

Several processes may open the same data folder at once — `studio serve`, and `studio generate` or
`studio history rerun` in a terminal beside it. Only the owner recovers after a crash (marks jobs
left running as interrupted, removes partly written files) and runs jobs; the others only submit
jobs and follow them through the database, so the GPU has one worker and nobody's job is taken
over. The operating system drops the lock when the owner exits, however it exits.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; every process acts as the owner
    fcntl = None  # type: ignore[assignment]


class QueueOwnership:
    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "studio.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; True when this process now owns the queue."""
        if self._fd is not None:
            return True
        if fcntl is None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for a person wondering who holds it
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
