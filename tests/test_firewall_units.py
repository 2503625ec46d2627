"""Firewall/SNAT model, compiler and config validation (pure Python, no datapath)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.config import ConfigService, ValidationError
from appliance.config.store import Store
from appliance.firewall.compile import FW_MAX_TUPLES, check, compile_rules, port_prefixes
from appliance.firewall.model import parse


def fw(*rules: dict, **extra: object) -> dict:
    return {"sluice:firewall": {"rule": list(rules), **extra}}


def compiled(doc: dict):
    rules, _, errors = parse(doc)
    assert not errors, errors
    ids = {(r.table, r.name): i for i, r in enumerate(rules, 1)}
    return compile_rules(rules, ids, lambda name: 7)


def test_port_prefixes_cover_exactly() -> None:
    for lo, hi in ((0, 65535), (80, 80), (1024, 65535), (1, 65534), (1000, 1999)):
        covered = set()
        for value, plen in port_prefixes(lo, hi):
            size = 1 << (16 - plen)
            assert value % size == 0
            covered |= set(range(value, value + size))
        assert covered == set(range(lo, hi + 1))
    assert len(port_prefixes(1, 65534)) == 30


def test_bad_rules_name_the_field() -> None:
    path = "/sluice:firewall/rule[name='r']"
    cases = [
        ({"source-port": 10}, f"{path}/source-port"),  # ports without tcp/udp
        ({"protocol": "tcp", "destination-port": 90, "destination-port-end": 80},
         f"{path}/destination-port-end"),
        ({"protocol": "sctp", "source-port": 10, "destination-port": 90,  # sctp has ports
          "destination-port-end": 80}, f"{path}/destination-port-end"),
        ({"source-prefix": "198.18.0.0/24", "destination-prefix": "2001:db8::/64"},
         f"{path}/destination-prefix"),
        ({"action": "mark"}, f"{path}/mark"),
        ({"action": "redirect"}, f"{path}/interface"),
        ({"service": "nope"}, f"{path}/service"),
        ({"protocol": "gre", "destination-port": 80}, f"{path}/destination-port"),
        ({"protocol": 47, "icmp-type": 3}, f"{path}/icmp-type"),
        ({"protocol": "icmp", "icmp-code": 1}, f"{path}/icmp-code"),
    ]  # fmt: skip
    for fields, where in cases:
        errors = check(fw({"name": "r", "preference": 1, **fields}))
        assert [e.path for e in errors] == [where], (fields, errors)


def test_shadowed_and_overlapping_rules_are_warned() -> None:
    c = compiled(fw(
        {"name": "a", "preference": 1, "destination-prefix": "198.18.1.0/24", "action": "drop"},
        {"name": "b", "preference": 2, "destination-prefix": "198.18.1.0/24", "action": "allow"},
        {"name": "c", "preference": 3, "destination-prefix": "198.18.2.0/24", "protocol": "tcp",
         "destination-port": 80, "destination-port-end": 81},
        {"name": "d", "preference": 4, "destination-prefix": "198.18.2.0/24", "protocol": "tcp",
         "destination-port": 81, "destination-port-end": 82},
    ))  # fmt: skip
    text = "\n".join(c.warnings)
    assert "rule[name='b']: never matches: shadowed by a" in text
    assert "rule[name='d']: overlaps c" in text


def test_too_many_shapes_refused_naming_a_rule() -> None:
    rules = [{"name": f"r{n}", "preference": n, "destination-prefix": f"198.18.0.0/{n}"}
             for n in range(1, FW_MAX_TUPLES + 3)]  # fmt: skip
    errors = check(fw(*rules))
    assert errors and errors[0].path.startswith("/sluice:firewall/rule[name='r")
    assert "shapes" in errors[0].message


def test_ten_thousand_rules_compile_fast_in_few_shapes() -> None:
    rules = [{"name": f"r{i}", "preference": i, "source-prefix": f"198.18.{i // 256}.{i % 256}/32",
              "protocol": "tcp", "destination-port": 8080, "action": "allow"}
             for i in range(10000)]  # fmt: skip
    started = time.monotonic()
    c = compiled(fw(*rules))
    assert time.monotonic() - started < 15  # ~2 s on a quiet machine
    assert not c.errors
    assert len(c.tables[0].shapes) == 1 and len(c.tables[0].entries) == 10000


@pytest.fixture
def service(tmp_path: Path):
    svc = ConfigService(Store(tmp_path / "c.db"))
    svc.add_validator(check)
    yield svc
    svc.store.close()


def test_commit_refuses_bad_rule_and_keeps_running(service: ConfigService) -> None:
    good = {"name": "ok", "preference": 1, "protocol": "tcp", "destination-port": 22,
            "action": "drop"}  # fmt: skip
    with service.open_session("t", "test") as s:
        s.edit([{"op": "merge", "path": "/sluice:firewall", "value": {"rule": [good]}}])
        s.commit("")
    bad = {"name": "bad", "preference": 2, "protocol": "icmp", "destination-port": 80}
    with service.open_session("t", "test") as s:
        s.edit([{"op": "merge", "path": "/sluice:firewall", "value": {"rule": [bad]}}])
        with pytest.raises(ValidationError) as err:
            s.commit("")
    assert any(e.path == "/sluice:firewall/rule[name='bad']/destination-port"
               for e in err.value.errors)  # fmt: skip
    running = service.running_doc()["sluice:firewall"]["rule"]
    assert [r["name"] for r in running] == ["ok"]


def test_snmp_rule_table_reads_hits_from_the_datapath_state() -> None:
    from northbound.snmp import ber
    from northbound.snmp.model import FW_RULE_ENTRY, LbMib, Snapshot, string_index

    doc = {"sluice:firewall": {"rule": [{"name": "a", "preference": 5, "action": "drop"}]},
           "sluice:snat": {"rule": [{"name": "p", "preference": 1,
                                     "source-prefix": "198.18.0.0/24"}]}}  # fmt: skip

    class State:
        def track(self, snap: object) -> None:
            pass

        def datapath(self) -> dict:
            rows = [{"table": "firewall", "name": "a", "packets": 7, "bytes": 700,
                     "sessions": 0}]  # fmt: skip
            return {"firewall": {"rules": rows}}

    mib = LbMib(Snapshot.from_doc(doc), State(), 0.0, lambda: 0)  # type: ignore[arg-type]
    (table,) = [t for t in mib.tables() if t.prefix == FW_RULE_ENTRY]
    a, p = (1, *string_index("a")), (2, *string_index("p"))
    assert table.get((*FW_RULE_ENTRY, 5, *a)) == ber.counter64(7)
    assert table.get((*FW_RULE_ENTRY, 6, *a)) == ber.counter64(700)
    assert table.get((*FW_RULE_ENTRY, 4, *a)) == ber.integer(2)  # drop
    assert table.get((*FW_RULE_ENTRY, 4, *p)) == ber.integer(7)  # snat
    assert table.get((*FW_RULE_ENTRY, 3, *p)) == ber.unsigned32(1)


def test_stable_ids_come_back_after_a_restart_by_name() -> None:
    """Unit (no kernel): the ids a restarted daemon takes back from the pinned digests."""
    from appliance.datapath.stable_ids import StableIds, digest

    first = StableIds(8)
    ids = first.assign([("firewall", "a"), ("firewall", "b"), ("snat", "a")])
    assert sorted(ids.values()) == [1, 2, 3] and first.created == {1, 2, 3}
    pinned = [(i, digest(n)) for n, i in ids.items()]
    second = StableIds(8)  # the restarted daemon
    second.recover(pinned)
    again = second.assign([("snat", "a"), ("firewall", "c"), ("firewall", "b")])
    assert again[("snat", "a")] == ids[("snat", "a")]
    assert again[("firewall", "b")] == ids[("firewall", "b")]
    assert second.adopted == {ids[("snat", "a")], ids[("firewall", "b")]}
    # Not the freed id: the running datapath still counts the deleted rule under it until
    # the new generation is switched in, and the new rule would inherit those hits.
    assert again[("firewall", "c")] == 4
    assert second.created == {4}
    assert second.released == {ids[("firewall", "a")]}
    third = second.assign([("firewall", "b")])
    assert third == {("firewall", "b"): ids[("firewall", "b")]}
    assert second.released == {again[("snat", "a")], again[("firewall", "c")]}
    # Released ids come back only once a commit later, or when no other id is left.
    fourth = second.assign([("firewall", "b"), ("firewall", "d")])
    assert fourth[("firewall", "d")] == 1  # released two commits ago, lowest free
    full = StableIds(4)
    full.assign(["x", "y", "z"])
    assert sorted(full.assign(["x", "p", "q"]).values()) == [1, 2, 3]  # none else left


def test_a_default_drop_that_cuts_the_appliances_own_listeners_is_warned_about() -> None:
    """Unit (no kernel): lint names the interface's default-policy and what it cuts."""
    from appliance.firewall.compile import lint

    fw = {"interface": [{"name": "eth1", "default-policy": "drop"},
                        {"name": "eth0", "default-policy": "allow"}], "rule": []}  # fmt: skip
    doc = {"sluice:firewall": fw, "sluice:snmp": {"enabled": True, "port": 1161},
           "sluice:ha": {"sync": {"address": "198.18.0.1"}}}  # fmt: skip
    cut = [w for w in lint(doc) if "/default-policy:" in w]
    assert len(cut) == 4, cut  # NETCONF, the SSH console, SNMP, the peers' sync; eth1 only
    assert all(w.startswith("/sluice:firewall/interface[name='eth1']/default-policy: drop "
                            "cuts ") for w in cut)  # fmt: skip
    assert any("NETCONF (tcp 830)" in w for w in cut) and any("udp 1161" in w for w in cut)
    # A rule letting NETCONF in from a management prefix silences that one; a rule bound to
    # another interface, or one that drops, does not.
    fw["rule"] = [
        {"name": "mgmt", "preference": 10, "source-prefix": "198.18.5.0/24",
         "protocol": "tcp", "destination-port": 830},
        {"name": "ssh-elsewhere", "preference": 20, "protocol": "tcp", "destination-port": 2222,
         "ingress-interface": "eth0"},
        {"name": "no-snmp", "preference": 30, "protocol": "udp", "destination-port": 1161,
         "action": "drop"},
    ]  # fmt: skip
    cut = [w for w in lint(doc) if "/default-policy:" in w]
    assert len(cut) == 3 and not any("NETCONF" in w for w in cut), cut
    doc["sluice:management"] = {"netconf": {"enabled": False}, "console-ssh": {"enabled": False}}
    doc["sluice:snmp"]["enabled"] = False
    del doc["sluice:ha"]
    assert [w for w in lint(doc) if "/default-policy:" in w] == []


