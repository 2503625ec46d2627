// snatpool.h - a full-NAT service's source-address pool (snat-address plus snat-pool):
// NAT64/NAT46 services in particular, whose IPv6 (IPv4) clients all leave through the
// appliance's few IPv4 (IPv6) addresses. A new flow takes one pool address by a hash of
// the client's address, so one client's flows share a source (applications that pair
// connections by address keep working) while clients spread over the pool, and each
// address brings its own 64,512 source ports per endpoint.
#pragma once

#define SNAT_POOL_MAX 8

struct snat_pool {
    __u32 n;                        // addresses in a[] (1..SNAT_POOL_MAX)
    __u32 pad;
    struct addr a[SNAT_POOL_MAX];
};

BPF_TABLE_PINNED("hash", __u32, struct snat_pool, snat_pool_map, MAX_SERVICES, PIN("snatpool"),
                 NO_PREALLOC);

static __always_inline void snat_from_pool(__u32 svc_id, struct addr *client, struct addr *snat)
{
    struct snat_pool *pool = snat_pool_map.lookup(&svc_id);
    if (!pool || !pool->n)
        return;                                // svc_info.snat stays
    __u32 i = hash_addr(client, 0x5a7) % pool->n;
    asm volatile("" : "+r"(i));                // keep the check below (see select.h)
    if (i < SNAT_POOL_MAX)
        *snat = pool->a[i];
}
