"""schemathesis fuzzes the /netlox/v1 OpenAPI document against a running daemon: no 5xx,
and a refused request leaves running as it was (no commit), the daemon serving on."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpkit as hk
import pytest
from daemonkit import Daemon
from hypothesis import HealthCheck, settings

from northbound.http.openapi import PATH, document

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402

HOST = "127.0.0.1"
schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    with hk.http_daemon(tmp_path_factory.mktemp("fuzz"), HOST) as (d, port):
        yield d, f"http://{HOST}:{port}"


def last_commit(d: Daemon) -> int:
    with d.client() as client:
        return int(client.call("status")["last-commit"] or 0)


def test_openapi_document_is_served(api: tuple[Daemon, str]) -> None:
    _, base = api
    port = int(base.rsplit(":", 1)[1])
    r = hk.go_request(HOST, port, "GET", PATH)
    assert r.status == 200 and r.json() == json.loads(json.dumps(document()))


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_fuzz(case: schemathesis.Case, api: tuple[Daemon, str]) -> None:
    d, base = api
    before = last_commit(d)
    response = case.call(base_url=base, headers={"Authorization": f"Bearer {hk.RW_TOKEN}"},
                         timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code != 200:
        assert last_commit(d) == before, (response.status_code, response.text)
