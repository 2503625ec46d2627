// parse.h - Ethernet (+ one VLAN tag), IPv4/IPv6, TCP/UDP/ICMP/ICMPv6 into struct pkt.
#pragma once

#define ETH_P_8021Q_   0x8100
#define ETH_P_8021AD_  0x88A8
#define IP_MF_OFFSET   0x3FFF
#define ICMP_ECHO_REQ  8
#define ICMP_ECHO_REP  0
#define ICMP6_ECHO_REQ 128
#define ICMP6_ECHO_REP 129

// The caller zeroes it (= {}). Its layout and the width of parse's stores shape what the
// verifier walks in sluice_lb: leaving it unzeroed, the TCP numbers kept raw (swapped where
// used), or the ports stored as one word each cost 50 % to over 120 % more (446,622 →
// 660,000 .. over 1,000,000 instructions, 2026-11-30): measure a change here with the
// verified count too (bench/pktcount.py counts the packet, not the verifier).
struct pkt {
    struct ct_key k;        // the packet's own tuple (lookup key)
    __u32 l3_off;
    __u32 l4_off;
    __u32 csum_off;         // L4 checksum field
    __u32 len;
    __u8 tcp_flags;         // FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10
    __u8 icmp_type;
    __u8 ttl;
    __u8 icmp_err;          // an ICMP error: see icmp_err.h
    __u8 frag;              // FRAG_NONE / FRAG_FIRST / FRAG_LATER (lib/frag.h)
    __u8 sctp_chunk;        // SCTP: the first chunk's type (lib/sctp.h)
    __u8 sctp_init;         // SCTP: an INIT with verification tag 0
    __u8 icmp_code;         // ICMP: the code (filled by the firewall's programs only)
    __be32 frag_id;         // IPv4 identification (16 bits) / IPv6 fragment header's id
    __u32 tcp_next;         // TCP, host order: sequence number + payload (+1 for SYN, FIN)
    __u32 tcp_ack;          // TCP, host order
    __u16 tcp_win;          // TCP, host order, unscaled
    __u16 pad;
} __attribute__((aligned(8)));              // k.src, k.dst written 8 bytes at a time

#define FRAG_NONE  0
#define FRAG_FIRST 1        // offset 0, more to come: carries the L4 header
#define FRAG_LATER 2        // offset > 0: no L4 header; lib/frag.h supplies its ports
#define IPV6_FRAGHDR_ 44

// PARSE_OK: a packet we may translate; PARSE_PASS: leave it to the stack untouched;
// PARSE_SCTP: an SCTP packet we may translate (a return value of its own, so the verifier
// knows on every path whether it is SCTP: see lb.c lb_entry).
#define PARSE_OK   0
#define PARSE_PASS 1
#define PARSE_SCTP 2

#include "sctp.h"

// l4_len: the IP payload's length (L4 header + data).
static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p, void *data,
                                    void *data_end, __u32 l4_len)
{
    void *l4 = data + p->l4_off;
    switch (p->k.proto) {
    case IPPROTO_TCP: {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end)
            return PARSE_PASS;
        p->k.sport = th->source;
        p->k.dport = th->dest;
        p->tcp_flags = ((__u8 *)th)[13];
        // A GSO packet's IP length covers all its segments: tcp_next is after the last.
        p->tcp_next = bpf_ntohl(th->seq) + l4_len - th->doff * 4 +
                      !!(p->tcp_flags & 0x02) + !!(p->tcp_flags & 0x01);
        p->tcp_ack = bpf_ntohl(th->ack_seq);
        p->tcp_win = bpf_ntohs(th->window);
        p->csum_off = p->l4_off + offsetof(struct tcphdr, check);
        return PARSE_OK;
    }
    case IPPROTO_UDP: {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > data_end)
            return PARSE_PASS;
        p->k.sport = uh->source;
        p->k.dport = uh->dest;
        p->csum_off = p->l4_off + offsetof(struct udphdr, check);
        return PARSE_OK;
    }
    case IPPROTO_SCTP:
        return sctp_parse(p, data, data_end);
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: {
        // Only echo request/reply carry a flow; errors and ND pass untouched.
        __u8 *ih = l4;
        if ((void *)(ih + 8) > data_end)
            return PARSE_PASS;
        __u8 type = ih[0];
        p->icmp_type = type;
        p->csum_off = p->l4_off + 2;
        // Errors that quote a packet (destination unreachable / packet too big, time
        // exceeded, parameter problem) may belong to a translated flow.
        if ((p->k.proto == IPPROTO_ICMP && (type == 3 || type == 11 || type == 12)) ||
            (p->k.proto == IPPROTO_ICMPV6 && type >= 1 && type <= 4)) {
            p->icmp_err = 1;
            return PARSE_OK;
        }
        if (p->k.proto == IPPROTO_ICMP && type != ICMP_ECHO_REQ && type != ICMP_ECHO_REP)
            return PARSE_PASS;
        if (p->k.proto == IPPROTO_ICMPV6 && type != ICMP6_ECHO_REQ && type != ICMP6_ECHO_REP)
            return PARSE_PASS;
        p->k.sport = *(__be16 *)(ih + 4);   // identifier
        p->k.dport = 0;
        return PARSE_OK;
    }
    }
    return PARSE_PASS;
}

