"""Command line: `studio serve`, `studio generate image ...`, `studio models list`, `studio history list`.

Every command goes through the same Studio services as the UI; `generate` submits a TaskSpec to the
job queue like the Generate button does, and exits non-zero with the reason when the job fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

from .errors import StudioError
from .history import JobStatus
from .settings import Settings
from .zoo.cards import parse_size


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="data folder (history, outputs); env STUDIO_HOME")
    parser.add_argument("--outputs", dest="outputs_dir", help="outputs folder; env STUDIO_OUTPUTS")
    parser.add_argument("--model-cache", help="Hugging Face cache to load models from; env STUDIO_MODEL_CACHE")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps; env STUDIO_DEVICE")
    parser.add_argument("--dtype", help="auto, float32, float16 or bfloat16; env STUDIO_DTYPE")
    parser.add_argument("--vram-budget", dest="vram_budget_gb", type=float,
                        help="GB of GPU memory the studio may use (default: what is free)")
    parser.add_argument("--ram-budget", dest="ram_budget_gb", type=float,
                        help="GB of RAM for models parked off the GPU (default: half the RAM less 2 GB)")
    parser.add_argument("--placement", help="auto, full, model_offload, group_offload or sequential_offload")
    parser.add_argument("--fp8", action="store_true", default=None,
                        help="store transformer weights in fp8 for models that tolerate it")
    parser.add_argument("--attention", help="sdpa (default) or flash (CUDA, needs the flash extra)")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the transformer")
    parser.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")


def _flag_value(kind: type):
    def parse(text: str) -> Any:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None

    return parse


def _add_family_flags(parser: argparse.ArgumentParser, task: str) -> None:
    """A flag per option the task's model families declare (`--top-k`, `--solver`…), grouped by family;
    an option two families share is one flag. Only the flags given are sent (other models refuse them)."""
    from .families import FAMILIES

    seen: set[str] = set()
    for family in FAMILIES.for_task(task):
        group = None
        for option in family.options_for(task):
            if option.name in seen:
                continue
            seen.add(option.name)
            group = group or parser.add_argument_group(f"{family.title} options")
            flag = option.name.replace("_", "-")
            group.add_argument(f"--{flag}", dest=f"option_{option.name}", type=_flag_value(option.type),
                               choices=option.values if option.type is str and option.values else None,
                               metavar=None if option.type is str and option.values else flag.upper(),
                               help=f"{option.label or option.name}" + (f": {option.help}" if option.help else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="A local generative studio.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the studio does")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="start the web UI")
    _add_settings_flags(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1); env STUDIO_HOST")
    serve.add_argument("--port", type=int, help="port (default 7860); env STUDIO_PORT")
    serve.add_argument("--auth", help="USER:PASSWORD required to open the studio")
    serve.add_argument("--auth-file", help="a file of USER:PASSWORD lines, each allowed to log in")
    serve.add_argument("--share", action="store_true",
                       help="also open a public Gradio share link (always behind a login)")
    serve.add_argument("--mcp", action="store_true", help="also serve Gradio's MCP server (needs gradio[mcp])")
    serve.add_argument("--max-upload-mb", dest="max_upload_mb", type=int,
                       help="largest file a browser may upload, in MB (default 500); env STUDIO_MAX_UPLOAD_MB")

    generate = commands.add_parser("generate", help="run one job headless and print its outputs")
    kinds = generate.add_subparsers(dest="task", required=True)
    image = kinds.add_parser("image", help="text to image")
    _add_settings_flags(image)
    image.add_argument("--model", required=True, help="model card id (see `studio models list`)")
    image.add_argument("--prompt", required=True)
    image.add_argument("--negative", dest="negative_prompt", default="", help="negative prompt")
    image.add_argument("--size", type=_size, help="WIDTHxHEIGHT (default: the model's)")
    image.add_argument("--steps", type=int)
    image.add_argument("--cfg", type=float, help="classifier-free guidance scale")
    image.add_argument("--seed", type=int, default=-1, help="-1 picks a random seed (printed)")
    image.add_argument("--num-images", type=int, default=1)
    _add_family_flags(image, "image")

    models = commands.add_parser("models", help="list, inspect, download and remove models")
    actions = models.add_subparsers(dest="action", required=True)
    for name, text in (("list", "every model card with its status"), ("info", "one card in full"),
                       ("download", "fetch a model into the cache, with progress (Ctrl-C cancels, resumable)"),
                       ("remove", "delete a model's files from the cache")):
        action = actions.add_parser(name, help=text)
        _add_settings_flags(action)
        if name != "list":
            action.add_argument("model", help="model card id")

    history = commands.add_parser("history", help="find, show, re-run, delete and export past jobs")
    steps = history.add_subparsers(dest="action", required=True)
    listing = steps.add_parser("list", help="past jobs, newest first (a page at a time)")
    _add_settings_flags(listing)
    listing.add_argument("--search", default="", help='words or "a phrase" to find in the prompts')
    listing.add_argument("--task", help="only this task (image, video, audio, music, compose, anagram)")
    listing.add_argument("--model", help="only this model card id")
    listing.add_argument("--status", choices=[s.value for s in JobStatus], help="only jobs in this state")
    listing.add_argument("--favorites", action="store_true", help="only starred jobs")
    listing.add_argument("--page", type=int, default=1)
    for name, text in (("show", "one job with its parameters and files"),
                       ("rerun", "run a job again with its parameters and seed (the same output)"),
                       ("delete", "delete a finished job and its files"),
                       ("export", "zip jobs' outputs with a manifest.json (printed: the zip's path)")):
        step = steps.add_parser(name, help=text)
        _add_settings_flags(step)
        step.add_argument("jobs" if name == "export" else "job", nargs="+" if name == "export" else None,
                          help="job id" + ("s" if name == "export" else ""))
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    keys = ("home", "outputs_dir", "model_cache", "device", "dtype", "vram_budget_gb", "ram_budget_gb", "placement",
            "fp8", "attention", "compile", "channels_last")
    return Settings.load(**{k: getattr(args, k, None) for k in keys}, **extra)


def _generate(args: argparse.Namespace) -> int:
    from .services import Studio

    params: dict[str, Any] = {
        "model": args.model,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "steps": args.steps,
        "cfg": args.cfg,
        "seed": args.seed,
        "num_images": args.num_images,
    }
    # Family options only when given: models of other families refuse them.
    params.update({key.removeprefix("option_"): value for key, value in vars(args).items()
                   if key.startswith("option_") and value is not None})
    if args.size:
        params["width"], params["height"] = args.size
    with Studio(_settings(args)) as studio:
        job = studio.run(args.task, params)
    print(f"job {job.id}: {job.status.value}")
    if job.error:
        print(f"error: {job.error}", file=sys.stderr)
        return 1
    print(f"seed {job.spec.seed}")
    for saved in job.outputs:
        print(saved.path)
    return 0


def _models(args: argparse.Namespace) -> int:
    from . import model_manager

    return model_manager.run_cli(args.action, getattr(args, "model", None), _settings(args))


def _history(args: argparse.Namespace) -> int:
    import json

    from .history import JobFilter
    from .services import Studio

    studio = Studio(_settings(args))
    if args.action == "rerun":
        studio.start()  # runs the job here, or hands it to the studio that is serving this folder
    try:
        gallery = studio.gallery
        if args.action == "list":
            filters = JobFilter(text=args.search, task=args.task, model_id=args.model, status=args.status,
                                favorites=args.favorites)
            page = gallery.page(filters, args.page)
            for job in page.jobs:
                when = job.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
                star = "*" if job.favorite else " "
                print(f"{job.id} {star} {when} {job.status.value:<11} {job.task:<8} {job.model_id:<22} "
                      f"{job.prompt[:60]!r}")
            print(f"page {args.page}: {len(page.jobs)} of {page.total} jobs")
        elif args.action == "show":
            job = gallery.job(args.job)
            print(json.dumps({"id": job.id, "task": job.task, "model": job.model_id, "status": job.status.value,
                              "error": job.error, "seed": job.seed, "created_at": job.created_at.isoformat(),
                              "duration_s": job.duration_s, "favorite": job.favorite, "params": job.params,
                              "files": [str(gallery.path(a)) for a in gallery.outputs(job)]},
                             indent=2, ensure_ascii=False))
        elif args.action == "rerun":
            job = gallery.rerun(args.job)
            job.wait()
            print(f"job {job.id}: {job.status.value}")
            if job.error:
                print(f"error: {job.error}", file=sys.stderr)
                return 1
            for saved in job.outputs:
                print(saved.path)
        elif args.action == "delete":
            print(f"deleted job {args.job} and {gallery.delete(args.job)} files")
        else:
            print(gallery.export(args.jobs).path)
    finally:
        studio.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .ui.launch import serve

    # `studio` alone serves too, with none of serve's flags parsed.
    flag = lambda name: getattr(args, name, None)  # noqa: E731
    settings = _settings(args, host=flag("host"), port=flag("port"), max_upload_mb=flag("max_upload_mb"))
    serve(settings, auth=flag("auth"), auth_file=flag("auth_file"), share=bool(flag("share")), mcp=bool(flag("mcp")))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = args.command or "serve"
    try:
        if command == "generate":
            return _generate(args)
        if command == "models":
            return _models(args)
        if command == "history":
            return _history(args)
        return _serve(args)
    except StudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
