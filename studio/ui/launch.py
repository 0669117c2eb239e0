"""Starts the web UI: the services, the Blocks app, and a launch that is never open to strangers.

On the loopback address the studio runs without a password, like every local tool. On any other
address it requires one: `--auth USER:PASSWORD`, or else a random password is made and printed once.
"""

from __future__ import annotations

import ipaddress
import os
import secrets

from ..errors import InvalidInput
from ..settings import REPO_ROOT, Settings

AUTH_USER = "studio"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise InvalidInput("--auth must look like USER:PASSWORD")
    return user, password


def resolve_auth(host: str, auth: str | None) -> tuple[tuple[str, str] | None, bool]:
    """(credentials or None, whether they were generated here)."""
    if auth:
        return parse_auth(auth), False
    if is_loopback(host):
        return None, False
    return (AUTH_USER, secrets.token_urlsafe(12)), True


def serve(settings: Settings, auth: str | None = None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ..services import Studio
    from .app import build_app

    credentials, generated = resolve_auth(settings.host, auth)
    studio = Studio(settings).start()
    demo = build_app(studio)
    if generated:
        print(f"Listening on {settings.host}: log in as {credentials[0]} / {credentials[1]} (shown only now).")
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=settings.host,
            server_port=settings.port,
            auth=credentials,
            allowed_paths=[str(settings.outputs_dir)],  # the only folder of ours that is served
            favicon_path=str(REPO_ROOT / "static" / "favicon.svg") if (REPO_ROOT / "static" / "favicon.svg").exists() else None,
            show_error=True,
        )
    finally:
        studio.close()
