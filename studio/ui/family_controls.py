"""The controls a tab builds from what the model families declare: one widget per option that a
family serving the tab's task takes (Lumina-Next's solver, LlamaGen's temperature, MusicGen's top-k…),
shown only while the chosen model takes it, with that model's default. A new family's options
appear in the tab without editing it.

A tab calls `FamilyControls(task, prefix, card)`, then `place(advanced=False)` where its main
options go and `place(advanced=True)` inside its Advanced fold; `updates(card)` is what picking a
model changes and `params(card, values)` turns the widgets' values into the job's options.
`picker` is the type-to-search dropdown every long list uses (the ImageNet classes, the presets):
all its choices listed, and typing into it searches afresh.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..families import FAMILIES, Option
from ..tasks import get_task
from ..zoo.cards import ModelCard


def _first_value(option: Option, default: Any) -> Any:
    if default is not None:
        return default
    if option.initial is not None:
        return option.initial
    if option.widget == "slider" and option.slider:
        return option.slider[0]
    return option.minimum if option.type in (int, float) else None


# Gradio's dropdown keeps the chosen choice's label as the text being typed, so typed letters were
# appended to it and searched for "207 · golden retrievergolden". Selecting that text when the picker
# gets focus makes typing replace it (a search afresh) while leaving the choice shown until then.
# A mouse click's own mouseup would undo the selection, so that one mouseup is told to leave it.
_SELECT_ON_FOCUS = """() => {
  const box = document.activeElement;
  if (!box || box.tagName !== "INPUT" || box.getAttribute("role") !== "combobox") return;
  box.select();
  box.addEventListener("mouseup", (e) => e.preventDefault(), {once: true});
}"""


def search_afresh(dropdown: gr.Dropdown) -> gr.Dropdown:
    """Make typing into this filterable dropdown search afresh rather than append to the shown choice
    (a browser-side step only; call it inside the Blocks that holds the dropdown)."""
    dropdown.focus(None, None, None, js=_SELECT_ON_FOCUS, api_visibility="private", queue=False)
    return dropdown


# Gradio shows a dropdown's first 100 choices until the list is scrolled to its end
# (`num_choices_shown`); None is meant to show them all but reaches the page as null, which its
# frontend reads as its default, 100. A number above any list here shows every choice at once.
SHOW_ALL_CHOICES = 100_000


def picker(choices: list[Any], **kwargs: Any) -> gr.Dropdown:
    """A type-to-search dropdown that lists every choice (the 1000 ImageNet classes, a preset library),
    and where typing searches afresh (`search_afresh`)."""
    return search_afresh(gr.Dropdown(choices, filterable=True, num_choices_shown=SHOW_ALL_CHOICES, **kwargs))


def make_widget(option: Option, value: Any, elem_id: str, visible: bool) -> Any:
    """The component that shows `option` (its declared widget, else one that fits its type)."""
    common = {"label": option.label or option.name.replace("_", " ").capitalize(), "elem_id": elem_id,
              "visible": visible, "info": option.help or None}
    widget = option.widget or ("checkbox" if option.type is bool else "dropdown" if option.choices
                               else "text" if option.type is str else "number")
    value = _first_value(option, value)
    if widget == "text":  # free text (Lumina-T2Audio's sound events)
        return gr.Textbox(value=value or "", lines=1, **common)
    if widget == "checkbox":
        return gr.Checkbox(value=bool(value), **common)
    if widget == "radio":
        return gr.Radio(list(option.choices), value=value, **common)
    if widget == "dropdown":
        return picker(list(option.choices), value=value, **common)
    if widget == "slider":
        low, high = option.slider or (option.minimum, option.maximum)
        return gr.Slider(low, high, value=value, step=option.step or (1 if option.type is int else 0.05), **common)
    return gr.Number(value=value, precision=0 if option.type is int else None, minimum=option.minimum,
                     maximum=option.maximum, **common)


class FamilyControls:
    """Every option the families of `task` declare, as widgets (one per option name)."""

    def __init__(self, task: str, prefix: str, card: ModelCard | None) -> None:
        self.task, self.prefix = task, prefix
        self.spec_type = get_task(task).spec_type
        self.options: dict[str, Option] = {}
        for family in FAMILIES.for_task(task):
            for option in family.options_for(task):
                self.options.setdefault(option.name, option)
        self.widgets: dict[str, Any] = {}
        self._groups: dict[str, tuple[Any, list[str]]] = {}
        self._initial = self.spec_type.defaults_for(card) if card is not None else {}
        self._taken = self.taken(card)
        # Options that stand in for the prompt (an ImageNet class): placed where the prompt is.
        self.prompt_options = {f.prompt_from for f in FAMILIES.for_task(task) if f.prompt_from in self.options}

    def taken(self, card: ModelCard | None) -> set[str]:
        """The options the card takes and the tab can show: a default (the card's, the family's) or a
        first value to start from. An option with neither (Lumina-Image 2.0's shift, when its card
        sets none) keeps the model's own setting, so it is neither shown nor sent."""
        if card is None:
            return set()
        defaults = self.spec_type.defaults_for(card)
        return {name for name in self.spec_type.takes(card) & set(self.options)
                if defaults.get(name) is not None or self.options[name].initial is not None}

    def prompt_option(self, card: ModelCard | None) -> str | None:
        """The option that replaces the prompt for this card, if it has one (its class picker)."""
        family = FAMILIES.of(card) if card is not None else None
        return family.prompt_from if family is not None and family.prompt_from in self.taken(card) else None

    def place_prompt_options(self) -> None:
        for name in self.prompt_options:
            self._build(self.options[name])

    def place(self, advanced: bool) -> None:
        """Build the options of this kind (main or Advanced) here, grouped as their families group them."""
        for name, option in self.options.items():
            if option.advanced != advanced or name in self.prompt_options:
                continue
            if option.group:
                self._place_in_group(option)
            else:
                self._build(option)

    def _build(self, option: Option) -> None:
        elem_id = f"{self.prefix}-{option.name.replace('_', '-')}"
        self.widgets[option.name] = make_widget(option, self._initial.get(option.name), elem_id,
                                                option.name in self._taken)

    def _place_in_group(self, option: Option) -> None:
        if option.group in self._groups:
            group, members = self._groups[option.group]
            with group:
                self._build(option)
            members.append(option.name)
            return
        members = [option.name]
        shown = any(o.group == option.group and o.name in self._taken for o in self.options.values())
        with gr.Group(visible=shown) as group:
            gr.Markdown(f"**{option.group}**")
            self._build(option)
        self._groups[option.group] = (group, members)

    @property
    def components(self) -> list[Any]:
        """The option widgets in a fixed order (what a handler receives after the tab's own inputs)."""
        return list(self.widgets.values())

    @property
    def outputs(self) -> list[Any]:
        return [*self.widgets.values(), *(group for group, _ in self._groups.values())]

    def updates(self, card: ModelCard) -> dict[Any, Any]:
        """Picking `card`: each option shown if it takes it, with its default and its family's look."""
        family = FAMILIES.of(card)
        taken = self.taken(card)
        defaults = self.spec_type.defaults_for(card)
        updates: dict[Any, Any] = {}
        for name, widget in self.widgets.items():
            option = (family.option(name) if family is not None else None) or self.options[name]
            change: dict[str, Any] = {"visible": name in taken}
            if name in taken:
                change["value"] = _first_value(option, defaults.get(name))
                change.update(_look(option))
            updates[widget] = gr.update(**change)
        for group, members in self._groups.values():
            updates[group] = gr.update(visible=any(m in taken for m in members))
        return updates

    def params(self, card: ModelCard | None, values: list[Any]) -> dict[str, Any]:
        """The widgets' values (in `components` order) as job options: only those the card takes."""
        taken = self.taken(card)
        chosen = dict(zip(self.widgets, values))
        return {name: _as_type(self.options[name], value) for name, value in chosen.items() if name in taken}


def _look(option: Option) -> dict[str, Any]:
    """What differs between two families' declarations of the same option name: label, help, range
    and choices (Lumina-Next's six solvers, Lumina-T2I's three)."""
    look: dict[str, Any] = {"label": option.label or option.name.replace("_", " ").capitalize(),
                            "info": option.help or None}
    if option.choices:
        look["choices"] = list(option.choices)
    if option.widget == "slider":
        low, high = option.slider or (option.minimum, option.maximum)
        look.update(minimum=low, maximum=high)
    return look


def _as_type(option: Option, value: Any) -> Any:
    """A widget's value as the option's type (a Number gives floats, a Slider may give ints)."""
    if value is None:
        return None
    if option.type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if option.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
