"""An offline security check that can fail: pinned minimum versions vs the fixes of known CVEs.

``pip-audit`` needs a vulnerability service; without a network it skips every package and passes,
so it checks nothing here. This test holds its own table of the known CVEs of the dependencies that
face untrusted input (uploads: starlette, python-multipart; image decoding: Pillow; model files:
torch), each with the first version that fixes it and where that is published. It fails when

* the minimum version that ``pyproject.toml`` allows is below a fix (a fresh install could pick a
  vulnerable release), or
* the installed version is below a fix.

A conservative rule: the floor must be at or above *every* fix, also for CVEs whose affected range
starts above the floor. The table is as complete as its sources were when it was written; add rows
when new advisories appear (``.ci/run`` prints that this is the check that ran).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Advisory:
    package: str
    cve: str
    fixed: str  # first release with the fix
    what: str
    source: str  # the advisory that states the fixed version


GHSA = "https://github.com/advisories/"
KNOWN_CVES: tuple[Advisory, ...] = (
    # starlette (multipart parsing and file serving of every upload)
    Advisory("starlette", "CVE-2023-30798", "0.25.0", "unbounded multipart form fields/files (DoS)",
             GHSA + "GHSA-74m5-2c7w-9w3x"),
    Advisory("starlette", "CVE-2023-29159", "0.27.0", "path traversal in StaticFiles",
             GHSA + "GHSA-v5gw-mw7f-84px"),
    Advisory("starlette", "CVE-2024-24762", "0.36.2", "Content-Type header ReDoS (via python-multipart)",
             GHSA + "GHSA-93gm-qmq6-w238"),
    Advisory("starlette", "CVE-2024-47874", "0.40.0", "multipart fields without filename buffered in memory (DoS)",
             GHSA + "GHSA-f96h-pmfr-66vw"),
    Advisory("starlette", "CVE-2025-54121", "0.47.2", "event loop blocked while rolling large uploads to disk",
             GHSA + "GHSA-2c2j-9gv5-cj73"),
    Advisory("starlette", "CVE-2025-62727", "0.49.1", "quadratic Range header parsing in FileResponse (DoS)",
             GHSA + "GHSA-7f5h-v6xp-fcq8"),
    # python-multipart (the form parser behind /v1/explain and /v1/intervene)
    Advisory("python-multipart", "CVE-2024-24762", "0.0.7", "Content-Type header ReDoS",
             GHSA + "GHSA-2jv5-9r88-3w3p"),
    Advisory("python-multipart", "CVE-2024-53981", "0.0.18", "excessive logging on data around the boundary (DoS)",
             GHSA + "GHSA-59g5-xgcq-4qw3"),
    # Pillow (decodes every uploaded or scored image)
    Advisory("pillow", "CVE-2023-44271", "10.0.0", "unbounded text length in ImageFont (DoS)",
             GHSA + "GHSA-8ghj-p4vj-mr35"),
    Advisory("pillow", "CVE-2023-50447", "10.2.0", "arbitrary code execution through ImageMath.eval",
             GHSA + "GHSA-3f63-hfp8-52jq"),
    Advisory("pillow", "CVE-2024-28219", "10.3.0", "buffer overflow in _imagingcms",
             GHSA + "GHSA-44wm-f244-xhp3"),
    Advisory("pillow", "CVE-2025-48379", "11.3.0", "heap buffer overflow when writing large DDS images",
             GHSA + "GHSA-xg8h-j46f-w952"),
    # torch (reads checkpoints; torch.load must not run code)
    Advisory("torch", "CVE-2024-31580", "2.2.0", "heap buffer overflow in the mobile interpreter",
             "https://nvd.nist.gov/vuln/detail/CVE-2024-31580"),
    Advisory("torch", "CVE-2024-31583", "2.2.0", "use-after-free in the mobile interpreter",
             "https://nvd.nist.gov/vuln/detail/CVE-2024-31583"),
    Advisory("torch", "CVE-2025-32434", "2.6.0", "remote code execution through torch.load(weights_only=True)",
             GHSA + "GHSA-53q9-r3pm-6pq6"),
)
CHECKED = ("starlette", "python-multipart", "pillow", "torch")


def pinned_minimums(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Version]:
    """{package: the lowest version the ``>=`` pins of dependencies and extras allow}."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    floors: dict[str, Version] = {}
    for text in reqs:
        req = Requirement(text)
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        if lows:
            name = canonicalize_name(req.name)
            floors[name] = max([*lows, floors.get(name, Version("0"))])
    return floors


def violations(versions: dict[str, Version], table: tuple[Advisory, ...] = KNOWN_CVES) -> list[str]:
    """One line per (package, CVE) whose fix is above the given version (a missing package counts)."""
    out = []
    for a in table:
        have = versions.get(canonicalize_name(a.package))
        if have is None or have < Version(a.fixed):
            out.append(f"{a.package} {have or '(unpinned)'} < {a.fixed}, which fixes {a.cve} ({a.what}; {a.source})")
    return out


def test_every_checked_package_is_in_the_table() -> None:
    assert {canonicalize_name(a.package) for a in KNOWN_CVES} == set(CHECKED)


def test_the_check_flags_a_floor_below_a_fix() -> None:
    """The check can fail: a floor just below a fix is reported with the CVE it misses."""
    low = {name: Version("99") for name in CHECKED} | {"starlette": Version("0.39.2")}
    found = violations(low)
    assert any("CVE-2024-47874" in v for v in found) and all(v.startswith("starlette") for v in found)
    assert len(found) == 3  # 0.40.0, 0.47.2 and 0.49.1 are above 0.39.2
    assert violations({name: Version("99") for name in CHECKED}) == []
    assert any("(unpinned)" in v for v in violations({}))


def test_pinned_minimums_are_at_or_above_every_known_fix() -> None:
    floors = pinned_minimums()
    missing = [p for p in CHECKED if canonicalize_name(p) not in floors]
    assert not missing, f"pyproject.toml has no minimum version for {missing}"
    found = violations(floors)
    assert not found, "raise these pins in pyproject.toml:\n" + "\n".join(found)


@pytest.mark.parametrize("package", CHECKED)
def test_installed_versions_are_at_or_above_every_known_fix(package: str) -> None:
    try:
        have = Version(metadata.version(package))
    except metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed (an optional extra)")
    table = tuple(a for a in KNOWN_CVES if canonicalize_name(a.package) == canonicalize_name(package))
    found = violations({canonicalize_name(package): have}, table)
    assert not found, "upgrade:\n" + "\n".join(found)
