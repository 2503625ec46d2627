// conntrack.h - session table: two entries per flow (client->VIP "orig" and the
// translated reply direction), each holding the whole translation. State and idle time
// live in the orig entry; the reply entry finds it through the tuple.
#pragma once

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

static __always_inline void ct_orig_key(struct nat_tuple *t, __u8 proto, __u8 family,
                                        struct ct_key *k)
{
    k->src = t->client;
    k->dst = t->vip;
    k->sport = t->client_port;
    k->dport = l4_has_ports(proto) ? t->vip_port : 0;
    k->proto = proto;
    k->family = family;
    k->pad = 0;
    k->vtag = 0;
}

// The ORIG key of entry e's flow (either entry): SCTP's carries the verification tag its
// client's packets carry, the endpoint's, which both entries keep in tcp_seq (lib/sctp_tags.h).
static __always_inline void ct_orig_key_of(struct ct_entry *e, struct ct_key *k)
{
    ct_orig_key(&e->t, e->proto, e->family, k);
    if (e->proto == IPPROTO_SCTP)
        k->vtag = e->tcp_seq;
}

static __always_inline void ct_reply_key(struct nat_tuple *t, __u8 proto, __u8 family,
                                         struct ct_key *k)
{
    k->src = t->ep;
    k->dst = t->snat;
    // ICMP echo through NAT64/46: the endpoint answers in its own family's ICMP.
    if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
        proto = family == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
    k->proto = proto;
    k->family = family;
    k->pad = 0;
    k->vtag = 0;                // SCTP replies: told apart by the translation (lb.c)
    if (l4_has_ports(proto)) {
        k->sport = t->ep_port;
        k->dport = t->snat_port;
    } else {                    // ICMP echo reply: identifier as sport
        k->sport = t->snat_port;
        k->dport = 0;
    }
}

static __always_inline __u64 ct_timeout_ns(struct ct_entry *o)
{
    __u32 s = o->timeout_s;
    if (o->state == CT_EST)                    // the common case first
        return (__u64)s * NSEC;
    if (o->state == CT_CLOSED)
        s = TO_TCP_CLOSED;
    else if (o->state == CT_FIN)
        s = TO_TCP_FIN;
    else if (o->state == CT_NEW)
        s = o->proto == IPPROTO_TCP ? TO_TCP_SYN : (s < TO_UNREPLIED ? s : TO_UNREPLIED);
    return (__u64)s * NSEC;
}

static __always_inline int ct_expired(struct ct_entry *o, __u64 now)
{
    return now > o->last_ns && now - o->last_ns > ct_timeout_ns(o);
}

// The active-session gauges. svc_active (an array) follows every flow as it starts and
// ends. ep_active is what least-connections chooses by, so only its flows
// (CT_F_LC) move it here; the conntrack sweep recounts every gauge from the table each pass
// (appliance/datapath/conntrack.py gc), which is what keeps the other endpoints' gauges:
// a new flow of any other algorithm saves the lookup and the atomic on a line all CPUs share.
static __always_inline void ct_count(struct ct_entry *o)
{
    __u32 sid = o->svc_id, eid = o->ep_id;
    __s64 *a = svc_active.lookup(&sid);
    if (a)
        __sync_fetch_and_add(a, 1);
    if (!(o->flags & CT_F_LC))
        return;
    a = ep_active.lookup(&eid);
    if (a)
        __sync_fetch_and_add(a, 1);
}

// Leave the active-session gauges (once per flow).
static __always_inline void ct_uncount(struct ct_entry *o)
{
    if (!(o->flags & CT_F_COUNTED))
        return;
    o->flags &= ~CT_F_COUNTED;
    __u32 sid = o->svc_id, eid = o->ep_id;
    __s64 *a = svc_active.lookup(&sid);
    if (a)
        __sync_fetch_and_add(a, -1);
    if (!(o->flags & CT_F_LC))
        return;
    a = ep_active.lookup(&eid);
    if (a)
        __sync_fetch_and_add(a, -1);
}

// The family of the REPLY entry's key: the endpoint's (NAT64/46: the other one).
static __always_inline __u8 ct_reply_family(struct ct_entry *e)
{
    return e->flags & CT_F_XLAT ? 10 - e->family : e->family;
}

static __always_inline void ct_delete_flow(struct ct_entry *o)
{
    struct ct_key k = {};
    ct_uncount(o);
    if (!(o->flags & CT_F_DSR)) {              // DSR flows have no reply entry
        ct_reply_key(&o->t, o->proto, ct_reply_family(o), &k);
        ct_del(&k);
        if (o->proto == IPPROTO_TCP)
            syn_del(&k);                // lib/tcpstate.h: still in its handshake
    }
    ct_orig_key_of(o, &k);
    ct_del(&k);
    if (o->proto == IPPROTO_TCP)
        syn_del(&k);
}

// Track the flow's state from a packet travelling in direction `dir`.
static __always_inline void ct_track(struct ct_entry *o, struct pkt *p, __u8 dir, __u64 now)
{
    if (o->last_ns != now)
        o->last_ns = now;                      // the coarse clock moves once a tick
    if (o->proto != IPPROTO_TCP) {
        if ((dir == CT_DIR_REPLY || (o->flags & CT_F_DSR)) && o->state == CT_NEW)
            o->state = CT_EST;
        return;
    }
    __u8 fl = p->tcp_flags;
    if (fl & TCP_RST) {
        o->state = CT_CLOSED;
        ct_uncount(o);
        return;
    }
    if (fl & TCP_FIN) {
        o->fin_seen |= dir == CT_DIR_ORIG ? 1 : 2;
        if (o->state != CT_CLOSED)
            o->state = CT_FIN;
        if (o->fin_seen == 3)
            ct_uncount(o);
        return;
    }
    if (dir == CT_DIR_REPLY && o->state == CT_NEW)
        o->state = CT_EST;
    // DSR: replies bypass us; the client's first ACK is all we see of the handshake.
    if ((o->flags & CT_F_DSR) && o->state == CT_NEW && (fl & (TCP_SYN | TCP_ACK)) == TCP_ACK)
        o->state = CT_EST;
}
