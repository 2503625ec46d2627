"""Numbers and encodings shared with bpf/lib/consts.h and structs.h (no bcc here).

The C headers are the source of truth; every constant below names the #define it mirrors.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
import struct

# bpf/lib/consts.h
MAX_SERVICES = 16384
MAX_ENDPOINTS = 524288
EP_STATS_ARRAY = 65536  # endpoint ids below it count in ep_stats_arr (bpf/lib/consts.h)
SEL_PAGE = 1008
SEL_SMALL = 32
MAX_SEL_PAGES = 131072
MAX_RANGES = 8
MAX_ALLOW = 65536
LC_SCAN = 32
SCTP_CRC_MAX_LEN = 16384  # bpf/lib/crc32c.h: crc_shift entries
MH_MAX = 4  # bpf/lib/sctp_mh.h: SCTP secondary addresses per service (the model's max)
DEFAULT_CT_CAPACITY = 1048576

# What the config may ask of the datapath: appliance/datapath/validate.py refuses the rest
# at validate/commit time, so that a committed config never fails to program (and a
# health change, which rebuilds a table, never finds the maps full).
LIMIT_SERVICES = MAX_SERVICES - 1  # enabled services; ids 1..MAX_SERVICES-1
LIMIT_SERVICE_ENDPOINTS = 512  # per service (also the model's max-elements)
# Endpoints over all services. A changed service's new endpoints get ids before its old
# ones free theirs, so one service's worth stays free.
LIMIT_ENDPOINTS = MAX_ENDPOINTS - 1 - LIMIT_SERVICE_ENDPOINTS
# Allowed-source prefixes: a changed list is added before the old one goes, so the total
# plus the longest list must fit MAX_ALLOW.
LIMIT_ALLOW = MAX_ALLOW
LIMIT_RANGES = MAX_RANGES  # port-range services per (VIP, protocol)
# Selection-table pages (the table each service could need at most: every endpoint
# eligible, weights not reduced by their gcd) plus the biggest one again, because a
# rebuild writes the new generation before it deletes the old one.
LIMIT_SEL_PAGES = MAX_SEL_PAGES
# Parts of the model the datapath does not implement yet: refused, not half done.
UNSUPPORTED_PROTOCOLS: tuple[str, ...] = ()
UNSUPPORTED_HOOKS: tuple[str, ...] = ()  # xdp: bpf/xdp.c in front of TC

ALGORITHMS = {
    "round-robin": 0,
    "weighted": 1,
    "hash": 2,
    "maglev": 3,
    "least-connections": 4,
    "priority": 5,
    "persistence": 6,
    "gtp-teid": 7,  # bpf/lib/gtpu.h
}
MAGLEV_TABLES = ("maglev", "gtp-teid")  # algorithms whose slot table is a Maglev table
MODES = {"default": 0, "one-arm": 1, "full-nat": 2, "dsr": 3}
SVC_F_RANGE = 1
SVC_F_ALLOW = 2
SVC_F_IPIP = 4  # DSR through IP-in-IP / IPv6-in-IPv6
SVC_F_POOL = 8  # full-NAT source address from snat_pool_map (bpf/lib/snatpool.h)
SNAT_POOL_MAX = 8  # snat-address plus snat-pool
EP_F_ELIGIBLE = 1
EP_F_DOWN = 2  # not read by the datapath: the health a restarted daemon finds in the pins
SEL_GEN_BIT = 0x80000000
CT_STATES = {0: "new", 1: "established", 2: "fin-wait", 3: "closed"}
CT_DIR_ORIG, CT_DIR_REPLY = 0, 1
CT_F_COUNTED = 1
CT_F_DSR = 2
CT_F_XLAT = 4  # NAT64/NAT46: the endpoint side is the other family
CT_F_PASS = 8  # let in by the firewall, not translated (bpf/lib/fw_flow.h)
CT_F_IPIP = 16  # L3-DSR
CT_F_LC = 32  # least-connections: the datapath keeps its ep_active gauge (bpf ct_count)
CT_F_MH_ALT = 64  # an SCTP association's alternate path (bpf/lib/sctp_mh.h)
MH_ALT_TIMEOUT = 0xFFFFFFFF  # an alternate path's timeout_s: none of its own (sctp_mh.h)
SVC_F_MIDSTREAM = 16  # TCP: any segment may open a flow (bpf/lib/tcpstate.h)
TCP_SEEN_SEQ, TCP_SEEN_ACK = 1, 2  # ct_entry.tcp_seen
# Per-state timeouts (s); established uses the service's inactivity timeout.
TO_TCP_SYN, TO_TCP_FIN, TO_TCP_CLOSED, TO_UNREPLIED = 30, 10, 2, 30

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": 1, "sctp": 132}
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp", 132: "sctp"}
IPPROTO_SCTP = 132
PORT_PROTOCOLS = (6, 17, 132)  # bpf/lib/sctp.h l4_has_ports: the rest key on no ports
# bpf/lib/sctp.h: SCTP's cookie phase is CT_NEW with this bit in fin_seen (TCP's timeouts).
SCTP_COOKIE_SEEN = 4
# loxilb's defaults; every other protocol: 20 s. SCTP as TCP: its heartbeats come every
# 30 s by default, so an idle association must outlive that.
DEFAULT_TIMEOUT = {"tcp": 240, "sctp": 240}
DEFAULT_TIMEOUT_OTHER = 20


# -- the conntrack entry (bpf/lib/structs.h), for whatever reads or writes ct_map bytes ----
# (the HA conntrack sync's codec, conntrack.py). Native byte order; addresses and ports as
# the packet carries them (network order). tests/test_datapath_nexthop.py checks this mirror
# against the layout bcc compiled.


class Addr(ct.Structure):
    """struct addr: IPv4 in w[0], w[1..3] zero."""

    _fields_ = [("w", ct.c_uint32 * 4)]


class CtKey(ct.Structure):
    """struct ct_key: a packet's own tuple (ICMP echo: identifier in sport, dport 0); vtag:
    an SCTP ORIG entry's verification tag (the endpoint's, as the packet carries it), else 0."""

    _fields_ = [
        ("src", Addr), ("dst", Addr), ("sport", ct.c_uint16), ("dport", ct.c_uint16),
        ("proto", ct.c_uint8), ("family", ct.c_uint8), ("pad", ct.c_uint16),
        ("vtag", ct.c_uint32),
    ]  # fmt: skip


class Ct4Key(ct.Structure):
    """struct ct4_key: an IPv4 flow's key in ct4_map / syn4_map (bpf/lib/ct_tables.h): the
    addresses' first words, then struct ct_key's last 12 bytes (appliance/datapath/
    cttables.py narrow / widen)."""

    _fields_ = [
        ("src", ct.c_uint32), ("dst", ct.c_uint32), ("sport", ct.c_uint16),
        ("dport", ct.c_uint16), ("proto", ct.c_uint8), ("family", ct.c_uint8),
        ("pad", ct.c_uint16), ("vtag", ct.c_uint32),
    ]  # fmt: skip


class NatTuple(ct.Structure):
    """struct nat_tuple: the whole translation, the same in a flow's two entries."""

    _fields_ = [
        ("client", Addr), ("vip", Addr), ("snat", Addr), ("ep", Addr),
        ("client_port", ct.c_uint16), ("vip_port", ct.c_uint16),
        ("snat_port", ct.c_uint16), ("ep_port", ct.c_uint16),
    ]  # fmt: skip


