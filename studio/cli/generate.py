"""`studio generate image|video|audio|music|compose|anagram|upscale`: one job headless, its outputs printed.

Each subcommand's flags are read off its task's TaskSpec (a flag per field: `--frames`, `--seconds`,
`--image FILE`, `--melody FILE`…; width and height as one `--size WxH`; a list field as a repeated
flag, e.g. `--caption` per cell), then a flag per option its model families declare (`--top-k`, `--solver`,
`--class-id`/`--class`…), and `--param KEY=VALUE` for anything else a model takes. Only what is
given is sent; the rest is the model card's default, as for a job submitted with those fields unset.
The job goes through the queue like the Generate button's; the exit status is 0 when it is done,
1 when it failed (the reason on stderr), 2 for input refused before a job (a bad flag value).
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from typing import Any, Collection, Literal

from ..errors import InvalidInput
from .flags import add_settings_flags, input_file, key_value, pair, settings_from, typed

TASK_HELP = {
    "image": "text (or an ImageNet class) to image",
    "video": "text, a start image, an input or a control video to video",
    "audio": "text to sound",
    "music": "text (and a melody clip, for melody models) to music",
    "compose": "one image from a grid of region captions",
    "anagram": "one picture that reads differently under each view",
    "upscale": "an image made bigger by an upscaler (ESRGAN)",
}
EXAMPLES = {
    "image": 'studio generate image --model tiny-llamagen-c2i --class 207',
    "video": 'studio generate video --model tiny-wan-i2v --prompt "waves" --image start.png --frames 9',
    "audio": 'studio generate audio --model tiny-stable-audio --prompt "rain on a roof" --seconds 2',
    "music": 'studio generate music --model tiny-musicgen --prompt "lo-fi piano" --seconds 2',
    "compose": 'studio generate compose --model tiny-lumina-next --grid 1x2 --caption "a moon" --caption "a tree"',
    "anagram": ('studio generate anagram --model tiny-lumina-next --prompt "an old man" --view identity '
                '--prompt "a mountain" --view rotate_180'),
    "upscale": "studio generate upscale --model tiny-esrgan --image picture.png --scale 2",
}
# Field pairs given as one AxB flag: (flag, how it is written).
PAIRS = {("width", "height"): ("--size", "WIDTHxHEIGHT"),
         ("cell_width", "cell_height"): ("--cell-size", "WIDTHxHEIGHT"),
         ("grid_rows", "grid_cols"): ("--grid", "ROWSxCOLS")}
# Flags not spelt as their field (a list field's flag is otherwise its name less the plural s).
FLAGS = {"negative_prompt": ("--negative", "--negative-prompt")}
HELP = {
    "prompt": "what to make", "negative_prompt": "what to steer away from", "seed": "-1 picks a random seed (printed)",
    "width": "size in pixels (default: the model's)", "cell_width": "one cell's size in pixels (default: the model's)",
    "grid_rows": "ROWSxCOLS of cells, 1x2 to 4x4 (default: one row, a cell per --caption)",
    "steps": "denoising steps", "cfg": "classifier-free guidance scale", "num_images": "images from one prompt",
    "frames": "frame count, 4k+1 (8k+1 for CogVideoX 1.0)", "fps": "frames per second",
    "image": "start image file (image-to-video models; image to image, inpainting and outpainting on the "
             "Lumina families); the picture to upscale (upscale)",
    "end_image": "end frame file: the last frame to arrive at (Wan2.1-Fun InP)",
    "video": "input video file to restyle (video-to-video)",
    "strength": "how much of the start image or input video is redrawn, (0, 1]",
    "mask": "inpainting mask file: white (or opaque) is repainted, black (or transparent) kept",
    "mask_blur": "px the mask's edge is blurred (A1111's 4)", "inpaint_area": "whole, or masked: A1111's Only masked",
    "mask_padding": "px around the mask for --inpaint-area masked", "outpaint_left": "px added on the left, inpainted",
    "outpaint_top": "px added at the top", "outpaint_right": "px added on the right",
    "outpaint_bottom": "px added at the bottom", "hires_scale": "hires fix: upscale the picture by this (1: off)",
    "hires_strength": "hires fix: how much of the upscaled picture is redrawn",
    "hires_steps": "hires fix: steps of its second pass (default: --steps)",
    "control_video": "control video file: pose, depth or motion (control models)",
    "reference_image": "reference image file: a subject or style to keep (VACE)",
    "camera": "camera trajectory file: a CameraCtrl / RealEstate10K pose .txt (Wan2.1-Fun Control-Camera)",
    "control_scale": "how strongly the control video steers, 0 to 2", "seconds": "length in seconds",
    "num_waveforms": "waveforms from one prompt", "format": "audio file format",
    "melody": "melody clip to follow, up to 30 s of WAV, FLAC, OGG or MP3 (MusicGen Melody models)",
    "captions": "a cell's caption, in reading order (one per cell; empty is allowed)",
    "prompts": "a reading of the picture (2 to 4, each with its --view)",
    "views": "the view the matching --prompt is read under (default: identity, rotate_180)",
    "style": "words put before every prompt, e.g. 'an oil painting of'",
    "loras": "a LoRA to load, NAME[:WEIGHT] (weight -4 to 4, default 1; repeat for several): a .safetensors "
             "file's stem in the LoRA folder (--lora-dir) or a downloaded LoRA card's id",
    "scale": "output scale, 1 to 8 (default: the upscaler's own; any other by a final Lanczos resize)",
    "tile": "input pixels per tile side, so memory stays bounded (0: the whole image at once)",
    "tile_overlap": "image pixels around each tile, so tiles join without seams",
}
# What `generate` fills when it is not given: compose's grid (one row), the anagram views.
DEFAULT_VIEWS = ["identity", "rotate_180"]


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; Literal and list types as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _inputs(spec_type: Any) -> list[str]:
    """The spec's fields a user sets: all but the model (its own flag) and a prompt the spec derives
    (compose and anagram make theirs from the cells and readings, and give it a default)."""
    return [name for name, info in spec_type.model_fields.items()
            if name != "model" and not (name == "prompt" and not info.is_required())]


def _add_field(parser: argparse.ArgumentParser, spec_type: Any, name: str, used: set[str]) -> None:
    """The flag of one spec field: a list as a repeated flag, a Literal with its choices, an input as
    a file that must exist, anything else as its type."""
    info = spec_type.model_fields[name]
    kind = _base_type(info.annotation)
    listed = typing.get_origin(kind) is list
    flags = FLAGS.get(name, (f"--{(name.removesuffix('s') if listed else name).replace('_', '-')}",))
    kwargs: dict[str, Any] = {"dest": f"param.{name}", "help": HELP.get(name)}
    if listed:
        # Required unless `generate` fills it (the anagram views).
        kwargs.update(action="append", metavar="TEXT", required=info.is_required() and name != "views")
    elif typing.get_origin(kind) is Literal:
        kwargs["choices"] = list(typing.get_args(kind))
    elif name in spec_type.INPUTS and kind is str:  # a file the job reads
        kwargs.update(type=input_file, metavar="FILE")
    else:
        kwargs.update(type=typed(kind if kind in (int, float, bool) else str),
                      metavar={int: "N", float: "X"}.get(kind, "TEXT"))
    parser.add_argument(*flags, **kwargs)
    used.update(flags)


def add_family_flags(parser: argparse.ArgumentParser, task: str, used: set[str] | None = None) -> None:
    """A flag per option the task's model families declare (`--top-k`, `--solver`…), grouped by family;
    an option two families share is one flag. Only the flags given are sent (other models refuse them).
    The option that stands in for the prompt (LlamaGen's class_id) is also `--class`. An option whose
    flag another flag already has (in `used`) is left to --param."""
    from ..families import FAMILIES

    used = set() if used is None else used
    for family in FAMILIES.for_task(task):
        group = None
        for option in family.options_for(task):
            flag = option.name.replace("_", "-")
            flags = [f"--{flag}"]
            if option.name == family.prompt_from and flag.endswith("-id"):
                flags.append(f"--{flag.removesuffix('-id')}")
            flags = [f for f in flags if f not in used]
            if not flags or f"--{flag}" not in flags:  # a shared option: the first family's flag serves
                continue
            used.update(flags)
            group = group or parser.add_argument_group(f"{family.title} options")
            named = option.type is str and bool(option.values)
            group.add_argument(*flags, dest=f"param.{option.name}", type=typed(option.type),
                               choices=option.values if named else None, metavar=None if named else flag.upper(),
                               # argparse expands %-formats in help: a family's "< 5%" must stay text.
                               help=(f"{option.label or option.name}" + (f": {option.help}" if option.help else ""))
                               .replace("%", "%%"))


def add_commands(commands: Any, tasks: Collection[str] | None = None) -> None:
    """`generate` and its subcommand per task; only those in `tasks` (None: all) get their flags, read
    off their specs, which imports the tasks (and torch). The others are listed by name and help line."""
    generate = commands.add_parser("generate", help="run one job headless and print its outputs")
    kinds = generate.add_subparsers(dest="task", required=True)
    names: list[str] = list(TASK_HELP)
    if tasks is None or not set(tasks) <= set(TASK_HELP):  # flags to build, or a name to check
        from ..tasks import TASKS

        names = sorted(TASKS, key=lambda t: names.index(t) if t in names else len(names))
    for task in names:
        parser = kinds.add_parser(task, help=TASK_HELP.get(task, task), epilog=f"example: {EXAMPLES[task]}"
                                  if task in EXAMPLES else None)
        if tasks is None or task in tasks:
            add_task_flags(parser, task)


def add_task_flags(parser: argparse.ArgumentParser, task: str) -> None:
    """One task's flags: the shared settings, the model, a flag per spec field and per family option."""
    from ..tasks import TASKS

    spec_type = TASKS[task].spec_type
    add_settings_flags(parser)
    parser.add_argument("--model", required=True, help="model card id (see `studio models list`)")
    used = {flag for action in parser._actions for flag in action.option_strings}
    fields = _inputs(spec_type)
    paired = {a: (b, *PAIRS[(a, b)]) for a, b in PAIRS if a in fields and b in fields}
    for name in fields:
        if name in paired:
            other, flag, written = paired[name]
            parser.add_argument(flag, dest=f"pair.{name}.{other}", type=pair(written), metavar=written,
                                help=HELP.get(name))
            used.add(flag)
        elif name not in {b for b, *_ in paired.values()}:
            _add_field(parser, spec_type, name, used)
    add_family_flags(parser, task, used)
    parser.add_argument("--param", dest="extra", action="append", type=key_value, default=[],
                        metavar="KEY=VALUE", help="any other field or option a model takes, by name (repeat); "
                        "the value is read as JSON when it parses, else as text; it wins over a flag")


def job_params(args: argparse.Namespace) -> dict[str, Any]:
    """The job's parameters from the flags given, or InvalidInput for a --param no model of the task takes."""
    from ..tasks import get_task

    spec_type = get_task(args.task).spec_type
    params: dict[str, Any] = {"model": args.model}
    for key, value in vars(args).items():
        if value is None:
            continue
        if key.startswith("param."):
            params[key.removeprefix("param.")] = value
        elif key.startswith("pair."):
            first, second = key.removeprefix("pair.").split(".")
            params[first], params[second] = value
    known = set(spec_type.model_fields) | spec_type.option_names()
    for key, value in args.extra:
        if key not in known:
            raise InvalidInput(f"--param {key}: not a parameter of {args.task} jobs (they take: "
                               f"{', '.join(sorted(known - {'model'}))})")
        params[key] = value
    if args.task == "compose" and "grid_rows" not in params and isinstance(params.get("captions"), list):
        params.update(grid_rows=1, grid_cols=len(params["captions"]))
    if args.task == "anagram" and "views" not in params and len(params.get("prompts") or ()) == len(DEFAULT_VIEWS):
        params["views"] = DEFAULT_VIEWS
    return params


def run(args: argparse.Namespace) -> int:
    """Submit the job, wait for it, print `job ID: status`, `seed N` and one output path per line."""
    from ..services import Studio

    params = job_params(args)
    studio = Studio(settings_from(args)).start_client()
    try:
        job = studio.run(args.task, params)
    finally:
        studio.close()
    print(f"job {job.id}: {job.status.value}")
    if job.error:
        print(f"error: {job.error}", file=sys.stderr)
        return 1
    print(f"seed {job.spec.seed}")
    for saved in job.outputs:
        print(saved.path)
    return 0
