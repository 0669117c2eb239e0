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
