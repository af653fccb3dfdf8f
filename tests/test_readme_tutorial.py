"""The README's tutorial runs as written: every line of its bash block, in a temporary folder.

The `siam ...` lines go through :func:`siam.cli.main` (the same parser as the console script);
`siam serve` is parsed by its own parser and its app is exercised with a test client instead of
binding a port. Then the invariants of what the steps wrote are checked, not just that they ran.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- tutorial:start -->", "<!-- tutorial:end -->"


def tutorial_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The commands of the README's tutorial block (comments and blank lines left out)."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise AssertionError(f"{readme} has no tutorial block between {START} and {END}")
    block = text.split(START, 1)[1].split(END, 1)[0]
    lines = [ln.strip() for ln in block.splitlines()]
    return [shlex.split(ln) for ln in lines if ln and not ln.startswith(("#", "```"))]


def _serve(argv: list[str], photo: Path) -> dict:
    from fastapi.testclient import TestClient

    from siam.serve import cli as serve_cli
    from siam.serve.app import create_app

    parser = argparse.ArgumentParser(prog="siam serve")
    serve_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    app = create_app(args.checkpoint, max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_concurrency=args.max_concurrency, max_megapixels=args.max_megapixels, top_k=args.top_k)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'id="target-select"' in page.text
        model = client.get("/v1/model").json()
        answer = client.post("/v1/explain", files={"image": (photo.name, io.BytesIO(photo.read_bytes()), "image/jpeg")})
        assert answer.status_code == 200, answer.text
        return {"model": model, "explain": answer.json()}


def test_readme_tutorial_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from siam.cli import main

    commands = tutorial_commands()
    assert [c[:2] for c in commands][:2] == [["siam", "synth"], ["siam", "data"]]
    assert ["siam", "serve"] in [c[:2] for c in commands]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    served = None
    for argv in commands:
        assert argv[0] == "siam", f"the tutorial should only run siam commands, got {argv}"
        if argv[1] == "serve":
            served = _serve(argv[2:], tmp_path / "tutorial/data/images/son/3.jpg")
            continue
        assert main(argv[1:]) == 0, f"tutorial step failed: {shlex.join(argv)}"

    data = tmp_path / "tutorial" / "data"
    header = (data / "targets.csv").read_text().splitlines()[0].split(",")
    targets = [c for c in header if c not in ("path", "split") and not c.endswith("_variance")]
    assert targets == ["scenicness", "scenicness_reversed"]

    # evaluation: one row of metrics per target, on the same held-out images
    report = json.loads((tmp_path / "tutorial/eval/report.json").read_text())
    (metrics,) = report["models"].values()
    per = metrics["per_target"]
    assert list(per) == targets and per["scenicness"]["son_n"] == per["scenicness_reversed"]["son_n"] > 0
    # 11 - y is predicted by the mirrored g: the same errors, and ranks reversed and re-reversed
    assert per["scenicness_reversed"]["son_rmse"] == pytest.approx(per["scenicness"]["son_rmse"], rel=1e-3)
    assert "Per target" in (tmp_path / "tutorial/eval/report.md").read_text()

    # explanations: both targets, each score = its bias + its contributions
    explained = sorted((tmp_path / "tutorial/explain").glob("*.json"))
    records = [json.loads(p.read_text()) for p in explained if p.name != "summary.json"]
    assert len(records) == 2
    for rec in records:
        assert [t["name"] for t in rec["targets"]] == targets
        for t in rec["targets"]:
            total = t["bias"] + sum(t["contributions"].values())
            assert t["score"] == pytest.approx(total, abs=1e-4)
        assert rec["targets"][0]["score"] + rec["targets"][1]["score"] == pytest.approx(11.0, abs=0.05)
        figures = {p.name for p in (tmp_path / "tutorial/explain").glob(f"{Path(rec['image']).stem}.target-*.png")}
        assert len(figures) == 2

    # the web page: both targets offered, the explanation carries both
    assert served is not None
    assert [t["name"] for t in served["model"]["targets"]] == targets
    assert [t["name"] for t in served["explain"]["targets"]] == targets
