"""PostgreSQL LISTEN/NOTIFY between studio processes on any host: "a job was submitted", "the queue was
resumed", "cancel job X".

A message only wakes a worker to look at the tables (the rows are the truth): one lost while a listener
reconnects costs the fallback poll or the next heartbeat, never a job. SQLite has no such channel; there
the processes of one data folder use the loopback datagram of studio/wakeup.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

CHANNEL = "studio_queue"
_RECONNECT_S = 2.0


def notify(engine: Engine, message: str) -> None:
    """Send `message` to every listening studio process (delivered when this short transaction commits)."""
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:channel, :message)"), {"channel": CHANNEL, "message": message[:200]})
    except Exception:  # only a wake-up: the others find the change at their next poll or heartbeat
        log.exception("could not notify the other studio processes")


class Listener:
    """A thread on its own connection (outside the pool: it blocks waiting) that calls `on_message` with
    each message other processes send, reconnecting when the connection drops."""

    def __init__(self, engine: Engine, on_message: Callable[[str], None]) -> None:
        # psycopg's own DSN for the same database (the engine's URL names SQLAlchemy's driver).
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_message = on_message
        self._closed = threading.Event()
        self.connected = threading.Event()  # set while LISTEN is in effect (tests wait on it)
        self._thread = threading.Thread(target=self._run, name="studio-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        while not self._closed.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.5):
                            try:
                                self._on_message(note.payload)
                            except Exception:
                                log.exception("a studio message could not be handled")
            except Exception as err:
                self.connected.clear()
                if not self._closed.is_set():
                    log.warning("listening for other studio processes failed (%s); retrying", err)
                    self._closed.wait(_RECONNECT_S)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
