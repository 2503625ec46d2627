// ha.h - what the HA pair needs from the datapath (issue #16), kept out of the hot path:
//   * a per-VIP pause: a backup keeps its services, endpoints and conntrack entries (the
//     flows its peer synced to it) but answers for no packet sent to a paused VIP: a new
//     flow's passes (TC_ACT_OK: the stack sees it as if no balancer were there); a known
//     flow's is dropped (during a takeover the VIP is on the interface a moment before the
//     pause is lifted, and the stack would reset the connection: TCP retransmits instead).
//     Known flows are only checked when they carry CT_F_SYNCED (a peer's, or this node's
//     own marked so by the control plane when it paused their VIP), so the established
//     path of a master pays one bit test. Replies (endpoint -> client or SNAT address) are
//     checked the same way, by the VIP their entry holds: a backup that gets one (the
//     endpoint's neighbour entry still pointing at it) neither forwards it nor makes the
//     flow its own, which would start it sending the flow back to the master;
//   * flow events: created / state changed / gone, with the conntrack entry's whole
//     translation, into a ring buffer the daemon reads (and streams to its peers);
//   * this node's own source-port range for full-NAT, so translations synced between
//     nodes never collide.
// All three are switched by one array slot (ha_cfg), which every packet already finds in
// the cache: with HA off nothing here costs more than that load and a branch.
#pragma once

#define HA_F_EVENTS   1              // emit flow events (a sync channel reads them)
#define HA_F_PAUSED   2              // some VIP is paused: look it up in ha_pause_map

// Flow event types (struct flow_event.type)
#define FE_CREATED    1
#define FE_STATE      2              // the ORIG entry's state changed
#define FE_GONE       3              // deleted by the datapath (expired, or a reused tuple)

// ct_entry.flags: installed from a peer's sync, not yet met by a packet here (a node never
// sends such entries back; the first packet makes the flow this node's own).
#define CT_F_SYNCED   0x80

// One pinned ring (below) for every compile that includes this header (lb.c's modules,
// xdp.c): the first to load creates it at this size, the others open it.
#define FE_RING_PAGES 2048           // 8 MiB: ~50,000 events between two reads
#define MAX_HA_VIPS   4096           // paused VIPs

struct ha_cfg {
    __u32 flags;                     // HA_F_*
    __u16 port_min;                  // full-NAT source ports: port_min .. port_min+span-1
    __u16 pad;
    __u32 port_span;                 // 0: the whole FNAT_PORT_MIN.. range (consts.h)
    __u32 pad2;
};

// The REPLY direction's last TCP segment (struct ct_entry's tcp_* fields of that entry).
struct fe_tcp {
    __u32 seq;
    __u32 ack;
    __u16 win;
    __u8 seen;                       // 0: not known (no REPLY entry looked up, or none yet)
    __u8 pad;
};

// One event: the ORIG entry as it is now (its translation, ids, state, timeout), and for a
// TCP flow's state change the REPLY entry's TCP numbers, so a peer's copy of a young flow
// checks RSTs both ways at once, not only after the next refresh walk pairs the entries.
struct flow_event {
    __u32 type;                      // FE_*
    __u32 pad;
    struct ct_entry e;
    struct fe_tcp reply;
    struct ct_key rk;                // scratch: the REPLY entry's key (the stack is full)
};

BPF_TABLE_PINNED("array", __u32, struct ha_cfg, ha_cfg_map, 1, PIN("hacfg"));
// Keyed by the address alone (IPv4 in word 0), so the packet's own destination is the key
// (no copy on the stack, which is full): an IPv6 VIP whose last 12 bytes are zero would
// share its key with an IPv4 one (the control plane refuses to pause such a pair).
BPF_TABLE_PINNED("hash", struct addr, __u8, ha_pause_map, MAX_HA_VIPS, PIN("hapause"));
// Events lost because the ring was full (the reader catches up through its refresh walk).
BPF_TABLE_PINNED("percpu_array", __u32, __u64, fe_drops, 1, PIN("fedrop"));
// Pinned (lib/maps.h): every module's programs, and a previous daemon's still in jmp_map,
// write into the one ring the daemon reads.
BPF_RINGBUF_PINNED(flow_events, FE_RING_PAGES, PIN("fev"));

