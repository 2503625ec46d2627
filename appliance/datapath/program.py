"""The eBPF program and its maps: with ctwalk (batch map walks), the only module that imports bcc.

``Program`` compiles bpf/lb.c (bcc, at run time) in modules (bpf/lib/modules.h): the core
when it loads, the others the first time a feature needs them (``need``). It loads the TC
classifier, opens the maps pinned under the pin root (creating and pinning them on first
use, reusing them after a restart: bcc's BPF_TABLE_PINNED), and attaches/detaches the
classifier through appliance.netlink. Everything else in appliance/datapath works on the
table objects this class hands out.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from appliance import netlink, resources
from appliance.datapath import crc32c, tcx

log = logging.getLogger(__name__)

BPF_DIR = resources.bpf_dir()
PROGRAM = "sluice_lb"
# The two TC filters on each interface (bpf/lb.c lb_entry): IPv6's balancer for untagged
# IPv6 packets first, so they skip the IPv4 balancer's handoff (a test and a tail call),
# then sluice_lb for the rest. While no IPv6 program exists (module "ipv6" not loaded, no
# previous daemon's left in its slot) only sluice_lb's is there.
PROGRAM6 = "sluice_lb6"
PRIO6, PRIO = 1, 2
DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/sluice")
LAYOUT_SUFFIX = "_v5"  # bpf/lib/maps.h LAYOUT
# Pins of older layouts: their maps cannot be read as ours (v1: conntrack entries without a
# next hop; v2: without TCP sequence numbers, no SYN table; v3: conntrack keys without the
# SCTP verification tag; v4: IPv4 flows in the same tables as IPv6, 44-byte keys, where v5
# has ct4/syn4 with a compact key). Unlinked at load, like
# LEGACY_PINS: an upgrade across a layout starts with an empty conntrack table (TCP flows
# then end, unless their service picks flows up mid-stream; UDP/ICMP flows start anew).
OLD_LAYOUTS = ("_v1", "_v2", "_v3", "_v4")
# Map name in C -> pin file name (without LAYOUT_SUFFIX); bpf/lib/maps.h.
MAPS = {
    "svc_map": "svc", "range_map": "range", "ep_map": "ep", "sel_map": "selp",
    "rr_map": "rr64", "persist_map": "persist", "ifaddr_map": "ifaddr", "ct_map": "ct",
    "syn_map": "syn", "ct4_map": "ct4", "syn4_map": "syn4",
    "allow_map": "allow", "svc_stats": "svcst", "ep_stats": "epst", "ep_stats_arr": "epsta",
    "svc_active": "svcact",
    "ep_active": "epacta", "jmp_map": "jmp", "nh_gen_map": "nhgen", "ep_nh_arr": "epnh",
    "ep_arr": "eparr", "sel_small_map": "selsm", "frag_map": "frag",
    "snat_pool_map": "snatpool",
    "fw_live": "fwlive", "fw_gens": "fwgen", "fw_tuples": "fwtup", "fw_keys": "fwkeys",
    "fw_ifpol": "fwifpol", "fw_snat": "fwsnat", "fw_stats": "fwst",
    "fw_names": "fwnames",
    "ha_cfg_map": "hacfg", "ha_pause_map": "hapause", "fe_drops": "fedrop",
    "crc_shift": "crcsh", "mh_map": "mh2", "mh_peer_map": "mhpeer2", "mh_alt_map": "mhalt",
    "sctp_tag_map": "sctptag",
    "flow_events": "fev",
}  # fmt: skip
# Pins of maps an older program used and this one does not ("sel": one selection slot per
# entry, before pages; "rr": 32-bit round-robin counters; "epact": the endpoint gauges as
# a hash, now the array "epacta"). Unlinked at load: an attached older program keeps its
# own map reference until its filter is replaced, and nothing else reads them. "mh",
# "mhpeer": SCTP secondary addresses of one family, peers by count.
LEGACY_PINS = ("sel", "rr", "mh", "mhpeer", "epact")
# Tail-call targets: bpf/lib/consts.h JMP_* -> the function in bpf/lb.c.
TAIL_CALLS = {0: "sluice_icmp_err", 1: "sluice_too_big", 2: "sluice_xlat", 3: "sluice_fw",
              4: "sluice_fw_lb", 5: "sluice_l3dsr", 6: "sluice_sctp_nat", 7: "sluice_sctp_paths",
              8: "sluice_gtpu", 9: "sluice_sctp", 10: "sluice_fw_other",
              11: "sluice_qos_ep", 12: "sluice_lb6"}  # fmt: skip
# Tail-call targets that no module of lb.c builds: compiled with bpf/qos.c and put into
# their slot by appliance/datapath/qos.py (endpoint policers on a flow's first packet).
QOS_TAIL_CALLS = ("sluice_qos_ep",)
# The compiles of bpf/lb.c (bpf/lib/modules.h): module -> its program functions. "core" is
# compiled by Program.load(); each other one the first time a service or rule needs its
# feature (Program.need), before the map write that makes the core program tail-call there
# (an empty slot falls through: see each jmp_map.call). Verifying SCTP's copy of the
# balancer costs about as much as the main program, and LLVM's time is per program built:
# a daemon without SCTP, NAT64, L3-DSR, GTP-U or firewall rules should not start slower for
# them. A restarted daemon leaves the previous one's programs in their slots (same pinned
# maps, the same pinned flow-event ring) until its own need() replaces them: those flows
# keep going meanwhile.
MODULES = {
    "core": ("sluice_lb", "sluice_icmp_err", "sluice_too_big"),
    "ipv6": ("sluice_lb6",),
    "sctp": ("sluice_sctp", "sluice_sctp_nat", "sluice_sctp_paths"),
    "xlat": ("sluice_xlat",),
    "l3dsr": ("sluice_l3dsr",),
    "gtpu": ("sluice_gtpu",),
    "fw": ("sluice_fw", "sluice_fw_lb", "sluice_fw_other"),
    "xdp": ("sluice_xdp",),
}
# Modules built from a source of their own instead of lb.c (same headers, same pinned
# maps), with their program type: the XDP fast path (bpf/xdp.c), compiled when the first
# interface has hook xdp and attached by netlink (appliance/datapath/xdp.py); nothing
# tail-calls it.
OWN_SOURCE = {"xdp": ("xdp.c", "XDP")}
FEATURES = tuple(m for m in MODULES if m != "core")  # what need() takes
JMP_INDEX = {name: index for index, name in TAIL_CALLS.items()}


class DatapathUnavailable(Exception):
    """bcc, root or bpffs is missing, or the program failed to compile or load."""


def inline_source(path: Path, seen: set[Path] | None = None) -> str:
    """``path`` with its local ``#include "..."`` headers pasted in (once each).

    bcc rewrites map calls (``map.lookup(&k)``) only in what it sees as the main file, so
    the headers of bpf/lib/ are inlined before the text is handed to it.
    """
    seen = set() if seen is None else seen
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r'\s*#include "([^"]+)"', line)
        if m:
            inc = (path.parent / m.group(1)).resolve()
            if inc not in seen:
                seen.add(inc)
                out.append(inline_source(inc, seen))
            continue
        if line.strip() != "#pragma once":
            out.append(line)
    return "\n".join(out)


def kernel_has_csum_ipv6(release: str | None = None) -> bool:
    """Whether bpf_l4_csum_replace takes BPF_F_IPV6 (Linux 6.16): without it an IPv6
    pseudo-header fix corrupts a CHECKSUM_COMPLETE skb->csum (bpf/lib/csum.h), but an older
    kernel refuses the flag, which would fail every IPv6 NAT."""
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (6, 16)


class _MapInfo(ct.Structure):
    # The head of the kernel's struct bpf_map_info (uapi/linux/bpf.h).
    _fields_ = [
        ("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32), ("map_flags", ct.c_uint32),
        ("name", ct.c_char * 16),
    ]  # fmt: skip


class Program:
    """The compiled and loaded TC program with its pinned maps."""

    def __init__(self, pin_root: Path = DEFAULT_PIN_ROOT, ct_capacity: int = 1048576) -> None:
        self.pin_root = Path(pin_root)
        self.ct_capacity = int(ct_capacity)
        self.bpf: Any = None  # the core module's: the maps, the flow-event ring
        self.modules: dict[str, Any] = {}  # module -> its bcc BPF object (core included)
        self.module_seconds: dict[str, float] = {}  # compile + verify, per module
        self.fn: Any = None
        self.compile_seconds = 0.0  # all modules loaded so far
        # load() found a selection map of an older layout: the selection tables are not in
        # ours yet, and an older program may still be attached and reading its own.
        self.legacy_layout = False
        self.attached: dict[tuple[str, str | None], float] = {}  # (ifname, netns) -> since
        self._source: str | None = None
        self._need_lock = threading.Lock()
        self._attach_lock = threading.Lock()  # need("ipv6") and attach: both filters, always
        self._events_cb: Any = None

    def load(self) -> None:
        """Compile and load the core module once; open or create the pinned maps."""
        try:
            from bcc import BPF  # noqa: F401 - importable, or the datapath is unavailable
        except ImportError as exc:
            raise DatapathUnavailable(f"bcc is not importable: {exc}") from exc
        if not os.path.ismount("/sys/fs/bpf"):
            raise DatapathUnavailable("bpffs is not mounted at /sys/fs/bpf")
        if '"' in str(self.pin_root) or "\\" in str(self.pin_root):
            raise DatapathUnavailable(f"unusable pin directory {self.pin_root}")
        self.pin_root.mkdir(parents=True, exist_ok=True)
        existing_ct = self._pinned_info("ct")
        if existing_ct and existing_ct.max_entries != self.ct_capacity:
            # bcc reuses a pinned map whatever the source says; the kernel's size wins.
            log.warning(
                "conntrack-capacity differs from the pinned table; keeping the pinned size "
                "(restart with --cleanup to resize)",
                extra={"pinned": existing_ct.max_entries, "configured": self.ct_capacity},
            )
        jmp = self._pinned_info("jmp")
        if jmp and jmp.max_entries != len(TAIL_CALLS):
            # An older program's prog array (fewer targets): it holds only program fds we
            # rewrite below, so a fresh one loses nothing. The attached old program keeps
            # its own reference until the filter is replaced.
            (self.pin_root / f"jmp{LAYOUT_SUFFIX}").unlink()
        for short in LEGACY_PINS:
            legacy = self.pin_root / f"{short}{LAYOUT_SUFFIX}"
            self.legacy_layout |= legacy.exists()
            legacy.unlink(missing_ok=True)
        for old in OLD_LAYOUTS:
            for pin in self.pin_root.glob(f"*{old}"):
                pin.unlink(missing_ok=True)
        # Tail-call targets into their slots before the attached program can jump there.
        self.bpf = self._load_module("core")
        try:
            self.fn = self.modules["core"]["functions"]["sluice_lb"]
            crc32c.fill(self.bpf[b"crc_shift"])  # before any SCTP service exists
        except Exception as exc:
            raise DatapathUnavailable(f"loading {PROGRAM}: {exc}") from exc

    def need(self, feature: str) -> None:
        """Compile and load (once) the module of ``feature`` (FEATURES) and put its programs
        into their jmp_map slots; raises DatapathUnavailable when it does not load. Takes
        seconds the first time: call it off the event loop (the config worker, the health
        pool), before writing what makes the core program tail-call there."""
        if feature not in FEATURES:
            raise ValueError(f"no datapath feature {feature!r}")
        with self._need_lock:
            if feature not in self.modules:
                self._load_module(feature)
                if feature == "ipv6":
                    self._attach_ipv6_everywhere()

    def _load_module(self, module: str) -> Any:
        from bcc import BPF

        started = time.monotonic()
        bpf = None
        try:
            bpf = BPF(text=self._text(module).encode())
            kind = getattr(BPF, OWN_SOURCE[module][1]) if module in OWN_SOURCE else BPF.SCHED_CLS
            functions = {name: bpf.load_func(name.encode(), kind)
                         for name in MODULES[module]}  # fmt: skip
            # core's table object when core is loaded: the same pinned map either way.
            table = (self.bpf if self.bpf is not None else bpf)[b"jmp_map"]
            for name, fn in functions.items():
                if name in JMP_INDEX:
                    table[table.Key(JMP_INDEX[name])] = table.Leaf(fn.fd)
        except Exception as exc:
            if bpf is not None:
                bpf.cleanup()
            what = PROGRAM if module == "core" else f"the {module} programs"
            raise DatapathUnavailable(f"loading {what}: {exc}") from exc
        seconds = time.monotonic() - started
        self.modules[module] = {"bpf": bpf, "functions": functions}
        self.module_seconds[module] = seconds
        self.compile_seconds = sum(self.module_seconds.values())
        log.info("datapath module loaded",
                 extra={"bpf-module": module, "seconds": round(seconds, 2)})  # fmt: skip
        return bpf

    def _text(self, module: str) -> str:
        if module in OWN_SOURCE:
            source = inline_source(BPF_DIR / OWN_SOURCE[module][0])
        else:
            if self._source is None:
                self._source = inline_source(BPF_DIR / "lb.c")
            source = self._source
        return (
            f'#define PIN_ROOT "{self.pin_root}"\n'
            f"#define CT_CAPACITY {self.ct_capacity}\n"
            f"#define MODULE_{module.upper()} 1\n"
            + ("" if kernel_has_csum_ipv6() else "#define L4_CSUM_IPV6 0\n")
            + source
        )

    def open_flow_events(self, callback: Any) -> None:
        """Hand the records of the pinned flow-event ring (bpf/lib/ha.h) to ``callback``
        (ctx, data, size), during ``self.bpf.ring_buffer_poll``. Opened once per Program
        (bcc refuses one map twice on one object): a later call only redirects the
        records (tests share a Program between reconcilers)."""
        first = self._events_cb is None
        self._events_cb = callback
        if first:
            self.bpf[b"flow_events"].open_ring_buffer(
                lambda ctx, data, size: self._events_cb(ctx, data, size))  # fmt: skip

    def function(self, name: str) -> Any:
        """A loaded program function (bcc's), from whichever module built it."""
        for module in self.modules.values():
            if name in module["functions"]:
                return module["functions"][name]
        raise KeyError(f"{name} is not loaded (see MODULES, need())")

    def table(self, name: str) -> Any:
        return self.bpf[name.encode()]

    # -- attach --------------------------------------------------------------------------
    def attach(self, ifname: str, netns: str | None = None) -> None:
        """Attach (or atomically replace) our classifiers on ``ifname``'s TC ingress:
        sluice_lb, and IPv6's ahead of it when there is one (PRIO6, PRIO)."""
        with self._attach_lock:
            netlink.attach_tc(ifname, self.fn.fd, PROGRAM, "ingress", netns=netns, prio=PRIO)
            fd, own = self._ipv6_fd()
            try:
                if fd is None:
                    # Nothing IPv6 yet. A filter at PRIO6 is an older daemon's: its sluice_lb
                    # for every protocol (one filter), which would run ahead of ours.
                    netlink.detach_tc_prio(ifname, PRIO6, "ingress", netns=netns)
                else:
                    self._attach_ipv6(ifname, netns, fd)
            finally:
                if fd is not None and not own:
                    os.close(fd)
            self.attached[(ifname, netns)] = time.time()

    def detach(self, ifname: str, netns: str | None = None) -> bool:
        with self._attach_lock:
            self.attached.pop((ifname, netns), None)
            return netlink.detach_tc(ifname, "ingress", netns=netns)

    def entry(self, ipv6: bool) -> Any:
        """The program TC runs first for an untagged packet of the family (bcc's function):
        sluice_lb6 for IPv6 once its module is loaded, else sluice_lb."""
        if ipv6 and "ipv6" in self.modules:
            return self.modules["ipv6"]["functions"][PROGRAM6]
        return self.fn

    def _attach_ipv6(self, ifname: str, netns: str | None, fd: int) -> None:
        netlink.attach_tc(ifname, fd, PROGRAM6, "ingress", netns=netns, prio=PRIO6,
                          protocol=netlink.ETH_P_IPV6)  # fmt: skip

    def _attach_ipv6_everywhere(self) -> None:
        """IPv6's filter onto every interface sluice_lb is on (its module just loaded)."""
        fd = self.modules["ipv6"]["functions"][PROGRAM6].fd
        with self._attach_lock:
            for ifname, netns in list(self.attached):
                try:
                    self._attach_ipv6(ifname, netns, fd)
                except (FileNotFoundError, LookupError):
                    # The interface or its namespace is gone, and sluice_lb's filter with
                    # it (attach puts both back if it returns).
                    del self.attached[(ifname, netns)]
                except OSError as exc:
                    # sluice_lb hands nothing untagged over: IPv6 on it passes untouched.
                    log.error("IPv6 balancer attach failed",
                              extra={"interface": ifname, "error": str(exc)})  # fmt: skip

    def _ipv6_fd(self) -> tuple[int | None, bool]:
        """(fd, ours) of the IPv6 balancer: our module's, or the program a previous daemon
        left in its jmp_map slot (a restart or an upgrade keeps IPv6 flows balanced until
        need("ipv6") replaces it; the caller closes that fd), or None."""
        if "ipv6" in self.modules:
            return self.modules["ipv6"]["functions"][PROGRAM6].fd, True
        table = self.bpf[b"jmp_map"]
        try:
            # A prog array read from user space yields the program's id (not an fd).
            prog_id = table[table.Key(JMP_INDEX[PROGRAM6])].value
        except KeyError:  # an empty slot
            return None, False
        fd = tcx.prog_fd_by_id(prog_id)
        return (fd, False) if fd >= 0 else (None, False)

    # -- introspection -------------------------------------------------------------------
    def _pinned_info(self, short: str) -> _MapInfo | None:
        path = self.pin_root / f"{short}{LAYOUT_SUFFIX}"
        if not path.exists():
            return None
        from bcc import libbcc

        fd = libbcc.lib.bpf_obj_get(str(path).encode())
        if fd < 0:
            return None
        try:
            info = _MapInfo()
            size = ct.c_uint32(ct.sizeof(info))
            if libbcc.lib.bpf_obj_get_info(fd, ct.byref(info), ct.byref(size)) != 0:
                return None
            return info
        finally:
            os.close(fd)

    def map_capacity(self, name: str) -> int:
        """The kernel's max_entries of a pinned map (bcc reports the source's number)."""
        info = self._pinned_info(MAPS[name])
        return int(info.max_entries) if info else 0

    def close(self) -> None:
        """Drop our file descriptors. Pins and attached filters stay: traffic keeps flowing,
        and jmp_map keeps every module's programs in their slots."""
        for module in self.modules.values():
            module["bpf"].cleanup()
        self.modules.clear()
        self.bpf = None

    def remove_pins(self) -> None:
        """Delete our pinned maps (``sluice run --cleanup``); the directory if left empty.

        Needs no load(): ``Program(pin_root).remove_pins()`` works without bcc."""
        for short in (*MAPS.values(), *LEGACY_PINS):
            (self.pin_root / f"{short}{LAYOUT_SUFFIX}").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.pin_root.rmdir()
