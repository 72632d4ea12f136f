"""Schemathesis over the API's own OpenAPI schema, in-process (ASGI), every operation with
generated valid and invalid requests: no server error, and every response of a status the
schema documents conforms to it (body, content type, headers).

The 422 it found: FastAPI's schema promised its own ``HTTPValidationError`` while the API
answers ``{"error", "detail"}``; every router now declares ``ERROR_RESPONSES``
(``api/schemas.py``). Not run: ``status_code_conformance`` (every route declares the same
error set, so it would check little) and the stateful checks (no links in the schema).
Operations with no input skip the negative mode: there is nothing to spoil."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from api_harness import ApiEnv
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

import api.main

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
EXAMPLES = 12  # per operation and mode: the whole run within a minute
LABELS = [
    result.ok().label
    for result in schemathesis.openapi.from_asgi("/openapi.json", api.main.app).get_all_operations()
]


@pytest.fixture(scope="module")
def api_schema(env: ApiEnv) -> Any:
    """The schema of the app under test (served with the test's context)."""
    return schemathesis.openapi.from_asgi("/openapi.json", env.http.app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", LABELS)
def test_schema_no_server_error_and_responses_conform(
    api_schema: Any, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)

    @given(operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases every run: no flaky failures
        database=None,
    )
    def check(case: Any) -> None:
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)  # raises on a fault

    statuses: list[int] = []
    try:
        check()
    except Unsatisfiable:  # nothing to spoil: no parameters and no body
        if mode != GenerationMode.NEGATIVE:
            raise
        pytest.skip(f"{label} takes no input to negate")
    assert statuses, f"no case of {label} was sent"
    assert all(status < 500 for status in statuses), statuses
