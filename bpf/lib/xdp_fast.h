// xdp_fast.h - the XDP fast path (xdp.c): established TCP/UDP flows whose conntrack entry
// holds a valid next hop are translated and sent from the driver, before any skb exists.
// It does exactly what lb.c does for such a packet when the cache is valid: conntrack
// lookup, NAT (nat.h nat_write; DSR: dsr_write), counters (stats.h), TTL and MACs, then
// XDP_TX (back out of the interface it came in on) or bpf_redirect. Everything else is
// XDP_PASS, and the TC program behind it (lb.c) decides as it always did: new flows, flows in their TCP
// handshake (syn_map), SYN/FIN/RST segments (they change state), anything not
// established, expired flows, a stale or missing next hop, a packet longer than the cache
// holds (GSO/GRO aggregates, Path MTU discovery), fragments, IP options, IPv6 extension
// headers, VLAN tags, ICMP, SCTP, NAT64 and L3-DSR flows (CT_F_TAIL), firewall pass flows,
// flows synced from a peer until TC has seen one packet (CT_F_SYNCED), VIPs paused on an
// HA backup. A reply packet whose entry was not refreshed for CT_SYNC_NS refreshes the ORIG
// entry's idle time here, as TC would (xdp_reply_sync), unless that flow is not plainly
// alive: then it goes to TC too.
//
// Checksums: XDP has no skb checksum state, so the L4 checksum is updated in place
// (RFC 1624) on the assumption that it is complete. A locally sent packet whose checksum
// is still partial (CHECKSUM_PARTIAL over veth) would leave wrong: README, "XDP".
#pragma once

// The packet's headers into `p` (the fields lb.c's established path reads); -1: not one
// the fast path takes.
static __always_inline int xdp_parse(void *data, void *data_end, struct pkt *p)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return -1;
    p->l3_off = sizeof(*eth);
    p->len = data_end - data;
    __u32 l4_len;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = data + sizeof(*eth);
        if ((void *)(ip + 1) > data_end)
            return -1;
        if (ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF_OFFSET)))
            return -1;
        p->k.family = 4;
        p->k.proto = ip->protocol;
        p->k.src.w[0] = ip->saddr;
        p->k.dst.w[0] = ip->daddr;
        p->ttl = ip->ttl;
        p->l4_off = sizeof(*eth) + sizeof(*ip);
        l4_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + sizeof(*eth);
        if ((void *)(ip6 + 1) > data_end)
            return -1;
        p->k.family = 6;
        p->k.proto = ip6->nexthdr;
        __builtin_memcpy(&p->k.src, &ip6->saddr, 16);
        __builtin_memcpy(&p->k.dst, &ip6->daddr, 16);
        p->ttl = ip6->hop_limit;
        p->l4_off = sizeof(*eth) + sizeof(*ip6);
        l4_len = bpf_ntohs(ip6->payload_len);
    } else {
        return -1;
    }
    if (p->k.proto != IPPROTO_TCP && p->k.proto != IPPROTO_UDP)
        return -1;
    return parse_l4(0, p, data, data_end, l4_len) == PARSE_OK ? 0 : -1;
}

// The L4 checksum after nat_write: pseudo-header and port changes folded in (RFC 1624).
// A UDP/IPv4 zero ("no checksum") stays zero; a UDP result of zero is sent as 0xffff.
static __always_inline int xdp_l4_csum(void *data, void *data_end, struct pkt *p, __u64 d)
{
    __u32 off = p->csum_off;
    if (off > sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + 16)
        return -1;                             // bounds for the verifier
    __u16 *csum = data + off;
    if ((void *)(csum + 1) > data_end)
        return -1;
    int udp = p->k.proto == IPPROTO_UDP;
    if (!d || (udp && p->k.family == 4 && !*csum))
        return 0;
    __u16 c = ~fold16((__u16)~*csum + d);
    *csum = udp && !c ? 0xffff : c;
    return 0;
}

