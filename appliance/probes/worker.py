"""The probe worker: the prober alone in a process of its own (`sluice probe-worker`).

Why a process: on a thread of the daemon the prober shares the GIL with the main loop, and
front doors busy in pure Python (NETCONF XPath filters, SNMP walks of 10,000 rows) starve
it (bench/probe_isolation.py --load doors). Here it has an interpreter to itself. The
daemon side (appliance/probes/process.py) starts it, feeds it and restarts it.

The protocol is JSON lines: one object per line, with an "op".

daemon → worker (stdin):
  init      {"options": Prober keyword options, "seed": [[svc, addr, port, up], ...]}
            the first line; seed is the health the datapath has (pinned, or what this
            worker's predecessor reported), used as Prober.seed() uses it
  sync      {"services": {name: effective service doc}}  (the whole config)
  update    {"services": {name: doc}, "removed": [name, ...]}  (one commit)
  renotify  (tell the health of every endpoint again: a new datapath was swapped in)
  stats     {"id": n}  → a "stats" answer
  reset_lag
  stop      (or EOF: the daemon is gone; exit either way)

worker → daemon (stdout):
  ready     {"pid": n}  the prober runs
  health    {"key": [svc, addr, port], "up": bool, "view": row}  (on_change: the datapath)
  event     {"event": {...}, "view": row|null}  (what the prober's bus publishes:
            endpoint-state and service-state)
  views     {"rows": [row, ...], "gone": [[svc, addr, port], ...]}  every VIEW_PERIOD s,
            the rows that changed (round-trip times only every RTT_EVERY periods);
            doubles as a heartbeat
  stats     {"id": n, "dispatched": n, "lag": {...}}

row: [svc, addr, port, state, last_change, last_error, rtt_us, probe].

The worker writes to a private copy of its stdout and points fd 1 at stderr, so a stray
print cannot corrupt the protocol; logs go to stderr, which is the daemon's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from appliance.events import EventBus
from appliance.probes.scheduler import EndpointView, Prober
from appliance.probes.service_state import ServiceStateTracker
from appliance.probes.settings import Key, endpoint_key

log = logging.getLogger(__name__)

# The env var carrying the daemon's pid, to catch a parent that died before prctl().
PARENT_ENV = "SLUICE_PROBER_PARENT"
VIEW_PERIOD = 1.0
RTT_EVERY = 10  # views carry round-trip-only changes every RTT_EVERY periods
# A whole config (10,000 services) is one line; StreamReader's default limit is 64 KiB.
MAX_LINE = 1 << 30
PR_SET_PDEATHSIG = 1
# The worker runs ahead of the daemon's other work for a CPU: a probe late by the time a
# core takes to come free is a late verdict, a door's answer late by as much is not. On
# two busy cores (bench/probe_isolation.py --load doors) it cut the worker's wait for a
# CPU from a quarter of the time to a fifth, and the drift p99 from 7-10 % to 6.3 %, with
# the doors serving as many requests. Needs root (CAP_SYS_NICE); otherwise left as it is.
NICE = -5

Row = list[Any]


def row_of(key: Key, view: EndpointView) -> Row:
    return [*key, *view]


def parse_row(row: Row) -> tuple[Key, EndpointView]:
    service, address, port, *rest = row
    return (service, address, int(port)), EndpointView(*rest)


class Channel:
    """The worker's side of stdout: lines are queued and written once per loop turn, by an
    asyncio pipe transport that never blocks the prober (a daemon slow to read only grows
    the transport's buffer)."""

    def __init__(self, transport: asyncio.WriteTransport, prober: Prober | None = None) -> None:
        self.transport = transport
        self.prober = prober
        self._lines: list[bytes] = []
        self._sent: dict[Key, EndpointView] = {}

    def send(self, msg: dict[str, Any]) -> None:
        if not self._lines:
            asyncio.get_running_loop().call_soon(self._flush)
        self._lines.append(json.dumps(msg, separators=(",", ":"), default=str).encode() + b"\n")

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        if not self.transport.is_closing():
            self.transport.write(b"".join(lines))

    def _row(self, key: Key) -> Row | None:
        view = self.prober.view(key) if self.prober is not None else None
        return None if view is None else row_of(key, view)

    def health(self, service: str, address: str, port: int, up: bool) -> None:
        """The Prober's on_change."""
        key = (service, address, port)
        self.send({"op": "health", "key": key, "up": up, "view": self._row(key)})

    def event(self, event: dict[str, Any]) -> None:
        """Subscribed to the worker's bus: every event goes to the daemon's bus."""
        view = None
        if "address" in event:
            view = self._row(endpoint_key(event["service"], event["address"], event["port"]))
        self.send({"op": "event", "event": event, "view": view})

    def views(self, views: Mapping[Key, EndpointView], with_rtt: bool = True) -> None:
        """The rows that changed since the last call, and the ones that went away.

        Without `with_rtt`, a row whose only change is its round-trip time is left for a
        later call: every probe changes it, and 10,000 rows a second cost both processes
        CPU (encode, decode) for a figure nobody reads that often.
        """
        sent = self._sent
        rows = []
        for key, view in views.items():
            old = sent.get(key)
            if old == view or (
                not with_rtt
                and old is not None
                and old[:3] == view[:3]
                and old[4] == view[4]
                and (old.rtt_us is None) == (view.rtt_us is None)  # a first rtt goes now
            ):
                continue
            sent[key] = view
            rows.append(row_of(key, view))
        gone = [key for key in sent if key not in views]
        for key in gone:
            del sent[key]
        self.send({"op": "views", "rows": rows, "gone": gone})


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the daemon dies (stdin EOF covers a clean exit;
    this covers a daemon killed while this worker is stuck), then make sure the daemon
    did not die before the request was made."""
    with contextlib.suppress(Exception):  # not Linux, or no libc: EOF is still there
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        sys.exit(0)


async def serve(stdin: Any, stdout: Any) -> None:
    """Run the prober as the daemon's lines say, until "stop" or EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, stdout)
    line = await reader.readline()
    if not line:
        return
    init = json.loads(line)
    channel = Channel(transport)
    bus = EventBus()
    prober = Prober(bus, on_change=channel.health, **init.get("options", {}))
    channel.prober = prober
    prober.seed({(s, a, int(p)): bool(up) for s, a, p, up in init.get("seed", [])})
    # The channel first, then the tracker: the daemon hears of an endpoint's change
    # before the service change it caused (as the thread design's relay does).
    bus.subscribe(channel.event)
    ServiceStateTracker(bus, prober.endpoints_up)
    await prober.start()
    channel.send({"op": "ready", "pid": os.getpid()})

    async def publish_views() -> None:
        for n in itertools.count(1):
            await asyncio.sleep(VIEW_PERIOD)
            channel.views(prober.views(), with_rtt=n % RTT_EVERY == 0)

    views_task = loop.create_task(publish_views())
    try:
        while line := await reader.readline():
            msg = json.loads(line)
            op = msg.get("op")
            if op == "sync":
                prober.sync(msg["services"])
            elif op == "update":
                prober.update(msg["services"], msg["removed"])
            elif op == "renotify":
                prober.renotify()
            elif op == "stats":
                channel.send(
                    {
                        "op": "stats",
                        "id": msg.get("id"),
                        "dispatched": prober.dispatched,
                        "lag": prober.lag_stats(),
                    }
                )
            elif op == "reset_lag":
                prober.reset_lag()
            elif op == "stop":
                break
            else:
                log.warning("probe worker: unknown message", extra={"op": op})
    finally:
        views_task.cancel()
        await prober.stop()
        channel._flush()
        transport.close()


def main() -> int:
    """`sluice probe-worker`: started by the daemon, never by hand."""
    from appliance.logs import setup_logging

    setup_logging()
    die_with_parent()
    with contextlib.suppress(OSError):
        os.nice(NICE)
    # The protocol gets a private fd; fd 1 becomes stderr (see the module docstring).
    out_fd = os.dup(1)
    os.dup2(2, 1)
    stdin = os.fdopen(0, "rb", buffering=0)
    stdout = os.fdopen(out_fd, "wb", buffering=0)
    # SIGTERM/SIGINT reach the whole process group (systemd's stop, a terminal's ^C): the
    # daemon decides when this worker stops, through stdin, so that it never takes a
    # worker stopping with it for a crash to restart. It dies with the daemon regardless.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the daemon went first
        asyncio.run(serve(stdin, stdout))
    return 0
