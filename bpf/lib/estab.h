// estab.h - the established TCP packet's short way through lb.c (issue #18's cost): a plain
// ACK (no SYN, FIN or RST) of an established flow whose entry needs none of the rarer cases
// (HA-synced, firewall pass, NAT64/L3-DSR tail call) and has seen both TCP numbers. For
// such a packet the full path in lb.c does exactly this: the ORIG entry's idle time (a
// REPLY entry seen alive within CT_SYNC_NS needs none), no state change (so no RST check,
// no promotion, no HA event), lib/tcpstate.h tcp_note_ack, the counters; then the NAT and
// the send, shared with the full path. Anything else, an expired flow or a TTL about to
// run out included, goes the full way, which decides.
// The table does not matter: an ORIG entry still in syn_map has not seen the client's
// ACK (that ACK moves it to ct_map, tcp_promote, before tcp_note), and a REPLY entry there
// is done by the full path exactly as here.
#pragma once

_Static_assert(offsetof(struct ct_entry, state) == offsetof(struct ct_entry, dir) + 1 &&
               offsetof(struct ct_entry, flags) == offsetof(struct ct_entry, dir) + 2 &&
               offsetof(struct ct_entry, dir) % 4 == 0, "est_plain reads dir, state, flags");
// In that word (little-endian): the state established, none of the flags that need the
// full path (HA-synced, firewall pass, NAT64 / L3-DSR).
#define EST_W_MASK  ((0xffu << 8) | ((__u32)(CT_F_SYNCED | CT_F_PASS | CT_F_TAIL) << 16))
#define EST_W_WANT  ((__u32)CT_EST << 8)

// 1 when the packet is such a plain ACK of entry `e` and has been noted and counted; 0:
// nothing was changed that the full path would not change alike.
static __always_inline int est_plain(struct ct_entry *e, struct pkt *p, __u64 now)
{
    // dir, state, flags and proto are adjacent bytes (structs.h): one load tests the state
    // and the rare flags, and gives the direction.
    __u32 w = *(__u32 *)&e->dir;
    // tcp_flags is 0 for any other protocol (parse.h): one test says TCP and ACK-only.
    if ((p->tcp_flags & (TCP_RST | TCP_SYN | TCP_FIN | TCP_ACK)) != TCP_ACK ||
        (w & EST_W_MASK) != EST_W_WANT ||
        (e->tcp_seen & (TCP_SEEN_SEQ | TCP_SEEN_ACK)) != (TCP_SEEN_SEQ | TCP_SEEN_ACK) ||
        p->ttl <= 1)
        return 0;
    if ((w & 0xff) == CT_DIR_ORIG) {
        // ct_expired for the state established (a clock behind last_ns wraps: the full
        // path, which tells them apart, decides).
        if (now - e->last_ns > (__u64)e->timeout_s * NSEC)
            return 0;                          // the full path drops it: the sweep resets
        if (e->last_ns != now)
            e->last_ns = now;                  // the coarse clock moves once a tick
    } else if (now - e->last_ns >= CT_SYNC_NS) {
        return 0;                              // the ORIG entry's idle time: the full path
    }
    tcp_note_ack(e, p);
    e->packets++;
    e->bytes += p->len;
    count(p, e->svc_id, e->ep_id, 0);
    return 1;
}
