"""The sync channel as the HA door runs it: a server for the peers' channels and one sender
per peer, from /sluice:ha/sync, wired to the datapath (appliance/ha/flowsync.py) when
there is one: this node's flow events, dumps and refreshes go to every peer; the peers'
flows are installed in this node's conntrack map. Without a datapath the flows received
are only counted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from appliance.ha.flowsync import FlowSync
from appliance.ha.settings import SyncSettings
from appliance.ha.sync_channel import SyncSender, SyncServer
from appliance.ha.sync_codec import FlowRecord

log = logging.getLogger(__name__)


class SyncService:
    def __init__(self, settings: SyncSettings, datapath: Any = None,
                 on_synced: Callable[[str], None] | None = None) -> None:
        assert settings.address and settings.key
        self.settings = settings
        key = bytes.fromhex(settings.key)
        self.received = 0
        hooks = getattr(datapath, "flows", None) if datapath is not None else None
        self.flows: FlowSync | None = None
        if hooks is not None:
            self.flows = FlowSync(datapath, self._broadcast_threadsafe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.server = SyncServer(settings.address, settings.port, key, settings.peers,
                                 self._on_flows,
                                 self.flows.receive if self.flows else None,
                                 on_synced)  # fmt: skip
        self.senders = [SyncSender(peer, settings.port, key, self._dump,
                                   source=settings.address) for peer in settings.peers]  # fmt: skip

    def _dump(self) -> Iterable[FlowRecord | bytes]:
        return self.flows.dump_chunks() if self.flows is not None else ()

    def _on_flows(self, peer: str, records: list[FlowRecord], dump: bool) -> None:
        self.received += len(records)
        log.debug("ha sync: flows received", extra={"peer": peer, "flows": len(records),
                                                    "dump": dump})  # fmt: skip

    def _broadcast_threadsafe(self, payload: bytes) -> None:
        """From the flow-events / refresh threads: one hop onto the loop per payload."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._broadcast, payload)

    def _broadcast(self, payload: bytes) -> None:
        for sender in self.senders:
            sender.send_encoded(payload)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.server.start()
        if self.flows is not None:
            await self._loop.run_in_executor(None, self.flows.start)
        for sender in self.senders:
            sender.start()

    async def close(self) -> None:
        for sender in self.senders:
            await sender.close()
        await self.server.close()
        if self.flows is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.flows.close)
        self._loop = None

    def status(self) -> dict[str, Any]:
        return {
            **self.server.status(),
            "received": self.received if self.flows is None else self.flows.stats["received"],
            "sending": {s.peer: vars(s.stats).copy() for s in self.senders},
            "datapath": self.flows.status() if self.flows is not None else None,
        }
