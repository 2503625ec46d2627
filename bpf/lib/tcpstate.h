// tcpstate.h - stricter TCP: the handshake's own table, sequence numbers, RSTs in window.
//
// - A TCP flow starts only with a SYN (a service with SVC_F_MIDSTREAM also takes any other
//   segment, for asymmetric paths). Its two entries go into syn_map, a smaller LRU table of
//   their own, and move to ct_map when the client's ACK completes the handshake (for DSR,
//   whose replies bypass us: the client's first ACK). A SYN flood recycles syn_map and
//   never evicts an established flow from ct_map.
// - Each entry records its direction's last segment: the next sequence number, the
//   acknowledgement, the window, and its SYN's window scale (RFC 7323, the options walked
//   for SYN segments only). An RST closes the flow only if its sequence number lies in
//   the receiver's window: from what the receiver acknowledged, up to its advertised
//   window (scaled when both SYNs carried the option, as the ends themselves do) or to
//   what the sender has sent, whichever is further. A sender's own RST carries its next
//   sequence number, always inside; a blind one must hit the window. Others are dropped.
//   An RST answering the SYN must acknowledge it. The daemon's idle reset sends its RSTs
//   with these numbers (appliance/datapath/tcpreset.py).
#pragma once

#include "nf_stages.h"                     // ct_claim marks a stage (empty outside the bench)

// The table a flow's entries are in: ct_map, or syn_map while its handshake runs. `fam`:
// as in ct_tables.h ct_get_f.
static __always_inline struct ct_entry *ct_lookup_in_f(struct ct_key *k, int syn,
                                                       const int fam)
{
    return syn ? syn_get_f(k, fam) : ct_get_f(k, fam);
}

static __always_inline struct ct_entry *ct_lookup_in(struct ct_key *k, int syn)
{
    return ct_lookup_in_f(k, syn, 0);
}

// Either table; *syn says which one held it.
static __always_inline struct ct_entry *ct_find_f(struct ct_key *k, int *syn, const int fam)
{
    struct ct_entry *e = ct_get_f(k, fam);
    *syn = 0;
    if (e || k->proto != IPPROTO_TCP)
        return e;
    e = syn_get_f(k, fam);
    *syn = e != 0;
    return e;
}

static __always_inline struct ct_entry *ct_find(struct ct_key *k, int *syn)
{
    return ct_find_f(k, syn, 0);
}

// Insert a new flow's entry under `k` into its table (BPF_NOEXIST: -1 if taken there).
static __always_inline int ct_insert(struct ct_key *k, struct ct_entry *e, int syn)
{
    return syn ? syn_put(k, e) : ct_put(k, e);
}

// Insert a new flow's entry under `k` into its table, if `k` is free in both.
static __always_inline int ct_claim(struct ct_key *k, struct ct_entry *e, int syn)
{
    if (k->proto == IPPROTO_TCP && (syn ? ct_get(k) : syn_get(k)))
        return -1;
    NF_STAGE(NF_ST_CHECK);
    return ct_insert(k, e, syn);
}

// Delete the REPLY entry a flow being created claimed (it lost the race for its ORIG key).
static __always_inline void ct_drop_reply(struct ct_entry *e, int syn)
{
    struct ct_key k = {};
    ct_reply_key(&e->t, e->proto, ct_reply_family(e), &k);
    if (syn)
        syn_del(&k);
    else
        ct_del(&k);
}

