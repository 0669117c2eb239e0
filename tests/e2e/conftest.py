"""Real-browser tests: the studio served on a free loopback port with the built-in tiny models, driven
by Playwright in Debian's Chromium (Playwright's own browser download can't run offline, so the
system one is launched; `make test` installs it). Screenshots go to test-artifacts/ for people to look at.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.services import Studio
from studio.settings import Settings
from studio.ui.app import build_app
from studio.ui.launch import launch_options

from helpers import write_listed_only_card
from ui_helpers import artifact

CHROMIUM = Path(os.environ.get("STUDIO_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[tuple[Studio, str]]:
    """A running studio (its own data folder) and the URL of its web UI."""
    settings = Settings.load(env={}, home=tmp_path_factory.mktemp("e2e-home"), model_cache=model_cache)
    write_listed_only_card(settings)  # a model the Image tab lists but cannot run
    with Studio(settings) as studio:
        demo = build_app(studio)
        # The same launch as `studio serve` (look, served folders, upload cap), on a free loopback port.
        options = launch_options(settings.replace(host="127.0.0.1", port=free_port()), None)
        demo.queue().launch(prevent_thread_lock=True, quiet=True, **options)
        try:
            yield studio, demo.local_url
        finally:
            demo.close()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: run `make test` (it installs Debian's "
                    "chromium package) or set STUDIO_CHROMIUM to a Chromium binary")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served, request):
    """A fresh page on the studio at 1280 px; a screenshot is saved after the test, pass or fail."""
    _, url = served
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#image-prompt")
    yield page
    page.screenshot(path=str(artifact(request.node.name)), full_page=True)
    context.close()
    assert not errors, f"the page raised JavaScript errors: {errors}"
