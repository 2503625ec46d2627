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
// VLAN: the client's tags (the one the kernel took into skb metadata and one more in the
// frame, QinQ) belong to the client's link, not the endpoint's: they are popped first
// (lib/vlan.h, in lb.c sluice_l3dsr).
//
// MTU: the encapsulated packet is the client's plus 20 (IPv4) or 40 (IPv6) bytes. The FIB is
// asked with that length; when it does not fit, the client gets "fragmentation needed" /
// "packet too big" with the link's MTU less the overhead (lib/pmtu.h builds it from the
// unencapsulated packet, the endpoint's reply path being none of our business), so its
// path MTU shrinks before the tunnel's does. Like every other flow, a packet within the
// length the cached next hop already carried goes straight out. An IPv4 packet that may be
// fragmented (DF clear: fragments themselves, or a sender that does no PMTU discovery) is
// sent in outer fragments instead, as an IPIP tunnel device does (RFC 2003 5.1; the
// endpoint's stack reassembles the outer packet before decapsulating): every fragment's
// bytes but the last one's are cut out from the front (kept in a per-CPU buffer); the last
// is sent by bpf_clone_redirect; then, backwards, each one's bytes are put back at the
// front and the tail after them cut off, the middle ones sent as clones, the first as the
// packet itself. Limits (then the packet is dropped, as before): a fragment's inner part
// at most L3DSR_FRAG_MAX bytes (bpf_skb_adjust_room moves at most 4095), L3DSR_FRAGS
// fragments (a 9,000-byte jumbo frame into a 1,500-byte tunnel takes 7), no GSO packet;
// while the endpoint's neighbour is unresolved only the first fragment goes (resolving it:
// that datagram is lost).
// Fragments that fit follow their first one (frag.h).
#pragma once

#define IPPROTO_IPIP_  4
#define IPPROTO_IPV6_  41
#define L3DSR_TTL      64
#define L3DSR_FRAG_MAX 4088                    // a multiple of 8, under adjust_room's 4095
#define L3DSR_FRAGS    8                       // outer fragments of one packet, at most

struct l3dsr_buf {
    __u8 b[L3DSR_FRAGS - 1][L3DSR_FRAG_MAX];   // 28,616 bytes: a per-CPU value takes 32 KiB
};
// Every fragment's inner bytes but the last one's while the others are sent (per CPU, not
// pinned).
BPF_PERCPU_ARRAY(l3dsr_frag_buf, struct l3dsr_buf, 1);

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

// Outer header of one fragment: `inner` bytes of the client's packet from byte `off` on.
static __always_inline int l3dsr_frag_hdr(struct __sk_buff *skb, struct pkt *p, __u8 tos,
                                          __u32 inner, __u32 off, int more, __be16 id,
                                          struct addr *src, struct addr *dst)
{
    struct iphdr out;
    ip4_header(&out, tos, inner + sizeof(out), L3DSR_TTL - 1, IPPROTO_IPIP_, src->w[0],
               dst->w[0], id, (off >> 3) | (more ? IP_MF_ : 0));
    return bpf_skb_store_bytes(skb, p->l3_off, &out, sizeof(out), BPF_F_RECOMPUTE_CSUM);
}

