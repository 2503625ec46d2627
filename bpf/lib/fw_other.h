// fw_other.h - the firewall for the packets the balancer leaves to the stack: every IP
// protocol but TCP/UDP/SCTP/ICMP echo (GRE, ESP, AH, OSPF, VRRP, ...), ICMP and ICMPv6 of
// every other type (neighbour discovery, errors that quote no flow of ours, ...), and
// packets whose headers the balancer's parser does not follow (IPv4 options, IPv6
// extension headers). While the firewall has rules (fw_live), lb.c tail-calls
// sluice_fw_other for them (JMP_FW_OTHER: lb_entry on PARSE_PASS, sluice_icmp_err on an
// error about no flow of ours); a packet the balancer handles never comes here, and
// without rules nothing does.
//
// What is kept:
// - Other protocols (no ports): stateful by (addresses, protocol), like Linux's generic
//   conntrack. An allowed packet makes a "pass" pair (CT_F_PASS, ports 0; lib/fw_flow.h),
//   so the other direction (a GRE tunnel's or an IPsec SA pair's return traffic) passes an
//   interface's default drop; later packets look their entry up here and refresh it.
//   Not sent to the HA peer (sync records carry ported flows): after a takeover the next
//   packet is classified again.
// - ICMP other than echo: stateless, every packet classified. Errors about a flow the
//   conntrack knows never come here (lib/icmp_err.h translates or forwards them); the
//   others are "infrastructure" below.
// - TCP/UDP/SCTP/ICMP echo with IPv4 options or IPv6 extension headers: a packet of a flow
//   the conntrack knows passes untouched (as before); the others are classified, each
//   packet (rare: no state is made for them).
// - Infrastructure (fw_infra: ICMP/ICMPv6 errors, IPv6 neighbour discovery and MLD, VRRP):
//   only rules that name the protocol, and for ICMP the type, match them, and the default
//   policy lets them pass (firewall.h FW_INFRA_*).
#pragma once

#define IPPROTO_VRRP_     112
#define IPV6_HOPOPTS_     0
#define IPV6_ROUTING_     43
#define IPV6_DSTOPTS_     60
#define FW_EXT_MAX        4          // IPv6 extension headers followed

static __always_inline __u32 fw_infra(__u8 proto, __u8 type)
{
    if (proto == IPPROTO_VRRP_)
        return FW_INFRA_PROTO;
    if (proto == IPPROTO_ICMP)
        return type == 3 || type == 11 || type == 12 ? FW_INFRA_TYPE : 0;
    if (proto == IPPROTO_ICMPV6)               // errors 1-4; MLD 130-132, 143; RS..redirect
        return (type >= 1 && type <= 4) || (type >= 130 && type <= 137) || type == 143
                   ? FW_INFRA_TYPE : 0;
    return 0;
}

// Addresses, protocol (past IPv6 extension headers), ports or ICMP type and code, with
// bpf_skb_load_bytes: offsets here vary with the headers. 0: parsed; -1: not IP.
static __always_inline int fw_parse_loose(struct __sk_buff *skb, struct pkt *p)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    __u32 off = sizeof(*eth);
    if ((void *)(eth + 1) > data_end)
        return -1;
    __be16 proto = eth->h_proto;
    if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
        __be16 *inner = data + off + 2;
        if ((void *)(inner + 1) > data_end)
            return -1;
        proto = *inner;
        off += 4;
    }
    p->l3_off = off;
    p->len = skb->len;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = data + off;
        if ((void *)(ip + 1) > data_end || ip->ihl < 5)
            return -1;
        if (ip->frag_off & bpf_htons(0x1FFF))
            p->frag = FRAG_LATER;
        p->k.family = 4;
        p->k.proto = ip->protocol;
        p->k.src.w[0] = ip->saddr;
        p->k.dst.w[0] = ip->daddr;
        p->ttl = ip->ttl;
        p->l4_off = off + ip->ihl * 4;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + off;
        if ((void *)(ip6 + 1) > data_end)
            return -1;
        p->k.family = 6;
        __builtin_memcpy(&p->k.src, &ip6->saddr, 16);
        __builtin_memcpy(&p->k.dst, &ip6->daddr, 16);
        p->ttl = ip6->hop_limit;
        __u8 nh = ip6->nexthdr;
        __u32 l4 = off + sizeof(*ip6);
