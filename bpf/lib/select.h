// select.h - endpoint selection. The control plane builds a per-service selection table
// (sel_map, keyed service id x slot) holding only eligible endpoints:
//   round-robin / priority / least-connections: eligible endpoints in config order;
//   weighted: a smooth weighted round-robin sequence; hash / persistence: the weighted
//   sequence; maglev: the Maglev lookup table (prime size).
// The datapath only picks a slot. Slots are stored SEL_PAGE to a map entry (see consts.h).
// Two generations (page bit 31) let a whole new table be written before svc_info.gen
// flips to it in one map update.
#pragma once

#define SEL_GEN_BIT 0x80000000u

static __always_inline __u32 sel_slot(struct svc_info *s, __u32 slot)
{
    if (s->n_slots <= SEL_SMALL) {
        __u32 i = s->id * 2 + (s->gen ? 1 : 0);
        struct sel_small *sm = sel_small_map.lookup(&i);
        asm volatile("" : "+r"(slot));         // see below
        if (!sm || slot >= SEL_SMALL)
            return 0;
        return sm->ep[slot];
    }
    struct sel_key k = {.svc_id = s->id, .page = slot / SEL_PAGE | (s->gen ? SEL_GEN_BIT : 0)};
    struct sel_page *pg = sel_map.lookup(&k);
    __u32 off = slot % SEL_PAGE;
    // LLVM knows off < SEL_PAGE and would drop the check below; the verifier does not
    // know it (it does not track a modulo) and wants the check: hide off from LLVM.
    asm volatile("" : "+r"(off));
    if (!pg || off >= SEL_PAGE)
        return 0;
    return pg->ep[off];
}

static __always_inline __u32 mix32(__u32 h)
{
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

static __always_inline __u32 hash_addr(struct addr *a, __u32 h)
{
    h = mix32(h ^ a->w[0]);
    h = mix32(h ^ a->w[1]);
    h = mix32(h ^ a->w[2]);
    return mix32(h ^ a->w[3]);
}

static __always_inline __u32 hash_flow(struct pkt *p)
{
    __u32 h = hash_addr(&p->k.src, 0x5eed);
    h = hash_addr(&p->k.dst, h);
    return mix32(h ^ (((__u32)p->k.sport << 16) | p->k.dport) ^ ((__u32)p->k.proto << 8));
}

static __always_inline int ep_eligible(__u32 ep_id, __u32 svc_id)
{
    struct ep_info *e = ep_arr.lookup(&ep_id);
    return e && e->svc_id == svc_id && (e->flags & EP_F_ELIGIBLE);
}

// The least loaded endpoint among ids[start..end) (end - start <= LC_SCAN, end <= cap).
static __always_inline __u32 lc_scan(__u32 *ids, __u32 start, __u32 end, const __u32 cap)
{
    __u32 best = 0;
    __s64 best_n = 0x7fffffffffffffffLL;
    // Unrolled: a new flow of a 32-endpoint service pays ~30 % less for its scan than
    // through the loop (bench/newflow_stages.py, stage 3).
#pragma unroll
    for (__u32 i = 0; i < LC_SCAN; i++) {
        __u32 o = start + i;
        if (o >= end)
            break;
        asm volatile("" : "+r"(o));            // see sel_slot: keep the check below
        if (o >= cap)
            break;
        __u32 id = ids[o];
        if (!id)
            continue;
        __s64 *c = ep_active.lookup(&id);
        __s64 v = c ? *c : 0;
        if (v < best_n) {
            best_n = v;
            best = id;
        }
    }
    return best;
}

// Exact for services with up to LC_SCAN slots. A bigger service is cut into windows of up
// to LC_SCAN consecutive slots within one selection page (a page holds 31 whole windows and
// a shorter last one); each new flow scans the window of a random slot (so a window is
// chosen in proportion to its size and every endpoint gets its share) and takes its least
// loaded endpoint. The per-flow cost stays bounded: one page lookup, then one gauge lookup
// a slot (the verifier will not take a longer or differently shaped loop here).
static __always_inline __u32 select_leastconn(struct svc_info *s)
{
    __u32 n = s->n_slots;
    __u32 slot = n > LC_SCAN ? bpf_get_prandom_u32() % n : 0;
    __u32 page = slot / SEL_PAGE;
    __u32 start = slot % SEL_PAGE / LC_SCAN * LC_SCAN;
    __u32 end = n - page * SEL_PAGE;           // slots in this page
    if (end > SEL_PAGE)
        end = SEL_PAGE;
    if (n <= SEL_SMALL) {
        __u32 i = s->id * 2 + (s->gen ? 1 : 0);
        struct sel_small *sm = sel_small_map.lookup(&i);
        return sm ? lc_scan(sm->ep, 0, n, SEL_SMALL) : 0;
    }
    struct sel_key k = {.svc_id = s->id, .page = page | (s->gen ? SEL_GEN_BIT : 0)};
    struct sel_page *pg = sel_map.lookup(&k);
    return pg ? lc_scan(pg->ep, start, end, SEL_PAGE) : 0;
}

static __always_inline __u32 select_persist(struct svc_info *s, struct pkt *p, __u64 now)
{
    struct persist_key k = {.svc_id = s->id, .client = p->k.src};
    struct persist_val *v = persist_map.lookup(&k);
    if (v && now - v->last_ns < (__u64)s->persist_s * NSEC && ep_eligible(v->ep_id, s->id)) {
        v->last_ns = now;
        return v->ep_id;
    }
    __u32 id = sel_slot(s, hash_addr(&p->k.src, s->id) % s->n_slots);
    if (id) {
        struct persist_val nv = {.ep_id = id, .last_ns = now};
        persist_map.update(&k, &nv);
    }
    return id;
}

// The endpoint id for a new flow, 0 if the service has no eligible endpoint.
static __always_inline __u32 select_endpoint(struct svc_info *s, struct pkt *p, __u64 now)
{
    __u32 n = s->n_slots;
    if (n == 0)
        return 0;
    switch (s->algo) {
    case ALG_RR:
    case ALG_WEIGHTED: {
        __u32 sid = s->id;
        __u64 *ctr = rr_map.lookup(&sid);
        if (!ctr)
            return 0;
        // One atomic fetch-add (BPF_ATOMIC | BPF_FETCH, 64-bit): two CPUs taking new flows
        // at the same instant get consecutive slots, never the same one.
        __u64 c = __sync_fetch_and_add(ctr, 1);
        return sel_slot(s, (__u32)(c % n));
    }
    case ALG_HASH:
    case ALG_MAGLEV:
        return sel_slot(s, hash_flow(p) % n);
    case ALG_PRIORITY:
        return sel_slot(s, 0);
    case ALG_LEASTCONN:
        return select_leastconn(s);
    case ALG_PERSIST:
        return select_persist(s, p, now);
    }
    return 0;
}
