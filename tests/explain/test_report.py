"""The HTML report: self-contained, built from saved data, rendered by headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siam.cli import main
from siam.evaluation.metrics import kendall_tau_b, rmse
from siam.explain.batch import explain_many
from siam.explain.report import _metrics_table, model_report_inputs, write_html_report
from siam.explain.summary import attribute_ranking

from .conftest import NAMES, make_image

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_DIR = os.environ.get("SIAM_REPORT_SCREENSHOT_DIR")  # keep the PNG to look at it


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, model, baseline) -> Path:
    d = tmp_path_factory.mktemp("report_imgs")
    paths, labels = [], []
    for i in range(4):
        p = d / f"img{i}.jpg"
        make_image(10 + i, (96 + 8 * i, 80)).save(p)
        paths.append(str(p))
        labels.append(3.0 + 1.5 * i)
    (d / "bad.jpg").write_text("not an image")
    explained = explain_many(model, [*paths, str(d / "bad.jpg")], baseline=baseline, labels=[*labels, 9.9])
    assert len(explained) == 4 and len(explained.failures) == 1 and explained.failures[0]["error"]
    kw = model_report_inputs(model, explained, baseline=baseline, n_panels=2, faithfulness_images=2,
                             faithfulness_steps=2)
    out = tmp_path_factory.mktemp("report")
    write_html_report(out, title="Test report", model={"backbone": "tiny"},
                      metrics={"SIAM": {"rmse": 1.25, "kendall_tau": 0.5}, "baseline": {"rmse": 1.5}},
                      notes=["1 image could not be read"], **kw)
    return out


def test_report_is_self_contained(report_dir) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    sources = re.findall(r"""src\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert sources and all(u.startswith("data:image/png;base64,") for u in sources)
    hrefs = re.findall(r"""href\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert hrefs and all(h.startswith("#s") for h in hrefs)  # only the table of contents
    assert "url(" not in page and "@import" not in page
    for u in sources:
        assert Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).format == "PNG"
    for heading in ("Metrics", "Templates (Fig. 4)", "Attribute ranking", "Attributes and scenicness (Fig. 3)",
                    "Explanations", "Where SIAM and the baseline disagree", "Faithfulness"):
        assert re.search(f"<h2 id='s\\d+'>{re.escape(heading)}", page), heading
    assert "1 image could not be read" in page and "Test report" in page


def test_report_data_matches_the_figures_inputs(report_dir, model) -> None:
    data = json.loads((report_dir / "report_data.json").read_text())
    with np.load(report_dir / "templates.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["templates"], model.effective_templates().detach().numpy())
        assert list(z["attributes"]) == list(NAMES)
    panels = data["panels"]
    assert len(panels) == 2 and all(p["label"] is not None for p in panels)
    errors = [abs(p["score"] - p["label"]) for p in panels]
    assert errors == sorted(errors, reverse=True)  # the largest errors first
    contributions = np.array([[a["contribution"] for a in p["attributes"]] for p in panels])
    assert contributions.shape == (2, len(NAMES))
    for p in panels + data["disagreement"]:
        with np.load(report_dir / p["maps"], allow_pickle=False) as z:
            assert z["contribution_maps"].shape == (len(NAMES), 8, 8)
    assert data["cooccurrence"]["counts"] and sum(data["cooccurrence"]["counts"]) == 4
    assert data["ranking"]["n_images"] == 4
    assert set(data["faithfulness"]["methods"]) >= {"siam", "baseline_gradcam"}
    assert sorted(p.name for p in (report_dir / "figures").glob("*.png")) == [
        "cooccurrence.png", "disagreement.png", "faithfulness.png", "panel_00.png", "panel_01.png",
        "ranking.png", "templates.png"]


def test_model_report_inputs_without_labels(model) -> None:
    imgs = [make_image(20 + i) for i in range(3)]
    explained = explain_many(model, [], labels=None)
    assert len(explained) == 0
    kw = model_report_inputs(model, explained)
    assert set(kw) == {"attributes", "templates"}
    from siam.explain import explain

    explained.explanations = [explain(model, im, name=f"u{i}") for i, im in enumerate(imgs)]
    kw = model_report_inputs(model, explained, n_panels=2, faithfulness_images=0)
    assert "cooccurrence" not in kw and "disagreement" not in kw and "faithfulness" not in kw
    scores = [e.score for e in explained.explanations]
    assert [p.explanation.score for p in kw["panels"]] == [max(scores), min(scores)]
    assert kw["ranking"] == attribute_ranking(np.stack([e.contributions for e in explained.explanations]), NAMES)


def test_metrics_table_layouts() -> None:
    nested = _metrics_table({"SIAM": {"rmse": 1.0, "tau": 0.5}, "baseline": {"rmse": 2.0}})
    assert nested.count("<tr>") == 3 and "<th>tau</th>" in nested and "&ndash;" in nested
    flat = _metrics_table({"rmse": 1.23456, "note": "<b>"})
    assert "1.235" in flat and "&lt;b&gt;" in flat


def test_chromium_renders_the_report(report_dir, tmp_path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"SKIPPED LOUDLY: {CHROMIUM} is not installed (apt-get install chromium), so the report "
                    "was not rendered to a PNG")
    shot = tmp_path / "report.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1400,3000", (report_dir / "report.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape == (3000, 1400, 3)
    assert img.std() > 20  # not a blank page
    green = (img[..., 1] > img[..., 0] + 40) & (img[..., 1] > img[..., 2] + 20)
    assert green.sum() > 500  # the headings' rule and the green-magenta figures are drawn
    if SCREENSHOT_DIR:
        shutil.copy(shot, Path(SCREENSHOT_DIR) / "report.png")


def _son_layout(root: Path, n: int) -> list[float]:
    """A tiny 'siam synth'-style DIR/son: historical votes.tsv + images/<ID>.jpg."""
    (root / "son" / "images").mkdir(parents=True)
    rows = ["ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI"]
    scores = []
    for i in range(n):
        pid = 1000 + i
        score = 1.0 + 8.0 * i / (n - 1)
        scores.append(score)
        make_image(30 + i, (90, 70)).save(root / "son" / "images" / f"{pid}.jpg")
        rows.append(f"{pid}\t51.5\t-0.1\t{score}\t1.0\t5\thttp://www.geograph.org.uk/photo/{pid}")
    (root / "son" / "votes.tsv").write_text("\n".join(rows) + "\n")
    return scores


def test_figures_cli_on_labelled_data(tmp_path, checkpoints, model, capsys) -> None:
    scores = _son_layout(tmp_path / "data", 6)
    out = tmp_path / "figs"
    rc = main(["figures", "--checkpoint", str(checkpoints["siam"]), "--data", str(tmp_path / "data"),
               "--split", "all", "--out", str(out), "--panels", "1"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "report_data.json").read_text())
    assert sum(data["cooccurrence"]["counts"]) == 6 and data["cooccurrence"]["attributes"] == list(NAMES)
    from siam.explain import explain

    pred = [explain(model, tmp_path / "data" / "son" / "images" / f"{1000 + i}.jpg").score for i in range(6)]
    m = data["metrics"]["SIAM (this data)"]
    assert m["rmse"] == pytest.approx(rmse(pred, scores)) and m["kendall_tau"] == pytest.approx(kendall_tau_b(pred, scores))
    assert {"templates.png", "ranking.png", "cooccurrence.png", "panel_00.png"} <= {
        p.name for p in (out / "figures").glob("*.png")}
    assert not (out / "report.html").exists()
    assert not list((tmp_path / "data" / "son").glob("missing_images_*"))  # nothing written into the data


def test_report_cli(tmp_path, checkpoints, capsys) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        make_image(40 + i, (100, 75)).save(d / f"p{i}.png")
    (d / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "rep"
    rc = main(["report", "--checkpoint", str(checkpoints["siam"]), "--baseline", str(checkpoints["baseline"]),
               "--images", str(d), "--out", str(out), "--panels", "1", "--faithfulness-images", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "zz_broken.png" in err  # one unreadable image, the report is still written
    page = (out / "report.html").read_text()
    assert "could not be read" in page and "Where SIAM and the baseline disagree" in page
    assert "no faithfulness curves" in page
    assert "no co-occurrence plot (it needs labelled data: --data)" in page
    rc = main(["report", "--checkpoint", str(checkpoints["siam"]), "--data", str(tmp_path / "missing"),
               "--out", str(out)])
    assert rc == 2 and "no 'son' folder" in capsys.readouterr().err
    rc = main(["report", "--checkpoint", str(checkpoints["siam"]), "--images", str(d), "--data", str(d),
               "--out", str(out)])
    assert rc == 2


def test_report_without_images_has_templates_only(tmp_path, checkpoints) -> None:
    out = tmp_path / "rep"
    assert main(["report", "--checkpoint", str(checkpoints["siam"]), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Templates (Fig. 4)" in page and "no attribute ranking" in page
    assert [p.name for p in (out / "figures").glob("*.png")] == ["templates.png"]


def test_quickstart_hook(tmp_path, checkpoints) -> None:
    from siam.explain import quickstart_hook

    _son_layout(tmp_path / "data", 5)
    report = {"models": {"siam_joint": {"son_rmse": 1.1, "son_tau": 0.4, "checkpoint": "x"},
                         "baseline": {"son_rmse": 1.0}}}
    res = quickstart_hook(out=tmp_path / "explain", data=tmp_path / "data", report=report,
                          models={"siam_joint": checkpoints["siam"]},
                          split="all", n_panels=1, faithfulness_images=1, faithfulness_steps=1)
    assert res["model"] == "siam_joint" and res["n_images"] == 5 and res["n_failed"] == 0
    assert set(res["faithfulness"]) == {"deletion", "insertion"}
    assert set(res["faithfulness"]["deletion"]) == {"siam", "siam_random"}  # no baseline given
    page = Path(res["html"]).read_text()
    assert "son_rmse" in page and "Attributes and scenicness (Fig. 3)" in page and "Faithfulness" in page
    with pytest.raises(ValueError, match="no SIAM model"):
        quickstart_hook(out=tmp_path / "x", data=tmp_path / "data", models={"baseline": checkpoints["baseline"]},
                        report={})


def test_report_data_is_strict_json(tmp_path) -> None:
    def reject(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    page = write_html_report(tmp_path, metrics={"SIAM": {"kendall_tau": float("nan"), "rmse": 1.0}}).read_text()
    data = json.loads((tmp_path / "report_data.json").read_text(), parse_constant=reject)
    assert data["metrics"] == {"SIAM": {"kendall_tau": None, "rmse": 1.0}}
    assert "n/a" in page and "no attribute ranking" in page
