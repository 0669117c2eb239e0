"""Starts the web UI: the services, the Blocks app, and a launch that is never open to strangers.

On the loopback address the studio runs without a password, like every local tool. Listening on any
other address, or with a public share link, it always requires one: `--auth USER:PASSWORD`,
`--auth-file FILE` (one USER:PASSWORD per line), or else a random password is made and printed once.
Only the outputs folder (and static/) is served, and uploads are capped in size.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware

from ..errors import InvalidInput
from ..settings import Settings
from .appearance import STATIC_DIR, launch_appearance
from .body_limit import BodyLimitMiddleware
from .login_limit import LoginLimitMiddleware

AUTH_USER = "studio"
STOP_GRACE_S = 8.0  # how long a stop waits for the running job before marking it interrupted
MAX_THREADS = 160  # Gradio's worker threads: room for ui.common.WAITING_CLIENTS waiting jobs and everything else

Credentials = list[tuple[str, str]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(text: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise InvalidInput("--auth must look like USER:PASSWORD")
    return user, password


def read_auth_file(path: str | Path) -> Credentials:
    """USER:PASSWORD lines (blank lines and # comments skipped); at least one is required."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InvalidInput(f"cannot read the auth file {path}: {err.strerror or err}") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise InvalidInput(f"the auth file {path} has no USER:PASSWORD line")
    try:
        return [parse_auth(entry) for entry in entries]
    except InvalidInput:
        raise InvalidInput(f"every line of the auth file {path} must look like USER:PASSWORD") from None


def resolve_auth(host: str, auth: str | None, auth_file: str | Path | None = None,
                 share: bool = False) -> tuple[Credentials | None, bool]:
    """(credentials or None, whether they were generated here). Only a loopback launch without a share
    link may run without credentials."""
    credentials: Credentials = []
    if auth:
        credentials.append(parse_auth(auth))
    if auth_file:
        credentials.extend(read_auth_file(auth_file))
    if credentials:
        return credentials, False
    if is_loopback(host) and not share:
        return None, False
    return [(AUTH_USER, secrets.token_urlsafe(12))], True


def launch_options(settings: Settings, credentials: Credentials | None, share: bool = False,
                   mcp: bool = False) -> dict[str, Any]:
    """What `Blocks.launch` gets: where to listen, who may log in, what may be served and uploaded."""
    if (share or not is_loopback(settings.host)) and not credentials:
        raise InvalidInput("refusing to listen beyond this machine without a login")  # resolve_auth never allows it
    served = [str(settings.outputs_dir)] + ([str(STATIC_DIR)] if STATIC_DIR.is_dir() else [])
    favicon = STATIC_DIR / "favicon.svg"
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "auth": credentials,
        "share": share,
        "allowed_paths": served,  # the only folders of ours that are served
        "max_file_size": f"{settings.max_upload_mb}mb",
        "mcp_server": mcp,
        "favicon_path": str(favicon) if favicon.exists() else None,
        "show_error": True,
        "max_threads": MAX_THREADS,
        # Wrong passwords slow down per client address (and are logged); oversized calls are refused unread.
        "app_kwargs": {"middleware": [Middleware(LoginLimitMiddleware), Middleware(BodyLimitMiddleware)]},
        **launch_appearance(),
    }


def serve(settings: Settings, auth: str | None = None, auth_file: str | None = None, share: bool = False,
          mcp: bool = False) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ..services import Studio
    from .app import build_app

    if mcp:
        try:
            import mcp as _mcp  # noqa: F401  (Gradio's MCP server is an optional extra)
        except ImportError:
            raise InvalidInput("--mcp needs Gradio's MCP extra: .venv/bin/pip install 'gradio[mcp]'") from None
    credentials, generated = resolve_auth(settings.host, auth, auth_file, share)
    options = launch_options(settings, credentials, share, mcp)
    studio = Studio(settings)
    demo = build_app(studio)
    # A stop from systemd or docker (SIGTERM) is a Ctrl-C: the server closes, then the studio.
    if generated:
        where = "through the share link" if share else f"on {settings.host}"
        user, password = credentials[0]
        print(f"Open {where}: log in as {user} / {password} (shown only now).", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # The server first: a server that cannot start (a port in use, a failed self-check) must not
        # have claimed a job it then leaves `running`. Only once it is up does the worker start.
        demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, **options)
        studio.start()
        demo.block_thread()
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.close()
        # The running job gets a few seconds to finish (docker's stop grace is 10 s); past that it is
        # marked interrupted, as after a crash, so a Re-run picks it up.
        studio.close(job_grace_s=STOP_GRACE_S)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
