// pmtu.h - "fragmentation needed" (ICMP) / "packet too big" (ICMPv6) sent by the balancer
// itself, so Path MTU discovery works when the balancer's own next link is the narrow one.
//
// When the FIB says a translated packet does not fit the egress link, handing it to the
// stack would make the stack answer with an error quoting the *translated* header: the
// sender cannot match that to its socket and the path becomes a black hole. Instead the
// packet is turned, in place, into the error its next hop would have sent (from the
// translated destination, quoting the translated header), and then tail-called into the
// ICMP-error path (icmp_err.h), which translates it like any error coming back from an
// endpoint or a client and forwards it. One error per too-big packet, each smaller than the
// packet that caused it: nothing to amplify.
//
// Only the quoted IP header and the first 8 bytes of its payload are sent: that is what
// every stack matches an error on (RFC 792's minimum; RFC 4443 asks for more "if possible").
// The FIB's MTU arrives in skb->cb[0] (lib/fwd.h).
#pragma once

#define ICMP_DEST_UNREACH_  3
#define ICMP_FRAG_NEEDED_   4
#define ICMP6_PKT_TOOBIG_   2
#define IP_DF_              0x4000
#define PMTU_QUOTE4         28        // IPv4 header (no options) + 8 bytes
#define PMTU_QUOTE6         48        // IPv6 header + 8 bytes
#define PMTU_TTL            64
#define IPV6_MIN_MTU_       1280

struct frag_needed4 {
    struct iphdr ip;
    __u8 type;
    __u8 code;
    __sum16 csum;
    __be16 unused;
    __be16 mtu;
    __u8 quote[PMTU_QUOTE4];
};

struct too_big6 {
    struct ipv6hdr ip;
    __u8 type;
    __u8 code;
    __sum16 csum;
    __be32 mtu;
    __u8 quote[PMTU_QUOTE6];
};

// The ICMPv6 checksum's pseudo-header (RFC 8200 8.1).
struct pseudo6 {
    struct in6_addr src;
    struct in6_addr dst;
    __be32 len;
    __u8 zero[3];
    __u8 next;
};

static __always_inline __sum16 csum_fold_(__s64 sum)
{
    __u32 s = (__u32)sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__sum16)~s;
}

// An ICMP (IPv4) or ICMPv6 error from the packet's destination back to its source, quoting
// its IP header and the next 8 bytes, built in place of the packet (also lib/firewall.h's
// reject). `mtu`: the field after the checksum (IPv4: 16 bits after 16 unused, IPv6: 32).
// -1: built, the caller hands it on; TC_ACT_OK: too short to quote; TC_ACT_SHOT: failed.
static __always_inline int icmp_error_build(struct __sk_buff *skb, struct pkt *p, __u8 type,
                                            __u8 code, __u32 mtu)
{
    __s64 sum = 0;
    if (p->k.family == 4) {
        struct frag_needed4 m = {};
        if (bpf_skb_load_bytes(skb, p->l3_off, m.quote, sizeof(m.quote)))
            return TC_ACT_OK;
        m.ip.version = 4;
        m.ip.ihl = 5;
        m.ip.tot_len = bpf_htons(sizeof(m));
        m.ip.ttl = PMTU_TTL;
        m.ip.protocol = IPPROTO_ICMP;
        m.ip.saddr = p->k.dst.w[0];            // (pmtu: the next hop's view; icmp_err.h
        m.ip.daddr = p->k.src.w[0];            // rewrites it)
        m.type = type;
        m.code = code;
        m.mtu = bpf_htons(mtu);
        m.csum = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.type, 8 + sizeof(m.quote), 0));
        m.ip.check = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.ip, sizeof(m.ip), 0));
        // change_tail is the slow-path helper meant for such replies: it linearises,
        // unclones and drops GSO state. RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb right.
        if (bpf_skb_change_tail(skb, p->l3_off + sizeof(m), 0))
            return TC_ACT_SHOT;
        if (bpf_skb_store_bytes(skb, p->l3_off, &m, sizeof(m), BPF_F_RECOMPUTE_CSUM))
            return TC_ACT_SHOT;
        return -1;
    }
    struct too_big6 m = {};
    struct pseudo6 ph = {};
    if (bpf_skb_load_bytes(skb, p->l3_off, m.quote, sizeof(m.quote)))
        return TC_ACT_OK;
    m.ip.version = 6;
    m.ip.payload_len = bpf_htons(sizeof(m) - sizeof(m.ip));
    m.ip.nexthdr = IPPROTO_ICMPV6;
    m.ip.hop_limit = PMTU_TTL;
    __builtin_memcpy(&m.ip.saddr, &p->k.dst, 16);
    __builtin_memcpy(&m.ip.daddr, &p->k.src, 16);
    m.type = type;
    m.code = code;
    m.mtu = bpf_htonl(mtu);
    ph.src = m.ip.saddr;
    ph.dst = m.ip.daddr;
    ph.len = bpf_htonl(sizeof(m) - sizeof(m.ip));
    ph.next = IPPROTO_ICMPV6;
    sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
    m.csum = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.type, 8 + sizeof(m.quote), sum));
    if (bpf_skb_change_tail(skb, p->l3_off + sizeof(m), 0))
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, p->l3_off, &m, sizeof(m), BPF_F_RECOMPUTE_CSUM))
        return TC_ACT_SHOT;
    return -1;
}

static __always_inline int too_big4(struct __sk_buff *skb, struct pkt *p, __u32 mtu)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct iphdr *ip = data + p->l3_off;
    if ((void *)(ip + 1) > data_end)
        return TC_ACT_OK;
    if (!(ip->frag_off & bpf_htons(IP_DF_)))
        return TC_ACT_OK;                      // may be fragmented: the stack does that
    return icmp_error_build(skb, p, ICMP_DEST_UNREACH_, ICMP_FRAG_NEEDED_, mtu);
}

static __always_inline int too_big6(struct __sk_buff *skb, struct pkt *p, __u32 mtu)
{
    return icmp_error_build(skb, p, ICMP6_PKT_TOOBIG_, 0,
                            mtu < IPV6_MIN_MTU_ ? IPV6_MIN_MTU_ : mtu);
}

// Tail-call body: the packet (already translated) did not fit; answer its sender.
static __always_inline int handle_too_big(struct __sk_buff *skb, struct pkt *p)
{
    // Never an error about an error; anything we did not translate is the stack's business.
    if (p->icmp_err)
        return TC_ACT_OK;
    __u32 mtu = skb->cb[0];
    int rc = p->k.family == 4 ? too_big4(skb, p, mtu) : too_big6(skb, p, mtu);
    if (rc != -1)
        return rc;
    jmp_map.call(skb, JMP_ICMP_ERR);
    return TC_ACT_SHOT;                        // no ICMP-error program: drop, as a router would
}
