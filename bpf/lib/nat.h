// nat.h - apply a conntrack entry's translation to the packet in hand.
//
// Header fields are written directly (no store-bytes helper): addresses, ports or the ICMP
// echo identifier, and, when the packet leaves through a cached next hop, the TTL / hop
// limit and the MACs too. The IPv4 header checksum is fixed here (RFC 1624); the L4
// checksum gets at most two bpf_l4_csum_replace calls, one for the pseudo-header (all
// address changes at once) and one for the ports, because only the kernel knows whether
// the skb's checksum is partial (then only the pseudo-header part may change) or complete.
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

// bpf_l4_csum_replace as the kernel defines it, returning a long: bcc declares an int, so
// each call zero-extended its result before testing it (2 instructions).
static long (*l4_csum_replace_)(void *ctx, __u64 off, __u64 from, __u64 to, __u64 flags) =
    (void *)BPF_FUNC_l4_csum_replace;

// One's complement sums: 64-bit accumulators of 16/32-bit terms, folded at the end.
static __always_inline __u32 fold32(__u64 s)
{
    s = (s & 0xffffffff) + (s >> 32);
    s = (s & 0xffffffff) + (s >> 32);
    return (__u32)s;
}

// The 16-bit fold of a sum below 2^48 (the IPv4 header's few terms): three rounds, no
// 32-bit step.
static __always_inline __u16 fold16_small(__u64 s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)s;
}

static __always_inline __u16 fold16(__u64 s)
{
    __u32 v = fold32(s);
    v = (v & 0xffff) + (v >> 16);
    v = (v & 0xffff) + (v >> 16);
    return (__u16)v;
}

_Static_assert(offsetof(struct nexthop, smac) == offsetof(struct nexthop, dmac) + 6 &&
               offsetof(struct nexthop, dmac) % 2 == 0, "nat_write copies both MACs as words");

// The next hop's MACs into the frame: six 16-bit words (dmac and smac are adjacent and
// 2-aligned in struct nexthop); a memcpy into the packet is byte by byte, 28 instructions.
static __always_inline int nat_macs(void *data, void *data_end, struct nexthop *nh)
{
    __u16 *eth = data, *mac = (__u16 *)nh->dmac;
    if ((void *)(eth + 6) > data_end)
        return -1;
#pragma unroll
    for (int i = 0; i < 6; i++)
        eth[i] = mac[i];
    return 0;
}