#pragma unroll
        for (int i = 0; i < FW_EXT_MAX; i++) {
            __u8 h[8];
            if (nh != IPV6_HOPOPTS_ && nh != IPV6_ROUTING_ && nh != IPV6_DSTOPTS_ &&
                nh != IPV6_FRAGHDR_)
                break;
            if (bpf_skb_load_bytes(skb, l4, h, 8))
                return -1;
            if (nh == IPV6_FRAGHDR_) {
                if (*(__be16 *)(h + 2) & bpf_htons(0xFFF8))
                    p->frag = FRAG_LATER;
                l4 += 8;
            } else {
                l4 += (h[1] + 1) * 8;
            }
            nh = h[0];
        }
        p->k.proto = nh;
        p->l4_off = l4;
    } else {
        return -1;
    }
    if (p->frag == FRAG_LATER)
        return 0;                              // no L4 header here
    __u8 l4h[14] = {};
    if (p->k.proto == IPPROTO_TCP) {
        if (bpf_skb_load_bytes(skb, p->l4_off, l4h, 14) == 0) {
            __builtin_memcpy(&p->k.sport, l4h, 2);
            __builtin_memcpy(&p->k.dport, l4h + 2, 2);
            p->tcp_flags = l4h[13];
        }
    } else if (p->k.proto == IPPROTO_UDP || p->k.proto == IPPROTO_SCTP) {
        if (bpf_skb_load_bytes(skb, p->l4_off, l4h, 4) == 0) {
            __builtin_memcpy(&p->k.sport, l4h, 2);
            __builtin_memcpy(&p->k.dport, l4h + 2, 2);
        }
    } else if (p->k.proto == IPPROTO_ICMP || p->k.proto == IPPROTO_ICMPV6) {
        if (bpf_skb_load_bytes(skb, p->l4_off, l4h, 8) == 0) {
            p->icmp_type = l4h[0];
            p->icmp_code = l4h[1];
            if (p->icmp_type == ICMP_ECHO_REQ || p->icmp_type == ICMP_ECHO_REP ||
                p->icmp_type == ICMP6_ECHO_REQ || p->icmp_type == ICMP6_ECHO_REP)
                __builtin_memcpy(&p->k.sport, l4h + 4, 2);   // the echo identifier
        }
    }
    return 0;
}

static __always_inline int fw_icmp_echo(struct pkt *p)
{
    if (p->k.proto == IPPROTO_ICMP)
        return p->icmp_type == ICMP_ECHO_REQ || p->icmp_type == ICMP_ECHO_REP;
    return p->icmp_type == ICMP6_ECHO_REQ || p->icmp_type == ICMP6_ECHO_REP;
}

// A packet of a protocol pair: its ORIG entry's idle time (at most every CT_SYNC_NS), and
// the pair is established once the other direction was seen.
static __always_inline void fw_other_seen(struct ct_entry *e, struct pkt *p, __u64 now)
{
    if (e->dir == CT_DIR_REPLY) {
        struct ct_key ok = {};
        ct_orig_key(&e->t, e->proto, e->family, &ok);
        e = ct_get(&ok);
        if (!e)
            return;
        if (e->state != CT_EST)
            e->state = CT_EST;
    }
    if (now - e->last_ns >= CT_SYNC_NS)
        e->last_ns = now;
}

static __always_inline int fw_other(struct __sk_buff *skb, struct pkt *p)
{
    __u32 live = fw_live_bits();
    if (!(live & FW_LIVE_FW))
        return TC_ACT_OK;
    __u8 proto = p->k.proto;
    int icmp = proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
    int pair = !icmp && !l4_has_ports(proto);  // no ports: stateful by addresses, protocol
    if (p->frag == FRAG_LATER && !pair)
        return TC_ACT_OK;                      // its first fragment was classified
    if (!icmp || fw_icmp_echo(p)) {
        // A flow the conntrack knows passes untouched (with or without the firewall).
        struct ct_entry *e = ct_get(&p->k);
        if (!e && proto == IPPROTO_TCP)
            e = syn_get(&p->k);
        if (e) {
            if (pair)
                fw_other_seen(e, p, bpf_ktime_get_coarse_ns());
            return TC_ACT_OK;
        }
    }
    __s64 snat;
    __u8 stateful;
    int rc = fw_filter(skb, p, live, &snat, &stateful, fw_infra(proto, p->icmp_type));
    if (rc != FW_CONTINUE)
        return rc;
    if (pair && stateful)                      // allow, count, snat (not applied here)
        fw_pass_flow(p, bpf_ktime_get_coarse_ns(), 0);
    return TC_ACT_OK;
}
