"""The XDP fast path (bpf/xdp.c): attached where the model says ``hook xdp``.

bpf/xdp.c is a module of the Program (program.py MODULES "xdp", OWN_SOURCE): its own
compile on the same pinned maps as the TC program (bpf/lb.c), which stays attached on those
interfaces too: XDP forwards established flows with a cached next hop and passes everything
else to TC. Compiled on first need (a daemon without ``hook xdp`` never pays for it) and
attached in the driver's native mode where it has one, in generic (skb) mode otherwise
(appliance.netlink.attach_xdp).
"""

from __future__ import annotations

import logging
from typing import Any

from appliance import netlink
from appliance.datapath.program import Program

log = logging.getLogger(__name__)

PROGRAM = "sluice_xdp"


class XdpProgram:
    """The XDP fast path of ``program`` (loaded on first use) and where it is attached."""

    def __init__(self, program: Program, mode: str = "auto") -> None:
        self.program = program
        self.mode = mode  # auto / native / generic (tests choose; the product uses auto)
        self.fn: Any = None
        self.attached: dict[tuple[str, str | None], str] = {}  # (ifname, netns) -> mode

    def load(self) -> None:
        """Compile and load the module once (Program.need: DatapathUnavailable if not)."""
        if self.fn is None:
            self.program.need("xdp")
            self.fn = self.program.function(PROGRAM)

    def attach(self, ifname: str, netns: str | None = None) -> str:
        """Attach to ``ifname`` (replacing ours there); returns the mode in use."""
        self.load()
        mode = netlink.attach_xdp(ifname, self.fn.fd, self.mode, netns=netns)
        self.attached[(ifname, netns)] = mode
        return mode

    def detach(self, ifname: str, netns: str | None = None) -> bool:
        self.attached.pop((ifname, netns), None)
        return netlink.detach_xdp(ifname, netns=netns)

    def counters(self) -> dict[str, int]:
        """Packets the fast path forwarded itself / passed to TC (summed over CPUs), since
        this Program loaded it."""
        module = self.program.modules.get("xdp")
        if self.fn is None or module is None:
            return {}
        table = module["bpf"][b"xdp_stats"]
        sums = [sum(int(v) for v in table[table.Key(i)]) for i in (0, 1)]
        return {"forwarded": sums[0], "passed": sums[1]}