// The header writes of a translation to (src:sport -> dst:dport), shared by the TC path
// (nat_rewrite) and the XDP fast path (lib/xdp_fast.h): addresses, ports or the ICMP echo
// identifier, and with a cached next hop `nh` the TTL / hop limit and the MACs; the IPv4
// header checksum is fixed here. What the L4 checksum must change by is left for the
// caller: *pdp the pseudo-header (addresses), *ldp the ports / identifier, *hlp what a
// CHECKSUM_COMPLETE skb->csum must follow (IPv6 hop limit, later fragments' addresses;
// below 2^32, so bpf_csum_update takes it unfolded).
// Returns -1 if the packet is not what parse.h said, else the flags of bpf_l4_csum_replace
// (csum.h l4_csum_flags, decided on the branches taken anyway).
// ICMP echo: the identifier is the "source port" in the client-facing direction and
// travels unchanged in the header's one id field: `id` is what it becomes.
static __always_inline long nat_write(void *data, void *data_end, struct pkt *p,
                                      struct addr *src, __be16 sport, struct addr *dst,
                                      __be16 dport, __be16 id, struct nexthop *nh, __u64 *pdp,
                                      __u64 *ldp, __u64 *hlp)
{
    __u32 l3 = p->l3_off, l4 = p->l4_off;
    if (l3 > 18 || l4 > 18 + sizeof(struct ipv6hdr) + 8)
        return -1;                             // bounds for the verifier (parse.h)
    __u64 pd = 0;                              // pseudo-header (addresses)
    __u64 ld = 0;                              // ports / identifier
    __u64 hl = 0;                              // IPv6 hop limit word (see csum.h)
    long flags = 0;
    // The MACs first: the next hop's copy (nexthop.h nh_get) goes straight into the frame,
    // not through the stack while the addresses are done.
    if (nh && nat_macs(data, data_end, nh))
        return -1;
    if (p->k.family == 4) {
        struct iphdr *ip = data + l3;
        if ((void *)(ip + 1) > data_end)
            return -1;
        __u64 hd = 0;                          // IPv4 header
        __be32 o = ip->saddr, n = src->w[0];
        if (o != n) {
            pd += (__u32)~o + (__u64)n;
            ip->saddr = n;
        }
        o = ip->daddr;
        n = dst->w[0];
        if (o != n) {
            pd += (__u32)~o + (__u64)n;
            ip->daddr = n;
        }
        hd = pd;
        if (nh) {
            __u16 *ttlw = (void *)ip + 8;      // TTL and protocol: one checksum word
            __u16 ow = *ttlw;
            ip->ttl--;
            hd += (__u16)~ow + (__u64)*ttlw;
        }
        if (hd)
            ip->check = ~fold16_small((__u16)~ip->check + hd);
        if (p->k.proto == IPPROTO_ICMP)
            pd = 0;                            // no pseudo-header in ICMPv4
    } else {
        struct ipv6hdr *ip6 = data + l3;
        if ((void *)(ip6 + 1) > data_end)
            return -1;
        flags = L4_CSUM_IPV6;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            __be32 o = ip6->saddr.in6_u.u6_addr32[i], n = src->w[i];
            if (o != n) {
                pd += (__u32)~o + (__u64)n;
                ip6->saddr.in6_u.u6_addr32[i] = n;
            }
            o = ip6->daddr.in6_u.u6_addr32[i];
            n = dst->w[i];
            if (o != n) {
                pd += (__u32)~o + (__u64)n;
                ip6->daddr.in6_u.u6_addr32[i] = n;
            }
        }
        if (nh) {
            __u16 *hlw = (void *)ip6 + 6;      // next header and hop limit: one word
            __u16 ow = *hlw;
            ip6->hop_limit--;
            hl = (__u16)~ow + (__u64)*hlw;     // for a CHECKSUM_COMPLETE skb->csum
        }
    }
    if (p->frag == FRAG_LATER) {
        // No L4 header (frag.h): addresses only. IPv6: no checksum cancels their change
        // in a CHECKSUM_COMPLETE skb->csum, so it is reported (as the hop limit is).
        if (p->k.family == 6)
            hl = fold32(hl + pd);
        pd = 0;
    } else if (l4_has_ports(p->k.proto)) {
        // Read again, not kept across the address writes (one register fewer there).
        __u8 proto = p->k.proto;
        __be16 *ports = data + l4;
        if ((void *)(ports + 2) > data_end)
            return -1;
        if (ports[0] != sport) {
            ld += (__u16)~ports[0] + (__u64)sport;
            ports[0] = sport;
        }
        if (ports[1] != dport) {
            ld += (__u16)~ports[1] + (__u64)dport;
            ports[1] = dport;
        }
        if (proto == IPPROTO_TCP)
            ;                                  // the common case: no test below
        else if (proto == IPPROTO_UDP)
            flags |= BPF_F_MARK_MANGLED_0;
        else
            pd = ld = 0;                       // SCTP: CRC32c, no pseudo-header (lib/sctp.h)
    } else {
        __be16 *icmp_id = data + l4 + 4;
        if ((void *)(icmp_id + 1) > data_end)
            return -1;
        if (*icmp_id != id) {
            ld += (__u16)~*icmp_id + (__u64)id;
            *icmp_id = id;
        }
    }
    *pdp = pd;
    *ldp = ld;
    *hlp = hl;
    return flags;
}

