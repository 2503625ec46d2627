"""The event bus's recent-events log and service up/down derived from endpoint health."""

from __future__ import annotations

from appliance.events import EventBus, RecentEvents
from appliance.probes.service_state import ServiceStateTracker


def endpoint_event(service: str, new: str) -> dict:
    return {"type": "endpoint-state", "service": service, "address": "198.18.1.1", "port": 80,
            "old": "up", "new": new}  # fmt: skip


def test_recent_events_newest_first_numbered_and_bounded() -> None:
    bus = EventBus()
    recent = RecentEvents(bus, size=3)
    for n in range(5):
        bus.publish({"type": "a" if n % 2 else "b", "n": n})
    events = recent.recent()
    assert [e["n"] for e in events] == [4, 3, 2]
    assert [e["seq"] for e in events] == [5, 4, 3]
    assert [e["n"] for e in recent.recent(limit=1)] == [4]
    assert [e["n"] for e in recent.recent(event_type="a")] == [3]


def test_service_goes_down_with_its_last_endpoint_once() -> None:
    bus = EventBus()
    up = {"web": 2}
    tracker = ServiceStateTracker(bus, lambda s: up[s])
    seen: list[dict] = []
    bus.subscribe(seen.append, "service-state")
    up["web"] = 1
    bus.publish(endpoint_event("web", "down"))
    assert seen == [] and tracker.state("web") == "up"
    up["web"] = 0
    bus.publish(endpoint_event("web", "down"))
    bus.publish(endpoint_event("web", "down"))  # no second event for the same state
    assert [(e["service"], e["old"], e["new"]) for e in seen] == [("web", "up", "down")]
    assert tracker.state("web") == "down"
    up["web"] = 1
    bus.publish(endpoint_event("web", "up"))
    assert [e["new"] for e in seen] == ["down", "up"]