static __always_inline struct ha_cfg *ha_cfg(void)
{
    __u32 zero = 0;
    return ha_cfg_map.lookup(&zero);
}

// 1 if packets to `vip` are not ours now (a backup's VIP).
static __always_inline int ha_paused(struct addr *vip)
{
    struct ha_cfg *c = ha_cfg();
    if (!c || !(c->flags & HA_F_PAUSED))
        return 0;
    return ha_pause_map.lookup(vip) != 0;
}

static __always_inline void flow_event(struct ct_entry *e, __u32 type)
{
    struct ha_cfg *c = ha_cfg();
    if (!c || !(c->flags & HA_F_EVENTS))
        return;
    struct flow_event *ev = flow_events.ringbuf_reserve(sizeof(struct flow_event));
    if (!ev) {
        __u32 zero = 0;
        __u64 *d = fe_drops.lookup(&zero);
        if (d)
            *d += 1;
        return;
    }
    ev->type = type;
    ev->pad = 0;
    __builtin_memcpy(&ev->e, e, sizeof(struct ct_entry));
    ev->reply.seen = 0;
    // A state change is where a TCP flow's REPLY entry is worth a lookup (once per change,
    // never per packet): during the handshake it is in syn_map (lib/tcpstate.h).
    if (type == FE_STATE && e->proto == IPPROTO_TCP && !(e->flags & CT_F_DSR)) {
        ct_reply_key(&e->t, e->proto, ct_reply_family(e), &ev->rk);
        struct ct_entry *r = ct_get(&ev->rk);
        if (!r)
            r = syn_get(&ev->rk);
        if (r) {
            ev->reply.seq = r->tcp_seq;
            ev->reply.ack = r->tcp_ack;
            ev->reply.win = r->tcp_win;
            ev->reply.seen = r->tcp_seen;
        }
    }
    flow_events.ringbuf_submit(ev, 0);
}

// A known flow's packet (either direction): 1 if it must wait, being a peer's flow whose
// VIP is paused here (a backup). Otherwise a synced entry is this node's own from now on:
// a REPLY entry loses its SYNCED bit here (the ORIG entry's goes in ha_track), so the
// flow's later packets no longer look at the pause. The key is the entry's own VIP (a map
// value may be a lookup key: nothing is copied to the stack).
static __always_inline int ha_hold(struct ct_entry *e)
{
    if (!(e->flags & CT_F_SYNCED))
        return 0;
    if (ha_paused(&e->t.vip))
        return 1;
    if (e->dir == CT_DIR_REPLY)
        e->flags &= ~CT_F_SYNCED;
    return 0;
}

// After ct_track on the ORIG entry `o` and tcp_note on the packet's own entry (one call
// site in lb.c): a synced flow is this node's from its first packet here; emit FE_STATE if
// its state moved from `before` (with this segment's numbers in its direction's entry).
static __always_inline void ha_track(struct ct_entry *o, __u8 before)
{
    if (o->flags & CT_F_SYNCED)
        o->flags &= ~CT_F_SYNCED;
    if (o->state != before)
        flow_event(o, FE_STATE);
}

// Full-NAT source port number `x` of this node's range (new flows only). The range is read
// again for each candidate (an array slot: a pointer computation), so nothing more stays
// live across claim_reply's loop: keeping it pushed the program past its 512-byte stack.
static __always_inline __be16 ha_snat_port(__u32 x)
{
    struct ha_cfg *c = ha_cfg();
    if (c && c->port_span)
        return bpf_htons(c->port_min + x % c->port_span);
    return bpf_htons(FNAT_PORT_MIN + x % FNAT_PORT_SPAN);
}
