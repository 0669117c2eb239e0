"""Records of the models the studio downloaded: status, revision, where, how big, when last used.

The model files themselves live in the Hugging Face cache; these rows are what the Models tab and
`studio models list` show, and they survive restarts (a download interrupted by a crash shows up
as such and resumes from its partial files).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from .db import retry_when_locked, writer
from .tables import InstalledModel, utcnow


class InstallStatus(str, enum.Enum):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class InstallRecord:
    card_id: str
    repo_id: str
    revision: str
    commit: str | None
    local_path: str | None
    bytes: int
    status: InstallStatus
    error: str | None
    installed_at: datetime | None
    last_used_at: datetime | None


def _record(row: InstalledModel) -> InstallRecord:
    return InstallRecord(row.card_id, row.repo_id, row.revision, row.commit, row.local_path, row.bytes,
                         InstallStatus(row.status), row.error, row.installed_at, row.last_used_at)


class InstalledModels:
    """Reads and writes `installed_models` rows; each call is its own short transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    @retry_when_locked
    def upsert(self, card_id: str, **fields: Any) -> InstallRecord:
        """Create or update the row of `card_id` with `fields` (status given as InstallStatus)."""
        if isinstance(fields.get("status"), InstallStatus):
            fields["status"] = fields["status"].value
        with Session(self._writer, expire_on_commit=False) as s, s.begin():
            row = s.get(InstalledModel, card_id)
            if row is None:
                row = InstalledModel(card_id=card_id, bytes=0)
                s.add(row)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            s.flush()
            return _record(row)

    @retry_when_locked
    def touch(self, card_id: str) -> None:
        """The model was just used by a job (for the Models tab's "last used")."""
        with Session(self._writer) as s, s.begin():
            row = s.get(InstalledModel, card_id)
            if row is not None:
                row.last_used_at = utcnow()

    def get(self, card_id: str) -> InstallRecord | None:
        with Session(self._engine) as s:
            row = s.get(InstalledModel, card_id)
            return _record(row) if row else None

    def all(self) -> dict[str, InstallRecord]:
        with Session(self._engine) as s:
            return {row.card_id: _record(row) for row in s.scalars(select(InstalledModel))}

    @retry_when_locked
    def delete(self, card_id: str) -> None:
        with Session(self._writer) as s, s.begin():
            row = s.get(InstalledModel, card_id)
            if row is not None:
                s.delete(row)