// What the fast path did (per CPU; `sluice dp status` sums them): XDP_STAT_FWD packets it
// sent itself, XDP_STAT_PASS packets it left to TC. This program's own, not pinned.
#define XDP_STAT_FWD  0
#define XDP_STAT_PASS 1
BPF_PERCPU_ARRAY(xdp_stats, __u64, 2);

static __always_inline int xdp_count(__u32 what)
{
    __u64 *n = xdp_stats.lookup(&what);
    if (n)
        *n += 1;
    return what == XDP_STAT_FWD;
}

// A reply packet, its entry `e` not refreshed for CT_SYNC_NS: bring the ORIG entry's idle
// time up to date as TC does for a reply without SYN/FIN/RST (lb.c: for such a packet
// lb_track changes nothing but last_ns). -1 when the ORIG entry is not plainly alive
// (gone, expired, not established, synced): TC decides then.
static __always_inline int xdp_reply_sync(struct ct_entry *e, __u64 now)
{
    struct ct_key ok = {};
    ct_orig_key(&e->t, e->proto, e->family, &ok);
    struct ct_entry *o = ct_get(&ok);
    if (!o || o->state != CT_EST || (o->flags & CT_F_SYNCED) || ct_expired(o, now))
        return -1;
    if (o->last_ns != now)
        o->last_ns = now;
    e->last_ns = now;
    return 0;
}

static __always_inline int xdp_fast(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct pkt p = {};
    if (xdp_parse(data, data_end, &p) || p.ttl <= 1)
        return XDP_PASS;
    int tcp = p.k.proto == IPPROTO_TCP;
    if (tcp && (p.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST)))
        return XDP_PASS;                       // they change the flow's state: TC tracks it
    struct ct_entry *e = ct_get(&p.k);  // syn_map (handshakes): TC's alone
    if (!e || e->state != CT_EST || (e->flags & (CT_F_TAIL | CT_F_PASS)))
        return XDP_PASS;
    __u64 now = bpf_ktime_get_coarse_ns();
    if (e->dir == CT_DIR_ORIG) {
        // A synced flow becomes this node's at its first packet here (lib/ha.h ha_track):
        // TC's to see. A paused VIP is not ours to answer at all.
        if ((e->flags & CT_F_SYNCED) || ct_expired(e, now) || ha_paused(&p.k.dst))
            return XDP_PASS;
        if (e->last_ns != now)
            e->last_ns = now;                  // ct_track of an established, flagless packet
    } else if (e->flags & CT_F_SYNCED) {
        return XDP_PASS;
    } else if (now - e->last_ns >= CT_SYNC_NS && xdp_reply_sync(e, now)) {
        return XDP_PASS;                       // anything but a live flow: TC's to judge
    }
    struct nexthop nh;
    if (!nh_get(e, &p, nh_generation(), p.len - p.l3_off, &nh))
        return XDP_PASS;
    if (tcp)
        tcp_note(0, e, &p);
    e->packets++;
    e->bytes += p.len;
    count(&p, e->svc_id, e->ep_id, 0);

    struct nat_tuple *t = &e->t;
    __u64 pd = 0, ld = 0, hl;
    long err;
    if (e->flags & CT_F_DSR)                   // only the MACs (and TTL) change
        err = dsr_write(data, data_end, &p, &nh, &hl);
    else if (e->dir == CT_DIR_ORIG)
        err = nat_write(data, data_end, &p, &t->snat, t->snat_port, &t->ep, t->ep_port,
                        t->snat_port, &nh, &pd, &ld, &hl);
    else
        err = nat_write(data, data_end, &p, &t->vip, t->vip_port, &t->client, t->client_port,
                        t->vip_port, &nh, &pd, &ld, &hl);
    if (err < 0 || xdp_l4_csum(data, data_end, &p, pd + ld))
        return XDP_DROP;                       // cannot happen for a packet parsed above
    xdp_count(XDP_STAT_FWD);
    if (nh.ifindex == ctx->ingress_ifindex)
        return XDP_TX;                         // one-arm: out where it came in
    return bpf_redirect(nh.ifindex, 0);
}
