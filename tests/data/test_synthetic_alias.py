"""The generator lives in ``siam.synth``; ``siam.data.synthetic`` is a deprecated alias for one
release, and no reader in ``siam.data`` depends on the generator."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import siam.data
import siam.synth
from siam.cli import COMMANDS

DATA = Path(siam.data.__file__).parent
ALIAS = "siam.data.synthetic"


def _import_alias():
    sys.modules.pop(ALIAS, None)  # a fresh import, so that it warns again
    with pytest.warns(DeprecationWarning, match=r"siam\.data\.synthetic is deprecated.*siam\.synth"):
        return importlib.import_module(ALIAS)


def test_old_name_imports_warns_and_gives_the_same_objects() -> None:
    old = _import_alias()
    assert old.__all__ == siam.synth.__all__ and "generate" in old.__all__ and "run" in old.__all__
    for name in siam.synth.__all__:
        assert getattr(old, name) is getattr(siam.synth, name), name
    # names the old module had beyond __all__ (constants, private helpers) resolve too
    from siam.synth import cli, world

    assert old.BIAS is world.BIAS and old._row_weights is world._row_weights
    assert old._parse_size is cli._parse_size
    assert {"BIAS", "generate", "_state"} <= set(dir(old))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        old.nonexistent  # noqa: B018
    ns: dict[str, object] = {}
    exec(f"from {ALIAS} import *", ns)  # noqa: S102
    assert ns["SynthConfig"] is siam.synth.SynthConfig


def test_the_synth_command_and_package_do_not_touch_the_alias() -> None:
    assert COMMANDS["synth"][0] == "siam.synth.cli"
    code = ("import sys, siam.synth; from siam.cli import build_parser; build_parser('synth'); "
            f"assert {ALIAS!r} not in sys.modules")
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _siam_imports(path: Path) -> set[str]:
    """Every ``siam...`` module name ``path`` imports, at the top or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = "siam.data" + (f".{base}" if base else "")
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {n for n in out if n.startswith("siam")}


def test_no_reader_depends_on_the_generator() -> None:
    """Statically (lazy imports too) and at run time (imports of imports too)."""
    modules = sorted(p for p in DATA.glob("*.py") if p.stem not in ("__init__", "synthetic"))
    assert {"to_csv", "csv_folder", "sun_attributes"} <= {p.stem for p in modules}
    assert "siam.synth" in _siam_imports(DATA / "synthetic.py")  # the check sees imports
    for path in modules:
        bad = {n for n in _siam_imports(path) if n == "siam.synth" or n.startswith(("siam.synth.", ALIAS))}
        assert not bad, f"{path.name} imports the generator: {sorted(bad)}"
    code = ("import sys; " + "; ".join(f"import siam.data.{p.stem}" for p in modules)
            + "; bad = sorted(m for m in sys.modules if m.startswith('siam.synth') or m == 'siam.data.synthetic')"
            + "; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