static __always_inline int ct_same_tuple(struct nat_tuple *a, struct nat_tuple *b)
{
    __u32 *x = (__u32 *)a, *y = (__u32 *)b;
    __u32 diff = 0;
#pragma unroll
    for (int i = 0; i < sizeof(*a) / 4; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}

// A REPLY entry holds the reply key `rk` a new flow wants. Free it (1) if it is stale: its
// flow has expired or closed, or it is an orphan (its ORIG entry gone or translating
// another way) older than a creation race could be (the ORIG entry follows its REPLY entry
// within one packet); 0 if a live flow holds it.
// SCTP (`want`: the new flow's translation): a new INIT from the same client address and
// port to the same VIP and endpoint is, for the endpoint, a restart of the association it
// has with that peer (RFC 9260 5.2.2): the old flow gives way (its key had its own tag).
static __always_inline int ct_reply_reclaim(struct ct_key *rk, __u64 now,
                                            struct nat_tuple *want)
{
    int syn;
    struct ct_entry *x = ct_find(rk, &syn);
    if (!x)
        return 1;                              // gone meanwhile
    if (x->dir != CT_DIR_REPLY)
        return 0;
    struct ct_key ok = {};
    ct_orig_key_of(x, &ok);
    struct ct_entry *o = ct_lookup_in(&ok, syn);
    if (o && o->dir == CT_DIR_ORIG && ct_same_tuple(&o->t, &x->t)) {
        if (!ct_expired(o, now) && o->state != CT_CLOSED &&
            !(o->proto == IPPROTO_SCTP && ct_same_tuple(&o->t, want)))
            return 0;                          // a live flow: it keeps its tuple
        ct_uncount(o);                         // its flow is over: both entries go
        if (syn)
            syn_del(&ok);
        else
            ct_del(&ok);
    } else if (now < x->created_ns + NSEC) {
        return 0;                              // its ORIG entry may be on its way
    }
    if (syn)
        syn_del(rk);
    else
        ct_del(rk);
    return 1;
}

#define TCP_OPT_STEPS 10                       // options a SYN's walk looks at

// The window scale option of a SYN (RFC 7323 2.2): its shift (at most 14) | TCP_WS_SEEN,
// or 0 without one.
static __always_inline __u8 tcp_syn_wscale(struct __sk_buff *skb, struct pkt *p)
{
    __u8 doff = 0;
    if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1))
        return 0;
    __u32 olen = (doff >> 4) * 4;
    if (olen <= sizeof(struct tcphdr) || olen > sizeof(struct tcphdr) + 40)
        return 0;
    olen -= sizeof(struct tcphdr);
    __u8 opt[40] = {};
    if (bpf_skb_load_bytes(skb, p->l4_off + sizeof(struct tcphdr), opt, olen))
        return 0;
    __u32 i = 0;
#pragma unroll
    for (int n = 0; n < TCP_OPT_STEPS; n++) {
        if (i + 2 >= olen || i > 37)
            break;
        __u8 kind = opt[i];
        if (kind == 0)
            break;                             // end of options
        if (kind == 1) {
            i++;                               // no-operation
            continue;
        }
        __u8 len = opt[i + 1];
        if (kind == 3 && len == 3)
            return (opt[i + 2] > 14 ? 14 : opt[i + 2]) | TCP_WS_SEEN;
        if (len < 2)
            break;                             // malformed
        i += len;
    }
    return 0;
}

// Sequence numbers compared (RFC 1982): the sign of (__s32)(a - b), kept in the top half of
// a 64-bit word (the barrier stops clang from shifting it back down: one instruction fewer).
static __always_inline __s64 tcp_cmp(__u32 a, __u32 b)
{
    __u64 x = (__u64)(a - b) << 32;
    asm volatile("" : "+r"(x));
    return (__s64)x;
}

// An ACK without SYN or RST of a flow whose entry `e` has seen both numbers: its next
// sequence number and its acknowledgement (with the window) replace the entry's when
// they are later. Written only when they change: most segments of the direction that
// mostly sends leave the entry alone.
static __always_inline void tcp_note_ack(struct ct_entry *e, struct pkt *p)
{
    if (tcp_cmp(p->tcp_next, e->tcp_seq) > 0)
        e->tcp_seq = p->tcp_next;
    __s64 d = tcp_cmp(p->tcp_ack, e->tcp_ack);
    if (d > 0 || (d == 0 && e->tcp_win != p->tcp_win)) {
        e->tcp_ack = p->tcp_ack;
        e->tcp_win = p->tcp_win;
    }
}

