"""The frozen records the history hands out (a job, its output files, a gallery page), and how they
are made from ORM objects (the store's writes) or from plain result rows (the gallery's reads, which
skip the ORM: building 48 ORM jobs and their assets cost more than the search that found them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from .search import JobFilter, JobStatus
from .tables import Asset, Job


@dataclass(frozen=True)
class AssetRecord:
    """One output file of a job; `path` is POSIX and relative to the outputs dir."""

    id: int
    job_id: str
    index: int
    kind: str
    path: str
    mime: str
    width: int | None
    height: int | None
    duration_s: float | None
    bytes: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class JobRecord:
    """A job as the history holds it, with its assets in output order. Timestamps are UTC."""

    id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status: JobStatus
    task: str
    model_id: str
    prompt: str
    negative_prompt: str
    params: dict[str, Any]
    seed: int | None
    error: str | None
    duration_s: float | None
    assets: tuple[AssetRecord, ...]
    placement: str | None = None
    favorite: bool = False
    worker: str | None = None  # the worker that ran it (host:pid:device)
    device: str | None = None  # the device (or device group) it ran on
    attempts: int = 0  # how many times a worker claimed it (2 after a lost worker's job was re-queued)


@dataclass(frozen=True)
class JobPage:
    """One page of a filtered history, newest first, and how many jobs the filter matches in all."""

    jobs: list[JobRecord]
    total: int
    offset: int
    limit: int
    filters: JobFilter = field(default_factory=JobFilter)


def asset_record(a: Asset) -> AssetRecord:
    """An asset from its ORM object."""
    return AssetRecord(
        id=a.id,
        job_id=a.job_id,
        index=a.index,
        kind=a.kind,
        path=a.path,
        mime=a.mime,
        width=a.width,
        height=a.height,
        duration_s=a.duration_s,
        bytes=a.bytes,
        sha256=a.sha256,
        created_at=a.created_at,
    )


def job_record(j: Job) -> JobRecord:
    """A job from its ORM object, with its (loaded) assets in output order."""
    return JobRecord(
        id=j.id,
        created_at=j.created_at,
        started_at=j.started_at,
        finished_at=j.finished_at,
        status=JobStatus(j.status),
        task=j.task,
        model_id=j.model_id,
        prompt=j.prompt,
        negative_prompt=j.negative_prompt,
        params=dict(j.params or {}),
        seed=j.seed,
        error=j.error,
        duration_s=j.duration_s,
        assets=tuple(asset_record(a) for a in sorted(j.assets, key=lambda a: a.index)),
        placement=j.placement,
        favorite=bool(j.favorite),
        worker=j.worker,
        device=j.device,
        attempts=int(j.attempts or 0),
    )


_ASSET_FIELDS = tuple(f.name for f in fields(AssetRecord))


def asset_from_row(row: Mapping[str, Any]) -> AssetRecord:
    """An asset from a row of the assets table (every AssetRecord field is one of its columns)."""
    return AssetRecord(**{name: row[name] for name in _ASSET_FIELDS})


def job_from_row(row: Mapping[str, Any], assets: tuple[AssetRecord, ...]) -> JobRecord:
    """A job from a row of the jobs table, with its assets (in output order)."""
    return JobRecord(
        id=row["id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=JobStatus(row["status"]),
        task=row["task"],
        model_id=row["model_id"],
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        params=dict(row["params"] or {}),
        seed=row["seed"],
        error=row["error"],
        duration_s=row["duration_s"],
        assets=assets,
        placement=row["placement"],
        favorite=bool(row["favorite"]),
        worker=row["worker"],
        device=row["device"],
        attempts=int(row.get("attempts") or 0),
    )
