// ct_tables.h - the one way into the conntrack tables. IPv4 keys live in ct4_map/syn4_map
// under a compact 20-byte key (struct ct4_key), IPv6 keys in ct_map/syn_map under struct
// ct_key; callers always hold a struct ct_key, and these pick the table by its family.
// A NAT64/46 flow has its two entries in two tables (the REPLY key is the endpoint's
// family). ct_get/put/set/del: lookup, insert (BPF_NOEXIST), update, delete in the main
// tables; syn_get/put/del: the TCP handshakes' tables (lib/tcpstate.h, whose ct_find,
// ct_insert and ct_claim choose between the two). appliance/datapath/cttables.py is the
// Python side of the same choice.
//
// The compact key is not built on the stack: every inlined copy of a 20-byte local would
// take stack the balancer does not have (512 bytes), and bcc links no BPF-to-BPF calls. It
// is the tail of the caller's own key (structs.h struct ct4_key), made for the one map call
// and undone after it. So a key passed here must be the caller's own (stack, ring record,
// per-CPU scratch), never a value in a shared map that another CPU may read meanwhile.
#pragma once

// The compact key inside `k` (an IPv4 key): the addresses into dst.w[2..3] (zero words).
static __always_inline struct ct4_key *ct4_key_in(struct ct_key *k)
{
    k->dst.w[2] = k->src.w[0];
    k->dst.w[3] = k->dst.w[0];
    return (struct ct4_key *)&k->dst.w[2];
}

static __always_inline void ct4_key_out(struct ct_key *k)
{
    k->dst.w[2] = 0;
    k->dst.w[3] = 0;
}

// `fam`: the key's family when the program knows it as it is verified (4 or 6: lb.c's
// per-family balancers, for their packet's own key), else 0 (read from the key at run
// time). The verifier keeps a pointer into ct4_map and one into ct_map apart: after a
// lookup whose table is chosen at run time it walks everything that uses the entry once
// per table, which the balancer's budget cannot pay (lb.c sluice_lb).
#define CT_KEY_V4(k, fam) ((fam) ? (fam) == 4 : (k)->family == 4)

static __always_inline struct ct_entry *ct_get_f(struct ct_key *k, const int fam)
{
    if (!CT_KEY_V4(k, fam))
        return ct_map.lookup(k);
    struct ct_entry *e = ct4_map.lookup(ct4_key_in(k));
    ct4_key_out(k);
    return e;
}

static __always_inline struct ct_entry *ct_get(struct ct_key *k)
{
    return ct_get_f(k, 0);
}

static __always_inline int ct_put(struct ct_key *k, struct ct_entry *e)
{
    if (k->family != 4)
        return ct_map.insert(k, e);
    int r = ct4_map.insert(ct4_key_in(k), e);
    ct4_key_out(k);
    return r;
}

static __always_inline int ct_set(struct ct_key *k, struct ct_entry *e)
{
    if (k->family != 4)
        return ct_map.update(k, e);
    int r = ct4_map.update(ct4_key_in(k), e);
    ct4_key_out(k);
    return r;
}

static __always_inline int ct_del(struct ct_key *k)
{
    if (k->family != 4)
        return ct_map.delete(k);
    int r = ct4_map.delete(ct4_key_in(k));
    ct4_key_out(k);
    return r;
}

static __always_inline struct ct_entry *syn_get_f(struct ct_key *k, const int fam)
{
    if (!CT_KEY_V4(k, fam))
        return syn_map.lookup(k);
    struct ct_entry *e = syn4_map.lookup(ct4_key_in(k));
    ct4_key_out(k);
    return e;
}

static __always_inline struct ct_entry *syn_get(struct ct_key *k)
{
    return syn_get_f(k, 0);
}

static __always_inline int syn_put(struct ct_key *k, struct ct_entry *e)
{
    if (k->family != 4)
        return syn_map.insert(k, e);
    int r = syn4_map.insert(ct4_key_in(k), e);
    ct4_key_out(k);
    return r;
}

static __always_inline int syn_del(struct ct_key *k)
{
    if (k->family != 4)
        return syn_map.delete(k);
    int r = syn4_map.delete(ct4_key_in(k));
    ct4_key_out(k);
    return r;
}
