"""``siam map``: a self-contained interactive HTML map of predicted scenicness.

Joins the rows of a ``siam score`` folder to a ScenicOrNot ``votes.tsv`` (either published
format, read by :func:`siam.data.scenic_or_not.read_votes`; rows without Lat/Lon are left out) by
ID = the image file's stem (``images/12345.jpg`` -> ``12345``). Each place is a dot at its longitude /
latitude (equirectangular, x scaled by cos(mean latitude)), coloured by the predicted score or by
one attribute's contribution; hovering shows the ID, the score, the observed average and the
place's top attribute (largest absolute contribution, signed). The page has no external assets:
the data is inline JSON drawn on a canvas by a few lines of inline JavaScript.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siam.errors import DatasetError
from siam.scoring.batch import read_manifest, read_scores

__all__ = ["MapData", "read_votes_locations", "join_scores", "render_map", "add_arguments", "run"]

@dataclass(frozen=True)
class MapData:
    """Joined points: ``points`` rows are [id, lat, lon, score, top_attr (index or -1),
    top_contribution, observed_average or None, contributions (list, K) or None]. ``errors``
    counts rows skipped as unreadable images or non-finite predictions."""

    points: list[list[Any]]
    attributes: list[str]
    scored: int
    errors: int
    unmatched_scores: int
    unmatched_votes: int


def read_votes_locations(path: str | os.PathLike[str]) -> dict[str, tuple[float, float, float | None]]:
    """``ID -> (lat, lon, Average)`` for every row of a ScenicOrNot votes.tsv with a location.

    Read with the project's parser (:func:`siam.data.scenic_or_not.read_votes`, either published
    format), which raises :class:`~siam.errors.DatasetError` naming the line of a bad value.
    """
    from siam.data.scenic_or_not import read_votes

    table = read_votes(path, min_votes=1)
    return {
        str(int(i)): (float(lat), float(lon), float(avg))
        for i, lat, lon, avg in zip(table.ids, table.lat, table.lon, table.average)
        if math.isfinite(lat) and math.isfinite(lon)
    }


def join_scores(scores: Any, votes: dict[str, tuple[float, float, float | None]],
                attributes: list[str], *, target: str | None = None) -> MapData:
    """Join a score table (``pyarrow.Table`` from :func:`read_scores`) to votes by file stem.
    ``target``: a folder scored by a model with several targets draws that target's ``score_<t>``
    and ``contribution_<t>_<a>`` columns (default: ``score``, the first target)."""
    cols = scores.to_pydict()
    prefix = "" if target is None else f"{target}_"
    contrib = [cols[f"contribution_{prefix}{a}"] for a in attributes]
    if target is not None:
        cols["score"] = cols[f"score_{target}"]
    points: list[list[Any]] = []
    errors = unmatched = 0
    matched_ids: set[str] = set()
    for r, (path, status, score) in enumerate(zip(cols["path"], cols["status"], cols["score"])):
        values = [float(c[r]) for c in contrib] if status == "ok" else []
        if status != "ok" or not all(math.isfinite(v) for v in [float(score), *values]):
            errors += 1  # unreadable image, or a non-finite prediction
            continue
        key = Path(path).stem
        if key not in votes:
            unmatched += 1
            continue
        matched_ids.add(key)
        lat, lon, avg = votes[key]
        top = max(range(len(values)), key=lambda j: abs(values[j])) if values else -1
        points.append([
            key, round(lat, 6), round(lon, 6), round(float(score), 4), top,
            round(values[top], 4) if values else None, avg,
            [round(v, 4) for v in values] if values else None,
        ])
    return MapData(points, attributes, scored=len(cols["path"]), errors=errors,
                   unmatched_scores=unmatched, unmatched_votes=len(votes) - len(matched_ids))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 16px; color: #222; }}
#wrap {{ position: relative; display: inline-block; border: 1px solid #ccc; }}
canvas {{ display: block; cursor: crosshair; }}
#tip {{ position: absolute; pointer-events: none; background: rgba(255,255,255,.95); border: 1px solid #888;
  padding: 4px 8px; border-radius: 4px; display: none; white-space: nowrap; font-size: 13px; }}
#bar {{ height: 12px; width: 320px; background: linear-gradient(to right, {gradient}); }}
.legend {{ display: flex; gap: 8px; align-items: center; margin: 8px 0; }}
small {{ color: #666; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<div class="legend"><label>colour by <select id="colour"></select></label>
<span id="lo"></span><div id="bar"></div><span id="hi"></span></div>
<div id="wrap"><canvas id="map" width="{width}" height="{height}"></canvas><div id="tip"></div></div>
<p><small>Hover a dot for its ID, predicted score, observed average and top attribute (largest absolute
contribution). Equirectangular projection; no external resources. Generated by siam map.</small></p>
<script type="application/json" id="siam-data">{data}</script>
<script>
(function () {{
  const D = JSON.parse(document.getElementById("siam-data").textContent);
  const P = D.points, A = D.attributes, W = {width}, H = {height}, PAD = 12;
  const stops = {stops};
  const cv = document.getElementById("map"), ctx = cv.getContext("2d"), tip = document.getElementById("tip");
  const sel = document.getElementById("colour");
  sel.add(new Option("predicted score", "-1"));
  A.forEach((a, i) => sel.add(new Option("contribution of " + a, String(i))));
  if (!P.length) {{ ctx.fillText("no points to show", 20, 20); return; }}
  let la0 = Infinity, la1 = -Infinity, lo0 = Infinity, lo1 = -Infinity;
  for (const p of P) {{
    la0 = Math.min(la0, p[1]); la1 = Math.max(la1, p[1]); lo0 = Math.min(lo0, p[2]); lo1 = Math.max(lo1, p[2]);
  }}
  const k = Math.cos((la0 + la1) / 2 * Math.PI / 180);
  const sx = (lo1 - lo0) * k || 1e-6, sy = (la1 - la0) || 1e-6;
  const s = Math.min((W - 2 * PAD) / sx, (H - 2 * PAD) / sy);
  const xy = P.map(p => [PAD + (p[2] - lo0) * k * s, H - PAD - (p[1] - la0) * s]);
  function colour(t) {{
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i, a = stops[i], b = stops[i + 1];
    return "rgb(" + [0, 1, 2].map(c => Math.round(a[c] + f * (b[c] - a[c]))).join(",") + ")";
  }}
  function value(p, which) {{ return which < 0 ? p[3] : p[7][which]; }}
  function draw() {{
    const which = Number(sel.value);
    let v0 = Infinity, v1 = -Infinity;
    for (const p of P) {{ const v = value(p, which); v0 = Math.min(v0, v); v1 = Math.max(v1, v); }}
    document.getElementById("lo").textContent = v0.toFixed(2);
    document.getElementById("hi").textContent = v1.toFixed(2);
    ctx.clearRect(0, 0, W, H);
    const r = P.length > 20000 ? 1.5 : 3;
    P.forEach((p, i) => {{
      ctx.fillStyle = colour((value(p, which) - v0) / ((v1 - v0) || 1));
      ctx.beginPath(); ctx.arc(xy[i][0], xy[i][1], r, 0, 2 * Math.PI); ctx.fill();
    }});
  }}
  const CELL = 8, grid = new Map();
  xy.forEach((q, i) => {{
    const key = Math.floor(q[0] / CELL) + "," + Math.floor(q[1] / CELL);
    if (!grid.has(key)) grid.set(key, []);
    grid.get(key).push(i);
  }});
  function fmt(x) {{ return (x >= 0 ? "+" : "") + x.toFixed(3); }}
  cv.addEventListener("mousemove", ev => {{
    const b = cv.getBoundingClientRect(), mx = ev.clientX - b.left, my = ev.clientY - b.top;
    let best = -1, bd = 36;
    for (let gx = Math.floor(mx / CELL) - 1; gx <= Math.floor(mx / CELL) + 1; gx++)
      for (let gy = Math.floor(my / CELL) - 1; gy <= Math.floor(my / CELL) + 1; gy++)
        for (const i of grid.get(gx + "," + gy) || []) {{
          const d = (xy[i][0] - mx) ** 2 + (xy[i][1] - my) ** 2;
          if (d < bd) {{ bd = d; best = i; }}
        }}
    if (best < 0) {{ tip.style.display = "none"; return; }}
    const p = P[best];
    tip.textContent = "ID " + p[0] + " \\u00b7 score " + p[3].toFixed(2) +
      (p[6] === null ? "" : " \\u00b7 observed " + p[6].toFixed(2)) +
      (p[4] < 0 ? "" : " \\u00b7 top: " + A[p[4]] + " (" + fmt(p[5]) + ")");
    tip.style.left = (mx + 12) + "px"; tip.style.top = (my + 12) + "px"; tip.style.display = "block";
  }});
  cv.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
  sel.addEventListener("change", draw);
  draw();
}})();
</script></body></html>
"""

