"""The XDP fast path (bpf/xdp.c): compiled, loaded and attached only where the model says
``hook xdp``.

Its own bcc module on the same pinned maps as the TC program (bpf/lb.c), which stays
attached on those interfaces too: XDP forwards established flows with a cached next hop
and passes everything else to TC. Compiled on first need (a daemon without ``hook xdp``
never pays the compile) and attached in the driver's native mode where it has one, in
generic (skb) mode otherwise (appliance.netlink.attach_xdp).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from appliance import netlink
from appliance.datapath.program import BPF_DIR, DatapathUnavailable, inline_source

log = logging.getLogger(__name__)

PROGRAM = "sluice_xdp"


class XdpProgram:
    """bpf/xdp.c on the pinned maps under ``pin_root`` (the TC program's)."""

    def __init__(self, pin_root: Path, ct_capacity: int, mode: str = "auto") -> None:
        self.pin_root = Path(pin_root)
        self.ct_capacity = int(ct_capacity)
        self.mode = mode  # auto / native / generic (tests choose; the product uses auto)
        self.bpf: Any = None
        self.fn: Any = None
        self.compile_seconds = 0.0
        self.attached: dict[tuple[str, str | None], str] = {}  # (ifname, netns) -> mode

    def load(self) -> None:
        """Compile and load once (the TC program has created the pinned maps)."""
        if self.bpf is not None:
            return
        from bcc import BPF

        text = (
            f'#define PIN_ROOT "{self.pin_root}"\n'
            f"#define CT_CAPACITY {self.ct_capacity}\n" + inline_source(BPF_DIR / "xdp.c")
        )
        started = time.monotonic()
        try:
            bpf = BPF(text=text.encode())
            self.fn = bpf.load_func(PROGRAM.encode(), BPF.XDP)
        except Exception as exc:
            raise DatapathUnavailable(f"loading {PROGRAM}: {exc}") from exc
        self.bpf = bpf
        self.compile_seconds = time.monotonic() - started
        log.info("XDP fast path loaded", extra={"seconds": round(self.compile_seconds, 2)})

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
        """Packets the fast path forwarded itself / passed to TC (summed over CPUs)."""
        if self.bpf is None:
            return {}
        table = self.bpf[b"xdp_stats"]
        sums = [sum(int(v) for v in table[table.Key(i)]) for i in (0, 1)]
        return {"forwarded": sums[0], "passed": sums[1]}

    def close(self) -> None:
        """Drop our file descriptors; attached programs stay (the kernel holds them)."""
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
