"""The FastAPI app: a web explorer and REST API for SIAM explanations.

Endpoints (OpenAPI at ``/openapi.json``; interactive docs at ``/docs``, whose Swagger UI assets
come from the ``fastapi-offline`` package under ``/docs-assets/``, so they render without a
network; no ``/redoc``, whose page fetches its logo from a CDN):

* ``GET /health``;
* ``GET /v1/model``: attribute names, effective templates E_i (K, m, m) as numbers (paper
  Fig. 4), preprocessing, version and limits;
* ``POST /v1/explain``: a multipart ``image`` -> :meth:`siam.explain(...).to_json()
  <siam.explain.explanation.Explanation.to_json>` plus PNG overlays as ``data:`` URLs;
* ``POST /v1/intervene``: the same image plus edits (``remove``, ``scale``, ``remove_region``,
  ``top_k``; JSON form fields) -> the exact new score and per-attribute changes (g is linear,
  Sec. 3.2);
* ``GET /``: the explorer page (plain HTML/JS/CSS, no external assets).

Several targets (e.g. beauty and safety): the one-target fields (``score``, ``bias``,
``attributes``, ``templates``, ...) keep showing one target (the form field ``target``, default
the first), so one-target clients keep working; ``/v1/model`` lists ``targets`` (name, bias,
templates, for any model) and ``/v1/explain`` adds ``target`` and ``targets`` (every target's
score, contributions, top lists and overlays; models with several targets only). The explorer
page has a target selector.

Safe by default: uploads are capped by :class:`~siam.serve.limits.UploadLimitMiddleware`
(declared and streamed bytes), the image type comes from magic bytes, the pixel count is checked
before decoding, model work runs in a threadpool behind a non-blocking concurrency limit (``503``
+ ``Retry-After``), and no endpoint takes a file path. This module never imports
:mod:`siam.training`.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import siam
from siam import __version__
from siam.checkpoint import load_checkpoint
from siam.explain.explanation import Explanation, model_identity
from siam.models.siam import SIAM
from siam.provenance import synthetic_note, trained_on
from siam.serve.limits import Slots, UploadLimitMiddleware, format_bytes
from siam.serve.uploads import ALLOWED_LABEL, UploadError, decode_upload, safe_name

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_CONCURRENCY", "DEFAULT_MAX_MEGAPIXELS"]

DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_MEGAPIXELS = 40.0
DEFAULT_TOP_K = 5
RETRY_AFTER_S = 1
# Longest side (px) of the PNG overlays: PNG-encoding photos dominates the cost of /v1/explain,
# so the per-attribute overlays (thumbnails on the page) are smaller than the total map.
OVERLAY_SIDE = 512
ATTRIBUTE_OVERLAY_SIDE = 256

_T = TypeVar("_T")

# Swagger UI (/docs) loads its script and style from this URL prefix, served from the
# fastapi-offline package: the docs render without any network. The validator badge would send the
# schema URL to validator.swagger.io, so it is off; ReDoc is off (it fetches its logo from a CDN).
DOCS_ASSETS_URL = "/docs-assets"
_SWAGGER_UI_PARAMETERS = {"validatorUrl": None}

# Strict policy for the explorer page: everything from this origin, images also from data: URLs.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_STATIC = {  # URL path -> (file in siam/serve/static, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


# --- response schemas (OpenAPI) -----------------------------------------------------------------

class ErrorOut(BaseModel):
    """Every error: one readable ``detail``; validation errors also list ``errors``."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class AttributeOut(BaseModel):
    name: str
    presence: float
    contribution: float = Field(description="signed c_i = <E_i, A_i>")
    rank: int = Field(description="1 = largest |contribution|")


class TopOut(BaseModel):
    name: str
    contribution: float
    presence: float


class TargetOut(BaseModel):
    """One target of a model with several: score_t = bias_t + sum of its contributions."""

    model_config = ConfigDict(extra="allow")
    name: str
    score: float
    bias: float
    variance: float | None
    contributions: dict[str, float] = Field(description="attribute -> signed c_t,i = <E_t,i, A_i>")
    attributes: list[AttributeOut]
    top_positive: list[TopOut]
    top_negative: list[TopOut]
    overlays: dict[str, str]


class ModelTargetOut(BaseModel):
    name: str
    bias: float
    templates: list[list[list[float]]] = Field(description="(K, m, m) effective templates E_t,i of this target")


