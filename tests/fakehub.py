"""A small fake Hugging Face hub for tests: a real HTTP server on 127.0.0.1.

It answers the endpoints ``huggingface_hub`` (2.x, httpx2-based) uses for

* ``HfApi(endpoint=...).model_info(repo_id, revision=..., files_metadata=True)``
  (``GET /api/models/{repo_id}[/revision/{revision}]?blobs=True``),
* ``HfApi.list_repo_tree`` (``GET /api/models/{repo_id}/tree/{revision}[/{path}]``, so ``snapshot_download`` works),
* file downloads: ``GET``/``HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}`` (what ``hf_hub_url`` builds),
  with ``Range`` support, as used by ``hf_hub_download``, ``get_hf_file_metadata`` and ``file_download.http_get``.

Files are served directly (no CDN redirect) and no ``X-Xet-*`` header is ever sent, so the client always uses
plain HTTP downloads. Faults (dropped connections, corrupted bytes, throttling, an unreachable hub) can be
injected, and every request is recorded for assertions.

Usage::

    with FakeHub() as hub:
        commit = hub.add_repo("acme/tiny", {"config.json": b"{}", "model.safetensors": weights})
        HfApi(endpoint=hub.endpoint).model_info("acme/tiny", files_metadata=True)

Note: the test suite sets ``HF_HUB_OFFLINE=1``; huggingface_hub reads it once at import time, so a test talking
to a FakeHub must switch it off, e.g. with :func:`hub_online` (``monkeypatch.setattr(constants, "HF_HUB_OFFLINE",
False)``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["FakeHub", "RequestLog", "hub_online"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")
LAST_MODIFIED = "2024-01-01T00:00:00.000Z"
_MAX_CHUNK = 64 * 1024


@contextlib.contextmanager
def hub_online() -> Iterator[None]:
    """Temporarily lift huggingface_hub's offline mode (the suite's conftest sets ``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


@dataclass
class RequestLog:
    method: str
    path: str  # request target as received (path + query string)
    range_header: str | None
    status: int  # 0: the connection was closed without any response (offline)
    body_bytes_sent: int
    repo_id: str | None = None  # set for /resolve/ (file) requests and API requests naming a repo
    filename: str | None = None  # set for /resolve/ requests


@dataclass
class _File:
    path: str
    content: bytes
    lfs: bool
    sha256: str
    blob_id: str  # git blob sha1: of the content (regular file) or of the LFS pointer file (LFS)
    pointer_size: int | None

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class _Repo:
    repo_id: str
    files: dict[str, _File]
    commit: str
    gated: bool
    token: str | None


