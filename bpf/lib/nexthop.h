// nexthop.h - the next hop cached in each conntrack entry (struct nexthop), so an
// established packet needs no FIB lookup and no neighbour lookup: the MACs are written
// directly and bpf_redirect sends it. The cache is only a shortcut past lib/fwd.h: an
// entry of an older route generation, a packet longer than any the FIB let through on
// this path (Path MTU discovery stays the FIB's), an unresolved neighbour or a VLAN tag all
// take the full path, which refills the cache when the FIB answers "success".
#pragma once

static __always_inline __u32 nh_generation(void)
{
    __u32 zero = 0;
    __u32 *g = nh_gen_map.lookup(&zero);
    return g ? *g : 0;
}

// Copy e's next hop into `nh`; 1 if it may carry this packet (L3 length `len`) now.
// The copy is taken once, so a concurrent refill cannot mix two next hops in one packet.
static __always_inline int nh_get(struct ct_entry *e, struct pkt *p, __u32 gen, __u32 len,
                                  struct nexthop *nh)
{
    *nh = e->nh;
    return nh->ifindex && nh->gen == gen && len <= nh->mtu && p->l3_off == sizeof(struct ethhdr);
}

// Byte by byte: the FIB result's MACs are not aligned (the verifier refuses wider loads).
static __always_inline int mac_eq(__u8 *a, __u8 *b)
{
    return !((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
             (a[5] ^ b[5]));
}

// 1 if `n` already holds the FIB's answer `f` in generation `gen`: then it is only widened
// to `len` if a longer packet got through (other CPUs read these lines: write what changed).
static __always_inline int nh_keep(struct nexthop *n, struct bpf_fib_lookup *f, __u32 gen,
                                   __u32 len)
{
    if (n->ifindex != f->ifindex || n->gen != gen || !mac_eq(n->dmac, f->dmac) ||
        !mac_eq(n->smac, f->smac))
        return 0;
    if (n->mtu < len)
        n->mtu = len;
    return 1;
}

// Another next hop into `n`: hidden (ifindex 0) while it is written, so no CPU can use half
// of it, and shown by nh_publish once whatever goes with it is written too.
static __always_inline void nh_fill(struct nexthop *n, struct bpf_fib_lookup *f, __u32 gen,
                                    __u32 len)
{
    n->ifindex = 0;
    asm volatile("" ::: "memory");
    n->gen = gen;
    n->mtu = len;
    __builtin_memcpy(n->dmac, f->dmac, 6);
    __builtin_memcpy(n->smac, f->smac, 6);
}

static __always_inline void nh_publish(struct nexthop *n, __u32 ifindex)
{
    asm volatile("" ::: "memory");
    n->ifindex = ifindex;
}

// The FIB said "success" for this packet (L3 length `len`): remember its answer in `e`
// (nh_keep, nh_fill) and return it in `nh`.
static __always_inline void nh_store(struct ct_entry *e, struct pkt *p,
                                     struct bpf_fib_lookup *f, __u32 gen, __u32 len,
                                     struct nexthop *nh)
{
    nh->ifindex = f->ifindex;
    nh->gen = gen;
    nh->mtu = len;
    __builtin_memcpy(nh->dmac, f->dmac, 6);
    __builtin_memcpy(nh->smac, f->smac, 6);
    if (p->l3_off != sizeof(struct ethhdr))
        return;                                // VLAN: never from the cache
    if (nh_keep(&e->nh, f, gen, len))
        return;
    nh_fill(&e->nh, f, gen, len);
    nh_publish(&e->nh, f->ifindex);
}

// -- a next hop per endpoint, for new flows -----------------------------------------------
// A new flow's first packet would otherwise ask the FIB for its endpoint (110-400 ns here:
// a different neighbour entry per endpoint). While routing depends on the destination alone
// (only the default `ip rule`s, no VRF, no IPv6 source-specific route, no multipath route:
// the daemon decides, appliance/netlink.py RoutingWatch), the FIB gives every flow to an
// endpoint the same answer, whatever the source (the client's, the SNAT address, one-arm's
// own), so the last successful answer is kept per endpoint id. Valid only in the generation
// it was resolved in AND one the daemon vouched for (slot 0, below); for the address it was
// resolved for (ids are reused); for the ingress interface it was asked for (the FIB
// refuses to forward from an interface with forwarding off); up to the longest L3 length the
// FIB let through (Path MTU discovery stays the FIB's); never with a VLAN tag. Anything else
// takes the FIB, which refills it. Ids from EP_NH_ARRAY up (rare) always take the FIB.
#define EP_NH_ARRAY       65536      // as EP_STATS_ARRAY: ids are dense, most are below
#define EP_NH_ON          1          // slot 0's nh.ifindex: the daemon vouches for nh.gen

struct ep_nexthop {
    struct nexthop nh;      // as in a conntrack entry; nh.gen: the route generation
    struct addr ep;         // the endpoint address it was resolved for
    __u32 iif;              // the ingress interface the FIB was asked for
    __u32 pad;
};

// Slot 0 (no endpoint has id 0) is the daemon's word: nh.ifindex == EP_NH_ON and nh.gen ==
// the generation in which it found routing by destination alone. A bump makes it stale until
// the daemon has looked again, so anything that bumps the generation turns the cache off.
BPF_TABLE_PINNED("array", __u32, struct ep_nexthop, ep_nh_arr, EP_NH_ARRAY, PIN("epnh"));

// Whether the daemon vouches for routing by destination alone in generation `gen`, and the
// packet is one whose FIB answer may come from an endpoint's cache.
static __always_inline int ep_nh_usable(struct pkt *p, __u32 ep_id, __u32 gen)
{
    if (ep_id == 0 || ep_id >= EP_NH_ARRAY || p->l3_off != sizeof(struct ethhdr))
        return 0;
    // IPv6: the FIB never forwards from a link-local or multicast source (rt6_need_strict).
    if (p->k.family == 6 && ((p->k.src.w[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000) ||
                             (p->k.src.w[0] & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000)))
        return 0;
    __u32 zero = 0;
    struct ep_nexthop *c = ep_nh_arr.lookup(&zero);
    return c && c->nh.ifindex == EP_NH_ON && c->nh.gen == gen;
}

// The next hop cached for endpoint `ep_id` at `addr` into `nh` (a new conntrack entry's);
// 1 if this packet (L3 length `len`, arrived on skb's ingress interface) may use it now,
// else 0 with nh->ifindex 0 (the entry caches nothing yet).
static __always_inline int ep_nh_get(struct __sk_buff *skb, struct pkt *p, __u32 ep_id,
                                     struct addr *addr, __u32 gen, __u32 len,
                                     struct nexthop *nh)
{
    if (!ep_nh_usable(p, ep_id, gen))
        return 0;
    struct ep_nexthop *x = ep_nh_arr.lookup(&ep_id);
    if (!x)
        return 0;
    *nh = x->nh;                               // one copy (as nh_get)
    if (nh->ifindex && nh->gen == gen && len <= nh->mtu && x->iif == skb->ingress_ifindex &&
        x->ep.w[0] == addr->w[0] && x->ep.w[1] == addr->w[1] && x->ep.w[2] == addr->w[2] &&
        x->ep.w[3] == addr->w[3])
        return 1;
    nh->ifindex = 0;
    return 0;
}

// The FIB said "success" for a new flow to endpoint `ep_id` at `addr` (L3 length `len`):
// keep its answer (nh_keep, nh_fill: other CPUs read this line on every new flow to the
// endpoint).
static __always_inline void ep_nh_store(struct __sk_buff *skb, struct pkt *p, __u32 ep_id,
                                        struct addr *addr, struct bpf_fib_lookup *f, __u32 gen,
                                        __u32 len)
{
    if (!ep_nh_usable(p, ep_id, gen))
        return;
    struct ep_nexthop *x = ep_nh_arr.lookup(&ep_id);
    if (!x)
        return;
    __u32 iif = skb->ingress_ifindex;
    if (x->iif == iif && x->ep.w[0] == addr->w[0] && x->ep.w[1] == addr->w[1] &&
        x->ep.w[2] == addr->w[2] && x->ep.w[3] == addr->w[3] && nh_keep(&x->nh, f, gen, len))
        return;
    nh_fill(&x->nh, f, gen, len);
    x->ep = *addr;
    x->iif = iif;
    nh_publish(&x->nh, f->ifindex);
}
