"""A wake-up signal between studio processes on one machine: a loopback UDP datagram.

The queue's owner (studio/owner.py) listens on 127.0.0.1 at an ephemeral port that it writes into
its lock file; a process that only submits sends one datagram there after committing a job, and
the owner's worker looks at the jobs table at once instead of at its next poll. What arrives is
never read as data: any datagram (of any content, from any local process) only means "look at the
table now", so the worst a stranger can do is make the worker look at it again (at most once every
10 ms, however many datagrams arrive). The poll stays,
at a long interval, for a signal that is lost. Where the lock does not exist (Windows: no fcntl)
nothing listens and nothing is sent.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_MAX_DATAGRAM = 64  # a bigger one is not ours: ignored
_MIN_GAP_S = 0.01
_WAKE = b"studio: look at the jobs table"


class WakeListener:
    """A thread that calls `wake()` for each datagram that reaches its loopback port."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((HOST, 0))
        self.port: int = self._socket.getsockname()[1]
        self._closing = False
        self._thread = threading.Thread(target=self._listen, name="studio-wakeup", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                size = len(self._socket.recv(_MAX_DATAGRAM + 1))  # a longer one arrives cut to this
            except OSError:
                if self._closing:
                    return
                continue  # e.g. an oversize datagram on Windows, an ICMP error: keep listening
            if self._closing:
                return
            if size > _MAX_DATAGRAM:
                continue
            try:
                self._wake()
            except Exception:  # a wake-up that failed must not stop the next one
                log.exception("wake-up listener: waking the worker failed")
            # At most one look at the table per _MIN_GAP_S, however many datagrams come (each look is a
            # write transaction): a flood from another local process only costs this thread a few reads.
            time.sleep(_MIN_GAP_S)
            self._drain()
            if self._closing:  # close's own datagram may have been drained
                return

    def _drain(self) -> None:
        """Drop the datagrams that arrived meanwhile; the next one to arrive wakes the worker again."""
        self._socket.setblocking(False)
        try:
            while True:
                self._socket.recv(_MAX_DATAGRAM + 1)
        except OSError:  # nothing left (BlockingIOError), or closing
            pass
        finally:
            with contextlib.suppress(OSError):
                self._socket.setblocking(True)

    def close(self) -> None:
        """Stop listening (a datagram to itself unblocks the thread), then free the port."""
        if self._closing:
            return
        self._closing = True
        signal(self.port)
        self._thread.join(5)
        self._socket.close()


def signal(port: int | None) -> None:
    """Send one wake-up datagram to a local listener; nothing happens when there is none."""
    if not port:
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(_WAKE, (HOST, port))