class ExplainOut(BaseModel):
    """``Explanation.to_json()`` (stable keys) plus ``overlays``."""

    model_config = ConfigDict(extra="allow")
    image: str | None
    image_size: list[int] = Field(description="(width, height) of the decoded image")
    score: float = Field(description="y = bias + sum(contributions)")
    bias: float
    variance: float | None
    attributes: list[AttributeOut]
    top_positive: list[TopOut]
    top_negative: list[TopOut]
    maps: str | None
    error: str | None
    model: dict[str, Any]
    preprocessing: dict[str, Any]
    grid: int
    crop_box: list[float] = Field(description="(x0, y0, x1, y1): the part of the image the model saw")
    top_k: int
    note: str | None = Field(
        None, description="a caveat, e.g. that the model was trained on synthetic scenes, not photographs"
    )
    overlays: dict[str, str] = Field(
        description="PNG overlays as data: URLs: 'total' (sum of contribution maps) and one per "
        "top positive / top negative attribute"
    )
    target: str | None = Field(None, description="several targets: the target shown in the fields above")
    targets: list[TargetOut] | None = Field(None, description="several targets: every target, in the model's order")


class ChangeOut(BaseModel):
    name: str
    before: float
    after: float
    change: float


class ContributionOut(BaseModel):
    name: str
    contribution: float


class InterveneOut(BaseModel):
    """``Intervention.to_json()``: the exact new score after the edits."""

    model_config = ConfigDict(extra="allow")
    request: dict[str, Any]
    score: float
    original_score: float
    delta: float
    changes: list[ChangeOut]
    contributions: list[ContributionOut]


class HealthOut(BaseModel):
    status: str
    version: str
    attributes: int


class ModelOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str
    attributes: list[str]
    grid: int
    border: int
    bias: float
    templates: list[list[list[float]]] = Field(description="(K, m, m) effective templates E_i")
    preprocessing: dict[str, Any]
    model: dict[str, Any]
    limits: dict[str, Any]
    trained_on: dict[str, Any] = Field(description="what the model was trained on: kind and summary")
    targets: list[ModelTargetOut] = Field(
        description="every target the model predicts (one for most models); 'bias' and 'templates' above are the first's")
    note: str | None = Field(description="shown with every upload: e.g. a synthetic-trained model on photographs")


def _err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorOut, "description": description}
    if headers:
        out["headers"] = headers
    return out


_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err("malformed request (e.g. a broken multipart body)"),
    413: _err("upload above the byte limit, or image above the megapixel limit"),
    415: _err(f"not an image of an allowed type ({ALLOWED_LABEL}), decided from magic bytes"),
    422: _err("corrupt image, or invalid form fields"),
    503: _err(
        "too many requests being explained; retry later",
        {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    ),
}


# --- the service --------------------------------------------------------------------------------

def _load_model(model_or_checkpoint: SIAM | str | os.PathLike[str]) -> tuple[SIAM, dict[str, Any]]:
    """-> (model in eval mode, model identity without server paths)."""
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        path = Path(model_or_checkpoint)
        model = load_checkpoint(path)
        if not isinstance(model, SIAM):
            raise ValueError(
                f"{path}: is a {model.config.kind} model; siam serve explains SIAM models only "
                "(a baseline has no attribute explanation)"
            )
        ident = model_identity(model, checkpoint=path)
        ident["checkpoint"] = path.name  # never reveal server paths
    elif isinstance(model_or_checkpoint, SIAM):
        model = model_or_checkpoint
        ident = model_identity(model)
    else:
        raise ValueError(
            "create_app needs a SIAM model or a checkpoint path (.safetensors/.ckpt), got "
            f"{type(model_or_checkpoint).__name__}"
        )
    return model.eval(), ident


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _overlays(expl: Explanation, image: Any) -> dict[str, str]:
    """PNG overlays (data URLs): the total map and each top positive / negative attribute."""
    from siam.explain.figures import render_overlay_png

    names = [e["name"] for e in (*expl.top_positive(), *expl.top_negative())]
    out = {"total": _data_url(render_overlay_png(expl, image, max_side=OVERLAY_SIDE))}
    for name in names:
        out[name] = _data_url(render_overlay_png(expl, image, attribute=name, max_side=ATTRIBUTE_OVERLAY_SIDE))
    return out


def _json_field(raw: str | None, field: str, expected: type, example: str) -> Any:
    """Parse a JSON form field; ``UploadError(422)`` saying what was received and what is allowed."""
    if raw is None or raw.strip() == "":
        return expected()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UploadError(422, f"{field}: not valid JSON ({exc.msg}); expected e.g. {example}") from None
    if not isinstance(value, expected):
        raise UploadError(
            422, f"{field}: expected a JSON {expected.__name__}, got {type(value).__name__}; e.g. {example}"
        )
    return value


