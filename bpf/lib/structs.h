// structs.h - map keys and values. Addresses are always 16 bytes: IPv4 in word 0,
// words 1..3 zero, so one code path serves both families.
// appliance/datapath/layout.py declares the same structs with ctypes.
#pragma once

struct addr {
    __be32 w[4];
};

// Service key: exact (vip, proto, port). Port-range services are stored under their
// first port and found through range_map.
struct svc_key {
    struct addr vip;
    __be16 port;            // network order; 0 for ICMP
    __u8 proto;
    __u8 family;            // 4 or 6
};

struct svc_info {
    __u32 id;
    __u8 mode;
    __u8 algo;
    __u8 flags;
    __u8 gen;               // which half of the selection table is live (0/1)
    __u32 n_slots;          // selection-table size of the live generation; 0: no endpoint
    __u32 timeout_s;        // inactivity timeout of established sessions
    __u32 persist_s;        // persistence timeout
    __u16 range_lo;         // host order, inclusive (ranges only)
    __u16 range_hi;
    struct addr snat;       // full-NAT source address
};

struct range_key {
    struct addr vip;
    __u8 proto;
    __u8 family;
    __u16 pad;
};

struct range_list {
    __u32 n;
    __u16 lo[MAX_RANGES];   // host order; a service key's port is htons(lo)
    __u16 hi[MAX_RANGES];
};

struct ep_info {
    struct addr addr;
    __be16 port;            // 0: keep the client's destination port (ICMP, port ranges)
    __u8 flags;
    __u8 family;
    __u32 svc_id;
};

struct sel_key {
    __u32 svc_id;
    __u32 page;             // slot / SEL_PAGE; bit 31: generation
};

struct sel_page {
    __u32 ep[SEL_PAGE];     // endpoint ids of slots page*SEL_PAGE.. (0: none)
};

struct sel_small {
    __u32 ep[SEL_SMALL];    // endpoint ids of slots 0..SEL_SMALL-1 (0: none)
};

struct persist_key {
    __u32 svc_id;
    __u32 pad;
    struct addr client;
};

struct persist_val {
    __u32 ep_id;
    __u32 pad;
    __u64 last_ns;
};

// Allowed sources: LPM trie keyed (service id, source prefix). prefixlen counts the bits
// after itself: 32 for svc_id plus the prefix length.
struct allow_key {
    __u32 prefixlen;
    __u32 svc_id;
    struct addr a;
};

struct ifaddr_key {
    __u32 ifindex;
    __u32 family;
};

struct counters {
    __u64 packets;
    __u64 bytes;
    __u64 sessions;         // new sessions
};

struct ct_key {
    struct addr src;
    struct addr dst;
    __be16 sport;           // ICMP echo: the identifier
    __be16 dport;           // ICMP echo: 0
    __u8 proto;
    __u8 family;
    __u16 pad;
    // SCTP ORIG entries: the verification tag the client's packets carry (the endpoint's,
    // from its INIT ACK; 0 until then, and in every other key). See lib/sctp.h.
    __be32 vtag;
};

// The IPv4 conntrack key (ct4_map, syn4_map: lib/ct_tables.h), 20 bytes instead of 44:
// the kernel hashes and compares fewer bytes on every lookup (bench/ctkey.py). It is the
// tail of a struct ct_key (from dst.w[2] on) once the two addresses are copied into
// dst.w[2..3], words every IPv4 key has zero: so no key is built anywhere, the tables'
// accessors point into the caller's struct ct_key (ct4_key_in / ct4_key_out).
struct ct4_key {
    __be32 src;
    __be32 dst;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 family;            // 4
    __u16 pad;
    __be32 vtag;
};

// The whole translation, identical in both directions' entries, so a peer appliance
// can install either from the other (hitless HA later).
struct nat_tuple {
    struct addr client;
    struct addr vip;
    struct addr snat;       // == client unless full-NAT / one-arm
    struct addr ep;
    __be16 client_port;
    __be16 vip_port;
    __be16 snat_port;       // == client_port unless source NAT
    __be16 ep_port;
};

// The next hop of one direction of a flow, as the FIB last resolved it (lib/nexthop.h):
// used instead of a FIB lookup while `gen` equals the route generation (nh_gen_map, bumped
// by the daemon on route, neighbour and link changes) and the packet is no longer than
// `mtu`. ifindex 0: nothing cached.
struct nexthop {
    __u32 ifindex;          // egress interface
    __u32 gen;              // route generation the entry was resolved in
    __u16 mtu;              // largest L3 length (one segment) the FIB let through
    __u8 dmac[6];
    __u8 smac[6];
    __u16 pad;
};

// One direction of a flow. THE conntrack layout: appliance/datapath/layout.py (CtEntry)
// mirrors it field for field, and the HA sync codec follows that mirror.
struct ct_entry {
    struct nat_tuple t;
    __u64 created_ns;       // CLOCK_MONOTONIC (coarse: within a tick)
    __u64 last_ns;          // ORIG: last packet either way (authoritative); REPLY: when a
                            // reply packet last brought the ORIG entry up to date
    __u64 packets;          // this direction
    __u64 bytes;
    __u32 svc_id;
    __u32 ep_id;
    __u32 timeout_s;        // established timeout
    __u8 dir;
    __u8 state;             // authoritative in the ORIG entry; REPLY: its copy at last_ns
    __u8 flags;
    __u8 proto;
    __u8 family;
    __u8 fin_seen;          // bit 0: FIN from client, bit 1: FIN from endpoint
    __u16 pad;
    struct nexthop nh;      // where this direction's packets leave (a cache: not synced)
    // TCP, this direction's last segment (lib/tcpstate.h): what an RST must match to close
    // the flow, and the sequence numbers the idle reset sends with.
    __u32 tcp_seq;          // its sequence number + length (+1 for SYN/FIN): the next one
    __u32 tcp_ack;          // its acknowledgement number (valid with TCP_SEEN_ACK)
    __u16 tcp_win;          // its window field (SYN: already shifted down by its scale)
    __u8 tcp_seen;          // TCP_SEEN_*
    __u8 tcp_wscale;        // its SYN's window scale (RFC 7323) | TCP_WS_SEEN; 0: none
};
