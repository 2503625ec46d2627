// icmp_err.h - ICMP/ICMPv6 errors that quote a translated packet (port unreachable, packet
// too big / fragmentation needed, time exceeded) are translated too, so the sender's
// socket recognises its own flow and Path MTU discovery works through the balancer.
//
// The quoted (inner) packet travelled in one direction of a flow; its reversed tuple is
// the conntrack key of the *other* direction:
//   inner snat->ep (a packet we sent to an endpoint)  => key (ep, snat)   = REPLY entry:
//       the error goes to the client; inner becomes client->vip.
//   inner vip->client (a reply we sent to the client) => key (client, vip) = ORIG entry:
//       the error goes to the endpoint; inner becomes ep->snat.
// Inner IPv4 header checksums are fixed; with them the ICMP checksum needs no change for
// inner addresses (the inner header still sums to 0xffff). Inner L4 checksums are left as
// they are: receivers do not verify the quoted bytes.
#pragma once

static __always_inline int inner_addr(struct __sk_buff *skb, struct pkt *p, __u32 iph,
                                      __u32 off, struct addr *old, struct addr *new)
{
    if (p->k.family == 4) {
        __be32 o = old->w[0], n = new->w[0];
        if (o == n)
            return 0;
        if (bpf_l3_csum_replace(skb, iph + offsetof(struct iphdr, check), o, n, 4))
            return -1;
        return bpf_skb_store_bytes(skb, off, &n, 4, 0);
    }
    __s64 diff = bpf_csum_diff(old->w, 16, new->w, 16, 0);
    if (bpf_l4_csum_replace(skb, p->csum_off, 0, diff, 0))
        return -1;
    return bpf_skb_store_bytes(skb, off, new->w, 16, 0);
}

static __always_inline int inner_port(struct __sk_buff *skb, struct pkt *p, __u32 off,
                                      __be16 old, __be16 new)
{
    if (old == new)
        return 0;
    if (bpf_l4_csum_replace(skb, p->csum_off, old, new, 2))
        return -1;
    return bpf_skb_store_bytes(skb, off, &new, 2, 0);
}

static __always_inline int addr_eq(struct addr *a, struct addr *b)
{
    return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

// handle_icmp_error's answer for an error that quotes no flow of ours (not a TC verdict):
// the caller hands it to the stack, through the firewall while it has rules (fw_other.h).
#define ICMP_ERR_NOT_OURS 0x20000

static __always_inline int handle_icmp_error(struct __sk_buff *skb, struct pkt *p)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    __u32 iph = p->l4_off + 8;                 // the quoted IP header
    __u32 il4;
    struct addr isrc = {}, idst = {};
    __u8 iproto;
    if (p->k.family == 4) {
        struct iphdr *ih = data + iph;
        if ((void *)(ih + 1) > data_end || ih->ihl != 5)
            return ICMP_ERR_NOT_OURS;
        iproto = ih->protocol;
        isrc.w[0] = ih->saddr;
        idst.w[0] = ih->daddr;
        il4 = iph + sizeof(*ih);
    } else {
        struct ipv6hdr *ih = data + iph;
        if ((void *)(ih + 1) > data_end)
            return ICMP_ERR_NOT_OURS;
        iproto = ih->nexthdr;
        __builtin_memcpy(&isrc, &ih->saddr, 16);
        __builtin_memcpy(&idst, &ih->daddr, 16);
        il4 = iph + sizeof(*ih);
    }
    if (!l4_has_ports(iproto))                 // TCP, UDP, SCTP (lib/sctp.h)
        return ICMP_ERR_NOT_OURS;
    __be16 *ports = data + il4;
    if ((void *)(ports + 2) > data_end)
        return ICMP_ERR_NOT_OURS;
    __be16 isport = ports[0], idport = ports[1];

    struct ct_key k = {.src = idst, .dst = isrc, .sport = idport, .dport = isport,
                       .proto = iproto, .family = p->k.family};
    int syn;                                   // a handshake's flow is in syn_map
    struct ct_entry *e = ct_find(&k, &syn);
    if (!e && iproto == IPPROTO_SCTP) {
        // Quoting a packet we sent to the client: its tag is the client's own; the ORIG
        // key holds the endpoint's (lib/sctp_tags.h).
        __be32 *qtag = data + il4 + 4;
        if ((void *)(qtag + 1) <= data_end && sctp_tag_index(&k, *qtag))
            e = ct_find(&k, &syn);
    }
    if (!e)
        return ICMP_ERR_NOT_OURS;
    struct nat_tuple t = e->t;
    __u8 dir = e->dir;
    if (p->ttl <= 1)
        return TC_ACT_OK;
    if (e->flags & CT_F_XLAT)                  // NAT64/46: rebuilt in the other family
        return xlat_call(skb);

    struct addr osrc = p->k.src, odst, nisrc, nidst;
    __be16 nisport, nidport;
    if (dir == CT_DIR_REPLY) {                 // to the client, quoting client->vip
        odst = t.client;
        if (addr_eq(&osrc, &t.ep))
            osrc = t.vip;                      // the endpoint speaks as the VIP
        nisrc = t.client;
        nisport = t.client_port;
        nidst = t.vip;
        nidport = t.vip_port;
    } else {                                   // to the endpoint, quoting ep->snat
        odst = t.ep;
        if (addr_eq(&osrc, &t.client))
            osrc = t.snat;
        nisrc = t.ep;
        nisport = t.ep_port;
        nidst = t.snat;
        nidport = t.snat_port;
    }
    __u32 so = p->k.family == 4 ? offsetof(struct iphdr, saddr) : offsetof(struct ipv6hdr, saddr);
    __u32 dof = p->k.family == 4 ? offsetof(struct iphdr, daddr) : offsetof(struct ipv6hdr, daddr);
    if (inner_addr(skb, p, iph, iph + so, &isrc, &nisrc) ||
        inner_addr(skb, p, iph, iph + dof, &idst, &nidst) ||
        inner_port(skb, p, il4, isport, nisport) || inner_port(skb, p, il4 + 2, idport, nidport))
        return TC_ACT_SHOT;
    // Outer header last: set_addr fixes the IPv4 header checksum and, for ICMPv6, the
    // pseudo-header part of the ICMP checksum.
    if (set_addr(skb, p, src_addr_off(p), &p->k.src, &osrc) ||
        set_addr(skb, p, dst_addr_off(p), &p->k.dst, &odst))
        return TC_ACT_SHOT;
    return forward(skb, p, &osrc, &odst);
}
