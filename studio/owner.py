"""Which studio process runs the job queue: the one holding an exclusive lock on `<home>/studio.lock`.

Several processes may open the same data folder at once — `studio serve`, and `studio generate` or
`studio history rerun` in a terminal beside it. Only the owner recovers after a crash (marks jobs
left running as interrupted, removes partly written files) and runs jobs; the others only submit
jobs and follow them through the database, so the GPU has one worker and nobody's job is taken
over. The operating system drops the lock when the owner exits, however it exits.

The lock file's text says who holds it: the owner's process id, and the loopback port where its
worker hears wake-up signals (studio/wakeup.py), which the others read to signal a new job.
"""

from __future__ import annotations

import contextlib
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

    @property
    def exclusive(self) -> bool:
        """Whether other processes can tell that this one owns the queue (False where there are no locks)."""
        return self._fd is not None

    def announce(self, port: int) -> None:
        """Record, beside the owner's pid, the port its worker hears wake-up signals on."""
        if self._fd is None:
            return
        # One write at offset 0 of the whole text, so a reader sees the old text or the new one.
        text = f"{os.getpid()}\nport {int(port)}\n".encode()
        os.pwrite(self._fd, text, 0)
        os.ftruncate(self._fd, len(text))

    def owner_port(self) -> int | None:
        """The port the queue's owner (another process) hears wake-up signals on; None if it names none."""
        if fcntl is None:
            return None
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                text = f.read(128)
        except OSError:
            return None
        for line in text.splitlines():
            word, _, value = line.partition(" ")
            if word == "port" and value.isdigit() and 0 < int(value) < 65536:
                return int(value)
        return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # no port left for others to signal once nobody listens
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
