"""The interface between the daemon and a BGP speaker, so another one (GoBGP over gRPC)
could replace ExaBGP without touching the policy or the door.

The daemon says *what* should be announced, as a whole (`set_routes`), whenever it changes;
the advertiser works out the announce/withdraw messages, re-sends everything after its
speaker restarts, and reports sessions. It owns no policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from appliance.bgp.model import Route, SpeakerConfig

Routes = dict[str, dict[str, Route]]  # neighbour address -> prefix -> Route
# (neighbour, old state, new state): a session changed (from the advertiser's thread).
OnSession = Callable[[str, str, str], None]


class Advertiser(Protocol):
    name: str
    on_session: OnSession | None  # set by the caller before start()

    def start(self, config: SpeakerConfig) -> None:
        """Start the speaker with these sessions; returns at once (sessions come up later)."""

    def configure(self, config: SpeakerConfig) -> None:
        """New sessions or identity (a restart of the speaker when needed)."""

    def set_routes(self, routes: Routes) -> None:
        """What must be announced now, to whom; anything else announced is withdrawn.
        Thread-safe, never blocks on the speaker."""

    def stop(self) -> None:
        """Stop the speaker: its sessions close, the peers withdraw its routes."""

    def status(self) -> dict[str, Any]:
        """{"speaker": state, "neighbor": [{"address", "session-state", "since",
        "prefixes-sent"}]}: any thread, cheap."""
