"""The notification log (unit, no daemon): bounded, ages out the oldest and says since when,
replays an interval, tells listeners after logging, and records commits and bus events."""

from __future__ import annotations

from datetime import timedelta

from appliance.config.service import Diff
from appliance.events import EventBus
from appliance.notification_log import CONFIG_CHANGE, EVENT, NotificationLog, diff_edits


class FakeService:
    """Stands in for the config service: subscribers and the last commit's user."""

    def __init__(self) -> None:
        self.subscribers: list = []

    def subscribe(self, fn: object) -> None:
        self.subscribers.append(fn)

    def unsubscribe(self, fn: object) -> None:
        self.subscribers.remove(fn)

    def history(self, n: int) -> list[dict]:
        return [{"user": "alice"}]


def test_bounded_with_aged_time_and_interval() -> None:
    log = NotificationLog(size=3)
    notices = [log.record(EVENT, {"type": "x", "n": i}) for i in range(5)]
    assert [n.seq for n in notices] == [1, 2, 3, 4, 5]
    assert log.aged_time == notices[1].time  # the newest dropped
    kept = log.since(notices[0].time - timedelta(seconds=1))
    assert [n.data["n"] for n in kept] == [2, 3, 4]
    assert [n.data["n"] for n in log.since(notices[3].time, notices[3].time)] == [3]
    assert NotificationLog().aged_time is None


def test_listeners_see_each_notice_after_it_is_logged() -> None:
    log = NotificationLog()
    seen: list[tuple[int, int]] = []
    listener = lambda n: seen.append((n.seq, len(log.since(n.time))))  # noqa: E731
    log.listen(listener)
    log.record(EVENT, {"type": "a"})
    log.unlisten(listener)
    log.record(EVENT, {"type": "b"})
    assert seen == [(1, 1)]


def test_commits_and_bus_events_are_recorded() -> None:
    service, bus = FakeService(), EventBus()
    log = NotificationLog()
    log.attach(service, bus)
    diff = Diff(services_added={"b": {}, "a": {}}, services_removed={"c": {}},
                sections_changed={"snmp": (None, {"x": 1})})
    assert diff_edits(diff) == [("service", "a", "create"), ("service", "b", "create"),
                                ("service", "c", "delete"), ("section", "snmp", "create")]
    for fn in service.subscribers:
        fn(diff)
        fn(Diff())  # an empty commit is no notification
    bus.publish({"type": "endpoint-state", "service": "web", "old": "up", "new": "down",
                 "extra": {"not": "scalar"}})
    change, event = log.since(log.created)
    assert change.kind == CONFIG_CHANGE and change.data["user"] == "alice"
    assert change.data["edits-total"] == 4
    assert event.kind == EVENT and event.data == {"type": "endpoint-state", "service": "web",
                                                  "old": "up", "new": "down"}
    log.detach()
    assert service.subscribers == []


def test_a_failing_listener_costs_the_others_nothing() -> None:
    log = NotificationLog()
    seen: list[int] = []

    def broken(notice: object) -> None:
        raise RuntimeError("door bug")

    log.listen(broken)
    log.listen(lambda n: seen.append(n.seq))
    assert log.record(EVENT, {"type": "a"}).seq == 1
    assert seen == [1] and len(log.since(log.created)) == 1
