"""Schemathesis over the OpenAPI schema: no 5xx, and every response matches the documented schema.

Driven with Hypothesis directly (schemathesis' pytest fixture loader does not run under pytest 9).
Both schema-valid (positive) and schema-violating (negative) requests are generated.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [("/health", "GET"), ("/v1/model", "GET"), ("/v1/explain", "POST"), ("/v1/intervene", "POST")]


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schema_lists_exactly_the_public_operations(api_schema):
    found = sorted((op.ok().path, op.ok().method.upper()) for op in api_schema.get_all_operations())
    assert found == sorted(OPERATIONS)


# GET operations take no input, so only schema-valid requests exist for them.
CASES = [(p, m, GenerationMode.POSITIVE) for p, m in OPERATIONS] + [
    (p, m, GenerationMode.NEGATIVE) for p, m in OPERATIONS if m == "POST"
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=lambda v: getattr(v, "value", v))
def test_api_conforms_to_its_schema(api_schema, path, method, mode):
    operation = api_schema[path][method]
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call_and_validate(checks=CHECKS)
        seen.append(response.status_code)

    check()
    assert seen, "no request was generated"
    assert all(s < 500 for s in seen), seen
    if method == "POST":  # random bytes are never a valid photo: rejected with a documented 4xx
        assert set(seen) <= {400, 413, 415, 422}, seen


@pytest.mark.parametrize(
    ("path", "fields"),
    [("/v1/explain", {"top_k": 2}), ("/v1/intervene", {"remove": '["trees"]', "scale": '{"road": 0.5}'})],
)
def test_successful_responses_match_the_schema(api_schema, photo, path, fields):
    operation = api_schema[path]["POST"]
    case = api_schema.make_case(
        operation=operation, body={"image": photo, **fields}, media_type="multipart/form-data"
    )
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == 200, response.text