// Rewrite to (src:sport -> dst:dport) in an skb (nat_write), then the L4 checksum.
// nh: the cached next hop the packet leaves through (TTL - 1 and MACs written here), or 0.
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                                       __be16 sport, struct addr *dst, __be16 dport,
                                       __be16 id, struct nexthop *nh)
{
    __u64 pd, ld, hl;
    long flags = nat_write((void *)(long)skb->data, (void *)(long)skb->data_end, p, src, sport,
                           dst, dport, id, nh, &pd, &ld, &hl);
    if (flags < 0)
        return -1;
    // Helpers last: they may move the packet (the pointers above are dead after them).
    if (pd && l4_csum_replace_(skb, p->csum_off, 0, fold32(pd), BPF_F_PSEUDO_HDR | flags))
        return -1;
    if (ld && l4_csum_replace_(skb, p->csum_off, 0, fold32(ld), flags))
        return -1;
    if (hl)                                    // < 2^32 (nat_write): a valid __wsum
        bpf_csum_update(skb, hl);              // no-op unless CHECKSUM_COMPLETE
    return 0;
}

// DSR through a cached next hop `nh`: nothing is translated, only the TTL / hop limit
// and the MACs change (nat_write with the packet's own tuple would compare every address
// and port with itself: ~70 instructions for IPv6). Shared by the TC path (dsr_rewrite)
// and the XDP fast path (lib/xdp_fast.h). *hlp: what a CHECKSUM_COMPLETE skb->csum must
// follow (the IPv6 hop limit word; the IPv4 header checksum is fixed here).
static __always_inline int dsr_write(void *data, void *data_end, struct pkt *p,
                                     struct nexthop *nh, __u64 *hlp)
{
    __u32 l3 = p->l3_off;
    __u64 hl = 0;
    if (l3 > 18)
        return -1;                             // bounds for the verifier (parse.h)
    if (p->k.family == 4) {
        struct iphdr *ip = data + l3;
        if ((void *)(ip + 1) > data_end)
            return -1;
        __u16 *ttlw = (void *)ip + 8;          // TTL and protocol: one checksum word
        __u16 ow = *ttlw;
        ip->ttl--;
        ip->check = ~fold16((__u16)~ip->check + (__u16)~ow + (__u64)*ttlw);
    } else {
        struct ipv6hdr *ip6 = data + l3;
        if ((void *)(ip6 + 1) > data_end)
            return -1;
        __u16 *hlw = (void *)ip6 + 6;          // next header and hop limit: one word
        __u16 ow = *hlw;
        ip6->hop_limit--;
        hl = (__u16)~ow + (__u64)*hlw;
    }
    *hlp = hl;
    return nat_macs(data, data_end, nh);
}

static __always_inline int dsr_rewrite(struct __sk_buff *skb, struct pkt *p, struct nexthop *nh)
{
    __u64 hl;
    if (dsr_write((void *)(long)skb->data, (void *)(long)skb->data_end, p, nh, &hl))
        return -1;
    if (hl)                                    // ~ow + nw < 2^17: a valid __wsum
        bpf_csum_update(skb, hl);              // no-op unless CHECKSUM_COMPLETE
    return 0;
}

// Client -> VIP becomes snat -> endpoint.
static __always_inline int nat_orig(struct __sk_buff *skb, struct pkt *p, struct nat_tuple *t,
                                    struct nexthop *nh)
{
    return nat_rewrite(skb, p, &t->snat, t->snat_port, &t->ep, t->ep_port, t->snat_port, nh);
}

// Endpoint -> snat becomes VIP -> client. ICMP: the reply's "source port" is the id.
static __always_inline int nat_reply(struct __sk_buff *skb, struct pkt *p, struct nat_tuple *t,
                                     struct nexthop *nh)
{
    return nat_rewrite(skb, p, &t->vip, t->vip_port, &t->client, t->client_port, t->client_port,
                       nh);
}
