"""A bounded schemathesis run against /api/v2/openapi.json over real HTTP: no 5xx, no schema violation."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.services.gateway.helpers import Stack, seed

pytestmark = pytest.mark.asyncio(loop_scope="session")
# ~100 cases in all: 13 operations x 5 positive, plus 4 negative for each of the 9 with parameters.
EXAMPLES = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 4}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def fuzz(base_url: str, api_key: str) -> tuple[int, list[str]]:
    """Run every operation with positive and negative examples; returns (cases run, failures)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v2/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    headers = {"Authorization": f"Bearer {api_key}"}
    failures: list[str] = []
    ran = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @hypothesis.settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
                                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                nonlocal ran
                ran += 1
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # no parameters to break: nothing negative to send
            except Exception as exc:  # a failing check: keep going to report every operation
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:800]}")
    return ran, failures


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(stack: Stack) -> None:
    seed(stack.engine)
    ran, failures = await asyncio.to_thread(fuzz, stack.base_url, stack.keys["admin"])
    assert not failures, "\n\n".join(failures)
    assert ran >= 60
