"""One UDP flow (a fixed 5-tuple, DF set) driven line by line from a test, so "the next
packet of the same flow" is exactly that — and the socket's path MTU is readable."""

from __future__ import annotations

import select
import subprocess
from typing import Any

# One connected UDP socket; commands on stdin: "send N" (N bytes, DF set; prints "ok",
# "timeout" or "error <errno>"), "mtu" (prints the socket's path MTU).
FLOW = """
import socket, sys
vip, port = sys.argv[1], int(sys.argv[2])
v6 = ":" in vip
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
if v6:
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)   # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
else:
    s.setsockopt(socket.IPPROTO_IP, 10, 2)     # IP_MTU_DISCOVER = IP_PMTUDISC_DO (DF)
s.connect((vip, port))
s.settimeout(float(sys.argv[3]))
mtu_opt = (socket.IPPROTO_IPV6, 24) if v6 else (socket.IPPROTO_IP, 14)
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "send":
        data = b"z" * int(cmd[1])
        try:
            s.send(data)
            print("ok" if s.recv(70000) == data else "wrong", flush=True)
        except TimeoutError:
            print("timeout", flush=True)
        except OSError as exc:
            print("error", exc.errno, flush=True)
    elif cmd[0] == "mtu":
        print(s.getsockopt(*mtu_opt), flush=True)
"""


class UdpFlow:
    """One UDP flow from ``host`` (a netkit host) to ``vip``, driven from the test."""

    def __init__(self, host: Any, vip: str, port: int = 53, timeout: float = 1.0) -> None:
        self.proc = host.popen(["python3", "-c", FLOW, vip, str(port), str(timeout)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True)  # fmt: skip
        assert self._line() == "ready"

    def _line(self) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        assert ready, "the flow script did not answer within 10 s"
        return self.proc.stdout.readline().strip()

    def ask(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._line()

    def send(self, size: int) -> str:
        return self.ask(f"send {size}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=5)
