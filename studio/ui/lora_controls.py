"""The LoRA picker of the Image and Video tabs: a list of the LoRAs on this machine and a text box of the
job's picks (`name:weight, …`), shown only while the chosen model takes LoRAs.

Picking a name from the list adds `name:1` to the box, where its weight can be edited (-4 to 4); the
box is what the job gets (tasks/loras.py reads it), and a past job's or a dropped PNG's LoRAs are put
back in it as text. Where the names come from and how they are checked: zoo/loras.py.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..families import FAMILIES
from ..services import Studio
from ..tasks.loras import MAX_WEIGHT, as_text
from ..zoo.cards import ModelCard


class LoraControls:
    """The tab's LoRA widgets; `components` go into the tab's inputs, `outputs` follow the model."""

    def __init__(self, studio: Studio, spec_type: Any, card: ModelCard | None, tab: str) -> None:
        self._studio = studio
        self._spec_type = spec_type
        shown = self.takes(card)
        with gr.Row(visible=shown, equal_height=True) as self.row:
            self.picker = gr.Dropdown(self._choices(card), value=None, label="Add a LoRA", scale=1,
                                      elem_id=f"{tab}-lora-picker")
            self.text = gr.Textbox(label=f"LoRAs (name:weight, comma-separated; weight -{MAX_WEIGHT:g} to "
                                         f"{MAX_WEIGHT:g})", placeholder="none", scale=2, elem_id=f"{tab}-loras")
        shown_as_text = self.text.postprocess  # a job's list of picks shows as the text it is typed as

        def postprocess(value: Any) -> Any:
            return shown_as_text(value if value is None or isinstance(value, str) else as_text(value))

        self.text.postprocess = postprocess
        self.picker.input(self._add, [self.picker, self.text], [self.text, self.picker], api_visibility="private")
        self.components = [self.text]
        self.outputs = [self.row, self.picker]

    def takes(self, card: ModelCard | None) -> bool:
        return card is not None and card.runnable and "loras" in self._spec_type.takes(card)

    def _choices(self, card: ModelCard | None) -> list[str]:
        if not self.takes(card):
            return []
        family = FAMILIES.of(card)
        return self._studio.loras.names(family.name if family is not None else None)

    @staticmethod
    def _add(name: str | None, text: str | None) -> tuple[str, Any]:
        text = (text or "").strip()
        if not name or any(part.strip().rpartition(":")[0] == name for part in text.split(",")):
            return text, gr.update(value=None)
        return (f"{text}, {name}:1" if text else f"{name}:1"), gr.update(value=None)

    def updates(self, card: ModelCard) -> dict[Any, Any]:
        """Shown for a model that takes LoRAs, with the LoRAs listed for its family."""
        return {self.row: gr.update(visible=self.takes(card)),
                self.picker: gr.update(choices=self._choices(card), value=None)}

    def params(self, card: ModelCard, text: str | None) -> dict[str, Any]:
        """The job's `loras` from the box, when the model takes them and the box is not empty."""
        return {"loras": text} if self.takes(card) and (text or "").strip() else {}
