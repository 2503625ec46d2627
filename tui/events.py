"""Where the console's events come from.

The daemon has no event stream on the control socket yet, so the only source today is the
commit history (config.history). A source is anything with `async fetch(client)` returning
the newest events; when the daemon grows a stream (health changes from appliance.events'
bus, say an `events.subscribe` method), add a source here and list it in `default_sources`
— the dashboard and the event log only ever see `Event`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from appliance.control.client import AsyncControlClient, RemoteError
from tui.format import summary_text


@dataclass(frozen=True)
class Event:
    at: str  # ISO 8601 UTC, as the daemon writes it
    kind: str  # "commit", later "health", "datapath", …
    text: str
    key: str  # unique per event: the console merges sources without duplicates


class EventSource(Protocol):
    async def fetch(self, client: AsyncControlClient) -> list[Event]: ...


class CommitHistorySource:
    """Recent commits, newest first."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit

    async def fetch(self, client: AsyncControlClient) -> list[Event]:
        history: list[dict[str, Any]] = await client.call("config.history", limit=self.limit)
        return [commit_event(c) for c in history]


def commit_event(commit: dict[str, Any]) -> Event:
    who = f"{commit.get('user', '?')}/{commit.get('interface', '?')}"
    comment = f" “{commit['comment']}”" if commit.get("comment") else ""
    text = f"commit #{commit['id']} by {who}: {summary_text(commit.get('summary'))}{comment}"
    return Event(str(commit.get("at", "")), "commit", text, f"commit:{commit['id']}")


class DaemonEventsSource:
    """Health and other events from the daemon's event bus (events.recent)."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit

    async def fetch(self, client: AsyncControlClient) -> list[Event]:
        try:
            events: list[dict[str, Any]] = await client.call("events.recent", limit=self.limit)
        except RemoteError:  # an older daemon without the method
            return []
        return [bus_event(e) for e in events]


def bus_event(event: dict[str, Any]) -> Event:
    kind = str(event.get("type", "event"))
    if kind == "endpoint-state":
        what = f"endpoint {event.get('address')}:{event.get('port')} of {event.get('service')}"
        text = f"{what}: {event.get('old')} → {event.get('new')}"
        if event.get("error"):
            text += f" ({event['error']})"
    elif kind == "service-state":
        text = f"service {event.get('service')}: {event.get('old')} → {event.get('new')}"
    else:
        text = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "seq", "time"))
    return Event(str(event.get("time", "")), kind.replace("-state", ""), text,
                 f"bus:{event.get('seq')}")  # fmt: skip


def default_sources() -> list[EventSource]:
    return [CommitHistorySource(), DaemonEventsSource()]


def merge(events: list[Event], limit: int = 500) -> list[Event]:
    """Newest first, without duplicates, at most `limit`."""
    seen: dict[str, Event] = {}
    for event in events:
        seen.setdefault(event.key, event)
    return sorted(seen.values(), key=lambda e: e.at, reverse=True)[:limit]
