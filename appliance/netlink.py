"""Netlink for the appliance: attach eBPF programs with TC, look up interfaces.

This is the only module of the product that imports pyroute2 (architecture rule); the
rest of the appliance calls these functions. Errors from the kernel come out as
``OSError`` (with ``errno``), so callers never need pyroute2's exception types.

Every function takes ``netns``: None means the namespace of the calling process,
otherwise the name of a namespace under /run/netns (``ip netns`` names). A missing
namespace raises FileNotFoundError; it is never created as a side effect.

TC attachment follows the clsact / direct-action recipe: one clsact qdisc per interface,
our bpf filters at fixed priorities (``OUR_PRIOS``) and handle in the ingress (ffff:fff2)
or egress (ffff:fff3) hook, each for one protocol (all, or one ethertype). Attaching again
*replaces* a filter in one netlink request, so a reload never leaves the interface without
a program.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV4_RULE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_IPV6_RULE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)

log = logging.getLogger(__name__)

Direction = Literal["ingress", "egress"]

# clsact hook "parents" (TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS)).
_PARENTS: dict[str, int] = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
# Where our filters live. Fixed, so "replace-filter" finds and swaps each atomically; the
# balancer uses two (appliance/datapath/program.py), detach removes both.
TC_PRIO = 1
TC_HANDLE = 1
OUR_PRIOS = (1, 2)
ETH_P_ALL, ETH_P_IPV6 = 0x0003, 0x86DD


@contextmanager
def _rtnl(netns: str | None) -> Iterator[IPRoute]:
    """An rtnetlink socket in ``netns`` (None: ours), closed on exit."""
    # flags=0: pyroute2's default (O_CREAT) would silently create a missing namespace.
    ipr = IPRoute() if netns is None else NetNS(netns, flags=0)
    try:
        yield ipr
    except NetlinkError as exc:
        raise OSError(exc.code, f"netlink: {exc}") from exc
    finally:
        ipr.close()


def _parent(direction: str) -> int:
    try:
        return _PARENTS[direction]
    except KeyError:
        raise ValueError(f"direction must be 'ingress' or 'egress', not {direction!r}") from None


def _index(ipr: IPRoute, ifname: str, netns: str | None) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        where = f" in netns {netns}" if netns else ""
        raise LookupError(f"no interface {ifname!r}{where}")
    return int(found[0])


def ifindex(ifname: str, netns: str | None = None) -> int:
    """Return the interface index of ``ifname``; LookupError if there is none."""
    with _rtnl(netns) as ipr:
        return _index(ipr, ifname, netns)


def _ensure_clsact(ipr: IPRoute, index: int) -> None:
    """Add the clsact qdisc unless it is there already (idempotent)."""
    try:
        ipr.tc("add", "clsact", index)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        # EEXIST also comes back when a plain `ingress` qdisc holds the slot; filters would
        # then land somewhere else than we think, so refuse instead of guessing.
        kinds = {q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index)}
        if "clsact" not in kinds:
            raise OSError(
                errno.EEXIST, f"interface {index} has a conflicting qdisc ({sorted(kinds)})"
            ) from exc


def attach_tc(
    ifname: str,
    prog_fd: int,
    prog_name: str | bytes,
    direction: Direction = "ingress",
    netns: str | None = None,
    prio: int = TC_PRIO,
    protocol: int = ETH_P_ALL,
) -> None:
    """Attach the SCHED_CLS program ``prog_fd`` to ``ifname``'s TC hook, direct-action,
    for packets of ``protocol`` (an ethertype; ETH_P_ALL: every packet).

    Creates the clsact qdisc if needed. If a filter of ``protocol`` is already attached at
    ``prio`` (handle ``TC_HANDLE``) it is replaced atomically: packets see either the old
    or the new program, never none. One of another protocol there is deleted first (the
    kernel changes no filter's protocol in place). The filter holds its own reference to
    the program, so it stays attached after the loader closes ``prog_fd``. ``prog_name``
    is only a label (shown by ``tc filter show`` and :func:`tc_filters`); bcc's
    ``fn.name`` (bytes) is accepted as is.
    """
    parent = _parent(direction)
    name = prog_name.decode() if isinstance(prog_name, bytes) else prog_name
    with _rtnl(netns) as ipr:
        index = _index(ipr, ifname, netns)
        _ensure_clsact(ipr, index)
        there = _protocols(ipr, index, parent).get(prio)
        if there is not None and there != protocol:
            _delete_filter(ipr, index, parent, prio)
        ipr.tc(
            "replace-filter",
            "bpf",
            index,
            TC_HANDLE,
            fd=prog_fd,
            name=name,
            parent=parent,
            prio=prio,
            protocol=protocol,
            classid=1,
            direct_action=True,
        )


def _delete_filter(ipr: IPRoute, index: int, parent: int, prio: int) -> bool:
    """Delete our filter at ``prio``; False if there is none (or no clsact qdisc)."""
    try:
        # protocol 0: whichever it has (pyroute2's default, ETH_P_ALL, must match).
        ipr.tc("del-filter", "bpf", index, TC_HANDLE, parent=parent, prio=prio, protocol=0)
    except NetlinkError as exc:
        # ENOENT: no such filter; EINVAL: no clsact qdisc at all.
        if exc.code not in (errno.ENOENT, errno.EINVAL):
            raise
        return False
    return True


def _protocols(ipr: IPRoute, index: int, parent: int) -> dict[int, int]:
    """prio -> protocol (ethertype) of the filters with our handle on one hook."""
    try:
        msgs = ipr.get_filters(index=index, parent=parent)
    except NetlinkError as exc:
        if exc.code == errno.EINVAL:  # no clsact qdisc
            return {}
        raise
    # tcm_info: the priority in the upper 16 bits, the protocol (network order) below.
    return {msg["info"] >> 16: socket.ntohs(msg["info"] & 0xFFFF)
            for msg in msgs if msg["handle"] == TC_HANDLE}  # fmt: skip


def detach_tc_prio(
    ifname: str, prio: int, direction: Direction = "ingress", netns: str | None = None
) -> bool:
    """Remove our filter at ``prio`` alone (the qdisc stays); True if one was removed."""
    parent = _parent(direction)
    with _rtnl(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return bool(found) and _delete_filter(ipr, int(found[0]), parent, prio)


def tc_protocols(
    ifname: str, direction: Direction = "ingress", netns: str | None = None
) -> dict[int, int]:
    """prio -> protocol (an ethertype; ETH_P_ALL) of our filters on one hook."""
    with _rtnl(netns) as ipr:
        return _protocols(ipr, _index(ipr, ifname, netns), _parent(direction))


def detach_tc(
    ifname: str,
    direction: Direction = "ingress",
    netns: str | None = None,
    keep_qdisc: bool = False,
) -> bool:
    """Remove our bpf filters (``OUR_PRIOS``) from ``ifname``'s TC hook; True if one was.

    Idempotent: no filter, no clsact, or no such interface is not an error. Unless
    ``keep_qdisc``, the clsact qdisc is deleted too once neither hook has a filter left,
    so the interface is back to how an un-managed one looks. Filters that others put on
    the interface are left alone (and keep the qdisc).
    """
    parent = _parent(direction)
    with _rtnl(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        index = int(found[0])
        removed = False
        for prio in OUR_PRIOS:
            removed |= _delete_filter(ipr, index, parent, prio)
        if not keep_qdisc and not any(_filters(ipr, index, p) for p in _PARENTS.values()):
            try:
                ipr.tc("del", "clsact", index)
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.EINVAL):
                    raise
        return removed


def _filters(ipr: IPRoute, index: int, parent: int) -> list[str]:
    """Names of the filters on one hook (bpf: the program name; others: their kind)."""
    try:
        msgs = ipr.get_filters(index=index, parent=parent)
    except NetlinkError as exc:
        if exc.code == errno.EINVAL:  # no clsact qdisc: no hook, no filters
            return []
        raise
    names = []
    for msg in msgs:
        # The dump also has one header entry per priority (handle 0, no options): skip it.
        if msg["handle"] == 0:
            continue
        name = None
        if msg.get_attr("TCA_KIND") == "bpf":
            name = msg.get_nested("TCA_OPTIONS", "TCA_BPF_NAME")
        names.append(name or str(msg.get_attr("TCA_KIND")))
    return names


def tc_filters(
    ifname: str, direction: Direction | None = None, netns: str | None = None
) -> list[str]:
    """Names of the filters attached to ``ifname`` (one hook, or both if None).

    For bpf filters the name is the program name given at attach time.
    """
    parents = list(_PARENTS.values()) if direction is None else [_parent(direction)]
    with _rtnl(netns) as ipr:
        index = _index(ipr, ifname, netns)
        return [name for parent in parents for name in _filters(ipr, index, parent)]


# XDP attach flags (uapi/linux/if_link.h) and IFLA_XDP_ATTACHED's values.
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1 << 1, 1 << 2
_XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
_XDP_ATTACHED = {1: "native", 2: "generic", 3: "offload", 4: "multi"}


def _xdp_set(ipr: IPRoute, index: int, fd: int, flags: int) -> None:
    ipr.link("set", index=index,
             xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]})  # fmt: skip


def _xdp_info(ipr: IPRoute, index: int) -> tuple[str | None, int]:
    """(mode, program id) of the XDP program on link ``index``; (None, 0) if none."""
    link = ipr.get_links(index)[0]
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return None, 0
    attached = xdp.get_attr("IFLA_XDP_ATTACHED")
    if not attached:
        return None, 0
    # pyroute2 decodes the mode to its own names; the number is what the kernel sent.
    names = {"xdp": 1, "xdpgeneric": 2, "xdpoffload": 3, "xdpmulti": 4}
    number = names.get(attached, attached) if isinstance(attached, str) else int(attached)
    return _XDP_ATTACHED.get(int(number), str(attached)), int(xdp.get_attr("IFLA_XDP_PROG_ID") or 0)


def attach_xdp(ifname: str, prog_fd: int, mode: str = "auto", netns: str | None = None) -> str:
    """Attach the XDP program ``prog_fd`` to ``ifname`` (or replace ours there, atomically);
    returns the mode in use. ``auto``: the driver's own (native) mode where the driver has
    one, else generic (skb) mode; ``native`` / ``generic`` ask for one. A program already
    attached in the other mode is replaced by detaching it first (the kernel does not let
    both modes hold a program at once)."""
    if mode not in ("auto", *_XDP_MODES):
        raise ValueError(f"XDP mode must be auto, native or generic, not {mode!r}")
    with _rtnl(netns) as ipr:
        index = _index(ipr, ifname, netns)
        current, _ = _xdp_info(ipr, index)
        tries = ["native", "generic"] if mode == "auto" else [mode]
        if current in tries:
            tries.remove(current)
            tries.insert(0, current)  # a replacement in place first: no gap
        last: NetlinkError | None = None
        for want in tries:
            if current is not None and current != want:
                _xdp_set(ipr, index, -1, _XDP_MODES[current])
                current = None
            try:
                _xdp_set(ipr, index, prog_fd, _XDP_MODES[want])
                return want
            except NetlinkError as exc:
                last = exc
        assert last is not None
        raise last


def detach_xdp(ifname: str, netns: str | None = None) -> bool:
    """Remove the XDP program from ``ifname``; True if there was one. Idempotent."""
    with _rtnl(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        mode, _ = _xdp_info(ipr, int(found[0]))
        if mode is None:
            return False
        _xdp_set(ipr, int(found[0]), -1, _XDP_MODES.get(mode, 0))
        return True


def xdp_state(ifname: str, netns: str | None = None) -> dict[str, Any]:
    """``{"mode": "native" | "generic" | ..., "prog-id": N}`` of ``ifname``'s XDP program,
    ``{}`` when it has none."""
    with _rtnl(netns) as ipr:
        mode, prog_id = _xdp_info(ipr, _index(ipr, ifname, netns))
    return {} if mode is None else {"mode": mode, "prog-id": prog_id}


def interface_addresses(netns: str | None = None) -> list[tuple[int, int, str]]:
    """(ifindex, IP version, address) of every global-scope address in ``netns``.

    The datapath's one-arm mode uses these as the source address on the egress link.
    Link-local IPv6 addresses are left out (they cannot be a NAT source towards an endpoint).
    """
    out = []
    with _rtnl(netns) as ipr:
        for msg in ipr.get_addr():
            if msg["scope"] != 0:  # RT_SCOPE_UNIVERSE only
                continue
            address = msg.get_attr("IFA_ADDRESS")
            if not address:
                continue
            version = 6 if ":" in address else 4
            out.append((int(msg["index"]), version, str(address)))
    return out


# Counters of IFLA_STATS64 that links() reports (the kernel's 64-bit ones).
LINK_COUNTERS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "multicast",
                 "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")  # fmt: skip
_ETHTOOL_GSET, _SIOCETHTOOL = 0x1, 0x8946


def links(netns: str | None = None) -> list[dict[str, object]]:
    """Every link of the namespace (one netlink dump): index, name, ARPHRD type, MTU, MAC,
    flags, operstate (lower case), carrier, alias and the 64-bit counters.

    Read through netlink, not /sys/class/net: a process entered into a namespace with
    `nsenter --net` still sees the host's sysfs, where the same names (lo, eth0) are the
    host's interfaces.
    """
    out: list[dict[str, object]] = []
    with _rtnl(netns) as ipr:
        for link in ipr.get_links():
            stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS") or {}
            out.append({
                "index": int(link["index"]),
                "name": link.get_attr("IFLA_IFNAME") or "",
                "type": int(link["ifi_type"]),
                "flags": int(link["flags"]),
                "mtu": int(link.get_attr("IFLA_MTU") or 0),
                "mac": link.get_attr("IFLA_ADDRESS") or "",
                "operstate": str(link.get_attr("IFLA_OPERSTATE") or "unknown").lower(),
                "carrier": int(link.get_attr("IFLA_CARRIER") or 0),
                "alias": link.get_attr("IFLA_IFALIAS") or "",
                **{c: int(stats.get(c, 0) or 0) for c in LINK_COUNTERS},
            })  # fmt: skip
    return out


def link_speed_mbps(ifname: str) -> int:
    """The link speed in Mb/s (ETHTOOL_GSET on a socket of the calling process's
    namespace), 0 when unknown (no carrier, a virtual link without one) or unsupported."""
    # struct ethtool_cmd (44 octets): cmd, supported, advertising (u32), speed (u16) at 12,
    # six u8, maxtxpkt, maxrxpkt (u32), speed_hi (u16) at 28, then the rest.
    cmd = bytearray(struct.pack("I", _ETHTOOL_GSET) + bytes(40))
    cmd_buf = (ctypes.c_char * len(cmd)).from_buffer(cmd)
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(cmd_buf))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
    except OSError:
        return 0
    finally:
        del cmd_buf  # releases the export of `cmd`
    speed = struct.unpack_from("H", cmd, 12)[0] | (struct.unpack_from("H", cmd, 28)[0] << 16)
    return 0 if speed in (0, 0xFFFF, 0xFFFFFFFF) else speed


# -- route, neighbour, link and rule changes ---------------------------------------------
_NUD_FAILED = 0x20
# The tables the default `ip rule`s look up (local, main, default): with no other rule, the
# only ones a forwarded packet's route can come from.
_DEFAULT_TABLES = (253, 254, 255)
# A rule with only these attributes (and the "none" value for the suppressors) selects
# nothing: it is one of the defaults, or one like them.
_PLAIN_RULE_ATTRS = ("FRA_TABLE", "FRA_PRIORITY", "FRA_PROTOCOL", "FRA_SUPPRESS_PREFIXLEN",
                     "FRA_SUPPRESS_IFGROUP", "FRA_UNSPEC")  # fmt: skip
_FR_ACT_TO_TBL = 1


def not_by_destination(msg: Any) -> str | None:
    """Why a rule, route or link (an rtnetlink message, dumped or notified) makes the route
    of a forwarded packet depend on more than its destination; None if it does not.

    The FIB (bpf_fib_lookup, as the stack) then gives one answer per destination whatever
    the source: an `ip rule` other than the defaults (it may select by source, interface,
    mark...), a VRF, an IPv6 route specific to a source (`from`), and a multipath route
    (the path is chosen by a hash of the flow) each break that. Multipath is judged
    strictly: any multipath route, or any route through a nexthop object (which may be a
    group), in the default tables, whether or not an endpoint is behind it."""
    event = msg.get("event", "")
    if event == "RTM_NEWRULE":
        table = msg.get_attr("FRA_TABLE") or msg.get("table", 0)
        plain = all(
            name in _PLAIN_RULE_ATTRS
            and not (name.startswith("FRA_SUPPRESS") and value != 0xFFFFFFFF)
            for name, value in msg.get("attrs", [])
        )  # fmt: skip
        if (msg.get("action", _FR_ACT_TO_TBL) != _FR_ACT_TO_TBL or msg.get("src_len")
                or msg.get("dst_len") or msg.get("tos") or msg.get("flags")
                or table not in _DEFAULT_TABLES or not plain):  # fmt: skip
            return f"ip rule (priority {msg.get_attr('FRA_PRIORITY') or 0}, table {table})"
    elif event == "RTM_NEWROUTE":
        table = msg.get_attr("RTA_TABLE") or msg.get("table", 0)
        if table not in _DEFAULT_TABLES:
            return None  # no rule looks there (another one would have been reported)
        where = f"{msg.get_attr('RTA_DST') or 'default'}/{msg.get('dst_len', 0)}"
        if msg.get("family") == socket.AF_INET6 and msg.get("src_len"):
            return f"IPv6 source-specific route to {where}"
        if msg.get_attr("RTA_MULTIPATH"):
            return f"multipath route to {where}"
        if msg.get_attr("RTA_NH_ID"):
            return f"route to {where} through a nexthop object"
    elif event == "RTM_NEWLINK":
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None and info.get_attr("IFLA_INFO_KIND") == "vrf":
            return f"VRF {msg.get_attr('IFLA_IFNAME')}"
    return None


# What a survey dumps: rules and links are few; routes may be many (a full table).
SURVEY_PARTS = ("rules", "routes", "links")
_NLM_F_REPLACE = 0x100


def _part(msg: Any) -> str | None:
    """"rules", "routes" or "links" for such a message (RTM_NEWRULE, RTM_DELROUTE...)."""
    kind = msg.get("event", "").rsplit("_", 1)[-1][3:]
    return {"RULE": "rules", "ROUTE": "routes", "LINK": "links"}.get(kind)


def routing_survey(netns: str | None = None,
                   parts: tuple[str, ...] = SURVEY_PARTS) -> dict[str, str | None]:  # fmt: skip
    """Per part (rules, routes, links of both families, one dump each): why it makes
    routing in ``netns`` depend on more than the destination (the first reason found, see
    :func:`not_by_destination`), or None."""
    out: dict[str, str | None] = {}
    with _rtnl(netns) as ipr:
        for part in parts:
            if part == "rules":
                msgs: Any = (m for f in (socket.AF_INET, socket.AF_INET6)
                             for m in ipr.get_rules(family=f))  # fmt: skip
            elif part == "routes":
                msgs = (m for f in (socket.AF_INET, socket.AF_INET6)
                        for m in ipr.get_routes(family=f))  # fmt: skip
            else:
                msgs = ipr.get_links()
            out[part] = next((w for w in map(not_by_destination, msgs) if w), None)
    return out


def _drain(ipr: Any) -> list[Any]:
    """Every message the socket has, not only the first datagram's: pyroute2 (0.9) reads all
    datagrams waiting on the socket into its own queue and ``get()`` returns one, so the
    others would wait there, unseen by select(), until the next netlink event."""
    msgs = list(ipr.get())
    queue = getattr(getattr(ipr.asyncore, "msg_queue", None), "queues", {}).get(0)
    while queue is not None and queue.qsize() > 0:
        msgs += ipr.get()
    return msgs


class RoutingWatch:
    """Call ``on_change()`` after each burst of changes that can move a next hop, and keep
    ``by_destination`` true only while routing depends on the destination alone.

    A thread listens to rtnetlink's link, neighbour, IPv4/IPv6 route and IPv4/IPv6 rule
    groups in ``netns``. Every route, rule and link message counts; a neighbour message
    counts only when the neighbour's link-layer address differs from the last one seen for
    it, or it failed or went away (reachable <-> stale churn moves nothing). Messages that
    arrive together give one call. If the socket fails it is reopened and ``on_change()`` is
    called once more, since changes may have been missed meanwhile.

    ``by_destination`` (read it in ``on_change``): set from a dump of rules, routes and
    links when listening starts; a message that breaks it (see :func:`not_by_destination`)
    clears it at once; while it is clear, a message that may have removed the reason has
    that part (rules, routes or links) dumped again (a multipath route that loses a path is
    notified as the path's removal only), which sets it again when nothing breaks it any
    more. ``why_not``: the reason while it is clear.
    """

    def __init__(self, on_change: Callable[[], None], netns: str | None = None) -> None:
        self.on_change = on_change
        self.netns = netns
        self.changes = 0  # calls made (for status and tests)
        self.by_destination = False  # until the first dump says so
        self.why_not: str | None = "not surveyed yet"
        self._why: dict[str, str | None] = dict.fromkeys(SURVEY_PARTS, "not surveyed yet")
        self._lladdr: dict[tuple[int, str], str] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; returns once the socket is subscribed and routing surveyed (or
        after ``timeout``)."""
        self._thread = threading.Thread(target=self._run, name="routing-watch", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _counts(self, msg: Any) -> bool:
        event = msg.get("event", "")
        if not event.endswith("NEIGH"):
            return True
        key = (int(msg.get("ifindex", 0)), str(msg.get_attr("NDA_DST")))
        if event == "RTM_DELNEIGH" or msg.get("state", 0) & _NUD_FAILED:
            return self._lladdr.pop(key, None) is not None or event == "RTM_DELNEIGH"
        lladdr = msg.get_attr("NDA_LLADDR")
        if lladdr is None or self._lladdr.get(key) == lladdr:
            return False
        self._lladdr[key] = lladdr
        return True

    def _set_routing(self) -> None:
        why = next((w for w in self._why.values() if w), None)
        if (why is None) != self.by_destination:
            if why is None:
                log.info("routing by destination alone: new flows use endpoint next hops")
            else:
                log.info("routing not by destination alone: new flows ask the FIB",
                         extra={"reason": why})  # fmt: skip
        self.why_not, self.by_destination = why, why is None

    def _survey(self, parts: tuple[str, ...] = SURVEY_PARTS) -> None:
        try:
            self._why.update(routing_survey(self.netns, parts))
        except OSError as exc:  # the safe answer: every new flow asks the FIB
            self._why.update({p: f"routing survey failed: {exc}" for p in parts})
        self._set_routing()

    def _note(self, msgs: list[Any]) -> bool:
        """Take a burst of messages in: whether it counts as a change. A message that breaks
        routing by destination sets its part's reason at once; while a part has one, a
        message of that part that may have removed it (any rule or link message; a route's
        removal or replacement) has that part dumped again (only that part: a full routing
        table is not dumped for a rule, nor for a route added)."""
        counted = any([self._counts(m) for m in msgs])
        again: set[str] = set()
        for m in msgs:
            part = _part(m)
            if part is None:
                continue
            why = not_by_destination(m)
            if why is not None:
                self._why[part] = why
            elif self._why.get(part) is not None and (
                part != "routes" or m.get("event") == "RTM_DELROUTE"
                or m.get("header", {}).get("flags", 0) & _NLM_F_REPLACE
            ):  # fmt: skip
                again.add(part)
        if again:
            self._survey(tuple(p for p in SURVEY_PARTS if p in again))
        else:
            self._set_routing()
        return counted

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                ipr = IPRoute() if self.netns is None else NetNS(self.netns, flags=0)
            except OSError as exc:
                log.warning("routing watch: cannot open netlink", extra={"error": str(exc)})
                self._stop.wait(1.0)
                continue
            try:
                ipr.bind(groups=RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
                         | RTMGRP_IPV4_RULE | RTMGRP_IPV6_RULE)  # fmt: skip
                self._survey()  # after subscribing: a change during the dump is notified
                self._ready.set()
                if not first:
                    self._changed()  # reopened: what happened meanwhile is unknown
                first = False
                while not self._stop.is_set():
                    readable, _, _ = select.select([ipr], [], [], 0.5)
                    if readable and self._note(_drain(ipr)):
                        self._changed()
            except Exception as exc:  # a broken socket: reopen, never die
                log.warning("routing watch failed; reopening", extra={"error": str(exc)})
                self._stop.wait(0.5)
            finally:
                ipr.close()

    def _changed(self) -> None:
        self.changes += 1
        try:
            self.on_change()
        except Exception:
            log.exception("routing watch: on_change failed")
