// csum.h - header rewrites with incremental checksum fixes (RFC 1624 via the kernel's
// csum helpers). IPv4: L3 checksum + L4 pseudo-header; IPv6: L4 pseudo-header only.
// BPF_F_MARK_MANGLED_0 keeps a UDP/IPv4 zero ("no checksum") at zero.
//
// A packet may arrive CHECKSUM_COMPLETE (skb->csum = the sum of the whole packet, from a
// NIC or a validated tunnel): every change must keep that sum true. IPv4: an address
// change is cancelled by the header checksum change, so the kernel adjusts skb->csum by
// the L4 checksum change. IPv6 has no header checksum: address change and L4 checksum
// change cancel out, so a pseudo-header fix must NOT touch skb->csum (BPF_F_IPV6, kernel
// >= 6.16; the driver defines L4_CSUM_IPV6 to 0 on older kernels, which reject the flag),
// and a hop limit written directly is reported with bpf_csum_update.
#pragma once

#ifndef L4_CSUM_IPV6
#define L4_CSUM_IPV6 (1ULL << 7)               // BPF_F_IPV6 (not in the 6.1 uapi headers)
#endif

static __always_inline __u64 l4_csum_flags(struct pkt *p)
{
    return (p->k.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0) |
           (p->k.family == 6 ? L4_CSUM_IPV6 : 0);
}

// Replace the 4/16-byte address at byte offset `off` (the IP source or destination).
static __always_inline int set_addr(struct __sk_buff *skb, struct pkt *p, __u32 off,
                                    struct addr *old, struct addr *new)
{
    if (p->k.family == 4) {
        __be32 o = old->w[0], n = new->w[0];
        if (o == n)
            return 0;
        // ICMPv4 has no pseudo-header: its checksum does not cover addresses.
        if (p->k.proto != IPPROTO_ICMP &&
            bpf_l4_csum_replace(skb, p->csum_off, o, n, BPF_F_PSEUDO_HDR | 4 | l4_csum_flags(p)))
            return -1;
        if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), o, n, 4))
            return -1;
        return bpf_skb_store_bytes(skb, off, &n, 4, 0);
    }
    if (old->w[0] == new->w[0] && old->w[1] == new->w[1] && old->w[2] == new->w[2] &&
        old->w[3] == new->w[3])
        return 0;
    __s64 diff = bpf_csum_diff(old->w, 16, new->w, 16, 0);
    if (bpf_l4_csum_replace(skb, p->csum_off, 0, diff, BPF_F_PSEUDO_HDR | l4_csum_flags(p)))
        return -1;
    return bpf_skb_store_bytes(skb, off, new->w, 16, 0);
}

// Replace a 2-byte L4 field (TCP/UDP port, ICMP echo identifier) at `off`.
static __always_inline int set_port(struct __sk_buff *skb, struct pkt *p, __u32 off,
                                    __be16 old, __be16 new)
{
    if (old == new)
        return 0;
    if (bpf_l4_csum_replace(skb, p->csum_off, old, new, 2 | l4_csum_flags(p)))
        return -1;
    return bpf_skb_store_bytes(skb, off, &new, 2, 0);
}

// We forward, so we are a router: decrement TTL / hop limit (caller checked it is > 1).
static __always_inline int dec_ttl(struct __sk_buff *skb, struct pkt *p)
{
    __u8 ttl = p->ttl - 1;
    if (p->k.family == 4) {
        __be16 o = bpf_htons(((__u16)p->ttl << 8) | p->k.proto);
        __be16 n = bpf_htons(((__u16)ttl << 8) | p->k.proto);
        if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), o, n, 2))
            return -1;
        return bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, ttl), &ttl, 1, 0);
    }
    // BPF_F_RECOMPUTE_CSUM: the byte is covered by a CHECKSUM_COMPLETE skb->csum.
    return bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, hop_limit), &ttl, 1,
                               BPF_F_RECOMPUTE_CSUM);
}
