"""Property: whatever edits are thrown at the config service, the store holds a valid config.

Hypothesis generates sequences of edits, valid and invalid, across services and sections.
After each attempt the store is reopened by a fresh ConfigService (which validates the whole
document with libyang): it must load, and equal what the live service holds. A refused
commit must leave running exactly as it was.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import ConfigError, ConfigService
from appliance.config.paths import service_path
from appliance.config.store import Store

names = st.sampled_from(["a", "b", "c", "web", "api"])
v4 = st.integers(0, 3).map(lambda i: f"198.18.0.{i + 1}")
v6 = st.integers(0, 3).map(lambda i: f"2001:db8::{i + 1}")
ports = st.one_of(st.integers(0, 70000), st.just(80))
endpoint = st.fixed_dictionaries(
    {"address": st.one_of(v4, v6), "port": st.one_of(st.integers(1, 65535), st.just(8080))},
    optional={
        "weight": st.integers(-1, 300),
        "admin-state": st.sampled_from(["enabled", "disabled", "drain", "bogus"]),
    },
)
service_value = st.fixed_dictionaries(
    {"vip": st.one_of(v4, v6, st.just("nope"))},
    optional={
        "port": ports,
        "protocol": st.sampled_from(["tcp", "udp", "icmp", "sctp", "gre"]),
        "mode": st.sampled_from(["default", "one-arm", "full-nat", "dsr"]),
        "algorithm": st.sampled_from(["round-robin", "maglev", "hash", "random"]),
        "snat-address": st.one_of(v4, v6),
        "endpoint": st.lists(endpoint, max_size=4, unique_by=lambda e: (e["address"], e["port"])),
    },
)
edit = st.one_of(
    st.tuples(st.sampled_from(["create", "replace", "merge"]), names, service_value),
    st.tuples(st.sampled_from(["delete", "remove"]), names, st.none()),
    st.tuples(st.just("merge-port"), names, st.integers(-5, 70000)),
    st.tuples(st.just("snmp"), st.none(), st.integers(0, 70000)),
)


def _change(op: str, name: str | None, value: object) -> dict:
    if op == "merge-port":
        return {"op": "merge", "path": f"{service_path(name)}/port", "value": value}
    if op == "snmp":
        return {"op": "merge", "path": "/sluice:snmp", "value": {"port": value}}
    change = {"op": op, "path": service_path(name)}
    if value is not None:
        change["value"] = value
    return change


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.lists(edit, min_size=1, max_size=3), min_size=1, max_size=6))
def test_store_always_holds_a_valid_config(batches: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "c.db"
        service = ConfigService(Store(db))
        for batch in batches:
            before = copy.deepcopy(service.running_doc(with_secrets=True))
            with service.open_session("fuzz", "test") as session:
                try:
                    session.edit([_change(*e) for e in batch])
                    session.commit()
                except ConfigError:
                    assert service.running_doc(with_secrets=True) == before
            reloaded = ConfigService(Store(db))  # validates the stored document in full
            assert reloaded.running_doc(with_secrets=True) == service.running_doc(
                with_secrets=True
            )
            reloaded.store.close()
        service.store.close()
