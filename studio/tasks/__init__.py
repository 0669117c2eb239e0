"""The tasks the studio runs, one module per modality, looked up by name."""

from __future__ import annotations

from ..errors import InvalidInput
from .base import Task, TaskSpec
from .anagram import AnagramTask
from .audio import AudioTask
from .compose import ComposeTask
from .image import ImageTask
from .music import MusicTask
from .upscale import UpscaleTask
from .video import VideoTask

TASKS: dict[str, Task] = {task.name: task for task in (ImageTask(), ComposeTask(), AnagramTask(), VideoTask(),
                                                       AudioTask(), MusicTask(), UpscaleTask())}

# Tabs that exist in the UI but whose tasks land in later releases.
PLANNED_TASKS: tuple[str, ...] = ()


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        if name in PLANNED_TASKS:
            raise InvalidInput(f"{name} generation is not available yet in this version of the studio") from None
        raise InvalidInput(f"Unknown task {name!r}; available: {', '.join(TASKS)}") from None


__all__ = ["TASKS", "Task", "TaskSpec", "get_task"]
