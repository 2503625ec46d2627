"""Runs one probe of any type; owns the shared raw sockets (ping, SCTP) of one loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.probes.base import ProbeResult, ProbeSpec, describe, fail
from appliance.probes.http import probe_http
from appliance.probes.icmp import Pinger
from appliance.probes.sctp import SctpProber
from appliance.probes.tcp import TcpConnector, probe_tcp
from appliance.probes.udp import probe_udp

log = logging.getLogger(__name__)

PROBE_TYPES = ("ping", "tcp", "udp", "sctp", "http", "https", "none")


class ProbeRunner:
    """`await runner.run(spec)` → ProbeResult; never raises for a network failure."""

    # Connect-only TCP probes bypass run() (see TcpConnector); a subclass that fakes run()
    # for tests turns this off.
    fast_tcp = True

    def __init__(self) -> None:
        self.pinger = Pinger()
        self.sctp = SctpProber()
        self._tasks: set[asyncio.Task[ProbeResult]] = set()
        self._connector: TcpConnector | None = None  # made on the loop, at first use
        self._cancelled: list[asyncio.Task[ProbeResult]] = []

    def start(self, spec: ProbeSpec, done: Callable[[ProbeResult], None]) -> None:
        """Start one probe on the running loop; `done(result)` is called when it ends
        (not if the runner is closed first). What the scheduler uses."""
        if (
            self.fast_tcp
            and spec.type == "tcp"
            and spec.request is None
            and spec.expected_response is None
        ):
            try:
                if self._connector is None:
                    self._connector = TcpConnector()
                self._connector.start(spec, done)
            except Exception as exc:
                # No socket to be had (EMFILE), a bad address or port: a failed probe,
                # not a crash of the scheduler that called us.
                asyncio.get_running_loop().call_soon(done, fail(describe(exc)))
            return
        task = asyncio.get_running_loop().create_task(self.run(spec))
        self._tasks.add(task)

        def finished(t: asyncio.Task[ProbeResult]) -> None:
            self._tasks.discard(t)
            if not t.cancelled():
                done(t.result())

        task.add_done_callback(finished)

    async def run(self, spec: ProbeSpec) -> ProbeResult:
        try:
            if spec.type == "tcp":
                return await probe_tcp(spec)
            if spec.type in ("http", "https"):
                return await probe_http(spec)
            if spec.type == "udp":
                return await probe_udp(spec)
            if spec.type == "ping":
                return await self.pinger.ping(spec)
            if spec.type == "sctp":
                return await self.sctp.probe(spec)
            if spec.type == "none":
                return ProbeResult(True, None, "")
            return fail(f"unknown probe type {spec.type!r}")
        except Exception as exc:
            # A bug in one probe must not kill the scheduler: report it on the endpoint.
            log.exception("probe crashed", extra={"probe": spec.type, "address": spec.address})
            return fail(f"internal error: {describe(exc)}")

    def close(self) -> None:
        """Abandon in-flight probes (their `done` is not called) and close the sockets."""
        self._cancelled = list(self._tasks)
        for task in self._cancelled:
            task.cancel()
        if self._connector is not None:
            self._connector.close()
            self._connector = None
        self.pinger.close()
        self.sctp.close()

    async def wait_closed(self) -> None:
        """After close(): wait until the cancelled probe tasks have unwound."""
        cancelled, self._cancelled = self._cancelled, []
        await asyncio.gather(*cancelled, return_exceptions=True)
