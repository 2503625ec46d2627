"""The YANG model of Sluice (appliance/yang/sluice.yang).

Checks that the module is clean under pyang --strict and loads in libyang, that the
example configuration is valid, that every rule of the model rejects what it should
with a message naming the field, and that a large configuration validates quickly.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libyang  # a required dependency: missing, the module fails (never skips)
import pytest

ROOT = Path(__file__).resolve().parent.parent
YANG_DIR = ROOT / "appliance" / "yang"
MODULE = YANG_DIR / "sluice.yang"
EXAMPLE = YANG_DIR / "example-config.json"

Doc = dict[str, Any]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ctx() -> Iterator[Any]:
    # With the Python logger enabled, libyang records the data path of each error
    # ("Data location ..."), so a message such as 'Value "256" is out of type uint8
    # min/max bounds.' also names the leaf. The setting is process-wide, and
    # appliance.config.schema turns it on for good: left on, so that the config service's
    # errors in later tests still name their field.
    libyang.configure_logging(True, logging.ERROR)
    context = libyang.Context(str(YANG_DIR))
    context.load_module("sluice")
    yield context
    context.destroy()


def parse(ctx: Any, doc: Doc | str) -> Any:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    node = ctx.parse_data_mem(text, "json", strict=True, no_state=True)
    assert node is not None
    node.validate(no_state=True)
    return node


def example() -> Doc:
    return json.loads(EXAMPLE.read_text())


def services(doc: Doc) -> list[Doc]:
    return doc["sluice:load-balancer"]["service"]


def svc(doc: Doc, name: str) -> Doc:
    return next(s for s in services(doc) if s["name"] == name)


def snmp(doc: Doc) -> Doc:
    return doc["sluice:snmp"]


def user(doc: Doc, name: str) -> Doc:
    return next(u for u in doc["sluice:management"]["user"] if u["name"] == name)


def endpoints(n: int, first_octet: int = 0) -> list[Doc]:
    return [
        {"address": f"198.18.{first_octet + i // 256}.{i % 256}", "port": 8080} for i in range(n)
    ]


def big_document(n_services: int, n_endpoints: int) -> str:
    out = []
    for i in range(n_services):
        eps = []
        for j in range(n_endpoints):
            k = i * n_endpoints + j
            eps.append(
                {"address": f"198.19.{k // 256 % 256}.{k % 256}", "port": 8080, "weight": 1 + j}
            )
        out.append(
            {
                "name": f"svc-{i}",
                "vip": f"198.18.{i // 256}.{i % 256}",
                "protocol": ("tcp", "udp")[i % 2],
                "port": 80,
                "mode": ("default", "one-arm", "dsr")[i % 3],
                "algorithm": "maglev",
                "health-probe": {"type": "tcp", "interval": 5},
                "endpoint": [dict(e, port=80) if i % 3 == 2 else e for e in eps],
            }
        )
    return json.dumps({"sluice:load-balancer": {"service": out}})


# --------------------------------------------------------------------------- the module


def test_pyang_strict_is_clean() -> None:
    pyang = Path(sys.executable).parent / "pyang"
    exe = str(pyang) if pyang.exists() else shutil.which("pyang")
    # pyang is in the dev extra that scripts/setup installs: missing, this fails.
    assert exe is not None, "pyang is not installed (pip install -e '.[dev]')"
    for fmt in ([], ["-f", "tree"]):
        res = subprocess.run(
            [exe, "--strict", *fmt, "-p", str(YANG_DIR), str(MODULE)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert res.stderr == "", res.stderr
    assert "+--rw load-balancer" in res.stdout


def test_libyang_loads_module(ctx: Any) -> None:
    mod = ctx.get_module("sluice")
    assert mod.implemented()
    assert mod.prefix() == "sl"
    assert next(str(r.date()) for r in mod.revisions()) == "2026-11-29"


LB = "/sluice:load-balancer/sluice:service"
EP = f"{LB}/sluice:endpoint"
MG = "/sluice:management"
SN = "/sluice:snmp"

# (schema path, default or None for "no default")
REQUIRED_NODES: list[tuple[str, Any]] = [
    (f"{LB}/sluice:name", None),
    (f"{LB}/sluice:description", None),
    (f"{LB}/sluice:admin-state", "enabled"),
    (f"{LB}/sluice:vip", None),
    (f"{LB}/sluice:protocol", "tcp"),
    (f"{LB}/sluice:port", None),
    (f"{LB}/sluice:port-range-end", None),
    (f"{LB}/sluice:mode", "default"),
    (f"{LB}/sluice:algorithm", None),  # no default: appliance/algorithm.py decides
    (f"{LB}/sluice:persistence-timeout", 10800),
    (f"{LB}/sluice:inactivity-timeout", None),
    (f"{LB}/sluice:snat-address", None),
    (f"{LB}/sluice:nat64", False),
    (f"{LB}/sluice:allowed-source", None),
    (f"{LB}/sluice:health-probe/sluice:type", "none"),
    (f"{LB}/sluice:health-probe/sluice:port", None),
    (f"{LB}/sluice:health-probe/sluice:request", None),
    (f"{LB}/sluice:health-probe/sluice:expected-response", None),
    (f"{LB}/sluice:health-probe/sluice:http-method", "GET"),
    (f"{LB}/sluice:health-probe/sluice:http-path", "/"),
    (f"{LB}/sluice:health-probe/sluice:expected-status", 200),
    (f"{LB}/sluice:health-probe/sluice:ca-bundle", None),
    (f"{LB}/sluice:health-probe/sluice:client-certificate", None),
    (f"{LB}/sluice:health-probe/sluice:client-key", None),
    (f"{LB}/sluice:health-probe/sluice:interval", 10),
    (f"{LB}/sluice:health-probe/sluice:timeout", 2),
    (f"{LB}/sluice:health-probe/sluice:retries", 2),
    (f"{LB}/sluice:health-probe/sluice:successes-before-up", 2),
    (f"{LB}/sluice:health-probe/sluice:hold-down", 0),
    (f"{EP}/sluice:address", None),
    (f"{EP}/sluice:port", None),
    (f"{EP}/sluice:weight", 1),
    (f"{EP}/sluice:admin-state", "enabled"),
    (f"{EP}/sluice:health-probe/sluice:port", None),
    (f"{EP}/sluice:health-probe/sluice:interval", None),
    (f"{EP}/sluice:health-probe/sluice:timeout", None),
    (f"{EP}/sluice:health-probe/sluice:retries", None),
    (f"{EP}/sluice:health-probe/sluice:successes-before-up", None),
    (f"{EP}/sluice:health-probe/sluice:hold-down", None),
    (f"{EP}/sluice:state/sluice:health", None),
    (f"{EP}/sluice:state/sluice:last-change", None),
    (f"{EP}/sluice:state/sluice:last-error", None),
    (f"{EP}/sluice:state/sluice:rtt-us", None),
    (f"{EP}/sluice:state/sluice:packets", None),
    (f"{EP}/sluice:state/sluice:bytes", None),
    (f"{EP}/sluice:state/sluice:active-sessions", None),
    (f"{EP}/sluice:state/sluice:total-sessions", None),
    (f"{LB}/sluice:state/sluice:oper-status", None),
    (f"{LB}/sluice:state/sluice:endpoints-up", None),
    (f"{LB}/sluice:state/sluice:packets", None),
    (f"{LB}/sluice:state/sluice:bytes", None),
    (f"{LB}/sluice:state/sluice:active-sessions", None),
    (f"{LB}/sluice:state/sluice:total-sessions", None),
    ("/sluice:datapath/sluice:interface/sluice:name", None),
    ("/sluice:datapath/sluice:interface/sluice:hook", "tc"),
    ("/sluice:datapath/sluice:conntrack-capacity", 1048576),
    ("/sluice:datapath/sluice:state/sluice:attached-interface", None),
    ("/sluice:datapath/sluice:state/sluice:conntrack-entries", None),
    ("/sluice:datapath/sluice:state/sluice:xdp-interface/sluice:name", None),
    ("/sluice:datapath/sluice:state/sluice:xdp-interface/sluice:mode", None),
    ("/sluice:datapath/sluice:state/sluice:xdp-forwarded-packets", None),
    ("/sluice:datapath/sluice:state/sluice:xdp-passed-packets", None),
    ("/sluice:system/sluice:hostname", None),
    ("/sluice:system/sluice:contact", None),
    ("/sluice:system/sluice:location", None),
    (f"{MG}/sluice:user/sluice:name", None),
    (f"{MG}/sluice:user/sluice:password-hash", None),
    (f"{MG}/sluice:user/sluice:authorized-key", None),
    (f"{MG}/sluice:user/sluice:role", "read-only"),
    (f"{MG}/sluice:netconf/sluice:enabled", True),
    (f"{MG}/sluice:netconf/sluice:port", 830),
    (f"{MG}/sluice:netconf/sluice:address", None),
    (f"{MG}/sluice:console-ssh/sluice:enabled", True),
    (f"{MG}/sluice:console-ssh/sluice:port", 2222),
    (f"{SN}/sluice:enabled", False),
    (f"{SN}/sluice:port", 161),
    (f"{SN}/sluice:listen-address", None),
    (f"{SN}/sluice:write-access", False),
    (f"{SN}/sluice:allow-no-auth", False),
    (f"{SN}/sluice:community/sluice:name", None),
    (f"{SN}/sluice:community/sluice:secret", None),
    (f"{SN}/sluice:community/sluice:access", "read-only"),
    (f"{SN}/sluice:usm-user/sluice:name", None),
    (f"{SN}/sluice:usm-user/sluice:auth-protocol", "sha-256"),
    (f"{SN}/sluice:usm-user/sluice:auth-key", None),
    (f"{SN}/sluice:usm-user/sluice:priv-protocol", "aes-128"),
    (f"{SN}/sluice:usm-user/sluice:priv-key", None),
    (f"{SN}/sluice:usm-user/sluice:security-level", "auth-priv"),
    (f"{SN}/sluice:manager/sluice:name", None),
    (f"{SN}/sluice:manager/sluice:address", None),
    (f"{SN}/sluice:manager/sluice:port", 162),
    (f"{SN}/sluice:manager/sluice:notification-type", "trap"),
    (f"{SN}/sluice:manager/sluice:community", None),
    (f"{SN}/sluice:manager/sluice:usm-user", None),
]


@pytest.mark.parametrize(("path", "default"), REQUIRED_NODES, ids=[p for p, _ in REQUIRED_NODES])
def test_node_names_and_defaults(ctx: Any, path: str, default: Any) -> None:
    nodes = list(ctx.find_path(path))
    assert len(nodes) == 1, path
    node = nodes[0]
    if node.keyword() == "leaf":
        assert node.default() == default
    else:
        assert default is None


def test_list_shapes(ctx: Any) -> None:
    (service,) = ctx.find_path(LB)
    service_keys = service.keys()  # SNode.keys(), not a dict
    assert [k.name() for k in service_keys] == ["name"]
    (endpoint,) = ctx.find_path(EP)
    endpoint_keys = endpoint.keys()
    assert [k.name() for k in endpoint_keys] == ["address", "port"]
    assert endpoint.ordered()
    for path in (f"{LB}/sluice:state", f"{EP}/sluice:state", "/sluice:datapath/sluice:state"):
        (state,) = ctx.find_path(path)
        assert state.config_false(), path


def test_every_must_has_an_error_message() -> None:
    text = MODULE.read_text()
    musts = re.findall(r"^\s*must \"", text, flags=re.M)
    with_message = re.findall(r"^\s*must \"[^{]*\{\s*error-message$", text, flags=re.M)
    assert len(musts) == len(with_message) > 20


# --------------------------------------------------------------------------- valid data


def test_example_config_is_valid(ctx: Any) -> None:
    node = parse(ctx, EXAMPLE.read_text())
    doc = example()
    # the example covers what the demo and the docs will show
    modes = {s.get("mode", "default") for s in services(doc)}
    assert {"default", "one-arm", "full-nat", "dsr"} <= modes
    assert any(":" in s["vip"] for s in services(doc))
    assert any(s.get("protocol") == "icmp" for s in services(doc))
    assert any(s.get("nat64") for s in services(doc))
    assert doc["sluice:management"]["user"] and snmp(doc)["usm-user"]
    assert doc["sluice:datapath"]["interface"]
    # round trip: libyang's own JSON parses again to the same data
    again = parse(ctx, node.print_mem("json", with_siblings=True))
    assert again.print_dict(with_siblings=True) == node.print_dict(with_siblings=True)


def test_defaults_are_filled_in(ctx: Any) -> None:
    doc = {
        "sluice:load-balancer": {
            "service": [{"name": "s", "vip": "198.18.0.1", "port": 80, "endpoint": endpoints(1)}]
        }
    }
    node = parse(ctx, doc)
    data = node.print_dict(with_siblings=True, include_implicit_defaults=True)
    service = data["load-balancer"]["service"]["s"]
    assert service["protocol"] == "tcp"
    assert service["mode"] == "default"
    assert "algorithm" not in service  # the cluster default applies (appliance/algorithm.py)
    assert service["persistence-timeout"] == 10800
    assert "inactivity-timeout" not in service
    assert service["health-probe"]["interval"] == 10
    assert service["health-probe"]["timeout"] == 2
    assert service["endpoint"][0]["weight"] == 1
    assert "interval" not in service["endpoint"][0].get("health-probe", {})


def test_empty_document_is_valid(ctx: Any) -> None:
    ctx.parse_data_mem("{}", "json", strict=True, no_state=True)


@pytest.mark.parametrize("count", [257, 512])
def test_many_endpoints_are_allowed(ctx: Any, count: int) -> None:
    doc = example()
    svc(doc, "web-v4")["endpoint"] = endpoints(count, first_octet=100)
    parse(ctx, doc)


def test_endpoint_order_is_kept(ctx: Any) -> None:
    doc = example()
    eps = endpoints(5, first_octet=100)
    svc(doc, "ping-v4")["endpoint"] = [dict(e, port=0) for e in reversed(eps)]
    node = parse(ctx, doc)
    got = node.print_dict(with_siblings=True)["load-balancer"]["service"]
    ping = next(s for s in got if s["name"] == "ping-v4")
    assert [e["address"] for e in ping["endpoint"]] == [e["address"] for e in reversed(eps)]


# --------------------------------------------------------------------------- changes

DELETE = object()


def on_svc(name: str, /, **changes: Any) -> Callable[[Doc], None]:
    """Update (or, with DELETE, remove) leaves of service `name`; use _ for - in keys."""

    def change(doc: Doc) -> None:
        s = svc(doc, name)
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is DELETE:
                s.pop(key)
            else:
                s[key] = value

    return change


def on_ep(name: str, index: int, /, **changes: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        ep = svc(doc, name)["endpoint"][index]
        for key, value in changes.items():
            ep[key.replace("_", "-")] = value

    return change


def on_probe(name: str, /, **changes: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        probe = svc(doc, name).setdefault("health-probe", {})
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is DELETE:
                probe.pop(key)
            else:
                probe[key] = value

    return change


def on_usm(**changes: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        u = snmp(doc)["usm-user"][0]
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is DELETE:
                u.pop(key)
            else:
                u[key] = value

    return change


def icmp_probe_port_on_every_endpoint(doc: Doc) -> None:
    on_probe("ping-v4", type="tcp")(doc)
    for ep in svc(doc, "ping-v4")["endpoint"]:
        ep["health-probe"] = {"port": 22}


def no_auth_allowed(doc: Doc) -> None:
    snmp(doc)["allow-no-auth"] = True
    snmp(doc)["usm-user"].append({"name": "open", "security-level": "no-auth-no-priv"})


def add_usm_user(**leaves: Any) -> Callable[[Doc], None]:
    return lambda d: snmp(d)["usm-user"].append({k.replace("_", "-"): v for k, v in leaves.items()})


def copy_service(name: str, /, **changes: Any) -> Callable[[Doc], None]:
    return lambda d: services(d).append(dict(svc(d, name), **changes))


def nat46(doc: Doc) -> None:
    s = svc(doc, "dns-fullnat")
    s.update({"nat46": True, "snat-address": "2001:db8::99"})
    for i, ep in enumerate(s["endpoint"]):
        ep["address"] = f"2001:db8:1::{i + 1}"


VALID_VARIANTS: dict[str, Callable[[Doc], None]] = {
    "nat64 one-arm": on_svc("app-nat64", mode="one-arm", snat_address=DELETE),
    "nat46 full-nat": nat46,
    "nat64 pool": on_svc("app-nat64", snat_pool=["198.18.0.102", "198.18.0.103"]),
    "full-nat v6": on_svc("web-v6", mode="full-nat", snat_address="2001:db8::99"),
    "icmp tcp probe with port": on_probe("ping-v4", type="tcp", port=22),
    "icmp tcp probe, port on every endpoint": icmp_probe_port_on_every_endpoint,
    "endpoint interval and timeout override": on_ep(
        "web-v4", 0, health_probe={"interval": 1, "timeout": 1}
    ),
    "no-auth-no-priv allowed": no_auth_allowed,
    "auth-no-priv without priv-key": add_usm_user(
        name="a", auth_protocol="sha-1", auth_key="ab" * 20, security_level="auth-no-priv"
    ),
    "sha-512 aes-256": on_usm(
        auth_protocol="sha-512", auth_key="cd" * 64, priv_protocol="aes-256", priv_key="ef" * 32,
        auth_master_key="12" * 64, priv_master_key="34" * 64,
    ),
    "console on netconf port while netconf off": lambda d: d["sluice:management"].update(
        {"netconf": {"enabled": False}, "console-ssh": {"port": 830}}
    ),
    "same port on two vips": copy_service("web-v4", name="web-v4-b", vip="198.18.0.20"),
    "same vip and port, other protocol": copy_service("web-v4", name="web-v4-udp", protocol="udp"),
    "interface name with dot": lambda d: d["sluice:datapath"]["interface"].append(
        {"name": "bond0.100"}
    ),
}


@pytest.mark.parametrize("change", VALID_VARIANTS.values(), ids=VALID_VARIANTS.keys())
def test_valid_variants(ctx: Any, change: Callable[[Doc], None]) -> None:
    doc = example()
    change(doc)
    parse(ctx, doc)


# --------------------------------------------------------------------------- invalid data


def duplicate_service(doc: Doc) -> None:
    services(doc).append(dict(svc(doc, "web-v4"), name="web-v4-copy"))


def too_many_endpoints(doc: Doc) -> None:
    svc(doc, "web-v4")["endpoint"] = endpoints(513, first_octet=100)


def manager_without_credential(doc: Doc) -> None:
    snmp(doc)["manager"][0].pop("usm-user")


def manager_with_both(doc: Doc) -> None:
    snmp(doc)["manager"][0]["community"] = "monitoring"


def manager_unknown_user(doc: Doc) -> None:
    snmp(doc)["manager"][0]["usm-user"] = "nobody"


def add_interface(name: str) -> Callable[[Doc], None]:
    return lambda d: d["sluice:datapath"]["interface"].append({"name": name})


def with_state(doc: Doc) -> None:
    svc(doc, "web-v4")["state"] = {"oper-status": "up"}


# (id, change, text the error must contain)
INVALID: list[tuple[str, Callable[[Doc], None], str]] = [
    # service basics
    ("missing vip", on_svc("web-v4", vip=DELETE), '"vip"'),
    ("vip not an address", on_svc("web-v4", vip="lb.example.net"), "/vip"),
    ("vip with zone", on_svc("web-v6", vip="fe80::1%eth0"), "/vip"),
    ("bad name: leading dash", on_svc("web-v4", name="-web"), "name"),
    ("bad name: space", on_svc("web-v4", name="web v4"), "name"),
    ("bad name: too long", on_svc("web-v4", name="a" * 64), "name"),
    ("port 70000", on_svc("web-v4", port=70000), "/port"),
    ("port 0", on_svc("web-v4", port=0), "/port"),
    ("unknown protocol", on_svc("web-v4", protocol="quic"), "/protocol"),
    ("unknown algorithm", on_svc("web-v4", algorithm="random"), "/algorithm"),
    ("persistence-timeout 0", on_svc("web-v4", persistence_timeout=0), "persistence-timeout"),
    (
        "persistence-timeout > 7 days",
        on_svc("web-v4", persistence_timeout=604801),
        "persistence-timeout",
    ),
    ("inactivity-timeout 0", on_svc("web-v4", inactivity_timeout=0), "inactivity-timeout"),
    (
        "inactivity-timeout > 1 day",
        on_svc("web-v4", inactivity_timeout=86401),
        "inactivity-timeout",
    ),
    ("tcp without port", on_svc("web-v4", port=DELETE), "port is required"),
    ("port-range-end below port", on_svc("web-v4", port_range_end=79), "port-range-end must be"),
    ("duplicate vip protocol port", duplicate_service, "vip protocol port"),
    ("unknown leaf", on_svc("web-v4", colour="blue"), "colour"),
    ("state data in config", with_state, "state"),
    # full-nat and snat-address
    (
        "full-nat without snat-address",
        on_svc("dns-fullnat", snat_address=DELETE),
        "snat-address is required",
    ),
    (
        "snat-address without full-nat",
        on_svc("web-v4", snat_address="198.18.0.99"),
        "snat-address is only",
    ),
    (
        "snat-address v6 on v4 service",
        on_svc("dns-fullnat", snat_address="2001:db8::1"),
        "snat-address must",
    ),
    (
        "snat-address v4 on v6 service",
        on_svc("web-v6", mode="full-nat", snat_address="198.18.0.99"),
        "snat-address must",
    ),
    (
        "snat-address v6 with nat64",
        on_svc("app-nat64", snat_address="2001:db8::99"),
        "snat-address must",
    ),
    # address families and nat64
    ("v6 endpoint on v4 vip", on_ep("web-v4", 0, address="2001:db8::5"), "endpoint address"),
    ("v4 endpoint on v6 vip", on_ep("web-v6", 0, address="198.18.1.5"), "endpoint address"),
    ("v6 endpoint with nat64", on_ep("app-nat64", 0, address="2001:db8::5"), "endpoint address"),
    ("nat64 on v4 vip", on_svc("web-v4", nat64=True), "nat64 requires an IPv6 vip"),
    ("nat46 on v6 vip", on_svc("web-v6", nat46=True), "nat46 requires an IPv4 vip"),
    ("pool without full-nat", on_svc("web-v4", snat_pool=["198.18.0.101"]), "snat-pool is only"),
    ("pool of another family", on_svc("app-nat64", snat_pool=["2001:db8::5"]), "snat-pool addr"),
    ("pool repeats snat-address", on_svc("dns-fullnat", snat_pool=["198.18.0.100"]), "repeats"),
    ("nat46 in default mode", on_svc("web-v4", nat46=True), "nat46 requires mode"),
    (
        "v4 endpoint with nat46",
        on_svc("dns-fullnat", nat46=True, snat_address="2001:db8::99"),
        "endpoint address",
    ),
    (
        "nat64 in default mode",
        on_svc("app-nat64", mode="default", snat_address=DELETE),
        "nat64 requires mode",
    ),
    (
        "nat64 in dsr mode",
        on_svc("app-nat64", mode="dsr", snat_address=DELETE),
        "nat64 requires mode",
    ),
    (
        "allowed-source v6 on v4 vip",
        on_svc("web-v4", allowed_source=["2001:db8::/32"]),
        "allowed-source",
    ),
    (
        "allowed-source not a prefix",
        on_svc("web-v4", allowed_source=["198.18.0.0/33"]),
        "allowed-source",
    ),
    # dsr
    (
        "dsr endpoint port differs",
        on_ep("sip-dsr", 0, port=5061),
        "endpoint port must equal the service port",
    ),
    ("dsr port range", on_svc("sip-dsr", port_range_end=5070), "DSR cannot translate ports"),
    # icmp
    ("icmp with port", on_svc("ping-v4", port=7), "port is not allowed when protocol is icmp"),
    (
        "icmp with port-range-end",
        on_svc("ping-v4", port_range_end=7),
        "port-range-end is not allowed",
    ),
    ("icmp endpoint port", on_ep("ping-v4", 0, port=8080), "endpoint port must be 0"),
    (
        "icmp tcp probe without port",
        on_probe("ping-v4", type="tcp"),
        "health-probe port is required",
    ),
    # endpoints
    ("weight 256", on_ep("web-v4", 0, weight=256), "/weight"),
    ("weight negative", on_ep("web-v4", 0, weight=-1), "/weight"),
    ("endpoint port 70000", on_ep("web-v4", 0, port=70000), "/port"),
    ("endpoint admin-state", on_ep("web-v4", 0, admin_state="paused"), "/admin-state"),
    ("513 endpoints", too_many_endpoints, '"endpoint"'),
    # health probe
    (
        "probe timeout > interval",
        on_probe("web-v4", interval=5, timeout=6),
        "health-probe timeout must not",
    ),
    ("probe timeout 61", on_probe("web-v4", interval=100, timeout=61), "/timeout"),
    ("probe interval 0", on_probe("web-v4", interval=0), "/interval"),
    ("probe retries 0", on_probe("web-v4", retries=0), "/retries"),
    ("probe retries 11", on_probe("web-v4", retries=11), "/retries"),
    ("probe successes 0", on_probe("web-v4", successes_before_up=0), "successes-before-up"),
    ("probe hold-down 3601", on_probe("web-v4", hold_down=3601), "hold-down"),
    ("probe type", on_probe("web-v4", type="dns"), "/type"),
    ("probe port 0", on_probe("web-v4", port=0), "/port"),
    ("expected-status 600", on_probe("web-v4", expected_status=600), "expected-status"),
    ("expected-status 99", on_probe("web-v4", expected_status=99), "expected-status"),
    ("http-path without slash", on_probe("web-v4", http_path="healthz"), "http-path"),
    ("http-method", on_probe("web-v4", http_method="PUT"), "http-method"),
    ("client-key alone", on_probe("web-v6", client_certificate=DELETE), "client-key requires"),
    (
        "client-certificate alone",
        on_probe("web-v6", client_key=DELETE),
        "client-certificate requires",
    ),
    (
        "endpoint timeout > service interval",
        on_ep("web-v4", 1, health_probe={"timeout": 6}),
        "endpoint health-probe timeout",
    ),
    (
        "endpoint timeout > own interval",
        on_ep("web-v4", 1, health_probe={"interval": 3, "timeout": 4}),
        "endpoint health-probe timeout",
    ),
    (
        "endpoint interval < service timeout",
        on_ep("web-v4", 1, health_probe={"interval": 1}),
        "endpoint health-probe interval",
    ),
    ("endpoint probe port 0", on_ep("web-v4", 0, health_probe={"port": 0}), "/port"),
    # datapath and system
    ("interface name too long", add_interface("a" * 16), "name"),
    ("interface name with slash", add_interface("eth/0"), "name"),
    ("interface name with space", add_interface("eth 0"), "name"),
    ("interface name ..", add_interface(".."), "name"),
    (
        "interface hook",
        lambda d: d["sluice:datapath"]["interface"].append({"name": "eth9", "hook": "afxdp"}),
        "/hook",
    ),
    (
        "conntrack-capacity too small",
        lambda d: d["sluice:datapath"].update({"conntrack-capacity": 1000}),
        "conntrack-capacity",
    ),
    (
        "conntrack-capacity too large",
        lambda d: d["sluice:datapath"].update({"conntrack-capacity": 2**24 + 1}),
        "conntrack-capacity",
    ),
    ("hostname", lambda d: d["sluice:system"].update(hostname="-lb1"), "hostname"),
    ("hostname with underscore", lambda d: d["sluice:system"].update(hostname="lb_1"), "hostname"),
    # management
    (
        "password in clear",
        lambda d: user(d, "admin").update({"password-hash": "Secret123!"}),
        "password-hash",
    ),
    (
        "password as other hash",
        lambda d: user(d, "admin").update({"password-hash": "$6$rounds=5000$abcdefgh$" + "x" * 86}),
        "password-hash",
    ),
    ("user name upper-case", lambda d: user(d, "admin").update(name="Admin"), "name"),
    ("user name too long", lambda d: user(d, "admin").update(name="a" * 33), "name"),
    (
        "authorized-key type",
        lambda d: user(d, "admin").update({"authorized-key": ["ssh-dss AAAAB3NzaC1kc3MAAACBAP"]}),
        "authorized-key",
    ),
    (
        "authorized-key with options",
        lambda d: user(d, "admin").update(
            {"authorized-key": ['from="10.0.0.1" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK6j']}
        ),
        "authorized-key",
    ),
    ("role", lambda d: user(d, "admin").update(role="root"), "/role"),
    ("netconf port 0", lambda d: d["sluice:management"]["netconf"].update(port=0), "/port"),
    (
        "console on netconf port",
        lambda d: d["sluice:management"]["console-ssh"].update(port=830),
        "console-ssh port must differ",
    ),
    # snmp
    ("snmp port 70000", lambda d: snmp(d).update(port=70000), "/port"),
    ("community without secret", lambda d: snmp(d)["community"][0].pop("secret"), '"secret"'),
    ("community access", lambda d: snmp(d)["community"][0].update(access="admin"), "/access"),
    (
        "no-auth-no-priv refused",
        on_usm(security_level="no-auth-no-priv", auth_key=DELETE, priv_key=DELETE),
        "allow-no-auth",
    ),
    ("auth-priv without priv-key", on_usm(priv_key=DELETE), "priv-key"),
    (
        "auth-priv with priv-protocol none",
        on_usm(priv_protocol="none", priv_key=DELETE),
        "priv-protocol",
    ),
    ("auth without auth-key", on_usm(auth_key=DELETE), "auth-key is required"),
    ("auth-key wrong length", on_usm(auth_key="ab" * 20), "auth-key must"),
    ("auth-key not hex", on_usm(auth_key="zz" * 32), "auth-key"),
    ("priv-key too short", on_usm(priv_key="ab" * 8), "priv-key must"),
    (
        "priv-key too short for aes-256",
        on_usm(priv_protocol="aes-256", priv_key="ab" * 16),
        "priv-key must",
    ),
    ("auth-protocol md5", on_usm(auth_protocol="md5"), "auth-protocol"),
    ("engine-id too short", lambda d: snmp(d).update({"engine-id": "0102"}), "engine-id"),
    ("manager without credential", manager_without_credential, "credential"),
    ("manager with community and usm-user", manager_with_both, "usm-user"),
    ("manager with unknown usm-user", manager_unknown_user, "usm-user"),
    (
        "v3 inform without master keys",
        on_usm(auth_master_key=DELETE),
        "a v3 inform needs its usm-user's auth-master-key",
    ),
    (
        "v3 inform of an auth-priv user without priv-master-key",
        on_usm(priv_master_key=DELETE),
        "a v3 inform needs",
    ),
    ("auth-master-key wrong length", on_usm(auth_master_key="ab" * 20), "auth-master-key must"),
    (
        "manager notification-type",
        lambda d: snmp(d)["manager"][0].update({"notification-type": "log"}),
        "notification-type",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [(c, e) for _, c, e in INVALID],
    ids=[i for i, _, _ in INVALID],
)
def test_invalid_is_rejected(ctx: Any, change: Callable[[Doc], None], expected: str) -> None:
    doc = example()
    change(doc)
    with pytest.raises(libyang.LibyangError) as err:
        parse(ctx, doc)
    assert expected in str(err.value)


def test_must_error_names_the_node(ctx: Any) -> None:
    doc = example()
    on_ep("sip-dsr", 0, port=5061)(doc)
    with pytest.raises(libyang.LibyangError) as err:
        parse(ctx, doc)
    text = str(err.value)
    assert "DSR cannot translate ports" in text
    assert (
        "/sluice:load-balancer/service[name='sip-dsr']/endpoint[address='198.18.1.31'][port='5061']/port"
        in text
    )


# --------------------------------------------------------------------------- performance


def _service_musts() -> Iterator[tuple[int, str, str]]:
    """(depth below service, node name, must expression), groupings and refines expanded."""
    from pyang import context, repository  # the dev extra (scripts/setup): never skipped
    ctx = context.Context(repository.FileRepository(str(YANG_DIR)))
    module = ctx.add_module(MODULE.name, MODULE.read_text())
    assert module is not None
    ctx.validate()
    lb = module.search_one("container", "load-balancer")
    service = next(c for c in lb.i_children if c.arg == "service")

    def walk(stmt: Any, depth: int) -> Iterator[tuple[int, str, str]]:
        for must in stmt.search("must"):
            yield depth, stmt.arg, must.arg
        for child in getattr(stmt, "i_children", []):
            yield from walk(child, depth + 1)

    yield from walk(service, 0)


def test_musts_stay_inside_the_service() -> None:
    """Every must under service is relative and climbs no higher than its own service.

    The config service validates a changed service on its own; a must reaching other
    services or other containers would break that (and would be slow).
    """
    musts = list(_service_musts())
    assert len(musts) > 15
    for depth, name, expr in musts:
        assert "current()" not in expr and "deref(" not in expr, (name, expr)
        assert not re.search(r"(^|[\s(\[=!<>,|])/", expr), f"absolute path in {name}: {expr}"
        climbs = max((len(run) // 3 for run in re.findall(r"(?:\.\./)+", expr)), default=0)
        assert climbs <= depth, f"{name} (depth {depth}) climbs {climbs}: {expr}"


def test_large_config_parses_fast(ctx: Any) -> None:
    text = big_document(10_000, 8)
    ctx.parse_data_mem(big_document(10, 8), "json", strict=True, no_state=True)  # warm-up
    # CPU time, not wall time: the bound is about libyang's work, not the machine's load.
    start = time.process_time()
    node = ctx.parse_data_mem(text, "json", strict=True, no_state=True)
    elapsed = time.process_time() - start
    assert node is not None
    assert len(list(node.find_all("/sluice:load-balancer/service"))) == 10_000
    node.free()
    assert elapsed < 3.0, f"10000 services x 8 endpoints took {elapsed:.2f} s of CPU"
