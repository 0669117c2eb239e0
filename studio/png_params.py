"""Read the generation parameters that a PNG carries, whichever tool made it ("Read parameters" in the Gallery).

Looked for in this order: our own `studio_job` chunk (the exact job, so a re-run is exact), InvokeAI's
`invokeai_metadata`, Fooocus (`parameters` as a JSON object, or A1111 text beside a `fooocus_scheme` chunk),
ComfyUI's `prompt` chunk (the API graph) and A1111/Forge infotext in `parameters`. From other tools only what
maps cleanly onto the Image form (width, height, steps, cfg, seed) lands in `params`; everything else found is
kept as text in `details` for display. Malformed values never raise: they are shown in details or skipped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import MediaError
from studio.media import PARAMETERS_KEY, PngMetadata, parse_infotext, read_png_metadata

INVOKEAI_KEY = "invokeai_metadata"
FOOOCUS_SCHEME_KEY = "fooocus_scheme"
COMFYUI_GRAPH_KEY = "prompt"  # the API graph; ComfyUI's `workflow` chunk (the UI graph) is not needed

# Our seeds are 0..2**32-1 (studio.tasks.base.MAX_SEED, not imported because that package loads torch).
# ComfyUI and Fooocus use 64-bit seeds: a larger one could not be re-used here, so it stays in details only.
MAX_SEED = 2**32 - 1

_RE_INT = re.compile(r"\s*[+-]?\d+\s*")
_RE_A1111_SIZE = re.compile(r"\s*(\d+)\s*x\s*(\d+)\s*")  # "832x1216"
_RE_FOOOCUS_RESOLUTION = re.compile(r"""\s*\(\s*'?(\d+)'?\s*,\s*'?(\d+)'?\s*\)\s*""")  # "(1152, 896)"
# Inputs that hold the value of a ComfyUI primitive node (one a link may point to).
_PRIMITIVE_INPUTS = {"value", "seed", "int", "float", "text", "string"}
_LABELS = {"vae": "VAE", "loras": "LoRAs", "app_version": "Version", "cfg_rescale_multiplier": "CFG rescale",
           "clip_skip": "CLIP skip", "adm_guidance": "ADM guidance", "base_model": "Model",
           "refiner_model": "Refiner"}


@dataclass(frozen=True)
class FoundParameters:
    source: str  # "studio", "a1111", "comfyui", "invokeai" or "fooocus"
    task: str  # the studio task for our own PNGs, "image" for everyone else's
    prompt: str
    negative_prompt: str
    # Under our TaskSpec field names: the recorded job params for our PNGs; for others only width, height,
    # steps, cfg and seed, each when present and parseable.
    params: dict[str, Any]
    details: dict[str, str]  # everything else found, human readable (e.g. "Sampler": "Euler a")


def read_parameters(path: Path) -> FoundParameters:
    """The parameters embedded in the PNG at `path`; MediaError if it is no readable PNG or carries none."""
    meta = read_png_metadata(path)  # its MediaError already says what is wrong with the file
    for reader in (_from_studio, _from_invokeai, _from_fooocus, _from_comfyui, _from_a1111):
        found = reader(meta)
        if found is not None:
            return found
    raise MediaError(f"{path} has no generation parameters that Studio can read "
                     "(looked for: studio, A1111/Forge, ComfyUI, InvokeAI, Fooocus)")


# --- values ---------------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and len(value) <= 40 and _RE_INT.fullmatch(value):  # no 4,300-digit ints
        return int(value)
    return None


def _positive_int(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and number > 0 else None


def _seed(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and 0 <= number <= MAX_SEED else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


_PARSERS: dict[str, Callable[[Any], int | float | None]] = {
    "width": _positive_int, "height": _positive_int, "steps": _positive_int, "cfg": _float, "seed": _seed}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _model_name(value: dict) -> str:
    name = value.get("name", value.get("model_name"))
    return name if isinstance(name, str) else ""


def _text(value: Any) -> str:
    """A flat, readable string for any JSON value: model dicts by name, lists joined, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, dict):
        if name := _model_name(value):
            return name
        inner = value.get("model", value.get("lora"))  # an InvokeAI LoRA: {"model": {...}, "weight": 0.75}
        if isinstance(inner, dict) and (name := _model_name(inner)):
            return f"{name} ({value['weight']})" if "weight" in value else name
    if isinstance(value, list) and all(isinstance(item, (str, dict)) for item in value):
        return ", ".join(text for text in map(_text, value) if text)
    return json.dumps(value, ensure_ascii=False)


