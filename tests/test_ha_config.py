"""The `ha` section through a real daemon (datapath off, no HA configured: keepalived is
never started here; tests/test_ha_pair.py runs it in namespaces)."""

from __future__ import annotations

import json
from pathlib import Path

from daemonkit import Daemon

GOOD_INSTANCE = {"name": "front", "virtual-router-id": 51, "interface": "eth0",
                 "peer": ["198.18.0.3"], "vip": ["198.18.0.10"]}  # fmt: skip


BAD = [
    ({"vip": ["198.18.0.10", "2001:db8::10"]}, {}, "/sluice:ha/instance[name='front']/vip"),
    ({"virtual-router-id": 0}, {}, "virtual-router-id"),
    ({"peer": []}, {}, "peer"),
    ({"advert-interval": 5}, {}, "advert-interval"),
    ({}, {"sync": {"address": "198.18.0.2"}}, "/sluice:ha/sync/key"),
    ({}, {"witness": "not-an-address"}, "witness"),
]


def test_bad_ha_config_is_refused_naming_the_field(daemon: Daemon, tmp_path: Path) -> None:
    """One daemon for every case (a start costs seconds)."""
    before = daemon.cli("config", "export").stdout
    for instance, section, field in BAD:
        doc = {"sluice:ha": {"instance": [{**GOOD_INSTANCE, **instance}], **section}}
        path = tmp_path / "ha.json"
        path.write_text(json.dumps(doc))
        res = daemon.cli("apply", "-f", str(path))
        assert res.returncode != 0, instance
        assert field in res.stderr, res.stderr
        # Nothing changed, and the daemon serves on.
        assert daemon.cli("config", "export").stdout == before
    assert daemon.cli_json("status")["doors"]["ha"] == {"state": "disabled"}
    # The HA verbs without HA (same daemon: a start costs seconds).
    assert daemon.cli_json("ha", "status")["enabled"] is False
    assert "HA is not configured" in daemon.cli("ha", "status").stdout
    res = daemon.cli("ha", "takeover")
    assert res.returncode != 0 and "HA is not configured" in res.stderr
    assert "ha" not in daemon.cli_json("status")  # no role line on the console
