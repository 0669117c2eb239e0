"""The job history: every job the studio ran, its parameters, status and output files.

SQLite (WAL mode) through the SQLAlchemy 2 ORM; the schema is created and upgraded by Alembic
migrations that run whenever a `HistoryStore` is opened. The rest of the app talks to
`HistoryStore` only and gets frozen `JobRecord` / `AssetRecord` values back.
"""

from .search import JobFilter, JobStatus
from .store import AssetRecord, HistoryStore, JobPage, JobRecord

__all__ = ["AssetRecord", "HistoryStore", "JobFilter", "JobPage", "JobRecord", "JobStatus"]
