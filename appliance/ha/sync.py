"""The sync channel as the HA door runs it: a server for the peers' channels and one sender
per peer, from /sluice:ha/sync. Transport only: the flows received are counted, not yet
installed in the conntrack map, and this node sends an empty dump (the TC program does not
emit flow events yet; issue #16 item 2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from appliance.ha.settings import SyncSettings
from appliance.ha.sync_channel import SyncSender, SyncServer
from appliance.ha.sync_codec import FlowRecord

log = logging.getLogger(__name__)


class SyncService:
    def __init__(self, settings: SyncSettings) -> None:
        assert settings.address and settings.key
        self.settings = settings
        key = bytes.fromhex(settings.key)
        self.received = 0
        self.server = SyncServer(settings.address, settings.port, key, settings.peers,
                                 self._on_flows)  # fmt: skip
        self.senders = [SyncSender(peer, settings.port, key, self._dump,
                                   source=settings.address) for peer in settings.peers]  # fmt: skip

    def _dump(self) -> Iterable[FlowRecord]:
        return ()  # not wired to the datapath yet

    def _on_flows(self, peer: str, records: list[FlowRecord], dump: bool) -> None:
        self.received += len(records)
        log.debug("ha sync: flows received", extra={"peer": peer, "flows": len(records),
                                                    "dump": dump})  # fmt: skip

    async def start(self) -> None:
        await self.server.start()
        for sender in self.senders:
            sender.start()

    async def close(self) -> None:
        for sender in self.senders:
            await sender.close()
        await self.server.close()

    def status(self) -> dict[str, Any]:
        return {
            **self.server.status(),
            "received": self.received,
            "sending": {s.peer: vars(s.stats).copy() for s in self.senders},
        }
