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

// The FIB said "success" for this packet (L3 length `len`): remember its answer in `e`
// (writing only what changed) and return it in `nh`. A refill of another next hop hides
// the entry (ifindex 0) while it is written, so no CPU can use half of it.
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
    if (e->nh.ifindex == f->ifindex && e->nh.gen == gen && mac_eq(e->nh.dmac, f->dmac) &&
        mac_eq(e->nh.smac, f->smac)) {
        if (e->nh.mtu < len)
            e->nh.mtu = len;                   // a longer packet got through
        return;
    }
    e->nh.ifindex = 0;
    asm volatile("" ::: "memory");
    e->nh.gen = gen;
    e->nh.mtu = len;
    __builtin_memcpy(e->nh.dmac, f->dmac, 6);
    __builtin_memcpy(e->nh.smac, f->smac, 6);
    asm volatile("" ::: "memory");
    e->nh.ifindex = f->ifindex;
}
