"""Command line: `studio serve`, `studio generate <task> ...` (cli/generate.py), `studio models ...`
and `studio history ...`; the `studio` console script is `main`.

Every command goes through the same Studio services as the UI. `generate` and `history rerun`
submit a TaskSpec to the job queue like the Generate button does, and exit 1 with the reason when
the job fails; input refused before any job (a bad flag, an unknown job) exits 2. Only they, and
`serve`, start the studio: reading the cards or the history never takes the job queue (see
Studio.start), so a pending job stays for the studio that runs the queue.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..errors import StudioError
from .flags import add_settings_flags, settings_from
from .generate import add_commands as add_generate_commands
from .generate import run as run_generate

COMMANDS = {"serve": "start the web UI", "worker": "run jobs without the UI (one worker per device)",
            "models": "list, inspect, download and remove models",
            "history": "find, show, re-run, delete and export past jobs"}  # and `generate` (cli/generate.py)
MODEL_ACTIONS = {"list": "every model card with its status", "info": "one card in full",
                 "download": "fetch a model into the cache, with progress (Ctrl-C cancels, resumable)",
                 "remove": "delete a model's files from the cache"}
HISTORY_ACTIONS = {"show": "one job with its parameters and files",
                   "rerun": "run a job again with its parameters and seed (the same output)",
                   "delete": "delete a finished job and its files",
                   "export": "zip jobs' outputs with a manifest.json (printed: the zip's path)"}


def reached(argv: Sequence[str] | None) -> list[str] | None:
    """The command and the subcommand (task or action) `argv` names, as far as it names them; None
    for all. The top level and the command parsers take no option with a value, so the first words
    that are not options are these two."""
    return None if argv is None else [word for word in argv if not word.startswith("-")][:2]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `studio` parser. Given `argv`, only the command and subcommand it reaches get their flags:
    the others are there by name and help line, which is all their parents' --help shows, so that
    `studio --help` or `studio models list` imports neither the database stack nor torch (a
    `generate` task's flags come from its spec, a `history list` flag from the job states). Without
    `argv`, every flag of every command."""
    path = reached(argv)

    def reaches(command: str, sub: str | None = None) -> bool:
        if path is None:
            return True
        return bool(path) and path[0] == command and (sub is None or path[1:] == [sub])

    parser = argparse.ArgumentParser(prog="studio", description="A local generative studio.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the studio does")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help=COMMANDS["serve"])
    if reaches("serve") or not path:  # `studio` alone serves too, with none of serve's flags parsed
        _serve_flags(serve)

    add_generate_commands(commands, None if path is None else set(path[1:2]) if reaches("generate") else set())

    worker = commands.add_parser("worker", help=COMMANDS["worker"])
    if reaches("worker"):
        add_settings_flags(worker)

    models = commands.add_parser("models", help=COMMANDS["models"])
    actions = models.add_subparsers(dest="action", required=True)
    for name, text in MODEL_ACTIONS.items():
        action = actions.add_parser(name, help=text)
        if reaches("models", name):
            add_settings_flags(action)
            if name != "list":
                action.add_argument("model", help="model card id")

    history = commands.add_parser("history", help=COMMANDS["history"])
    steps = history.add_subparsers(dest="action", required=True)
    listing = steps.add_parser("list", help="past jobs, newest first (a page at a time)")
    if reaches("history", "list"):
        _history_list_flags(listing)
    for name, text in HISTORY_ACTIONS.items():
        step = steps.add_parser(name, help=text)
        if reaches("history", name):
            add_settings_flags(step)
            step.add_argument("jobs" if name == "export" else "job", nargs="+" if name == "export" else None,
                              help="job id" + ("s" if name == "export" else ""))
    return parser


def _serve_flags(serve: argparse.ArgumentParser) -> None:
    add_settings_flags(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1); env STUDIO_HOST")
    serve.add_argument("--port", type=int, help="port (default 7860); env STUDIO_PORT")
    serve.add_argument("--auth", help="USER:PASSWORD required to open the studio")
    serve.add_argument("--auth-file", help="a file of USER:PASSWORD lines, each allowed to log in")
    serve.add_argument("--share", action="store_true",
                       help="also open a public Gradio share link (always behind a login)")
    serve.add_argument("--no-worker", dest="no_worker", action="store_true",
                       help="run no jobs here: only the UI (jobs run on `studio worker` processes sharing --db)")
    serve.add_argument("--mcp", action="store_true", help="also serve Gradio's MCP server (needs gradio[mcp])")
    serve.add_argument("--max-upload-mb", dest="max_upload_mb", type=int,
                       help="largest file a browser may upload, in MB (default 500); env STUDIO_MAX_UPLOAD_MB")


def _history_list_flags(listing: argparse.ArgumentParser) -> None:
    from ..history import JobStatus  # the database stack: only for the command that lists jobs

    add_settings_flags(listing)
    listing.add_argument("--search", default="", help='words or "a phrase" to find in the prompts')
    listing.add_argument("--task", help="only this task (image, video, audio, music, compose, anagram)")
    listing.add_argument("--model", help="only this model card id")
    listing.add_argument("--status", choices=[s.value for s in JobStatus], help="only jobs in this state")
    listing.add_argument("--favorites", action="store_true", help="only starred jobs")
    listing.add_argument("--page", type=int, default=1)


_settings = settings_from  # the name tests and callers know


def _models(args: argparse.Namespace) -> int:
    from .. import model_manager

    return model_manager.run_cli(args.action, getattr(args, "model", None), _settings(args))


def _history(args: argparse.Namespace) -> int:
    import json

    from ..history import JobFilter
    from ..services import Studio

    studio = Studio(_settings(args))  # not started: list, show, delete and export only read and write rows
    if args.action == "rerun":
        studio.start_client()  # runs the job here, or hands it to the workers serving this queue
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
    from ..ui.launch import serve

    # `studio` alone serves too, with none of serve's flags parsed.
    flag = lambda name: getattr(args, name, None)  # noqa: E731
    settings = _settings(args, host=flag("host"), port=flag("port"), max_upload_mb=flag("max_upload_mb"),
                         run_worker=False if flag("no_worker") else None)
    serve(settings, auth=flag("auth"), auth_file=flag("auth_file"), share=bool(flag("share")), mcp=bool(flag("mcp")))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = args.command or "serve"
    try:
        if command == "generate":
            return run_generate(args)
        if command == "models":
            return _models(args)
        if command == "history":
            return _history(args)
        if command == "worker":
            from .worker import run as run_worker

            return run_worker(_settings(args))
        return _serve(args)
    except StudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