@dataclass
class _Fault:
    kind: str  # "drop" | "corrupt"
    nbytes: int = 0


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _read_folder(folder: Path) -> dict[str, bytes]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeHub:
    """A fake Hugging Face hub served over real HTTP on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.endpoint: str = ""
        self.requests: list[RequestLog] = []
        self._lock = threading.Lock()
        self._repos: dict[str, _Repo] = {}
        self._faults: dict[tuple[str, str], deque[_Fault]] = {}
        self._slow: dict[tuple[str, str], int] = {}
        self._offline = False
        self._port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeHub":
        if self._server is not None or (self._offline and self._port and not self._stopping.is_set()):
            return self
        self._stopping.clear()
        self._serve(self._port)
        self.endpoint = f"http://127.0.0.1:{self._port}"
        if self._offline:  # set_offline(True) before start(): keep the port, refuse connections
            self._close_listener()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        self._drop_connections()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, port: int) -> None:
        server = _Server(("127.0.0.1", port), _Handler)
        server.hub = self
        self._port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"fakehub-{self._port}", daemon=True)
        thread.start()
        self._server, self._thread = server, thread

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ content
    def add_repo(self, repo_id: str, files: dict[str, bytes] | Path, *, gated: bool = False,
                 token: str | None = None, lfs_min_size: int = 1024) -> str:
        """Create (or replace) a model repo; returns its commit sha (deterministic from the files)."""
        mapping = _read_folder(files) if isinstance(files, (str, Path)) else dict(files)
        entries: dict[str, _File] = {}
        for path in sorted(mapping):
            content = bytes(mapping[path])
            path = path.replace("\\", "/").lstrip("/")
            sha256 = hashlib.sha256(content).hexdigest()
            is_lfs = len(content) >= lfs_min_size or path.endswith(LFS_SUFFIXES)
            if is_lfs:
                pointer = _lfs_pointer(sha256, len(content))
                entries[path] = _File(path, content, True, sha256, _git_blob_sha1(pointer), len(pointer))
            else:
                entries[path] = _File(path, content, False, sha256, _git_blob_sha1(content), None)
        tree = hashlib.sha1(b"fakehub-commit\0")
        for path, f in entries.items():
            tree.update(b"%s\0%s\0%s\n" % (path.encode(), f.blob_id.encode(), f.sha256.encode()))
        commit = tree.hexdigest()
        with self._lock:
            self._repos[repo_id] = _Repo(repo_id, entries, commit, gated, token)
        return commit

    # ------------------------------------------------------------------ fault injection
    def drop_after(self, repo_id: str, filename: str, nbytes: int, times: int = 1) -> None:
        """The next `times` GETs of the file send at most `nbytes` of body, then the connection is cut."""
        with self._lock:
            q = self._faults.setdefault((repo_id, filename), deque())
            q.extend(_Fault("drop", max(0, int(nbytes))) for _ in range(times))

    def corrupt(self, repo_id: str, filename: str, times: int = 1) -> None:
        """The next `times` GETs of the file serve the right length with the first 16 bytes xor-ed with 0xFF."""
        with self._lock:
            q = self._faults.setdefault((repo_id, filename), deque())
            q.extend(_Fault("corrupt") for _ in range(times))

    def slow(self, repo_id: str, filename: str, bytes_per_second: int) -> None:
        """Throttle that file's body to about `bytes_per_second` (0 or less removes the throttle)."""
        with self._lock:
            if bytes_per_second and bytes_per_second > 0:
                self._slow[(repo_id, filename)] = int(bytes_per_second)
            else:
                self._slow.pop((repo_id, filename), None)

    def set_offline(self, offline: bool) -> None:
        """Make the hub unreachable (True) or reachable again (False).

        While offline, open connections are cut, any request still arriving on one is answered by closing the
        socket without a response, and new connections are refused (the listening socket is closed) - so clients
        see a connection error (httpx2.ConnectError) at once. Going back online re-binds the same port.
        """
        offline = bool(offline)
        with self._lock:
            if offline == self._offline:
                return
            self._offline = offline
        if self._port == 0 or self._stopping.is_set():
            return  # not started (or stopped): start() honours the flag
        if offline:
            self._close_listener()
            self._drop_connections()
        else:
            self._serve(self._port)

    # ------------------------------------------------------------------ observability
    def bytes_served(self, repo_id: str, filename: str) -> int:
        """File-content bytes sent by GETs of that file (200/206 answers; error bodies are not counted)."""
        return sum(r.body_bytes_sent for r in self.gets(repo_id, filename) if r.status in (200, 206))

    def gets(self, repo_id: str, filename: str) -> list[RequestLog]:
        with self._lock:
            return [r for r in self.requests
                    if r.method == "GET" and r.repo_id == repo_id and r.filename == filename]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------------ internals used by the handler
    def _log(self, entry: RequestLog) -> RequestLog:
        with self._lock:
            self.requests.append(entry)
        return entry

    def _take_fault(self, repo_id: str, filename: str) -> _Fault | None:
        with self._lock:
            q = self._faults.get((repo_id, filename))
            return q.popleft() if q else None

    def _repo(self, repo_id: str) -> _Repo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def _split_repo(self, segments: list[str]) -> tuple[str, list[str]]:
        """Split URL segments into (repo_id, rest), preferring a known 'owner/name' then a known 'name'."""
        with self._lock:
            known = set(self._repos)
        if len(segments) >= 2 and f"{segments[0]}/{segments[1]}" in known:
            return f"{segments[0]}/{segments[1]}", segments[2:]
        if segments and segments[0] in known:
            return segments[0], segments[1:]
        if len(segments) >= 2:
            return f"{segments[0]}/{segments[1]}", segments[2:]
        return (segments[0] if segments else ""), []


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    hub: FakeHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections end eventually
    server: _Server

    # --------------------------------------------------------------- plumbing
    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _cut(self) -> None:
        """Close the connection abruptly, whatever was (or was not) sent."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self) -> None:
        range_header = self.headers.get("Range")
        if self.hub._offline:
            self.hub._log(RequestLog(self.command, self.path, range_header, 0, 0))
            self._cut()
            return
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
        try:
            segments = [unquote(s) for s in urlsplit(self.path).path.split("/") if s]
            if len(segments) >= 2 and segments[0] == "api" and segments[1] == "models":
                self._api_models(segments[2:], range_header)
            elif "resolve" in segments[1:3]:
                self._resolve(urlsplit(self.path).path, range_header)
            else:
                self._error(404, None, "Not Found", RequestLog(self.command, self.path, range_header, 404, 0))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            self.close_connection = True

    # --------------------------------------------------------------- responses
    def _send_headers(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _error(self, status: int, code: str | None, message: str, entry: RequestLog,
               extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(body)),
                   "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        headers.update(extra or {})
        entry.status = status
        self.hub._log(entry)
        self._send_headers(status, headers)
        if self.command != "HEAD":
            entry.body_bytes_sent = len(body)
            self.wfile.write(body)

    def _json(self, payload, entry: RequestLog) -> None:
        body = json.dumps(payload).encode()
        entry.status = 200
        self.hub._log(entry)
        self._send_headers(200, {"Content-Type": "application/json; charset=utf-8",
                                 "Content-Length": str(len(body))})
        if self.command != "HEAD":
            entry.body_bytes_sent = len(body)
            self.wfile.write(body)

    def _auth_error(self, repo: _Repo, entry: RequestLog) -> bool:
        """Answer 401/403 GatedRepo (and return True) when the request may not see this gated repo."""
        if not repo.gated:
            return False
        auth = self.headers.get("Authorization") or ""
        scheme, _, given = auth.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            self._error(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have access to "
                        "it and be authenticated to access it. Please log in.", entry)
            return True
        if repo.token is not None and given != repo.token:
            self._error(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are not in the "
                        "authorized list. Visit the repo page to ask for access.", entry)
            return True
        return False

    def _resolve_revision(self, repo: _Repo, revision: str, entry: RequestLog) -> bool:
        if revision in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", entry)
        return False

    # --------------------------------------------------------------- /api/models/...
    def _api_models(self, segments: list[str], range_header: str | None) -> None:
        repo_id, rest = self.hub._split_repo(segments)
        entry = RequestLog(self.command, self.path, range_header, 0, 0, repo_id=repo_id or None)
        repo = self.hub._repo(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", entry)
            return
        if self._auth_error(repo, entry):
            return
        query = parse_qs(urlsplit(self.path).query)
        flag = lambda name: (query.get(name, ["false"])[-1]).lower() in ("1", "true")  # noqa: E731
        if not rest or (rest[0] == "revision" and len(rest) >= 2):
            revision = "/".join(rest[1:]) if rest else "main"
            if self._resolve_revision(repo, revision, entry):
                self._json(self._model_info(repo, blobs=flag("blobs")), entry)
        elif rest[0] == "tree" and len(rest) >= 2:
            revision, path_in_repo = rest[1], "/".join(rest[2:])
            if self._resolve_revision(repo, revision, entry):
                listing = self._tree(repo, path_in_repo, recursive=flag("recursive"))
                if listing is None:
                    self._error(404, "EntryNotFound", f"{path_in_repo} does not exist on \"{revision}\"", entry,
                                {"X-Repo-Commit": repo.commit})
                else:
                    self._json(listing, entry)
        else:
            self._error(404, None, "Not Found", entry)

    def _model_info(self, repo: _Repo, *, blobs: bool) -> dict:
        siblings = []
        for f in repo.files.values():
            sibling: dict = {"rfilename": f.path}
            if blobs:
                sibling.update(blobId=f.blob_id, size=f.size)
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": repo.commit,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "disabled": False,
            "gated": "auto" if repo.gated else False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": None,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in repo.files.values()),
        }

    def _tree(self, repo: _Repo, path_in_repo: str, *, recursive: bool) -> list[dict] | None:
        prefix = path_in_repo.strip("/")
        if prefix and prefix in repo.files:
            return None  # a file, not a folder
        base = f"{prefix}/" if prefix else ""
        files = [f for p, f in repo.files.items() if p.startswith(base)]
        if prefix and not files:
            return None
        dirs: set[str] = set()
        out: list[dict] = []
        for f in files:
            relative = f.path[len(base):]
            parts = relative.split("/")
            for depth in range(1, len(parts)):
                if depth == 1 or recursive:
                    dirs.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                item = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.lfs:
                    item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                out.append(item)
        folders = [{"type": "directory", "oid": hashlib.sha1(f"{repo.commit}:{d}".encode()).hexdigest(),
                    "size": 0, "path": d} for d in sorted(dirs)]
        return folders + out

    # --------------------------------------------------------------- /{repo_id}/resolve/{revision}/{filename}
    def _resolve(self, raw_path: str, range_header: str | None) -> None:
        raw = [s for s in raw_path.split("/") if s]
        idx = raw.index("resolve", 1)
        repo_id = "/".join(unquote(s) for s in raw[:idx])
        revision = unquote(raw[idx + 1]) if len(raw) > idx + 1 else ""
        filename = "/".join(unquote(s) for s in raw[idx + 2:])
        entry = RequestLog(self.command, self.path, range_header, 0, 0, repo_id=repo_id, filename=filename)
        repo = self.hub._repo(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", entry)
            return
        if self._auth_error(repo, entry) or not self._resolve_revision(repo, revision, entry):
            return
        f = repo.files.get(filename)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", entry, {"X-Repo-Commit": repo.commit})
            return

        size = f.size
        start, end = 0, size - 1
        status = 200
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{f.etag}"',
            "X-Repo-Commit": repo.commit,
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename.rsplit('/', 1)[-1])}; "
                                   f"filename=\"{filename.rsplit('/', 1)[-1]}\";",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(size)
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed == "unsatisfiable":
                self._error(416, None, "Requested Range Not Satisfiable", entry,
                            {"Content-Range": f"bytes */{size}", "X-Repo-Commit": repo.commit})
                return
            if parsed is not None:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = f.content[start:end + 1]
        headers["Content-Length"] = str(len(body))

        fault = self.hub._take_fault(repo_id, filename) if self.command == "GET" else None
        with self.hub._lock:
            rate = self.hub._slow.get((repo_id, filename)) if self.command == "GET" else None
        if fault is not None and fault.kind == "corrupt" and body:
            n = min(16, len(body))
            body = bytes(b ^ 0xFF for b in body[:n]) + body[n:]

        entry.status = status
        self.hub._log(entry)
        self._send_headers(status, headers)
        if self.command == "HEAD":
            return
        limit = len(body) if fault is None or fault.kind != "drop" else min(fault.nbytes, len(body))
        self._send_body(body[:limit], entry, rate)
        if limit < len(body) or (fault is not None and fault.kind == "drop"):
            self._cut()

    def _send_body(self, body: bytes, entry: RequestLog, rate: int | None) -> None:
        chunk = _MAX_CHUNK if not rate else max(1, min(_MAX_CHUNK, rate // 20))
        view = memoryview(body)
        for offset in range(0, len(body), chunk):
            piece = view[offset:offset + chunk]
            # count before sending so a client that already holds the bytes never sees a stale counter
            entry.body_bytes_sent += len(piece)
            try:
                self.wfile.write(piece)
            except OSError:
                entry.body_bytes_sent -= len(piece)
                raise
            if rate and self.hub._stopping.wait(len(piece) / rate):
                self._cut()
                return


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """Parse a single-range ``bytes=`` header; None means 'ignore it' (serve the full body)."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":  # suffix range: the last N bytes
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return start, min(end, size - 1)