def _interventions(remove: str | None, scale: str | None, remove_region: str | None) -> dict[str, Any]:
    """The ``remove``/``scale``/``remove_region`` form fields as ``Explanation.intervene`` kwargs."""
    rm = _json_field(remove, "remove", list, '["trees"]')
    sc = _json_field(scale, "scale", dict, '{"trees": 0.5}')
    rr = _json_field(remove_region, "remove_region", dict, '{"trees": [0, 0, 100, 100]}')
    if not all(isinstance(n, str) for n in rm):
        raise UploadError(422, f"remove: expected a list of attribute names, got {rm!r}"[:300])
    for name, factor in sc.items():
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
            raise UploadError(422, f"scale[{name!r}]: expected a finite number, got {factor!r}"[:300])
    for name, box in rr.items():
        ok = isinstance(box, list) and len(box) == 4
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise UploadError(
                422, f"remove_region[{name!r}]: expected [x0, y0, x1, y1] in image pixels, got {box!r}"[:300]
            )
    return {"remove": rm, "scale": sc, "remove_region": rr}


class _Service:
    """The loaded model plus the limits; all model work goes through :meth:`run`."""

    def __init__(
        self, model: SIAM, ident: dict[str, Any], *, max_concurrency: int, max_megapixels: float, top_k: int
    ) -> None:
        self.model = model
        self.ident = ident
        self.slots = Slots(max_concurrency)
        self.max_megapixels = max_megapixels
        self.top_k = top_k
        with torch.no_grad():
            self.targets = [
                {"name": name, "bias": float(model.template_head.bias[t]),
                 "templates": model.effective_templates(t).cpu().tolist()}  # (K, m, m)
                for t, name in enumerate(model.targets)
            ]
        self.templates = self.targets[0]["templates"]
        self.bias = self.targets[0]["bias"]

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in the threadpool if a slot is free, else answer 503 at once."""
        if not self.slots.try_acquire():
            raise StarletteHTTPException(
                503,
                f"server busy: {self.slots.size} request(s) are already being explained (the "
                f"concurrency limit); retry after {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            return await run_in_threadpool(fn, *args)
        finally:
            self.slots.release()

    def target(self, target: str | None) -> int:
        """Index of the ``target`` form field (None: the first); ``UploadError(422)`` naming the targets."""
        if target is None or target == "":
            return 0
        if target not in self.model.targets:
            raise UploadError(422, f"target: unknown target {target!r}"[:200] + f"; this model predicts "
                              f"{list(self.model.targets)}")
        return self.model.targets.index(target)

    def explain(self, data: bytes, name: str, top_k: int | None, target: int = 0) -> tuple[Explanation, Any]:
        image = decode_upload(data, name=name, max_megapixels=self.max_megapixels)
        k = self.top_k if top_k is None else top_k
        expl = siam.explain(
            self.model, image, top_k=k, max_megapixels=self.max_megapixels, name=name, model_id=self.ident,
            target=target,
        )
        return expl, image

    def explain_json(self, data: bytes, name: str, top_k: int | None, target: int = 0) -> dict[str, Any]:
        expl, image = self.explain(data, name, top_k, target)
        record = expl.to_json()
        if not expl.several_targets:
            return {**record, "overlays": _overlays(expl, image)}
        entries = []
        for view, entry in zip(expl.per_target(), record["targets"]):
            overlays = _overlays(view, image)  # (each target's own maps)
            entries.append({**entry, "attributes": view.to_json()["attributes"], "overlays": overlays})
        shown = entries[self.model.targets.index(expl.target)]
        return {**record, "overlays": shown["overlays"], "targets": entries}

    def intervene_json(self, data: bytes, name: str, edits: dict[str, Any], top_k: int | None,
                       target: int = 0) -> dict[str, Any]:
        expl, _ = self.explain(data, name, None, target)
        try:
            return expl.intervene(**edits, top_k=top_k).to_json()
        except ValueError as exc:
            raise UploadError(422, str(exc)) from None


def _check_limits(max_upload_bytes: int, max_megapixels: float, top_k: int) -> None:
    if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int) or max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be a positive integer, got {max_upload_bytes!r}")
    if not isinstance(max_megapixels, (int, float)) or not 0 < max_megapixels < math.inf:
        raise ValueError(f"max_megapixels must be a positive number, got {max_megapixels!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer, got {top_k!r}")


def create_app(
    model_or_checkpoint: SIAM | str | os.PathLike[str],
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    top_k: int = DEFAULT_TOP_K,
) -> FastAPI:
    """Build the app for a SIAM model or a checkpoint path (loaded once, here).

    Args:
        model_or_checkpoint: a :class:`~siam.models.siam.SIAM` or a ``.safetensors``/``.ckpt`` file.
        max_upload_bytes: request bodies above this get 413 (declared or streamed).
        max_concurrency: explanations computed at once; more get 503 with ``Retry-After``.
        max_megapixels: images with more pixels get 413 before any pixel is decoded.
        top_k: default number of top positive / negative attributes (and their overlays).
    """
    _check_limits(max_upload_bytes, max_megapixels, top_k)
    model, ident = _load_model(model_or_checkpoint)
    service = _Service(
        model, ident, max_concurrency=max_concurrency, max_megapixels=float(max_megapixels), top_k=top_k
    )
    k = len(model.attributes)
    limits = {
        "max_upload_bytes": max_upload_bytes,
        "max_upload": format_bytes(max_upload_bytes),
        "max_megapixels": float(max_megapixels),
        "max_concurrency": max_concurrency,
        "formats": ALLOWED_LABEL.split(", "),
    }
    app = FastAPIOffline(
        static_url=DOCS_ASSETS_URL,
        redoc_url=None,
        swagger_ui_parameters=_SWAGGER_UI_PARAMETERS,
        title="siam explorer",
        version=__version__,
        description="What-where-how explanations of a SIAM model (Marcos, Lobry & Tuia, ICCVW 2019): "
        "upload a JPEG/PNG/WebP photo, get the score, each attribute's presence and signed "
        "contribution, and map overlays; edit contributions and get the exact new score.",
    )
    app.state.service = service
    app.add_middleware(UploadLimitMiddleware, max_bytes=max_upload_bytes)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    # Field defaults, not Annotated[...]: annotations are strings here and cannot see locals.
    image_doc = f"the photo ({ALLOWED_LABEL}; at most {format_bytes(max_upload_bytes)})"
    top_k_doc = f"how many top positive / negative attributes to list (0..{k})"
    target_doc = f"the target to show / edit, one of {list(model.targets)} (default: the first)"

    @app.get("/health", response_model=HealthOut, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness: the model is loaded."""
        return {"status": "ok", "version": __version__, "attributes": k}

    model_json = {
        "version": __version__,
        "attributes": list(model.attributes),
        "grid": model.config.grid,
        "border": model.config.border,
        "bias": service.bias,
        "templates": service.templates,
        "preprocessing": model.preprocessing.to_dict(),
        "model": ident,
        "limits": limits,
        "trained_on": {k: v for k, v in trained_on(model).items() if k in ("kind", "summary")},
        "note": synthetic_note(model),  # uploads have no known origin
        "targets": service.targets,
    }

    @app.get("/v1/model", response_model=ModelOut, tags=["model"])
    async def model_info() -> dict[str, Any]:
        """Attribute names, effective templates E_i (K, m, m; paper Fig. 4), preprocessing, version."""
        return model_json

    @app.post("/v1/explain", response_model=ExplainOut, responses=_UPLOAD_ERRORS, tags=["explain"])
    async def explain(
        image: UploadFile = File(description=image_doc),
        top_k: int | None = Form(None, ge=0, le=k, description=top_k_doc),
        target: str | None = Form(None, description=target_doc),
    ) -> JSONResponse:
        """Explain one photo: score, bias, per-attribute presence and contribution, top-k, overlays
        (every target of a model with several, under ``targets``)."""
        t = service.target(target)
        data = await image.read()
        out = await service.run(service.explain_json, data, safe_name(image.filename), top_k, t)
        return JSONResponse(out)

    @app.post("/v1/intervene", response_model=InterveneOut, responses=_UPLOAD_ERRORS, tags=["explain"])
    async def intervene(
        image: UploadFile = File(description=image_doc),
        remove: str | None = Form(None, description='JSON list of attribute names, e.g. ["trees"]'),
        scale: str | None = Form(None, description='JSON object name -> factor, e.g. {"road": 0.5}'),
        remove_region: str | None = Form(
            None, description='JSON object name -> [x0, y0, x1, y1] in image pixels, e.g. {"trees": [0, 0, 64, 64]}'
        ),
        top_k: int | None = Form(None, ge=0, le=k, description="keep only the k largest |contributions| after the edits"),
        target: str | None = Form(None, description=target_doc),
    ) -> JSONResponse:
        """The exact new score after removing, scaling or masking attribute contributions."""
        edits = _interventions(remove, scale, remove_region)
        t = service.target(target)
        data = await image.read()
        out = await service.run(service.intervene_json, data, safe_name(image.filename), edits, top_k, t)
        return JSONResponse(out)

    static = resources.files("siam.serve") / "static"
    for url, (fname, media) in _STATIC.items():
        app.add_api_route(
            url, _static_page((static / fname).read_bytes(), media), methods=["GET"], include_in_schema=False
        )
    return app


def _static_page(body: bytes, media: str) -> Callable[[], Response]:
    """A GET handler serving one packaged file from memory (no file path ever comes from a request)."""

    async def page() -> Response:
        return Response(body, media_type=media, headers=_PAGE_HEADERS)

    return page
