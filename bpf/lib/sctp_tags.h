// sctp_tags.h - SCTP verification tags (RFC 9260 8.5) in the conntrack: keys and checks.
//
// Every packet of an association carries the tag its receiver chose in its INIT or INIT
// ACK. The ORIG key (client -> VIP) holds the tag the client's packets carry, the
// endpoint's (struct ct_key vtag): two associations from one client address and port
// (clients behind an SCTP-aware NAT) are two flows, each balanced on its own. The tag is
// not known before the endpoint's INIT ACK: the INIT (tag 0) keys its flow with 0, and
// the INIT ACK moves the ORIG entry to the endpoint's tag (sctp_rekey; DSR, which sees no
// INIT ACK: the tag of the client's next packet).
//
// REPLY keys hold no tag: the translation keeps replies apart (full-NAT claims a source
// port per flow; DNAT and one-arm refuse a second flow on one endpoint tuple, which the
// endpoint could not tell apart either; a new INIT there is, to the endpoint, the restart
// of the association it has with that peer: lib/tcpstate.h ct_reply_reclaim). So SCTP's
// program looks a packet up with its own tag and, on a miss, with 0 (sctp_find): replies,
// a handshake's packets and firewall pass flows are found by the second lookup.
//
// Both entries of a flow keep both tags, in the TCP fields SCTP has no use for: tcp_ack
// the client's (its INIT's Initiate Tag), tcp_seq the endpoint's (= the ORIG key's tag:
// conntrack.h ct_orig_key_of). A reply with another tag than the client's is not the
// association's and is dropped (sctp_tag_ok), so nothing blind reaches a client through
// the balancer either. INIT and INIT ACK are the endpoints' to judge (their tags are the
// ones being set up); ABORT and SHUTDOWN COMPLETE may carry the sender's own tag (T bit):
// from the endpoint they find the flow (no tag in the REPLY key); from the client its own
// tag is looked up in sctp_tag_map (ORIG tuple + client's tag -> endpoint's tag, written
// when the ORIG entry moves to its tag; LRU), as are ICMP errors quoting a packet we sent
// to the client (lib/icmp_err.h). 0 is no tag (an Initiate Tag is never 0).
#pragma once

#define SCTP_TAG_INDEX     1                   // struct ct_key pad of sctp_tag_map's keys

// k (an ORIG tuple carrying the client's own tag `ctag`) -> the ORIG key, with the
// endpoint's tag; 0 if not known.
static __always_inline int sctp_tag_index(struct ct_key *k, __u32 ctag)
{
    k->vtag = ctag;
    k->pad = SCTP_TAG_INDEX;
    __u32 *etag = sctp_tag_map.lookup(k);
    k->pad = 0;
    if (!etag)
        return 0;
    k->vtag = *etag;
    return 1;
}

#define SCTP_VTAG_OFF      4                   // in the common header
#define SCTP_INIT_TAG_OFF  16                  // INIT / INIT ACK: the Initiate Tag

static __always_inline __u32 sctp_tag_at(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
    __u32 tag = 0;
    bpf_skb_load_bytes(skb, p->l4_off + off, &tag, 4);
    return tag;
}

// The packet's flow entry: under its own tag (an ORIG entry), else under none (a REPLY
// entry, a handshake's ORIG entry, a firewall pass flow). Leaves p->k as last looked up.
// An ABORT / SHUTDOWN COMPLETE that finds neither may carry its sender's own tag (T bit):
// a client's is looked up in sctp_tag_map.
static __always_inline struct ct_entry *sctp_find(struct pkt *p, int *syn)
{
    struct ct_entry *e = ct_find(&p->k, syn);
    __u32 tag = p->k.vtag;
    if (e || !tag)
        return e;
    p->k.vtag = 0;
    e = ct_find(&p->k, syn);
    if (e || (p->sctp_chunk != SCTP_ABORT && p->sctp_chunk != SCTP_SHUTDOWN_COMPLETE))
        return e;
    struct ct_key k = p->k;
    if (!sctp_tag_index(&k, tag))
        return 0;
    e = ct_find(&k, syn);
    if (e)
        p->k = k;
    return e;
}

// Move the ORIG entry `o` to the key with the endpoint's tag `tag` (its tcp_seq). Returns
// the entry under its new key.
static __always_inline struct ct_entry *sctp_rekey(struct ct_entry *o, __u32 tag)
{
    struct ct_key k = {};
    ct_orig_key_of(o, &k);
    if (k.vtag == tag)
        return o;
    struct ct_key nk = k;
    nk.vtag = tag;
    o->tcp_seq = tag;
    ct_set(&nk, o);
    ct_del(&k);
    k.vtag = o->tcp_ack;                       // the client's own tag -> the endpoint's
    k.pad = SCTP_TAG_INDEX;
    if (k.vtag)
        sctp_tag_map.update(&k, &tag);
    struct ct_entry *n = ct_get(&nk);
    return n ? n : o;
}

// A new flow (lb.c new_flow): the client's tag, from its INIT.
static __always_inline void sctp_tags_init(struct __sk_buff *skb, struct pkt *p,
                                           struct ct_entry *e)
{
    e->tcp_ack = sctp_tag_at(skb, p, SCTP_INIT_TAG_OFF);
    e->tcp_seq = 0;
}

// The entry the packet may go on with (e, or e under its new key), 0 if its tag is not the
// association's. Learns on the way: a client's new INIT restarts with a new tag; DSR learns
// the endpoint's.
static __always_inline struct ct_entry *sctp_tag_ok(struct __sk_buff *skb, struct pkt *p,
                                                    struct ct_entry *e)
{
    __u8 c = p->sctp_chunk;
    int orig = e->dir == CT_DIR_ORIG;
    if (p->frag == FRAG_LATER)
        return e;                              // its first fragment's tag (lib/frag.h)
    if (c == SCTP_INIT) {
        if (orig)
            e->tcp_ack = sctp_tag_at(skb, p, SCTP_INIT_TAG_OFF);
        return e;
    }
    if (c == SCTP_INIT_ACK)
        return e;
    __u32 tag = sctp_tag_at(skb, p, SCTP_VTAG_OFF);
    __u32 want = orig ? e->tcp_seq : e->tcp_ack;
    if (!want) {
        if (orig && (e->flags & CT_F_DSR) && tag)
            return sctp_rekey(e, tag);
        return e;
    }
    if (tag == want)
        return e;
    if ((c == SCTP_ABORT || c == SCTP_SHUTDOWN_COMPLETE) &&
        tag == (orig ? e->tcp_ack : e->tcp_seq))
        return e;
    return 0;
}

// A reply on lb.c's slow path (o: the flow's ORIG entry, e: its REPLY entry). An INIT ACK
// brings the endpoint's tag (the ORIG entry moves to it) and the client's as the ORIG
// entry last learned it. The ORIG key's tag goes along in skb->cb: multihoming finds the
// flow by it after NAT (lib/sctp_mh.h mh_flow; the INIT ACK, the COOKIE ACK).
static __always_inline void sctp_tags_ack(struct __sk_buff *skb, struct pkt *p,
                                          struct ct_entry *o, struct ct_entry *e)
{
    if (p->sctp_chunk == SCTP_INIT_ACK) {
        __u32 tag = sctp_tag_at(skb, p, SCTP_INIT_TAG_OFF);
        o = sctp_rekey(o, tag);
        e->tcp_seq = tag;
        e->tcp_ack = o->tcp_ack;
    }
    skb->cb[SCTP_CB_OTAG] = e->tcp_seq;
}
