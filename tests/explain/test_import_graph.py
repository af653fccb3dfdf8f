"""The explain modules import each other without cycles, and each imports on its own in any order."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

import siam.explain

PACKAGE = "siam.explain"
FOLDER = Path(siam.explain.__file__).parent
MODULES = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__")


def _edges(module: str) -> set[str]:
    """Sibling modules that ``module`` imports anywhere (top level or inside functions)."""
    tree = ast.parse((FOLDER / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative: from . import x / from .x import y
            base = node.module or ""
            names = [f"{PACKAGE}.{base}".rstrip(".")] + [f"{PACKAGE}.{base + '.' if base else ''}{a.name}"
                                                          for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith(PACKAGE + "."):
                sub = name[len(PACKAGE) + 1:].split(".")[0]
                if sub in MODULES and sub != module:
                    out.add(sub)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_explain_module_graph_has_no_cycle() -> None:
    graph = {m: _edges(m) for m in MODULES}
    assert {"cli_figures", "report"} <= set(MODULES) and graph["cli_figures"]  # the check sees imports
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


@pytest.mark.parametrize("first,second", [("cli_figures", "report"), ("report", "cli_figures")])
def test_modules_import_alone_and_in_either_order(first: str, second: str) -> None:
    """Each explain module in a fresh interpreter: first, then second, then all the others; and the
    names other code imports from cli_figures and report are still there."""
    order = [first, second] + [m for m in MODULES if m not in (first, second)]
    code = "; ".join(f"import {PACKAGE}.{m}" for m in order) + "; " + (
        "from siam.explain.cli_figures import add_common_arguments, collect, SPLITS, add_arguments, run; "
        "from siam.explain.report import labelled_metrics, model_report_inputs, write_html_report, add_arguments, run"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