// An IPv4 packet with DF clear that does not fit the tunnel (link MTU `mtu`): encapsulate
// it in outer fragments (see the top). Returns a TC verdict, -1 if it is not ours to
// fragment (DF set, GSO: the caller answers "fragmentation needed").
static __always_inline int l3dsr_fragment(struct __sk_buff *skb, struct pkt *p,
                                          struct addr *dst, __u32 mtu)
{
    struct iphdr in;
    if (p->l3_off != sizeof(struct ethhdr) || skb->gso_segs > 1 ||
        bpf_skb_load_bytes(skb, p->l3_off, &in, sizeof(in)) || (in.frag_off & bpf_htons(IP_DF_)))
        return -1;
    __u32 inner = skb->len - p->l3_off;
    __u32 per = (mtu - sizeof(struct iphdr)) & ~7U;   // inner bytes per fragment but the last
    if (mtu <= sizeof(struct iphdr) + 8 || per > L3DSR_FRAG_MAX || inner <= per ||
        inner > per * L3DSR_FRAGS)
        return TC_ACT_SHOT;                    // more than L3DSR_FRAGS fragments: beyond this
    __u32 n = (inner + per - 1) / per;         // 2 ..= L3DSR_FRAGS
    // The egress and the tunnel's source, as for a packet that fits (asked with the MTU).
    struct bpf_fib_lookup f = {};
    int rc = l3dsr_fib(skb, p, &p->k.src, dst, mtu, &f);
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
        return TC_ACT_SHOT;
    struct ifaddr_key ik = {.ifindex = f.ifindex, .family = 4};
    struct addr *own = ifaddr_map.lookup(&ik);
    __u32 zero = 0;
    struct l3dsr_buf *buf = l3dsr_frag_buf.lookup(&zero);
    if (!own || !buf)
        return TC_ACT_SHOT;
    struct addr src = *own;
    __be16 id = (__be16)bpf_get_prandom_u32();
    __u32 hdr = p->l3_off + sizeof(struct iphdr);
    if (bpf_skb_adjust_room(skb, sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, 0))
        return TC_ACT_SHOT;                    // room for the outer header
    per &= 0xFF8;                              // for the verifier: per <= L3DSR_FRAG_MAX
    if (!per)
        return TC_ACT_SHOT;
    if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
        // Every fragment's bytes but the last one's cut out (kept, in order), from the
        // front; what is left is the last fragment: sent as a clone.
        if (bpf_skb_store_bytes(skb, 0, f.dmac, 6, 0) ||
            bpf_skb_store_bytes(skb, 6, f.smac, 6, 0))
            return TC_ACT_SHOT;
#pragma unroll
        for (__u32 k = 0; k < L3DSR_FRAGS - 1; k++) {
            if (k + 1 >= n)
                break;
            if (bpf_skb_load_bytes(skb, hdr, buf->b[k], per) ||
                bpf_skb_adjust_room(skb, -(__s32)per, BPF_ADJ_ROOM_NET, 0))
                return TC_ACT_SHOT;
        }
        __u32 last = (n - 1) * per;
        if (l3dsr_frag_hdr(skb, p, in.tos, inner - last, last, 0, id, &src, dst) ||
            bpf_clone_redirect(skb, f.ifindex, 0))
            return TC_ACT_SHOT;
        // Then backwards: a fragment's bytes back at the front, the tail after them cut
        // off (sent already), the middle ones as clones; the first one is the packet itself.
#pragma unroll
        for (int k = L3DSR_FRAGS - 2; k >= 0; k--) {
            if (k + 1 >= n)
                continue;
            if (bpf_skb_adjust_room(skb, per, BPF_ADJ_ROOM_NET, 0) ||
                bpf_skb_store_bytes(skb, hdr, buf->b[k], per, BPF_F_RECOMPUTE_CSUM) ||
                bpf_skb_change_tail(skb, hdr + per, 0))
                return TC_ACT_SHOT;
            if (!k)
                break;
            if (l3dsr_frag_hdr(skb, p, in.tos, per, k * per, 1, id, &src, dst) ||
                bpf_clone_redirect(skb, f.ifindex, 0))
                return TC_ACT_SHOT;
        }
    } else if (bpf_skb_change_tail(skb, hdr + per, 0)) {
        return TC_ACT_SHOT;
    }
    if (l3dsr_frag_hdr(skb, p, in.tos, per, 0, 1, id, &src, dst))
        return TC_ACT_SHOT;
    if (rc == BPF_FIB_LKUP_RET_SUCCESS)
        return bpf_redirect(f.ifindex, 0);
    // The endpoint's neighbour is not resolved yet: the first fragment alone goes through
    // the kernel's neighbour code, which resolves it. This datagram is lost (a clone cannot
    // wait for the neighbour); the next ones go whole.
    struct bpf_redir_neigh rn = {.nh_family = AF_INET_, .ipv4_nh = f.ipv4_dst};
    return redirect_neigh(f.ifindex, &rn, sizeof(rn), 0);
}

// Tail-call body (JMP_L3DSR): a client packet of an L3-DSR flow, tracked and counted by
// the main program (and its VLAN tags popped: lib/vlan.h). Encapsulate it towards the
// flow's endpoint and send it.
static __always_inline int handle_l3dsr(struct __sk_buff *skb, struct pkt *p)
{
    if (p->l3_off != sizeof(struct ethhdr))
        return TC_ACT_SHOT;                    // a tag vlan_untag could not pop
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
        if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && p->k.family == 4) {
            int v = l3dsr_fragment(skb, p, &dst, f.mtu_result);
            if (v != -1)
                return v;                      // DF clear: sent in outer fragments
        }
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
