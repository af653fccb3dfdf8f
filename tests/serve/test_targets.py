"""The service with a model of several targets: every target in the API, one-target fields kept,
and the explorer page's target selector (its HTML/JS; the browser test drives it when chromium is
installed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import siam
from siam.explain.explanation import model_identity

from .conftest import BIASES, TARGETS


def _post(client, path: str, data: bytes, name: str = "meadow.jpg", **fields):
    return client.post(path, files={"image": (name, data, "image/jpeg")}, data=fields)


def _expected(checkpoint, photo: bytes, **kw):
    model = siam.load_checkpoint(checkpoint)
    ident = model_identity(model, checkpoint=checkpoint)
    ident["checkpoint"] = checkpoint.name
    return siam.explain(model, photo, name="meadow.jpg", model_id=ident, **kw)


def test_model_lists_every_target_with_its_templates(client2, client, two_target_checkpoint):
    body = client2.get("/v1/model").json()
    model = siam.load_checkpoint(two_target_checkpoint)
    assert [t["name"] for t in body["targets"]] == list(TARGETS)
    with torch.no_grad():
        for i, t in enumerate(body["targets"]):
            assert t["bias"] == pytest.approx(BIASES[i])
            np.testing.assert_allclose(t["templates"], model.effective_templates(i).numpy(), atol=1e-7)
    assert body["templates"] == body["targets"][0]["templates"] and body["bias"] == body["targets"][0]["bias"]
    assert not np.allclose(body["targets"][0]["templates"], body["targets"][1]["templates"])
    one = client.get("/v1/model").json()  # a one-target model lists its one target too
    assert [t["name"] for t in one["targets"]] == ["score"] and one["targets"][0]["templates"] == one["templates"]


def test_explain_returns_every_target_and_the_one_asked_for(client2, two_target_checkpoint, photo):
    r = _post(client2, "/v1/explain", photo)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = _expected(two_target_checkpoint, photo)
    record = json.loads(json.dumps(expected.to_json()))
    entries = body.pop("targets")
    overlays = body.pop("overlays")
    assert body == {k: v for k, v in record.items() if k != "targets"}  # the one-target fields: the first target
    assert body["target"] == "beauty"
    assert [e["name"] for e in entries] == list(TARGETS)
    for entry, want, view in zip(entries, record["targets"], expected.per_target()):
        assert {k: entry[k] for k in want} == want
        assert entry["attributes"] == json.loads(json.dumps(view.to_json()["attributes"]))
        contributions = [a["contribution"] for a in entry["attributes"]]
        assert entry["score"] == pytest.approx(entry["bias"] + sum(contributions), abs=1e-5)  # per target
        assert set(entry["overlays"]) == {"total", *[t["name"] for t in entry["top_positive"] + entry["top_negative"]]}
    assert overlays == entries[0]["overlays"]
    assert entries[0]["overlays"]["total"] != entries[1]["overlays"]["total"]  # each target's own map
    # opposite templates: what raises beauty lowers safety
    assert {t["name"] for t in entries[0]["top_positive"]} & {t["name"] for t in entries[1]["top_negative"]}

    r = _post(client2, "/v1/explain", photo, target="safety")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["target"] == "safety" and body["score"] == pytest.approx(expected.for_target("safety").score)
    assert body["overlays"] == body["targets"][1]["overlays"]


def test_intervene_edits_the_target_asked_for(client2, two_target_checkpoint, photo):
    expected = _expected(two_target_checkpoint, photo)
    for name in TARGETS:
        r = _post(client2, "/v1/intervene", photo, remove=json.dumps(["trees"]), target=name)
        assert r.status_code == 200, r.text
        body = r.json()
        view = expected.for_target(name)
        assert body["target"] == name and body["original_score"] == pytest.approx(view.score)
        assert body["score"] == pytest.approx(view.score - view.contributions[view.index("trees")], abs=1e-5)
    r = _post(client2, "/v1/intervene", photo, remove="[]", target="comfort")
    assert r.status_code == 422
    assert "comfort" in r.json()["detail"] and "beauty" in r.json()["detail"]
    assert _post(client2, "/v1/explain", photo, target="comfort").status_code == 422


def test_one_target_responses_keep_their_fields(client, photo):
    body = _post(client, "/v1/explain", photo).json()
    assert "targets" not in body and "target" not in body
    assert "target" not in _post(client, "/v1/intervene", photo, remove='["trees"]').json()


def test_page_has_a_target_selector(client):
    page = client.get("/").text
    assert '<select id="target-select"' in page and 'for="target-select"' in page
    js = client.get("/static/app.js").text
    for needle in ('$("target-select")', 'form.append("target"', "m.targets", "e.targets"):
        assert needle in js, needle