class NextHop(ct.Structure):
    """struct nexthop: one direction's cached next hop (bpf/lib/nexthop.h). Local to this
    appliance (interface indexes, MACs): a peer installing a synced entry zeroes it."""

    _fields_ = [
        ("ifindex", ct.c_uint32), ("gen", ct.c_uint32), ("mtu", ct.c_uint16),
        ("dmac", ct.c_uint8 * 6), ("smac", ct.c_uint8 * 6), ("pad", ct.c_uint16),
    ]  # fmt: skip


class CtEntry(ct.Structure):
    """struct ct_entry: one direction of a flow (see the field comments in structs.h).

    ORIG (client -> VIP) holds the flow's state and idle time; REPLY holds its own
    counters, its copy of the state and when it last synced the ORIG entry (last_ns). TCP:
    each holds its direction's last segment (tcp_seq next, tcp_ack, tcp_win unscaled,
    tcp_seen: which of them are valid; tcp_wscale: its SYN's window scale)."""

    _fields_ = [
        ("t", NatTuple), ("created_ns", ct.c_uint64), ("last_ns", ct.c_uint64),
        ("packets", ct.c_uint64), ("bytes", ct.c_uint64), ("svc_id", ct.c_uint32),
        ("ep_id", ct.c_uint32), ("timeout_s", ct.c_uint32), ("dir", ct.c_uint8),
        ("state", ct.c_uint8), ("flags", ct.c_uint8), ("proto", ct.c_uint8),
        ("family", ct.c_uint8), ("fin_seen", ct.c_uint8), ("pad", ct.c_uint16),
        ("nh", NextHop), ("tcp_seq", ct.c_uint32), ("tcp_ack", ct.c_uint32),
        ("tcp_win", ct.c_uint16), ("tcp_seen", ct.c_uint8), ("tcp_wscale", ct.c_uint8),
    ]  # fmt: skip


