// fwd.h - forward a translated packet: FIB lookup, then redirect with neighbour
// resolution. A packet too big for the egress link goes to lib/pmtu.h (tail call);
// anything else the FIB cannot forward directly goes to the stack (TC_ACT_OK).
#pragma once

#define AF_INET_  2
#define AF_INET6_ 10

// bcc 0.26 declares bpf_redirect_neigh with 3 parameters; the kernel helper takes 4.
static long (*redirect_neigh)(__u32, void *, int, __u64) = (void *)BPF_FUNC_redirect_neigh;

// The L3 length the FIB checks against the route's MTU. A GSO packet (TSO from a local
// sender, or GRO) leaves as segments: what must fit is one segment, not the whole skb.
static __always_inline __u16 l3_len(struct __sk_buff *skb, struct pkt *p)
{
    __u32 gso = skb->gso_size;
    if (skb->gso_segs <= 1 || !gso)
        return p->len - p->l3_off;
    __u32 l4h = 8;                             // UDP (UDP_SEGMENT)
    if (p->k.proto == IPPROTO_TCP) {
        __u8 doff = 0;
        bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1);
        l4h = (doff >> 4) * 4;
    }
    return p->l4_off - p->l3_off + l4h + gso;
}

// FIB lookup for (src -> dst) as if the packet came in on `ifindex`. Fills `f`.
static __always_inline int fib(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                               struct addr *dst, struct bpf_fib_lookup *f)
{
    f->ifindex = skb->ingress_ifindex;
    f->l4_protocol = p->k.proto;
    f->tot_len = l3_len(skb, p);
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

// After the FIB lookup `rc`/`f` (and the NAT): hand the packet on. Too big for the egress
// link: lib/pmtu.h answers the sender; anything the FIB cannot forward directly goes to the
// stack; otherwise TTL - 1 and redirect with neighbour resolution.
static __always_inline int fwd_finish(struct __sk_buff *skb, struct pkt *p, int rc,
                                      struct bpf_fib_lookup *f)
{
    if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        skb->cb[0] = f->mtu_result;            // lib/pmtu.h answers the sender
        jmp_map.call(skb, JMP_TOO_BIG);
        return TC_ACT_OK;                      // no tail-call target: the stack decides
    }
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
        return TC_ACT_OK;
    if (dec_ttl(skb, p))
        return TC_ACT_SHOT;
    // The FIB result holds the next hop (gateway or the destination itself).
    struct bpf_redir_neigh nh = {};
    if (p->k.family == 4) {
        nh.nh_family = AF_INET_;
        nh.ipv4_nh = f->ipv4_dst;
    } else {
        nh.nh_family = AF_INET6_;
        __builtin_memcpy(nh.ipv6_nh, f->ipv6_dst, 16);
    }
    return redirect_neigh(f->ifindex, &nh, sizeof(nh), 0);
}

// FIB lookup + fwd_finish, for a packet already translated (ICMP errors).
static __always_inline int forward(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                                   struct addr *dst)
{
    struct bpf_fib_lookup f = {};
    int rc = fib(skb, p, src, dst, &f);
    return fwd_finish(skb, p, rc, &f);
}
