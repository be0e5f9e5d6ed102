"""Property test of `ragloop serve` against its own /openapi.json: schemathesis generates
requests for every operation from the schema, valid ones and ones that break it, and
hypothesis sends them to a real server;
none may get a 5xx, every refusal is a one-line `{"error": ...}`, and every status is one
the schema documents. (schemathesis' pytest plugin is not used: it does not load under the
pytest here; its strategies are driven by hypothesis directly.)"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from test_serve_api import make_workspace
from test_serve_api import settings as serve_settings

from ragloop.core.serve.server import Serving


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    make_workspace(root / "home", root / "docs")
    with Serving(serve_settings(root / "home", cache_size=0)) as s:
        schema = schemathesis.openapi.from_url(s.url + "/openapi.json")
        yield s.url, [result.ok() for result in schema.get_all_operations()]


def test_the_schema_has_every_operation(api):
    labels = {op.label for op in api[1]}
    assert labels == {"POST /v1/ask", "GET /v1/search", "POST /v1/compare", "POST /v1/feedback",
                      "POST /v1/chat/completions", "GET /healthz", "GET /metrics"}


WITH_INPUT = ["POST /v1/ask", "GET /v1/search", "POST /v1/compare", "POST /v1/feedback",
              "POST /v1/chat/completions"]
CASES = [(label, schemathesis.GenerationMode.POSITIVE)
         for label in [*WITH_INPUT, "GET /healthz", "GET /metrics"]]
# Negative cases need an input to break; the two operations without one have none.
CASES += [(label, schemathesis.GenerationMode.NEGATIVE) for label in WITH_INPUT]


@pytest.mark.parametrize("label,mode", CASES)
def test_no_generated_request_gets_a_server_error(api, label, mode):
    url, operations = api
    operation = next(op for op in operations if op.label == label)
    seen = set()

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=8, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(base_url=url, timeout=120)
        seen.add(response.status_code)
        assert response.status_code < 500, (label, response.text[:300])
        assert str(response.status_code) in operation.definition.raw["responses"], \
            (label, response.status_code)
        if response.status_code >= 400:
            body = response.json()
            assert list(body) == ["error"] and "\n" not in body["error"], body

    check()
    assert seen
