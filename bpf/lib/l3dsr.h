// l3dsr.h - L3 direct server return: IPv4-in-IPv4 (protocol 4) and IPv6-in-IPv6 (41)
// towards endpoints that hold the VIP on a loopback and answer the client directly.
//
// A DSR service with dsr-tunnel ip-in-ip (SVC_F_IPIP) makes flows with CT_F_DSR|CT_F_IPIP.
// The client's packet is not changed at all (ports are not translated, the destination
// stays the VIP); it gets an outer header from the balancer's own address on the link
// towards the endpoint (ifaddr_map, as one-arm uses; found with the FIB's answer and kept
// in the entry's snat, where DSR flows otherwise hold the client's address) to the endpoint, TTL 64, DF (IPv4), the inner TOS / traffic class copied. bpf_skb_adjust_room
// with BPF_F_ADJ_ROOM_ENCAP_L3_* marks GSO packets as IPIP / IP6IP6 ones, so the stack
// segments them with both headers.
//
// MTU: the encapsulated packet is the client's plus 20 (IPv4) or 40 (IPv6) bytes. The FIB is
// asked with that length; when it does not fit, the client gets "fragmentation needed" /
// "packet too big" with the link's MTU less the overhead (lib/pmtu.h builds it from the
// unencapsulated packet, the endpoint's reply path being none of our business), so its
// path MTU shrinks before the tunnel's does. Like every other flow, a packet within the
// length the cached next hop already carried goes straight out. An IPv4 packet that may be
// fragmented (no DF: fragments themselves, say) and does not fit the tunnel is left to the
// stack, which cannot deliver it (no fragmentation of the outer packet here): L3-DSR needs
// a path MTU towards the endpoints of at least the clients' plus the outer header, as
// every IPIP deployment does. Fragments that fit follow their first one (frag.h).
#pragma once

#define IPPROTO_IPIP_  4
#define IPPROTO_IPV6_  41
#define L3DSR_TTL      64

// The main program's way in for flows that need a program of their own (nat64.h, here).
static __always_inline int tail_call_flow(struct __sk_buff *skb, __u8 flags)
{
    jmp_map.call(skb, flags & CT_F_XLAT ? JMP_XLAT : JMP_L3DSR);
    return TC_ACT_SHOT;                        // no such program: drop, never leak
}

// The outer packet's FIB lookup: (src -> ep) with the encapsulated length.
static __always_inline int l3dsr_fib(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                                     struct addr *dst, __u32 len, struct bpf_fib_lookup *f)
{
    f->ifindex = skb->ingress_ifindex;
    f->l4_protocol = p->k.family == 4 ? IPPROTO_IPIP_ : IPPROTO_IPV6_;
    f->tot_len = len;
    if (p->k.family == 4) {
        f->family = AF_INET_;
        f->ipv4_src = src->w[0];
        f->ipv4_dst = dst->w[0];
    } else {
        f->family = AF_INET6_;
        __builtin_memcpy(f->ipv6_src, src->w, 16);
        __builtin_memcpy(f->ipv6_dst, dst->w, 16);
    }
    return bpf_fib_lookup(skb, f, sizeof(*f), 0);
}

