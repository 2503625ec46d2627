// estab.h - the established TCP packet's short way through lb.c (issue #18's cost): a plain
// ACK (no SYN, FIN or RST) of an established flow in ct_map, whose entry needs none of the
// rarer cases (HA-synced, firewall pass, NAT64/L3-DSR tail call), and which has seen both
// TCP numbers. For such a packet the full path in lb.c does exactly this: the idle time
// of the ORIG entry (a REPLY entry seen alive within CT_SYNC_NS needs none), no state
// change (so no RST check, no promotion, no HA event), lib/tcpstate.h tcp_note_ack, and
// the counters; then the NAT and the send, shared with the full path. Anything else, an
// expired flow or a TTL about to run out included, goes the full way, which decides.
#pragma once

// 1 when the packet is such a plain ACK and has been noted (entry `e`, found in ct_map
// when !syn); 0: nothing was changed that the full path would not change alike.
static __always_inline int est_plain(struct ct_entry *e, struct pkt *p, int syn, __u64 now)
{
    // tcp_flags is 0 for any other protocol (parse.h): one test says TCP and ACK-only.
    if ((p->tcp_flags & (TCP_RST | TCP_SYN | TCP_FIN | TCP_ACK)) != TCP_ACK || syn ||
        (e->flags & (CT_F_SYNCED | CT_F_PASS | CT_F_TAIL)) || e->state != CT_EST ||
        (e->tcp_seen & (TCP_SEEN_SEQ | TCP_SEEN_ACK)) != (TCP_SEEN_SEQ | TCP_SEEN_ACK) ||
        p->ttl <= 1)
        return 0;
    if (e->dir == CT_DIR_ORIG) {
        if (ct_expired(e, now))
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
