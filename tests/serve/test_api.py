"""REST API: the JSON is exactly ``siam.explain`` / ``Explanation.intervene`` on the same image."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import siam
from siam.explain.explanation import model_identity

from .conftest import ATTRIBUTES, BIAS


def _expected(tiny_checkpoint, photo: bytes, name: str, top_k: int = 5):
    model = siam.load_checkpoint(tiny_checkpoint)
    ident = model_identity(model, checkpoint=tiny_checkpoint)
    ident["checkpoint"] = tiny_checkpoint.name  # the service never shows server paths
    return siam.explain(model, photo, top_k=top_k, name=name, model_id=ident)


def _post(client, path: str, data: bytes, name: str = "meadow.jpg", **fields):
    return client.post(path, files={"image": (name, data, "image/jpeg")}, data=fields)


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": siam.__version__, "attributes": len(ATTRIBUTES)}


def test_model_reports_templates_preprocessing_and_version(client, tiny_checkpoint):
    r = client.get("/v1/model")
    assert r.status_code == 200
    body = r.json()
    model = siam.load_checkpoint(tiny_checkpoint)
    assert body["attributes"] == list(ATTRIBUTES)
    assert body["version"] == siam.__version__
    assert body["preprocessing"] == model.preprocessing.to_dict()
    assert body["grid"] == 8 and body["bias"] == pytest.approx(BIAS)
    templates = np.asarray(body["templates"])
    assert templates.shape == (len(ATTRIBUTES), 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(templates, model.effective_templates().numpy(), rtol=0, atol=1e-7)
    assert (templates > 0).any() and (templates < 0).any()  # hand-set templates have both signs
    assert body["model"]["checkpoint"] == tiny_checkpoint.name  # not the server path
    assert str(tiny_checkpoint.parent) not in r.text
    assert body["limits"]["max_upload_bytes"] == 2 * 2**20


def test_explain_json_equals_siam_explain(client, tiny_checkpoint, photo):
    r = _post(client, "/v1/explain", photo, name="meadow.jpg")
    assert r.status_code == 200, r.text
    body = r.json()
    expected = _expected(tiny_checkpoint, photo, "meadow.jpg")
    overlays = body.pop("overlays")
    assert body == json.loads(json.dumps(expected.to_json()))
    # Invariants, not just equality: the score is the bias plus the contributions (Sec. 3.2).
    contributions = [a["contribution"] for a in body["attributes"]]
    assert body["score"] == pytest.approx(body["bias"] + sum(contributions), abs=1e-5)
    assert body["bias"] == pytest.approx(BIAS)
    assert {a["name"] for a in body["attributes"]} == set(ATTRIBUTES)
    assert body["top_positive"] and body["top_negative"], "hand-set templates give both signs"
    assert all(t["contribution"] > 0 for t in body["top_positive"])
    assert all(t["contribution"] < 0 for t in body["top_negative"])
    # One PNG overlay for the total map and one per listed top attribute.
    tops = [t["name"] for t in body["top_positive"] + body["top_negative"]]
    assert set(overlays) == {"total", *tops}
    for url in overlays.values():
        assert url.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.width > 0


def test_explain_top_k_field(client, tiny_checkpoint, photo):
    r = _post(client, "/v1/explain", photo, top_k="1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top_k"] == 1
    assert len(body["top_positive"]) == 1 and len(body["top_negative"]) == 1
    assert body["top_positive"] == _expected(tiny_checkpoint, photo, "meadow.jpg", top_k=1).top_positive()
    assert len(body["overlays"]) == 3


@pytest.mark.parametrize(
    "edits",
    [
        {"remove": ["trees"]},
        {"scale": {"water": 0.5, "road": 2.0}},
        {"remove_region": {"clouds": [0, 0, 160, 120]}},
        {"remove": ["road"], "scale": {"trees": 0.0}, "top_k": 2},
    ],
)
def test_intervene_json_equals_explanation_intervene(client, tiny_checkpoint, photo, edits):
    fields = {k: (v if k == "top_k" else json.dumps(v)) for k, v in edits.items()}
    r = _post(client, "/v1/intervene", photo, **{k: str(v) for k, v in fields.items()})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = _expected(tiny_checkpoint, photo, "meadow.jpg").intervene(**edits)
    assert body == json.loads(json.dumps(expected.to_json()))
    # Exact because g is linear: the new score is the bias plus the edited contributions.
    assert body["score"] == pytest.approx(BIAS + sum(c["contribution"] for c in body["contributions"]), abs=1e-5)
    assert body["delta"] == pytest.approx(body["score"] - body["original_score"])
    assert body["changes"], "every edit above changes at least one contribution"


def test_intervene_remove_lowers_score_by_its_contribution(client, photo):
    explained = _post(client, "/v1/explain", photo).json()
    top = explained["top_positive"][0]
    r = _post(client, "/v1/intervene", photo, remove=json.dumps([top["name"]]))
    assert r.status_code == 200
    assert r.json()["score"] == pytest.approx(explained["score"] - top["contribution"], abs=1e-5)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"remove": '["not_an_attribute"]'}, "unknown attribute"),
        ({"remove": "trees"}, "remove: not valid JSON"),
        ({"remove": '{"trees": 1}'}, "expected a JSON list"),
        ({"scale": '{"trees": "big"}'}, "expected a finite number"),
        ({"scale": "[1, 2]"}, "expected a JSON dict"),
        ({"remove_region": '{"trees": [0, 0, 1]}'}, "[x0, y0, x1, y1]"),
        ({"remove_region": '{"trees": [10, 10, 5, 5]}'}, "x0 < x1"),
        ({"top_k": "-1"}, "top_k"),
        ({"top_k": "many"}, "top_k"),
    ],
)
def test_intervene_bad_fields_get_422_saying_what_is_allowed(client, photo, fields, needle):
    r = _post(client, "/v1/intervene", photo, **fields)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]


def test_missing_image_gets_422_naming_the_field(client):
    r = client.post("/v1/explain", data={"top_k": "2"})
    assert r.status_code == 422
    assert "image" in r.json()["detail"]


def test_page_and_assets_are_served_without_external_references(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert src.startswith("/"), f"external asset {src!r}"
    for asset, media in (("/static/app.js", "text/javascript"), ("/static/app.css", "text/css"),
                         ("/favicon.svg", "image/svg+xml")):
        r = client.get(asset)
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)
        text = r.text.replace("http://www.w3.org/2000/svg", "")  # an XML namespace, not a fetch
        assert not re.search(r"https?://", text), f"{asset} references an external URL"
    assert "/v1/intervene" in client.get("/static/app.js").text


def test_openapi_docs_are_served(client):
    schema = client.get("/openapi.json").json()
    assert {"/health", "/v1/model", "/v1/explain", "/v1/intervene"} <= set(schema["paths"])
    responses = schema["paths"]["/v1/explain"]["post"]["responses"]
    assert {"200", "413", "415", "422", "503"} <= set(responses)
    assert client.get("/docs").status_code == 200


def test_api_docs_reference_only_local_assets(client):
    """Swagger UI comes from the fastapi-offline package, not a CDN: every script, style and icon
    of /docs is a path on this server, and each of them is served. /redoc (CDN logo) is off."""
    page = "/docs"
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?:|//cdn|jsdelivr|unpkg", r.text), f"{page} references an external URL"
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets, f"{page} loads no assets?"
    for src in assets:
        assert src.startswith("/") and not src.startswith("//"), f"{page}: external asset {src!r}"
        got = client.get(src)
        assert got.status_code == 200 and len(got.content) > 1000, (src, got.status_code)
    assert "/docs-assets/swagger-ui-bundle.js" in assets
    assert client.get("/redoc").status_code == 404


def test_no_endpoint_takes_a_file_path(client):
    schema = client.get("/openapi.json").json()
    for path, ops in schema["paths"].items():
        assert "{" not in path, f"{path} has a path parameter"
        for op in ops.values():
            assert not op.get("parameters"), f"{path} takes query/path parameters"


def test_create_app_rejects_bad_arguments(tiny_checkpoint, tmp_path):
    from siam.errors import CheckpointError
    from siam.serve import create_app as lazily_imported
    from siam.serve.app import create_app

    assert lazily_imported is create_app

    with pytest.raises(ValueError, match="max_upload_bytes"):
        create_app(tiny_checkpoint, max_upload_bytes=0)
    with pytest.raises(ValueError, match="max_megapixels"):
        create_app(tiny_checkpoint, max_megapixels=-1)
    with pytest.raises(ValueError, match="max_concurrency"):
        create_app(tiny_checkpoint, max_concurrency=0)
    with pytest.raises(CheckpointError, match="not found"):
        create_app(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="SIAM model or a checkpoint path"):
        create_app(42)  # type: ignore[arg-type]


def test_create_app_rejects_a_baseline(tmp_path):
    from siam.serve.app import create_app

    baseline = siam.build_baseline(backbone="tiny")
    path = siam.save_checkpoint(baseline, tmp_path / "baseline.safetensors")
    with pytest.raises(ValueError, match="SIAM models only"):
        create_app(path)
