// sctp_frag.h - fragments of SCTP datagrams (lib/frag.h), in sluice_sctp: the first
// fragment finds its flow (under its verification tag, lib/sctp_tags.h) and records its
// ports and tag; the later ones take them from the record and follow it, through the same
// entry to the same endpoint. Included by lb.c after translate_and_send.
//
// SCTP's CRC32c covers the whole datagram and, unlike a one's complement sum, a port's
// change moves it by an amount that depends on the datagram's length, which a first
// fragment does not give. So a fragmented datagram is balanced where its ports stay as
// they are (DNAT to the same port, DSR); where they change (full-NAT, one-arm, another
// endpoint port) its fragments are dropped, never sent with a wrong checksum. A fragment
// opens no association, changes no state and is not rewritten by multihoming (INIT and
// INIT ACK are small); it keeps its flow alive.
//
// Its own function, not lb_entry's path: the verifier walks lb_entry once per value
// parse.h gives p.frag, and three walks of SCTP's balancer exceed its budget.
#pragma once

static __always_inline int sctp_frag(struct __sk_buff *skb, struct pkt *p, __u64 now)
{
    if (p->frag == FRAG_LATER && frag_ports(p, now))
        return TC_ACT_OK;                      // its first fragment was not ours
    int syn;
    struct ct_entry *e = sctp_find(p, &syn);
    if (!e) {
        fw_other_hook(skb);                    // no flow's: the firewall's rules apply
        return TC_ACT_OK;
    }
    if (p->ttl <= 1)
        return TC_ACT_OK;
    if (ha_hold(e) || !(e = sctp_tag_ok(skb, p, e)))
        return TC_ACT_SHOT;
    if (e->flags & CT_F_PASS)
        return TC_ACT_OK;                      // let in by the firewall: the stack forwards
    if (e->flags & CT_F_TAIL)                  // L3-DSR: lib/l3dsr.h
        return tail_call_flow(skb, e->flags);
    struct nat_tuple *t = &e->t;
    int dsr = e->flags & CT_F_DSR;
    int orig = e->dir == CT_DIR_ORIG;
    if (!dsr && (p->k.sport != (orig ? t->snat_port : t->vip_port) ||
                 p->k.dport != (orig ? t->ep_port : t->client_port)))
        return TC_ACT_SHOT;                    // its CRC32c cannot follow
    if (orig && e->last_ns != now)
        e->last_ns = now;
    e->packets++;
    e->bytes += p->len;
    count(p, e->svc_id, e->ep_id, 0);
    __u32 gen = nh_generation();
    struct nexthop nh;
    if (nh_get(e, p, gen, l3_len(skb, p), &nh))
        return translate_and_send(skb, p, t, e->dir, dsr, &nh, 0, 0);
    struct bpf_fib_lookup f = {};
    int rc;
    if (dsr)
        rc = fib(skb, p, &p->k.src, &t->ep, &f);
    else if (orig)
        rc = fib(skb, p, &t->snat, &t->ep, &f);
    else
        rc = fib(skb, p, &t->vip, &t->client, &f);
    return translate_and_send(skb, p, t, e->dir, dsr, 0, rc, &f);
}