# -- HA (bpf/lib/ha.h) ----------------------------------------------------------------------
HA_F_EVENTS, HA_F_PAUSED = 1, 2
CT_F_SYNCED = 0x80  # installed from a peer, not yet met by a packet here
FE_CREATED, FE_STATE, FE_GONE = 1, 2, 3
MAX_HA_VIPS = 4096
FNAT_PORT_MIN, FNAT_PORT_SPAN = 1024, 64512


class HaCfg(ct.Structure):
    """struct ha_cfg: the one slot that switches the HA hooks (flags, full-NAT ports)."""

    _fields_ = [
        ("flags", ct.c_uint32), ("port_min", ct.c_uint16), ("pad", ct.c_uint16),
        ("port_span", ct.c_uint32), ("pad2", ct.c_uint32),
    ]  # fmt: skip


class FeTcp(ct.Structure):
    """struct fe_tcp: the REPLY entry's last TCP segment, in a flow event."""

    _fields_ = [("seq", ct.c_uint32), ("ack", ct.c_uint32), ("win", ct.c_uint16),
                ("seen", ct.c_uint8), ("pad", ct.c_uint8)]  # fmt: skip


class FlowEvent(ct.Structure):
    """struct flow_event: one ring-buffer record (type, the ORIG entry, the REPLY entry's
    TCP numbers for a TCP state change, then scratch space for the REPLY key)."""

    _fields_ = [("type", ct.c_uint32), ("pad", ct.c_uint32), ("e", CtEntry),
                ("reply", FeTcp), ("rk", CtKey)]  # fmt: skip


FE_ENTRY = FlowEvent.e.offset  # an event's ORIG entry: bytes FE_ENTRY .. FE_REPLY
FE_REPLY = FlowEvent.reply.offset
FE_TCP_SIZE = ct.sizeof(FeTcp)


def sel_pages(n_slots: int) -> int:
    """sel_map entries a selection table of ``n_slots`` slots takes (bpf/lib/select.h)."""
    return -(-n_slots // SEL_PAGE)


def addr_words(address: str) -> tuple[int, tuple[int, int, int, int]]:
    """(family 4/6, the 16-byte `struct addr` as four native-order u32 of network bytes)."""
    ip = ipaddress.ip_address(address)
    packed = ip.packed + bytes(16 - len(ip.packed))
    return ip.version, struct.unpack("=4I", packed)  # type: ignore[return-value]


def words_addr(words: object, family: int) -> str:
    """Inverse of addr_words for a ctypes `c_uint * 4` (or any 4-int sequence)."""
    packed = struct.pack("=4I", *list(words))  # type: ignore[call-overload]
    if family == 4:
        return str(ipaddress.IPv4Address(packed[:4]))
    return str(ipaddress.IPv6Address(packed))


def htons(port: int) -> int:
    return socket.htons(port)


def ntohs(port: int) -> int:
    return socket.ntohs(port)
