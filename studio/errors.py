"""Errors a user can cause.

Every error that a person can fix by changing their input or set-up is a `StudioError`: its message
says what to change. The job runner records it as the job's failure reason and keeps going; anything
else is a bug and is logged with its traceback (but still never kills the worker).
"""

from __future__ import annotations


class StudioError(Exception):
    """A problem the user can fix; `str(err)` is shown to them as is."""


class InvalidInput(StudioError):
    """A parameter of a job is out of range or malformed."""


class UnknownModel(StudioError):
    """A model id that no card declares."""


class ModelNotAvailable(StudioError):
    """The model is known but cannot be loaded here (not downloaded, not runnable yet)."""


class MediaError(StudioError):
    """An output could not be written or an input file could not be read."""


def internal_reason(err: BaseException) -> str:
    """What a user reads when something that is not their input failed: what happened in words, and
    what they can do, never the internals (SQL statements, attribute errors); the log has those."""
    original = getattr(err, "orig", None) or err  # SQLAlchemy wraps the driver's error
    text = str(original).splitlines()[0] if str(original) else ""
    lowered = text.lower()
    if isinstance(original, OSError) and getattr(original, "errno", None) == 28 or "disk is full" in lowered:
        return "The disk is full (outputs or the history database): free some space, then run the job again."
    if "database is locked" in lowered or "database is busy" in lowered:
        return ("The history database stayed locked by another program for over a minute: close it (a backup, "
                "an sqlite3 shell), then run the job again.")
    if isinstance(original, MemoryError):
        return "The machine ran out of memory: try a smaller size or batch, or free memory in the Models tab."
    return (f"Internal error ({type(err).__name__}): the studio could not finish this job. It is a bug, not your "
            "input; the server log has the details.")
