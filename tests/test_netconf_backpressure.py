"""A client that pipelines requests and never reads cannot grow the daemon's memory."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import netconfkit as kit

NS = kit.SLUICE_NS
GET_CONFIG = (b'<rpc message-id="%d" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
              b"<get-config><source><running/></source></get-config></rpc>")


def services_xml(n: int) -> str:
    body = "".join(f"<service><name>s{i}</name><vip>198.18.{i // 250}.{i % 250 + 1}</vip>"
                   "<port>80</port></service>" for i in range(n))
    return f'<config><load-balancer xmlns="{NS}">{body}</load-balancer></config>'


def test_pipelining_client_that_never_reads_is_held_back(tmp_path: Path) -> None:
    h = kit.start(tmp_path)
    try:
        with h.connect() as m:
            m.edit_config(services_xml(2000), target="running")
            reply_size = len(m.get_config("running").xml)
        n = 200  # 200 replies of ~reply_size bytes: far more than any buffer should hold

        async def flood() -> tuple[int, int, int]:
            async with kit.RawClient(h) as c:
                for i in range(n):
                    c.send(GET_CONFIG % i)
                # The server stops taking requests once its replies back up.
                deadline = time.monotonic() + 20
                last, steady_since = -1, time.monotonic()
                while time.monotonic() < deadline:
                    s = next(s for s in h.server.sessions.values() if s.user == "ops")
                    handled = s.stats["in-rpcs"]
                    if handled != last:
                        last, steady_since = handled, time.monotonic()
                    elif time.monotonic() - steady_since > 1.5:
                        break
                    await asyncio.sleep(0.1)
                backlog = s.process.channel.get_write_buffer_size()
                # Everything still arrives, in order, once the client reads.
                got = 0
                while got < n:
                    await c.recv(timeout=30)
                    got += 1
                return last, backlog, got

        result: dict[str, tuple[int, int, int]] = {}
        t = threading.Thread(target=lambda: result.setdefault("r", asyncio.run(flood())))
        t.start()

        def flooding() -> bool:
            return any(s.user == "ops" and s.stats["in-rpcs"] > 0
                       for s in list(h.server.sessions.values()))

        kit.wait_for(flooding, timeout=20)
        with h.connect() as m2:  # another session is served meanwhile
            t0 = time.monotonic()
            m2.get_config("running")
            took = time.monotonic() - t0
        t.join(120)
        handled, backlog, got = result["r"]
        assert got == n
        assert handled < n / 2, (handled, reply_size)
        assert backlog < 2 * 1024 * 1024 + reply_size, backlog
        assert took < 1.0, took
    finally:
        kit.stop(h)