// Record this direction's segment in its own entry `e`. An established flow's segments
// (ACK, no SYN or RST) take the short way: one flags test, then tcp_note_ack.
static __always_inline void tcp_note(struct __sk_buff *skb, struct ct_entry *e, struct pkt *p)
{
    __u8 fl = p->tcp_flags;
    __u16 win = p->tcp_win;
    __u8 seen = e->tcp_seen;
    // A later fragment has no TCP header: its flags are 0 (parse.h), so it is never here.
    if ((fl & (TCP_RST | TCP_SYN | TCP_ACK)) == TCP_ACK &&
        (seen & (TCP_SEEN_SEQ | TCP_SEEN_ACK)) == (TCP_SEEN_SEQ | TCP_SEEN_ACK)) {
        tcp_note_ack(e, p);
        return;
    }
    if ((fl & TCP_RST) || p->frag == FRAG_LATER)
        return;                                // a later fragment has no TCP header
    if (skb && (fl & TCP_SYN)) {               // skb 0: XDP (lib/xdp_fast.h), never a SYN
        // A SYN's own window is never scaled: kept shifted down, as later ones will be.
        __u8 ws = tcp_syn_wscale(skb, p);
        e->tcp_wscale = ws;
        win >>= ws & 0xf;
    }
    // Later segments only: a retransmission does not take the numbers back.
    if (!(seen & TCP_SEEN_SEQ) || (__s32)(p->tcp_next - e->tcp_seq) > 0) {
        e->tcp_seq = p->tcp_next;
        e->tcp_seen |= TCP_SEEN_SEQ;
    }
    // Written only when they change (a newer acknowledgement, or a window update for the
    // same one): most segments of the direction that mostly sends leave the entry alone.
    if (!(fl & TCP_ACK))
        return;
    if (!(e->tcp_seen & TCP_SEEN_ACK)) {
        e->tcp_seen |= TCP_SEEN_ACK;
    } else {
        __s32 d = (__s32)(p->tcp_ack - e->tcp_ack);
        if (d < 0 || (d == 0 && e->tcp_win == win))
            return;
    }
    e->tcp_ack = p->tcp_ack;
    e->tcp_win = win;
}

// May this RST, sent by the side whose entry is `self`, close the flow? `peer`: the other
// direction's entry (0: none, as in DSR).
static __always_inline int tcp_rst_ok(struct ct_entry *self, struct ct_entry *peer,
                                      struct pkt *p)
{
    if (!peer)
        return 1;                              // nothing to judge by
    if (!(peer->tcp_seen & TCP_SEEN_ACK)) {
        // The peer sent only its SYN: a refusal acknowledges exactly that SYN.
        if (!(peer->tcp_seen & TCP_SEEN_SEQ))
            return 1;
        return (p->tcp_flags & TCP_ACK) && p->tcp_ack == peer->tcp_seq;
    }
    __u32 win = peer->tcp_win;
    // Scaled only when both SYNs carried the option (RFC 7323 2.2); DSR has no peer entry.
    if ((peer->tcp_wscale & TCP_WS_SEEN) && self && (self->tcp_wscale & TCP_WS_SEEN))
        win <<= peer->tcp_wscale & 0xf;
    __u32 sent = (self && (self->tcp_seen & TCP_SEEN_SEQ)) ? self->tcp_seq - peer->tcp_ack : 0;
    if (sent < 0x80000000u && sent > win)
        win = sent;                            // what it sent that is not acknowledged yet
    return p->tcp_next - peer->tcp_ack <= win;
}

// The client's ACK completed the handshake of the flow whose ORIG entry `o` (under key
// `ok`) is in syn_map: move both entries to ct_map. Returns the ORIG entry there, 0 if
// the move failed (the flow is then dropped from both tables). `fam`: `ok`'s, as in
// ct_tables.h ct_get_f.
static __always_inline struct ct_entry *tcp_promote(struct ct_entry *o, struct ct_key *ok,
                                                    const int fam)
{
    struct ct_key rk = {};
    int dsr = o->flags & CT_F_DSR;
    int fail = 0;
    ct_reply_key(&o->t, o->proto, ct_reply_family(o), &rk);
    if (!dsr) {
        struct ct_entry *r = syn_get(&rk);
        fail = !r || ct_put(&rk, r);
    }
    if (!fail && ct_put(ok, o)) {
        fail = 1;
        if (!dsr)
            ct_del(&rk);
    }
    if (fail)
        ct_uncount(o);
    if (!dsr)
        syn_del(&rk);
    syn_del(ok);
    return fail ? 0 : ct_get_f(ok, fam);
}
