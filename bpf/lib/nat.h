// nat.h - apply a conntrack entry's translation to the packet in hand.
#pragma once

static __always_inline __u32 src_addr_off(struct pkt *p)
{
    return p->l3_off + (p->k.family == 4 ? offsetof(struct iphdr, saddr)
                                         : offsetof(struct ipv6hdr, saddr));
}

static __always_inline __u32 dst_addr_off(struct pkt *p)
{
    return p->l3_off + (p->k.family == 4 ? offsetof(struct iphdr, daddr)
                                         : offsetof(struct ipv6hdr, daddr));
}

// Rewrite to (src:sport -> dst:dport). ICMP echo: the identifier is the "source port"
// in the client-facing direction and travels unchanged in the header's one id field.
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                                       __be16 sport, struct addr *dst, __be16 dport)
{
    if (set_addr(skb, p, src_addr_off(p), &p->k.src, src) ||
        set_addr(skb, p, dst_addr_off(p), &p->k.dst, dst))
        return -1;
    if (p->k.proto == IPPROTO_ICMP || p->k.proto == IPPROTO_ICMPV6)
        return set_port(skb, p, p->l4_off + 4, p->k.sport, sport);
    if (set_port(skb, p, p->l4_off, p->k.sport, sport))
        return -1;
    return set_port(skb, p, p->l4_off + 2, p->k.dport, dport);
}

// Client -> VIP becomes snat -> endpoint.
static __always_inline int nat_orig(struct __sk_buff *skb, struct pkt *p, struct nat_tuple *t)
{
    return nat_rewrite(skb, p, &t->snat, t->snat_port, &t->ep, t->ep_port);
}

// Endpoint -> snat becomes VIP -> client. ICMP: the reply's "source port" is the id.
static __always_inline int nat_reply(struct __sk_buff *skb, struct pkt *p, struct nat_tuple *t)
{
    return nat_rewrite(skb, p, &t->vip, p->k.proto == IPPROTO_TCP || p->k.proto == IPPROTO_UDP
                                            ? t->vip_port : t->client_port,
                       &t->client, t->client_port);
}