// A later fragment (offset > 0): no L4 header here. The protocol must be one we balance;
// frag.h fills the ports. Decided where the fragment is seen, so that an unfragmented
// packet pays no test for it.
static __always_inline int parse_later(struct pkt *p)
{
    p->frag = FRAG_LATER;
    if (p->k.proto == IPPROTO_SCTP) {          // its tag too; no chunk to follow (sctp.h)
        p->sctp_chunk = SCTP_NO_CHUNK;
        return PARSE_SCTP;
    }
    if (p->k.proto != IPPROTO_TCP && p->k.proto != IPPROTO_UDP &&
        p->k.proto != IPPROTO_ICMP && p->k.proto != IPPROTO_ICMPV6)
        return PARSE_PASS;
    return PARSE_OK;
}

// `fam`: 4 or 6 to take only that family (lb.c's per-family balancers: the other one
// passes), 0 for both.
static __always_inline int parse_packet_f(struct __sk_buff *skb, struct pkt *p, const int fam)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    __u32 off = sizeof(*eth);
    if ((void *)(eth + 1) > data_end)
        return PARSE_PASS;
    __be16 proto = *(__be16 *)(data + 12);     // h_proto: one load (ethhdr is packed)
    if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
        __be16 *inner = data + off + 2;
        if ((void *)(inner + 1) > data_end)
            return PARSE_PASS;
        proto = *inner;
        off += 4;
    }
    p->l3_off = off;
    p->len = skb->len;
    __u32 l4_len;
    if (fam != 6 && proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = data + off;
        if ((void *)(ip + 1) > data_end)
            return PARSE_PASS;
        if (*(__u8 *)ip != 0x45)                // version 4 without options (rare: the
            return PARSE_PASS;                  // stack's)
        p->k.family = 4;
        p->k.proto = ip->protocol;
        p->k.src.w[0] = ip->saddr;
        p->k.dst.w[0] = ip->daddr;
        p->ttl = ip->ttl;
        p->l4_off = off + sizeof(*ip);
        l4_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);
        if (ip->frag_off & bpf_htons(IP_MF_OFFSET)) {
            // A fragment (lib/frag.h): the first carries the L4 header, later ones do not.
            p->frag_id = ip->id;
            if (ip->frag_off & bpf_htons(0x1FFF))
                return parse_later(p);
            p->frag = FRAG_FIRST;
        }
    } else if (fam != 4 && proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + off;
        if ((void *)(ip6 + 1) > data_end)
            return PARSE_PASS;
        // Extension headers are not followed (they pass untouched), except a fragment
        // header right after the fixed header (lib/frag.h).
        p->k.family = 6;
        p->k.proto = ip6->nexthdr;
        // 8 bytes at a time (the packet may be unaligned; memcpy built each u64 of two u32).
        __u64 *a = (__u64 *)&ip6->saddr;
        *(__u64 *)&p->k.src.w[0] = a[0];
        *(__u64 *)&p->k.src.w[2] = a[1];
        *(__u64 *)&p->k.dst.w[0] = a[2];
        *(__u64 *)&p->k.dst.w[2] = a[3];
        p->ttl = ip6->hop_limit;
        p->l4_off = off + sizeof(*ip6);
        l4_len = bpf_ntohs(ip6->payload_len);
        if (ip6->nexthdr == IPV6_FRAGHDR_) {
            __u8 *fh = (void *)(ip6 + 1);      // next header, reserved, offset|M, id
            if ((void *)(fh + 8) > data_end)
                return PARSE_PASS;
            __be16 fo = *(__be16 *)(fh + 2);
            p->k.proto = fh[0];
            p->l4_off += 8;
            l4_len -= 8;
            if (fo & bpf_htons(0xFFF9)) {       // not an atomic fragment (RFC 6946)
                p->frag_id = *(__be32 *)(fh + 4);
                if (fo & bpf_htons(0xFFF8))
                    return parse_later(p);
                p->frag = FRAG_FIRST;
            }
        }
    } else {
        return PARSE_PASS;
    }
    return parse_l4(skb, p, data, data_end, l4_len);
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p)
{
    return parse_packet_f(skb, p, 0);
}

// An IPv6 packet (after Ethernet and at most one VLAN tag, as parse_packet_f reads it):
// lb.c sluice_lb hands it to IPv6's balancer.
static __always_inline int frame_is_ipv6(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    if (data + sizeof(struct ethhdr) > data_end)
        return 0;
    __be16 proto = *(__be16 *)(data + 12);
    if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
        if (data + sizeof(struct ethhdr) + 4 > data_end)
            return 0;
        proto = *(__be16 *)(data + 16);
    }
    return proto == bpf_htons(ETH_P_IPV6);
}
