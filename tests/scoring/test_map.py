from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from siam.cli import main
from siam.scoring import read_scores
from tests.scoring.conftest import ATTRIBUTES


@pytest.fixture(scope="module")
def scored(siam_ckpt: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scores of images named by Geograph-style numeric IDs (one of them unreadable)."""
    base = tmp_path_factory.mktemp("scores")
    images = base / "images"
    images.mkdir()
    for k, src in enumerate(sorted(image_dir.glob("*.jpg"))):
        (images / f"{1000 + k}.jpg").write_bytes(src.read_bytes())
    (images / "999.jpg").write_bytes(b"")
    out = base / "out"
    assert main(["score", str(images), "--checkpoint", str(siam_ckpt), "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 0
    return out


def _votes(path: Path, ids: list[str]) -> None:
    lines = ["ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI"]
    lines += [f"{i}\t{50 + k * 0.5}\t{-4 + k * 0.25}\t{3 + k * 0.1:.1f}\t1.2\t3,4\thttp://www.geograph.org.uk/photo/{k}"
              for k, i in enumerate(ids)]
    path.write_text("\n".join(lines) + "\n")


def test_map_is_self_contained_and_joins_by_file_stem(scored: Path, tmp_path: Path) -> None:
    rows = read_scores(scored).to_pydict()
    ok = [r for r, s in enumerate(rows["status"]) if s == "ok"]
    stems = [Path(rows["path"][r]).stem for r in ok]
    assert len(stems) >= 2
    _votes(tmp_path / "votes.tsv", stems[:-1] + ["7"])  # one scored image has no votes row
    html_path = tmp_path / "map.html"
    assert main(["map", "--scores", str(scored), "--votes", str(tmp_path / "votes.tsv"), "--out", str(html_path)]) == 0
    page = html_path.read_text()
    # Self-contained: no external scripts, styles, images or tiles.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(" not in page and "@import" not in page
    data = json.loads(re.search(r'<script type="application/json" id="siam-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))
    assert data["attributes"] == ATTRIBUTES
    points = {p[0]: p for p in data["points"]}
    assert set(points) == set(stems[:-1])
    for k, r in enumerate(ok[:-1]):
        point = points[stems[k]]
        assert point[1:3] == [pytest.approx(50 + k * 0.5), pytest.approx(-4 + k * 0.25)]
        assert point[3] == pytest.approx(rows["score"][r], abs=1e-3)
        contributions = [rows[f"contribution_{a}"][r] for a in ATTRIBUTES]
        top = max(range(len(ATTRIBUTES)), key=lambda j: abs(contributions[j]))
        assert point[4] == top and point[5] == pytest.approx(contributions[top], abs=1e-3)
        assert point[6] == pytest.approx(3 + k * 0.1)
    assert "1 without a votes row" in page and "1 votes rows have no score" in page
    assert f"{len(rows['path']) - len(ok)} unreadable" in page


def test_map_errors_name_what_is_wrong(scored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    votes = tmp_path / "votes.tsv"
    votes.write_text("ID\tLat\tLon\n1\t2\t3\n")
    assert main(["map", "--scores", str(scored), "--votes", str(votes), "--out", str(tmp_path / "m.html")]) == 2
    assert "lacks" in capsys.readouterr().err
    _votes(votes, ["5"])
    votes.write_text(votes.read_text().replace("\t50.0\t", "\tnorth\t"))
    assert main(["map", "--scores", str(scored), "--votes", str(votes), "--out", str(tmp_path / "m.html")]) == 2
    assert "line 2: Lat 'north' is not a number" in capsys.readouterr().err
    _votes(votes, ["12"])
    assert main(["map", "--scores", str(scored), "--votes", str(votes), "--out", str(tmp_path / "m.html")]) == 2
    assert "no scored image matches a votes row" in capsys.readouterr().err
    assert main(["map", "--scores", str(tmp_path), "--votes", str(votes), "--out", str(tmp_path / "m.html")]) == 2
    assert "not a siam score folder" in capsys.readouterr().err


DOM_STUB = r"""
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const data = html.match(/<script type="application\/json" id="siam-data">([\s\S]*?)<\/script>/)[1];
const code = html.match(/<script>\n([\s\S]*?)<\/script>/)[1];
const arcs = [], handlers = {}, fills = [];
const el = (extra) => Object.assign({ textContent: "", style: {}, options: [], value: "-1",
  add(o) { this.options.push(o); }, addEventListener(t, f) { handlers[t] = f; } }, extra);
const ctx = { clearRect() {}, beginPath() {}, fill() { fills.push(this.fillStyle); }, fillText() {},
  arc(x, y) { arcs.push([x, y]); } };
const nodes = { "siam-data": el({ textContent: data }), map: el({ getContext: () => ctx,
  getBoundingClientRect: () => ({ left: 0, top: 0 }) }), tip: el({}), colour: el({}), lo: el({}), hi: el({}) };
global.document = { getElementById: (id) => nodes[id] };
global.Option = function (text, value) { this.text = text; this.value = value; };
eval(code);
handlers.mousemove({ clientX: arcs[0][0], clientY: arcs[0][1] });
const first = nodes.tip.textContent;
nodes.colour.value = "0"; handlers.change();
console.log(JSON.stringify({ arcs: arcs.length, tip: first, shown: nodes.tip.style.display,
  options: nodes.colour.options.map(o => o.text), fills: new Set(fills).size }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_map_script_draws_every_place_and_shows_the_hover_text(scored: Path, tmp_path: Path) -> None:
    rows = read_scores(scored).to_pydict()
    stems = [Path(p).stem for p, s in zip(rows["path"], rows["status"]) if s == "ok"]
    _votes(tmp_path / "votes.tsv", stems)
    page = tmp_path / "map.html"
    assert main(["map", "--scores", str(scored), "--votes", str(tmp_path / "votes.tsv"), "--out", str(page)]) == 0
    (tmp_path / "stub.js").write_text(DOM_STUB)
    done = subprocess.run(["node", str(tmp_path / "stub.js"), str(page)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["arcs"] == 2 * len(stems)  # drawn once by score, once by the first attribute
    first = stems[0]
    r = rows["path"].index(next(p for p in rows["path"] if Path(p).stem == first))
    assert result["tip"].startswith(f"ID {first} \u00b7 score {rows['score'][r]:.2f}")
    assert " \u00b7 top: " in result["tip"]
    assert result["shown"] == "block"
    assert result["options"] == ["predicted score", *[f"contribution of {a}" for a in ATTRIBUTES]]
    assert result["fills"] > 1, result  # colours vary with the value
