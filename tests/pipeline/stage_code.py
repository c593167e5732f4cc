"""The code each DVC stage's command runs, from the package's static import graph (stages.codebase)."""

from __future__ import annotations

import ast
from pathlib import Path

from stages import codebase

ENTRY = ("stages", "stages.__main__", "stages.cli")  # `python -m stages <command>`


def _cli_imports(command: str) -> set[str]:
    """Modules cli.py imports at module level, plus those imported inside the command's function."""
    tree = ast.parse(codebase.modules()["stages.cli"].read_text())
    found: set[str] = set()
    known = codebase.modules()

    def collect(nodes) -> None:
        for node in nodes:
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module in known:
                    found.add(sub.module)
                    found.update(f"{sub.module}.{a.name}" for a in sub.names if f"{sub.module}.{a.name}" in known)
                elif isinstance(sub, ast.Import):
                    found.update(a.name for a in sub.names if a.name in known)

    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    # module-level helpers every command runs (_run, _run_stage, ...): any non-command function
    commands = {
        n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and any(_is_command(d) for d in n.decorator_list)
    }
    helpers = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name not in commands]
    collect(top + helpers + [commands[command]])
    return found


def _is_command(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "command"


def command_function(command: str) -> str:
    """The cli.py function of a command name (``search`` -> ``search_cmd``)."""
    tree = ast.parse(codebase.modules()["stages.cli"].read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if _is_command(d):
                    named = d.args[0].value if isinstance(d, ast.Call) and d.args else node.name
                    if named == command:
                        return node.name
    raise KeyError(command)


def stage_modules(command: str) -> set[str]:
    """Every module of the package that `python -m stages <command>` may import."""
    return codebase.closure([*ENTRY, *_cli_imports(command_function(command))], opaque=["stages.cli"])


def stage_files(command: str) -> list[Path]:
    return codebase.files(stage_modules(command))
