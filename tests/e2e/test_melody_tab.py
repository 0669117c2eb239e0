"""The Music tab's melody upload, in a real browser: hidden for a model that takes none, shown for a
MusicGen Melody model, and the uploaded clip reaches the job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from playwright.sync_api import expect

from ui_helpers import artifact, choose, set_number, text_box


def test_a_melody_clip_is_uploaded_for_a_melody_model_only(page, served, tmp_path):
    studio, _ = served
    clip = tmp_path / "hum.wav"
    t = np.arange(32000) / 32000
    sf.write(str(clip), (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 32000)

    page.get_by_role("tab", name="Music", exact=True).click()
    expect(page.locator("#music-prompt")).to_be_visible()
    expect(page.locator("#music-melody")).to_be_hidden()  # Tiny MusicGen, the default, takes no melody
    choose(page, "music-model", "melody", "Tiny MusicGen, melody")
    upload = page.locator("#music-melody")
    expect(upload).to_be_visible()
    upload.locator("input[type=file]").set_input_files(str(clip))
    expect(upload.locator("a.download-link, audio, [data-testid=waveform-controls]").first).to_be_attached(
        timeout=30_000)
    text_box(page, "music-prompt").fill("a lullaby")
    set_number(page, "music-seconds", 1)
    page.click("#music-generate")
    expect(page.locator("#music-status")).to_contain_text("Done", timeout=180_000)
    job = studio.history.list_jobs(limit=1)[0]
    assert job.model_id == "tiny-musicgen-melody" and job.status.value == "done"
    assert Path(job.params["melody"]).name == "hum.wav"
    page.screenshot(path=str(artifact("tab-music-melody")), full_page=True)

    choose(page, "music-model", "Tiny MusicGen —", "Tiny MusicGen — test model")
    expect(page.locator("#music-melody")).to_be_hidden()
