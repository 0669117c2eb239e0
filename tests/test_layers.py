"""The studio's modules are layered (docs/ARCHITECTURE.md): imports run downward only, and no two
modules import each other, directly or through others. Read from the source, so an import inside a
function counts as much as one at the top of a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "studio"

# Lowest first. A module belongs to the last layer whose prefix it starts with.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("studio", "studio.errors", "studio.settings", "studio.families", "studio.families.registry",
                    "studio.families.shared_options")),
    ("data", ("studio.zoo", "studio.history", "studio.media", "studio.media_av", "studio.presets",
              "studio.png_params", "studio.preset_files", "studio.owner", "studio.wakeup", "studio.minis")),
    ("engines", ("studio.engines",)),
    ("builders", ("studio.zoo.builtin", "studio.zoo.builtin_image", "studio.zoo.builtin_video",
                  "studio.zoo.builtin_audio", "studio.zoo.builtin_llamagen", "studio.zoo.builtin_infinity",
                  "studio.zoo.builtin_lumina_t2i", "studio.zoo.builtin_lumina_audio", "studio.zoo.builtin_wan_fun",
                  "studio.zoo.builtin_gguf", "studio.zoo.builtin_esrgan", "studio.zoo.builtin_mini",
                  "studio.zoo.tiny_parts")),
    ("runtime", ("studio.runtime",)),
    ("tasks", ("studio.tasks",)),
    ("families", ("studio.families.builtin", *(f"studio.families.{p.name}" for p in (PACKAGE / "families").iterdir()
                                              if p.is_dir() and not p.name.startswith("_")))),
    ("services", ("studio.job", "studio.job_memory", "studio.job_saver", "studio.job_worker", "studio.device_worker",
                  "studio.jobs",
                  "studio.services", "studio.gallery", "studio.preset_checks", "studio.model_manager")),
    ("front ends", ("studio.ui", "studio.cli", "studio.__main__")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    found = 0
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            found = index
    return found


def imports(path: Path) -> set[str]:
    """The studio modules `path` imports, at the top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("studio"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("studio"):
                found.add(target)
                # `from .pkg import module` imports a module, not just a name.
                for alias in node.names:
                    if (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists():
                        found.add(f"{target}.{alias.name}")
    found.discard(name)
    return found


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_imports_run_down_the_layers():
    upward = sorted(f"{source} ({LAYERS[layer(source)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
                    for source, targets in GRAPH.items() for target in targets
                    if target in GRAPH and layer(target) > layer(source))
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    # Tarjan's strongly connected components over the module graph (package __init__s included).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in GRAPH:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not circles, circles


@pytest.mark.parametrize("package", ["studio/tasks", "studio/ui"])
def test_no_family_is_named_in_tasks_or_ui(package):
    """Family knowledge lives in the family's package: tasks and tabs ask the registry."""
    names = {f'"{p.name.replace("_", "-")}"' for p in (PACKAGE / "families").iterdir() if p.is_dir()} | {
        '"lumina-next"', '"lumina2"', '"llamagen"', '"wan"', '"cogvideox"', '"musicgen"'}
    offenders = [f"{path.relative_to(PACKAGE.parent)}: {name}" for path in (PACKAGE.parent / package).rglob("*.py")
                 for name in names if name in path.read_text(encoding="utf-8")]
    assert not offenders, offenders
