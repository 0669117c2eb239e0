"""The studio's look in one place: the theme, the stylesheet and keyboard shortcut from static/, and
the header with the logo. Fonts are the system's: nothing is fetched from the internet."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..settings import REPO_ROOT

STATIC_DIR = REPO_ROOT / "static"
TITLE = "Studio"
TAGLINE = "Images, video, sound and music with Lumina and friends — all on this machine."

_SANS = ["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="violet", neutral_hue="slate",
                          radius_size="md", font=_SANS, font_mono=_MONO)


def launch_appearance() -> dict[str, Any]:
    """Blocks.launch options for the look (Gradio 6 takes theme, css and js at launch)."""
    return {"theme": theme(), "css_paths": [STATIC_DIR / "studio.css"],
            "js": (STATIC_DIR / "shortcuts.js").read_text(encoding="utf-8")}


def header_html() -> str:
    logo = (STATIC_DIR / "logo.svg").read_text(encoding="utf-8")
    return (f'<div id="studio-header">{logo}<div><h1>{TITLE}</h1><p>{TAGLINE} '
            f'<span class="kbd">Ctrl</span>+<span class="kbd">Enter</span> generates.</p></div></div>')