def _label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " ").capitalize())


def _json_dict(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class _Found:
    """Collects one image's params (cleanly parsed values) and details (everything else, as text)."""

    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def detail(self, label: str, value: Any) -> None:
        if text := _text(value):
            self.details[label] = text

    def number(self, name: str, label: str, value: Any) -> None:
        """params[name] when `value` parses for that field; otherwise it is shown under `label`."""
        parsed = _PARSERS[name](value)
        if parsed is None:
            self.detail(label, value)
        else:
            self.params[name] = parsed

    def size(self, label: str, value: Any, pattern: re.Pattern[str]) -> None:
        match = pattern.fullmatch(value) if isinstance(value, str) else None
        width, height = (_positive_int(match[1]), _positive_int(match[2])) if match else (None, None)
        if width and height:
            self.params.update(width=width, height=height)
        else:
            self.detail(label, value)

    def rest(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            self.detail(_label(str(key)), value)


# --- readers, in detection order ------------------------------------------------------------------

def _from_studio(meta: PngMetadata) -> FoundParameters | None:
    job = meta.job or {}
    params = job.get("params")
    if not isinstance(params, dict):
        return None
    found = _Found()
    found.detail("Model", job.get("model_title"))
    if isinstance(used := job.get("used"), dict):
        found.rest(used)
    found.detail("Studio version", job.get("studio_version"))
    found.detail("Job", job.get("job_id"))
    task = job.get("task")
    return FoundParameters("studio", task if isinstance(task, str) and task else "image",
                           _str(params.get("prompt")), _str(params.get("negative_prompt")), dict(params),
                           found.details)


def _from_invokeai(meta: PngMetadata) -> FoundParameters | None:
    data = _json_dict(meta.raw.get(INVOKEAI_KEY))
    if data is None:
        return None
    rest = dict(data)
    # InvokeAI 3.0 wrote positive_conditioning/negative_conditioning, later versions *_prompt.
    old_prompt, old_negative = rest.pop("positive_conditioning", None), rest.pop("negative_conditioning", None)
    prompt = _str(rest.pop("positive_prompt", None)) or _str(old_prompt)
    negative = _str(rest.pop("negative_prompt", None)) or _str(old_negative)
    found = _Found()
    for name, key, label in (("width", "width", "Width"), ("height", "height", "Height"),
                             ("steps", "steps", "Steps"), ("cfg", "cfg_scale", "CFG scale"), ("seed", "seed", "Seed")):
        if key in rest:
            found.number(name, label, rest.pop(key))
    # 4.x: {"name", "base", "key", ...}; 3.x: {"model_name", "base_model", ...}; older: a top-level "model_name".
    model = rest.pop("model", None) or rest.pop("model_name", None)
    found.detail("Model", model)
    if isinstance(model, dict):
        found.detail("Base model", model.get("base", model.get("base_model")))
    found.rest(rest)
    return FoundParameters("invokeai", "image", prompt, negative, found.params, found.details)


def _from_fooocus(meta: PngMetadata) -> FoundParameters | None:
    text = meta.raw.get(PARAMETERS_KEY)
    data = _json_dict(text)
    if data is None:
        # Fooocus's "a1111" metadata scheme: A1111 infotext, marked by the scheme chunk.
        if FOOOCUS_SCHEME_KEY in meta.raw and text and text.strip():
            return _from_infotext(text, "fooocus")
        return None
    # Key names as Fooocus writes them (modules/async_worker.py save_and_log, modules/meta_parser.py).
    rest = {key: value for key, value in data.items() if value not in (None, "", "None")}
    found = _Found()
    found.size("Resolution", rest.pop("resolution", None), _RE_FOOOCUS_RESOLUTION)
    for name, key, label in (("steps", "steps", "Steps"), ("cfg", "guidance_scale", "Guidance scale"),
                             ("seed", "seed", "Seed")):
        if key in rest:
            found.number(name, label, rest.pop(key))
    rest.pop("metadata_scheme", None)  # always "fooocus" here
    if isinstance(loras := rest.get("loras"), list):  # [[name, weight, hash], ...]
        rest["loras"] = [f"{lora[0]} ({lora[1]})" if isinstance(lora, list) and len(lora) >= 2 else lora
                         for lora in loras]
    prompt, negative = _str(rest.pop("prompt", None)), _str(rest.pop("negative_prompt", None))
    found.rest(rest)
    return FoundParameters("fooocus", "image", prompt, negative, found.params, found.details)


def _from_comfyui(meta: PngMetadata) -> FoundParameters | None:
    graph = _json_dict(meta.raw.get(COMFYUI_GRAPH_KEY))
    nodes = {str(node_id): node for node_id, node in (graph or {}).items()
             if isinstance(node, dict) and isinstance(node.get("inputs"), dict)}
    return _ComfyGraph(nodes).read() if nodes else None


def _from_a1111(meta: PngMetadata) -> FoundParameters | None:
    text = meta.raw.get(PARAMETERS_KEY)
    return _from_infotext(text, "a1111") if text and text.strip() else None


# A1111's LoRA tag in a prompt: <lora:name>, <lora:name:weight>, <lora:name:te:unet> (the text encoder's and
# the UNet's weights; unet defaults to te). Studio loads LoRAs into the denoiser, the UNet's place: its weight
# is the one kept.
_RE_LORA_TAG = re.compile(r"\s*<lora:([^:<>]+)(?::([^:<>]*))?(?::([^:<>]*))?(?::[^<>]*)?>")


def _lora_tags(prompt: str, found: "_Found") -> str:
    """The prompt less its `<lora:…>` tags, each put in params["loras"] (a weight that does not parse: in details)."""
    loras = []
    for match in _RE_LORA_TAG.finditer(prompt):
        given = match[3] if (match[3] or "").strip() else match[2]
        weight = 1.0 if not (given or "").strip() else _float(given)
        if weight is None:
            found.detail(f"LoRA {match[1].strip()}", given)
        else:
            loras.append({"name": match[1].strip(), "weight": weight})
    if loras:
        found.params["loras"] = loras
    return _RE_LORA_TAG.sub("", prompt).strip().rstrip(",").rstrip() if loras else prompt


def _from_infotext(text: str, source: str) -> FoundParameters:
    info = parse_infotext(text)
    fields = dict(info.fields)
    found = _Found()
    info = dataclasses.replace(info, prompt=_lora_tags(info.prompt, found))
    if "Size" in fields:
        found.size("Size", fields.pop("Size"), _RE_A1111_SIZE)
    for name, label in (("steps", "Steps"), ("cfg", "CFG scale"), ("seed", "Seed")):
        if label in fields:
            found.number(name, label, fields.pop(label))
    found.details.update((key, value) for key, value in fields.items() if value)
    return FoundParameters(source, "image", info.prompt, info.negative_prompt, found.params, found.details)


# --- ComfyUI --------------------------------------------------------------------------------------

def _is_link(value: Any) -> bool:
    """ComfyUI API graphs link an input to another node's output as [node_id, output_index]."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int))


def _id_order(node_id: str) -> tuple[int, int, str]:
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return (0, int(node_id), "") if node_id.isdecimal() and len(node_id) <= 18 else (1, 0, node_id)


class _ComfyGraph:
    """An API-format graph: {node_id: {"class_type": ..., "inputs": {name: literal or link}}}."""

    _MAX_HOPS = 32  # graphs can be cyclic or deep; never follow links further than this

    def __init__(self, nodes: dict[str, dict]) -> None:
        self.nodes = nodes

    def node(self, link: Any) -> dict | None:
        return self.nodes.get(str(link[0])) if _is_link(link) else None

    def inputs(self, link: Any) -> dict[str, Any]:
        node = self.node(link)
        return node["inputs"] if node else {}

    def value(self, value: Any) -> Any:
        """A literal input, or the single literal of a primitive node it links to; None otherwise."""
        if not _is_link(value):
            return value
        literals = [(key, item) for key, item in self.inputs(value).items() if not _is_link(item)]
        if len(literals) == 1 and literals[0][0] in _PRIMITIVE_INPUTS:
            return literals[0][1]
        return None

    def sampler_inputs(self, node_id: str) -> dict[str, Any]:
        """The sampler's inputs; SamplerCustomAdvanced keeps them in its noise/guider/sampler/sigmas nodes."""
        inputs = dict(self.nodes[node_id]["inputs"])
        for part in ("noise", "guider", "sampler", "sigmas"):
            for key, value in self.inputs(inputs.get(part)).items():
                inputs.setdefault(key, value)
        return inputs

    def latent_rank(self, link: Any) -> int:
        """0 for an empty latent of a given size (a first pass), 1 for another sized latent, 2 otherwise."""
        node = self.node(link)
        if node is None or not {"width", "height"} <= node["inputs"].keys():
            return 2
        return 0 if str(node.get("class_type", "")).startswith("Empty") else 1

    def pick_sampler(self) -> str | None:
        samplers = [node_id for node_id, node in self.nodes.items()
                    if "sampler" in str(node.get("class_type", "")).lower()
                    and node["inputs"].keys() & {"positive", "seed", "noise_seed", "guider"}]
        # A hires-fix graph has several samplers: the first pass, from an empty latent, holds the real size.
        return min(samplers, default=None,
                   key=lambda node_id: (self.latent_rank(self.sampler_inputs(node_id).get("latent_image")),
                                        _id_order(node_id)))

    def text(self, link: Any, role: str) -> tuple[str, str]:
        """(prompt, CLIP-L prompt when it differs) of the text encoder that `link` leads to; ("", "") if none."""
        for _ in range(self._MAX_HOPS):
            node = self.node(link)
            if node is None or node.get("class_type") == "ConditioningZeroOut":
                break
            inputs = node["inputs"]
            if inputs.keys() & {"text", "text_g", "t5xxl", "text_l", "clip_l"}:
                main = _str(self.value(inputs.get("text", inputs.get("text_g", inputs.get("t5xxl")))))
                clip_l = _str(self.value(inputs.get("text_l", inputs.get("clip_l"))))
                return (main, "" if clip_l == main else clip_l) if main else (clip_l, "")
            # Follow nodes that pass one conditioning through (FluxGuidance, ControlNetApplyAdvanced, ...).
            links = [value for key, value in inputs.items()
                     if _is_link(value) and (key == role or key.startswith("conditioning"))]
            if len(links) != 1:
                break
            link = links[0]
        return "", ""

    def model(self, link: Any) -> tuple[Any, list[str]]:
        """The checkpoint name and the LoRAs on the way to it, following `model` inputs from the sampler."""
        loras: list[str] = []
        for _ in range(self._MAX_HOPS):
            inputs = self.inputs(link)
            name = self.value(inputs.get("ckpt_name", inputs.get("unet_name")))
            if name is not None:
                return name, loras[::-1]
            if isinstance(lora := self.value(inputs.get("lora_name")), str):
                strength = self.value(inputs.get("strength_model"))
                loras.append(f"{lora} ({strength})" if isinstance(strength, (int, float)) else lora)
            link = inputs.get("model")
            if not _is_link(link):
                break
        loaders = sorted((node_id for node_id, node in self.nodes.items()
                          if node["inputs"].keys() & {"ckpt_name", "unet_name"}), key=_id_order)
        if loaders:
            inputs = self.nodes[loaders[0]]["inputs"]
            return self.value(inputs.get("ckpt_name", inputs.get("unet_name"))), loras[::-1]
        return None, loras[::-1]

    def read(self) -> FoundParameters:
        sampler = self.pick_sampler()
        inputs = self.sampler_inputs(sampler) if sampler is not None else {}
        prompt, prompt_l = self.text(inputs.get("positive", inputs.get("conditioning")), "positive")
        negative, negative_l = self.text(inputs.get("negative"), "negative")
        found = _Found()
        latent = self.inputs(inputs.get("latent_image"))
        for name, key, label in (("width", "width", "Width"), ("height", "height", "Height")):
            if (value := self.value(latent.get(key))) is not None:
                found.number(name, label, value)
        for name, key, label in (("steps", "steps", "Steps"), ("cfg", "cfg", "CFG"),
                                 ("seed", "seed" if "seed" in inputs else "noise_seed", "Seed")):
            if (value := self.value(inputs.get(key))) is not None:
                found.number(name, label, value)
        found.detail("Sampler", self.value(inputs.get("sampler_name")))
        found.detail("Scheduler", self.value(inputs.get("scheduler")))
        if (denoise := self.value(inputs.get("denoise"))) not in (None, 1, 1.0):
            found.detail("Denoise", denoise)
        model, loras = self.model(inputs.get("model"))
        found.detail("Model", model)
        found.detail("LoRAs", loras)
        found.detail("Prompt (CLIP-L)", prompt_l)
        found.detail("Negative prompt (CLIP-L)", negative_l)
        return FoundParameters("comfyui", "image", prompt, negative, found.params, found.details)