# viridis at 5 stops
_STOPS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def render_map(data: MapData, *, title: str = "Predicted scenicness", width: int = 900, height: int = 900) -> str:
    """The HTML page for ``data`` (a single string; no external resources)."""
    summary = (
        f"{len(data.points)} places shown, of {data.scored} scored images "
        f"({data.errors} unreadable, {data.unmatched_scores} without a votes row); "
        f"{data.unmatched_votes} votes rows have no score."
    )
    payload = json.dumps({"points": data.points, "attributes": data.attributes}, separators=(",", ":"),
                         allow_nan=False)
    payload = payload.replace("</", "<\\/")  # cannot close the <script> element
    gradient = ", ".join(f"rgb{c}" for c in _STOPS)
    return _PAGE.format(title=html.escape(title), summary=html.escape(summary), data=payload,
                        width=int(width), height=int(height), stops=json.dumps(_STOPS), gradient=gradient)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Draw an interactive, self-contained HTML map of a 'siam score' folder joined to a "
        "ScenicOrNot votes.tsv (ID, Lat, Lon, Average, ...) by image file stem == ID."
    )
    parser.add_argument("--scores", required=True, help="a finished 'siam score' output folder")
    parser.add_argument("--votes", required=True, help="ScenicOrNot votes.tsv (rows with Lat/Lon)")
    parser.add_argument("--out", required=True, help="HTML file to write")
    parser.add_argument("--title", default="Predicted scenicness", help="page title")
    parser.add_argument("--size", type=int, default=900, help="map width and height in pixels (default 900)")
    parser.add_argument("--target", default=None, metavar="NAME",
                        help="scores of a model with several targets: the target to draw (default: the first)")


def run(args: argparse.Namespace) -> int:
    if not 100 <= args.size <= 10000:
        raise ValueError(f"--size must be between 100 and 10000 pixels, got {args.size}")
    manifest = read_manifest(args.scores)
    table = read_scores(args.scores)
    votes = read_votes_locations(args.votes)
    targets = list(manifest.get("targets", ["score"]))
    if args.target is not None and args.target not in targets:
        raise ValueError(f"--target: unknown target {args.target!r}; {args.scores} has {targets}")
    target = args.target if len(targets) > 1 else None
    data = join_scores(table, votes, list(manifest.get("attributes", [])), target=target)
    if not data.points:
        raise DatasetError(
            f"no scored image matches a votes row: {data.scored} scored rows, {len(votes)} votes rows; "
            "rows are joined by image file stem == votes ID (e.g. images/12345.jpg <-> ID 12345)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render_map(data, title=args.title, width=args.size, height=args.size), encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}: {len(data.points)} places ({data.unmatched_scores} scored images without a votes row, "
          f"{data.errors} error rows skipped)")
    return 0