def test_snat_port_needs_tcp_or_udp_and_rides_in_the_rule_arg() -> None:
    """Unit (no kernel): an SNAT rule's port is refused with ICMP (field named) and is
    carried in the datapath value's high 16 bits (bpf/lib/fw_flow.h fw_snat_flow)."""
    from appliance.firewall.compile import compile_rules
    from appliance.firewall.model import parse

    doc = {"sluice:snat": {"rule": [
        {"name": "p", "preference": 1, "source-prefix": "198.18.64.0/18",
         "address": "198.18.0.250", "port": 40000},
        {"name": "m", "preference": 2, "source-prefix": "198.18.128.0/18",
         "port": 40001}]}}  # fmt: skip
    rules, _, errors = parse(doc)
    assert errors == []
    compiled = compile_rules(rules, {(r.table, r.name): i for i, r in enumerate(rules, 1)})
    args = sorted(v[3] for v in compiled.tables[1].entries.values())
    assert args == [40000 << 16 | 1, 40001 << 16]  # address 1; masquerade (index 0)
    doc["sluice:snat"]["rule"][0]["protocol"] = "icmp"
    _, _, errors = parse(doc)
    assert [e.path for e in errors] == ["/sluice:snat/rule[name='p']/port"]


def test_protocols_by_name_and_number_and_icmp_types_as_ports() -> None:
    """Unit (no kernel): a protocol number with a name is that name (6 is tcp); others are
    matched by number in both families; icmp-type/icmp-code are the destination port
    type << 8 | code of an ICMP shape (bpf/lib/firewall.h fw_match): a type alone is an
    8-bit prefix, type and code all 16 bits."""
    from appliance.firewall.model import protocol_of

    assert protocol_of(6) == "tcp" and protocol_of("58") == "icmp" and protocol_of("any") is None
    assert protocol_of(47) == "gre" and protocol_of(253) == 253 and protocol_of("esp") == "esp"
    out = compiled(fw({"name": "gre", "preference": 1, "protocol": 47},
                      {"name": "n", "preference": 2, "protocol": "253"},
                      {"name": "ra", "preference": 3, "protocol": "icmp", "icmp-type": 134},
                      {"name": "ptb", "preference": 4, "protocol": "icmp", "icmp-type": 2,
                       "icmp-code": 0}))  # fmt: skip
    keys = {(out.tables[0].shapes[i][0], k) for (i, k) in out.tables[0].entries}
    # shape: family, slen, dlen, splen, dplen, use_if, use_proto; key: ..., dport, if, proto
    assert ((4, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 47)) in keys
    assert ((6, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 253)) in keys
    assert ((6, 0, 0, 0, 8, 0, 1), (0, 0, 0, 134 << 8, 0, 58)) in keys
    assert ((4, 0, 0, 0, 8, 0, 1), (0, 0, 0, 134 << 8, 0, 1)) in keys
    assert ((6, 0, 0, 0, 16, 0, 1), (0, 0, 0, 2 << 8, 0, 58)) in keys
