"""The Models tab in a real browser: clicking a row picks its model (sorted too); a model's details
say what its download would fetch before Download is pressed (from a fake hub on 127.0.0.1), or, with
no hub to ask, that the size is unknown; the message area follows a download to its end: a failed
one says why and no "Downloading…" stays behind."""

from __future__ import annotations

import socket

import pytest
import yaml
from playwright.sync_api import expect

from studio.services import Studio
from studio.settings import Settings
from studio.ui.app import build_app
from studio.ui.launch import launch_options
from studio.ui.models_tab import table_rows

from fakehub import FakeHub, hub_online
from ui_helpers import artifact, choose

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_page(browser, model_cache, tmp_path):
    """A page on a second studio whose hub is a fake one on 127.0.0.1 holding one model of 3.0 MB."""
    with FakeHub() as hub, hub_online():
        hub.add_repo("test-org/sized", {"model_index.json": b"{}", WEIGHTS: b"w" * (3 * 2**20)})
        settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache, hf_endpoint=hub.endpoint,
                                 host="127.0.0.1", port=free_port())
        settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
        card = {"id": "sized", "title": "Sized model", "family": "diffusers", "tasks": ["image"],
                "source": {"repo": "test-org/sized"}, "pipeline": "LuminaPipeline", "memory_gb": 1, "license": "mit"}
        (settings.user_cards_dir / "sized.yaml").write_text(yaml.safe_dump(card))
        with Studio(settings) as studio:
            demo = build_app(studio)
            demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options(settings, None))
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            try:
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.set_default_timeout(30_000)
                page.goto(demo.local_url)
                yield page, hub
                assert not errors, f"the page raised JavaScript errors: {errors}"
            finally:
                context.close()
                demo.close()


def open_models(page) -> None:
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("#models-table")).to_be_visible()


def click_row(page, model_cell: str) -> None:
    page.locator("#models-table").get_by_text(model_cell, exact=True).filter(visible=True).first.click()


def expect_picked(page, model_cell: str) -> None:
    title, card_id = model_cell.split(" · ")[:2]
    expect(page.locator("#models-pick input")).to_have_value(f"{title} ({card_id})")
    expect(page.locator("#models-details")).to_contain_text(title)


def test_clicking_a_row_picks_its_model_also_once_sorted(page, served):
    studio, _ = served
    open_models(page)
    cells = [row[0] for row in table_rows(studio)]
    click_row(page, cells[2])  # a row in view, not the first: the click must pick that one
    expect_picked(page, cells[2])

    header = page.locator("#models-table [data-testid=header-0]").filter(visible=True).first
    header.hover()
    header.locator("button.cell-menu-button").click(force=True)  # the menu button shows on hover
    page.get_by_role("menuitem", name="Sort descending").click()
    first_cell = page.locator("#models-table [role=gridcell][data-col='0']").filter(visible=True).first
    expect(first_cell).not_to_have_text(cells[0])  # the rows are drawn in another order than the server's
    drawn = first_cell.inner_text()
    assert drawn != cells[2]
    first_cell.click()
    expect_picked(page, drawn)


def test_offline_the_details_say_the_download_size_is_unknown(page, served):
    open_models(page)
    choose(page, "models-pick", "Wan 2.1 T2V 1.3B", "(wan2.1-t2v-1.3b)")
    # No hub is reachable: the answer comes at once, no waiting on the network.
    expect(page.locator("#models-details")).to_contain_text("Download size: unknown", timeout=5_000)
    expect(page.locator("#models-details")).to_contain_text("Cannot reach the model hub")


def test_the_details_show_the_download_size_before_download(hub_page):
    page, hub = hub_page
    open_models(page)
    choose(page, "models-pick", "Sized model")
    expect(page.locator("#models-details")).to_contain_text("Download size: 3.0 MB · none of it is here yet")
    assert not [r for r in hub.requests if r.method == "GET" and r.filename]  # asked for sizes, fetched nothing
    page.screenshot(path=str(artifact("models-download-size")), full_page=True)


def test_a_failed_download_says_why_and_leaves_no_stale_downloading(page, served):
    open_models(page)
    choose(page, "models-pick", "Lumina-Next-SFT", "(lumina-next-sft)")
    page.click("#models-download")
    message = page.locator("#models-message")
    expect(message).to_contain_text("failed: Cannot reach the model hub", timeout=15_000)
    expect(message).not_to_contain_text("Downloading")
    page.screenshot(path=str(artifact("models-download-failed")), full_page=True)
