"""The console's pure helpers: error paths to fields, pending diff lines, rates, parsing."""

from __future__ import annotations

import pytest

from tui.format import (
    FieldSyntaxError,
    RateMeter,
    bgp_line,
    error_field,
    field_changes,
    parse_endpoints,
    parse_port,
    pending_count,
    pending_lines,
    qos_line,
    vip_port,
)

FIELDS = {"name", "vip", "port", "port-range-end", "snat-address", "endpoint", "health-probe"}
SVC = "/sluice:load-balancer/service[name='web']"


@pytest.mark.parametrize(
    ("path", "message", "field"),
    [
        (f"{SVC}/port", "out of bounds", "port"),
        (f"{SVC}/endpoint[address='2001:db8::1'][port='80']/address", "family", "endpoint"),
        (f"{SVC}/health-probe/interval", "x", "health-probe"),
        (SVC, "snat-address is required when mode is full-nat", "snat-address"),
        ("/sluice:load-balancer/service/vip", 'Mandatory node "vip"', "vip"),
        (SVC, "something about the service", None),
        ("/sluice:management/user[name='a']/role", "x", None),
    ],
)
def test_error_field(path: str, message: str, field: str | None) -> None:
    assert error_field(path, message, FIELDS) == field


def test_pending_lines_and_count() -> None:
    pending = {
        "services": {
            "new": {"old": None, "new": {"name": "new"}},
            "gone": {"old": {"name": "gone"}, "new": None},
            "web": {
                "old": {"name": "web", "port": 80, "endpoint": [{"address": "a", "port": 1}]},
                "new": {"name": "web", "port": 81, "endpoint": [{"address": "b", "port": 1}]},
            },
            "same": {"old": {"name": "same"}, "new": {"name": "same"}},  # edited back
        },
        "sections": {"system": {"old": None, "new": {}}},
    }
    assert pending_count(pending) == 4
    assert pending_lines(pending) == [
        "- service gone",
        "+ service new",
        "~ service web: port 80→81, endpoint +b:1, endpoint -a:1",
        "~ system",
    ]


def test_field_changes_nested() -> None:
    old = {"health-probe": {"type": "none"}}
    new = {"health-probe": {"type": "tcp"}}
    assert field_changes(old, new) == ["health-probe.type none→tcp"]


def test_parse() -> None:
    assert parse_port("8000-8100") == (8000, 8100)
    assert parse_port("") == (None, None)
    with pytest.raises(FieldSyntaxError):
        parse_port("http")
    assert parse_endpoints("198.18.1.1:80:5, [2001:db8::1]:80") == [
        {"address": "198.18.1.1", "port": 80, "weight": 5},
        {"address": "2001:db8::1", "port": 80},
    ]
    with pytest.raises(FieldSyntaxError):
        parse_endpoints("198.18.1.1")
    assert vip_port({"vip": "2001:db8::10", "port": 443}) == "[2001:db8::10]:443"


def test_rates_from_counters() -> None:
    meter = RateMeter()
    assert meter.rates("web", {"packets": 100, "bytes": 1000}, 10.0) == {
        "packets": None,
        "bytes": None,
    }
    assert meter.rates("web", {"packets": 300, "bytes": 5000}, 12.0) == {
        "packets": 100.0,
        "bytes": 2000.0,
    }
    # A counter reset (daemon restart) gives no rate rather than a negative one.
    assert meter.rates("web", {"packets": 5, "bytes": 50}, 13.0)["packets"] is None
    assert meter.rates("web", None, 14.0) == {"packets": None, "bytes": None}


def test_slow_refreshes_stretch_the_poll_interval() -> None:
    from tui.app import POLL_DUTY, next_poll_at

    assert next_poll_at(100.0, 99.9, 2.0) == 100.0  # quick: the timer's 2 s pace
    # 1 s per refresh: at most 1 s in POLL_DUTY, so the next one waits until then.
    assert next_poll_at(101.0, 100.0, 2.0) == 101.0 + POLL_DUTY - 2.0


def test_bgp_line_only_when_bgp_runs() -> None:
    assert bgp_line(None) is None
    assert bgp_line({"doors": {"bgp": {"state": "disabled"}}}) is None
    door = {"state": "running", "speaker": "exabgp", "established": "1/2", "announced": 3,
            "ha-role": "master"}
    assert bgp_line({"doors": {"bgp": door}}) == (
        "bgp running · sessions established 1/2 · vips announced 3 · master")


def test_qos_line_only_when_something_is_programmed() -> None:
    assert qos_line(None) is None
    assert qos_line({"qos": {}}) is None
    line = qos_line({"qos": {"policers": 2, "mirrors": 1, "copies": 9, "green": 5,
                             "yellow": 0, "red": 3}})  # fmt: skip
    assert line == ("qos: 2 policer(s) · packets green 5 yellow 0 red 3"
                    " · 1 mirror session(s), 9 copies")
