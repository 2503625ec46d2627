"""loxilb's firewall calls on the HTTP door (`/config/firewall`): kube-loxilb's egress SNAT
rule and a drop rule become Sluice rules, are listed back, and are deleted by the same
arguments; bad ones name the field and change nothing (datapath off: the config)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpkit as hk
import pytest
from daemonkit import Daemon

HOST = "127.0.0.1"
FW = "/netlox/v1/config/firewall"


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    with hk.http_daemon(tmp_path_factory.mktemp("httpfw"), HOST) as (d, port):
        yield d, port


def call(port: int, method: str, path: str, body: bytes | None = None) -> hk.Reply:
    return hk.go_request(HOST, port, method, path, body, hk.RW_TOKEN)


def test_snat_and_drop_rules_round_trip(door: tuple[Daemon, int], tmp_path: Path) -> None:
    d, port = door
    snat = {"ruleArguments": {"sourceIP": "198.18.64.0/18", "destinationIP": "0.0.0.0/0",
                              "preference": 100},
            "opts": {"doSnat": True, "toIP": "198.18.0.250", "onDefault": True}}  # fmt: skip
    assert call(port, "POST", FW, json.dumps(snat).encode()).json() == {"result": "Success"}
    drop = {"ruleArguments": {"sourceIP": "198.18.2.0/24", "protocol": 6,
                              "minDestinationPort": 25, "maxDestinationPort": 25,
                              "preference": 10},
            "opts": {"drop": True}}  # fmt: skip
    assert call(port, "POST", FW, json.dumps(drop).encode()).status == 200
    listed = call(port, "GET", f"{FW}/all").json()["fwAttr"]
    by_kind = {r["opts"]["doSnat"]: r for r in listed}
    assert by_kind[True]["opts"]["toIP"] == "198.18.0.250"
    assert by_kind[True]["ruleArguments"]["sourceIP"] == "198.18.64.0/18"
    assert by_kind[False]["opts"]["drop"] and by_kind[False]["ruleArguments"]["protocol"] == 6
    (snat_rule,) = d.cli_json("snat", "list")["rules"]
    assert snat_rule["address"] == "198.18.0.250"
    (fw_rule,) = d.cli_json("fw", "list")["rules"]
    assert fw_rule["action"] == "drop" and fw_rule["destination-port"] == 25
    fixed = {"ruleArguments": {"sourceIP": "198.18.128.0/18", "preference": 101},
             "opts": {"doSnat": True, "toIP": "198.18.0.251", "toPort": 40000}}  # fmt: skip
    assert call(port, "POST", FW, json.dumps(fixed).encode()).status == 200
    listed = call(port, "GET", f"{FW}/all").json()["fwAttr"]
    assert {r["opts"]["toPort"] for r in listed if r["opts"]["doSnat"]} == {0, 40000}
    assert {r.get("port") for r in d.cli_json("snat", "list")["rules"]} == {None, 40000}
    assert call(port, "DELETE", f"{FW}?sourceIP=198.18.128.0/18&preference=101").status == 200
    fixed["opts"]["toPort"] = 70000
    r = call(port, "POST", FW, json.dumps(fixed).encode())
    assert r.status == 400 and "opts.toPort" in r.json()["message"]
    assert len(d.cli_json("snat", "list")["rules"]) == 1  # nothing changed
    gre = {"ruleArguments": {"sourceIP": "198.18.3.0/24", "protocol": 47, "preference": 11},
           "opts": {"drop": True}}  # fmt: skip
    assert call(port, "POST", FW, json.dumps(gre).encode()).status == 200
    listed = call(port, "GET", f"{FW}/all").json()["fwAttr"]
    assert 47 in {r["ruleArguments"]["protocol"] for r in listed}
    assert "gre" in {r.get("protocol") for r in d.cli_json("fw", "list")["rules"]}
    assert call(port, "DELETE", f"{FW}?sourceIP=198.18.3.0/24&protocol=47&preference=11"
                ).status == 200  # fmt: skip
    gre["ruleArguments"]["protocol"] = 256
    r = call(port, "POST", FW, json.dumps(gre).encode())
    assert r.status == 400 and "ruleArguments.protocol" in r.json()["message"]
    bad = {"ruleArguments": {"sourceIP": "198.18.0.300/24"}, "opts": {}}
    r = call(port, "POST", FW, json.dumps(bad).encode())
    assert r.status == 400 and "ruleArguments.sourceIP" in r.json()["message"]
    gone = call(port, "DELETE", f"{FW}?sourceIP=198.18.64.0/18&destinationIP=0.0.0.0/0"
                "&preference=100")  # fmt: skip
    assert gone.json() == {"result": "Success"}
    assert d.cli_json("snat", "list")["rules"] == []
    assert call(port, "DELETE", f"{FW}?sourceIP=198.18.64.0/18&preference=100").status == 404
