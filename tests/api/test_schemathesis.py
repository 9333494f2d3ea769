"""schemathesis over the OpenAPI document: generated requests to every operation of a
real server on each database, with no unexpected `5xx` and every response as documented.

Bounded: `EXAMPLES` cases per operation. Admin calls go without the token (`401`), so
the capacity and the catalogue cannot be changed under the other cases.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from retail.web.app import create_app
from tests.conftest import make_settings
from tests.serving import serve_in_thread

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Streams answer for as long as the client listens; they have their own tests.
STREAMING = ("/ws",)


def test_every_operation_answers_as_documented(database_url: str) -> None:
    app = create_app(make_settings(database_url, fulfilment_delay="0.01", capacity=2))
    statuses: Counter[int] = Counter()
    with serve_in_thread(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 10
        for operation in operations:
            if operation.path.endswith(STREAMING):
                continue
            run = settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(case=operation.as_strategy())(_check(url, statuses)))
            try:
                run()
            except Exception as error:
                pytest.fail(f"{operation.method.upper()} {operation.path}: {error}")
    # The cases reached the service: answers, refusals and missing resources alike.
    assert sum(statuses.values()) >= 10 * len(operations), statuses
    assert {200, 401, 404, 422} <= statuses.keys(), statuses


def _check(url: str, statuses: Counter[int]):  # type: ignore[no-untyped-def]
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=url, checks=CHECKS, timeout=10)
        statuses[response.status_code] += 1

    return check