// Prepend the outer header (src -> dst) to the packet in hand.
static __always_inline int l3dsr_encap(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                                       struct addr *dst)
{
    __u32 inner = skb->len - p->l3_off;
    if (p->k.family == 4) {
        struct iphdr in;
        if (bpf_skb_load_bytes(skb, p->l3_off, &in, sizeof(in)))
            return -1;
        if (bpf_skb_adjust_room(skb, sizeof(struct iphdr), BPF_ADJ_ROOM_MAC,
                                BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
            return -1;
        struct iphdr out;
        ip4_header(&out, in.tos, inner + sizeof(out), L3DSR_TTL, IPPROTO_IPIP_, src->w[0],
                   dst->w[0], 0, IP_DF_);
        return bpf_skb_store_bytes(skb, p->l3_off, &out, sizeof(out), 0) ? -1 : 0;
    }
    struct ipv6hdr in;
    if (bpf_skb_load_bytes(skb, p->l3_off, &in, sizeof(in)))
        return -1;
    if (bpf_skb_adjust_room(skb, sizeof(struct ipv6hdr), BPF_ADJ_ROOM_MAC,
                            BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
        return -1;
    struct ipv6hdr out;
    __u8 tclass = (in.priority << 4) | (in.flow_lbl[0] >> 4);
    ip6_header(&out, tclass, inner, L3DSR_TTL, IPPROTO_IPV6_, src, dst);
    return bpf_skb_store_bytes(skb, p->l3_off, &out, sizeof(out), 0) ? -1 : 0;
}

// Tail-call body (JMP_L3DSR): a client packet of an L3-DSR flow, tracked and counted by
// the main program. Encapsulate it towards the flow's endpoint and send it.
static __always_inline int handle_l3dsr(struct __sk_buff *skb, struct pkt *p)
{
    if (p->l3_off != sizeof(struct ethhdr))
        return TC_ACT_SHOT;                    // VLAN-tagged: not encapsulated here
    if (p->frag == FRAG_LATER && frag_ports(p, bpf_ktime_get_coarse_ns()))
        return TC_ACT_OK;                      // as the main program did (frag.h)
    int syn;                                   // a TCP handshake's flow: syn_map (tcpstate.h)
    struct ct_entry *e = ct_find(&p->k, &syn);
    if (!e || !(e->flags & CT_F_IPIP))
        return TC_ACT_OK;
    struct addr src = e->t.snat, dst = e->t.ep;
    __u32 over = p->k.family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
    __u32 len = l3_len(skb, p) + over;
    __u32 gen = nh_generation();
    struct nexthop nh;
    int rc = BPF_FIB_LKUP_RET_SUCCESS;
    struct bpf_fib_lookup f = {};
    if (!nh_get(e, p, gen, len, &nh)) {
        // Routed as the client's packet would be (its source), with the tunnel's length.
        rc = l3dsr_fib(skb, p, &p->k.src, &dst, len, &f);
        if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
            // The client's packet, unencapsulated, is what pmtu.h answers about.
            skb->cb[0] = f.mtu_result > over ? f.mtu_result - over : 0;
            jmp_map.call(skb, JMP_TOO_BIG);
            return TC_ACT_SHOT;
        }
        if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
            return TC_ACT_SHOT;
        // The tunnel's source: our own address on the egress link (as one-arm's source),
        // kept in the entry's snat (for DSR otherwise the client's own) for the cache.
        struct ifaddr_key ik = {.ifindex = f.ifindex, .family = p->k.family};
        struct addr *own = ifaddr_map.lookup(&ik);
        if (!own)
            return TC_ACT_SHOT;
        src = *own;
        if (!addr_eq(&e->t.snat, &src))
            e->t.snat = src;
        if (rc == BPF_FIB_LKUP_RET_SUCCESS)
            nh_store(e, p, &f, gen, len, &nh);
    }
    if (p->frag == FRAG_FIRST)
        frag_record(p);                        // the later fragments follow it (frag.h)
    if (l3dsr_encap(skb, p, &src, &dst))
        return TC_ACT_SHOT;
    p->k.src = src;
    p->k.dst = dst;
    p->ttl = L3DSR_TTL;
    if (rc == BPF_FIB_LKUP_RET_SUCCESS)
        return xlat_send(skb, p, &nh);         // outer TTL - 1, MACs, out
    struct bpf_redir_neigh rn = {};            // neighbour not resolved yet: the kernel does
    if (p->k.family == 4) {
        rn.nh_family = AF_INET_;
        rn.ipv4_nh = f.ipv4_dst;
    } else {
        rn.nh_family = AF_INET6_;
        __builtin_memcpy(rn.ipv6_nh, f.ipv6_dst, 16);
    }
    return redirect_neigh(f.ifindex, &rn, sizeof(rn), 0);
}
