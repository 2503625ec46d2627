"""SCTP test kit: scapy peers (tests/sctp_peer.py) in the namespaces of a dpkit LbNet."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import netkit as kit

PEER = Path(__file__).with_name("sctp_peer.py")


class SctpServer:
    """tests/sctp_peer.py server in one backend namespace; ``seen()`` reads what it got."""

    def __init__(self, host: kit.Host, name: str, addrs: tuple[str, ...] = (),
                 family: str = "same") -> None:  # fmt: skip
        """``addrs``: further addresses its INIT ACK lists, those of the association's
        family (``family`` "same"), of the other one ("other") or all ("both")."""
        env = None
        if addrs:
            import os

            env = {**os.environ, "SCTP_PEER_ADDRS": ",".join(addrs),
                   "SCTP_PEER_FAMILY": family}  # fmt: skip
        self.proc = host.popen([sys.executable, str(PEER), "server", name], env=env)
        self.log = host.logs[self.proc.pid]
        deadline = time.monotonic() + 20
        while '"ready"' not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sctp server {name}: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def seen(self) -> list[dict[str, Any]]:
        rows = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [r for r in rows if "chunks" in r]


def serve_all(hosts: list[kit.Host]) -> list[SctpServer]:
    return [SctpServer(h, h.name) for h in hosts]


def associate(client: kit.Host, associations: list[dict[str, Any]],
              timeout: float = 3.0) -> list[dict[str, Any]]:  # fmt: skip
    """Run the scapy client once for all ``associations`` (each {"vip", "port", "sport",
    "local", optional "addrs", "paths", "heartbeat", "shutdown", "abort", "init_tag",
    "pad": bytes added to each DATA, "abort_own_tag": the ABORT with the T bit})."""
    spec = json.dumps({"timeout": timeout, "associations": associations})
    res = client.run([sys.executable, str(PEER), "client", spec],
                     timeout=20 + timeout * 4 * len(associations))  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"sctp client: {res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
