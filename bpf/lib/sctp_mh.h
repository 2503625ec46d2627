// sctp_mh.h - SCTP after NAT, in the tail-called program sluice_sctp_nat: the CRC32c fix
// for changed ports, and multihoming (full-NAT services with secondary addresses).
//
// Multihoming: an association may use several addresses on each side. The peers list
// their extra addresses in the INIT / INIT ACK (IPv4 / IPv6 address parameters); behind a
// balancer those must be the balancer's own, or the peers would try paths that bypass it.
// So, for a service with secondary addresses (mh_map, written by the driver):
//   INIT (client -> endpoint): the client's address parameters are remembered
//     (mh_peer_map, keyed by the flow's ORIG key) and rewritten to the service's secondary
//     SNAT addresses, in order;
//   INIT ACK (endpoint -> client): the endpoint's are remembered and rewritten to the
//     secondary VIPs;
//   COOKIE ACK (the association is up): for each i, a conntrack pair for the path
//     client address i <-> secondary VIP i <-> secondary SNAT address i <-> endpoint
//     address i, copied from the primary flow (same ports, established, not counted in the
//     active-session gauges), so HEARTBEATs on alternate paths and a failover find state.
// Parameters are rewritten in place (same length, so the CRC32c changes linearly: each
// rewritten word's change carried to the packet's end, lib/crc32c.h). A peer that lists
// more addresses than the service has gets the primary address again for the rest; a peer
// that lists fewer learns only as many secondary addresses (the packet is not grown).
// Parameters of the other address family are left as they are.
#pragma once

#define MH_MAX           4          // secondary addresses per service (mirrored in layout.py)
#define MH_PARAMS        8          // parameters looked at in one INIT / INIT ACK
#define MH_WORDS         (MH_MAX * 4)
#define MH_PEERS         65536
#define SCTP_PARAM_IPV4  5
#define SCTP_PARAM_IPV6  6
#define SCTP_INIT_FIXED  20         // chunk header + INIT's fixed fields
#define SCTP_COMMON_LEN  12

struct mh_addrs {                   // a service's own secondary addresses
    __u32 n;
    __u32 pad;
    struct addr vip[MH_MAX];        // towards the clients
    struct addr snat[MH_MAX];       // towards the endpoints
};

struct mh_peers {                   // an association's peers' extra addresses
    __u32 n_client;
    __u32 n_ep;
    struct addr client[MH_MAX];
    struct addr ep[MH_MAX];
};

struct mh_word {
    __u32 x;                        // old ^ new, as loaded
    __u32 off;                      // from the SCTP common header
};

struct mh_scratch_t {
    struct ct_entry a;              // an alternate path's entry
    struct mh_word words[MH_WORDS]; // rewritten words, for the CRC32c
};

BPF_TABLE_PINNED("hash", __u32, struct mh_addrs, mh_map, MAX_SERVICES, PIN("mh"), NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct mh_peers, mh_peer_map, MH_PEERS,
                 PIN("mhpeer"));
// Off the 512-byte stack: a zeroed peers value to insert, and the alternate paths' entry.
BPF_ARRAY(mh_zero, struct mh_peers, 1);
BPF_PERCPU_ARRAY(mh_scratch, struct mh_scratch_t, 1);


// Rewrite the address parameters of the INIT / INIT ACK in hand (to_ep: an INIT on its way
// to the endpoint), remembering the originals in `pe`; the CRC change goes into *d.
static __always_inline int mh_rewrite(struct __sk_buff *skb, struct pkt *p, struct mh_addrs *own,
                                      struct nat_tuple *t, struct mh_peers *pe, int to_ep,
                                      __u32 *d)
{
    __u32 zero = 0;
    struct mh_scratch_t *sc = mh_scratch.lookup(&zero);
    if (!sc)
        return -1;
    struct mh_word *words = sc->words;
    __u32 nw = 0, n = 0;
    __u32 l4 = p->l4_off, len = sctp_len(skb, p);
    __u32 off = l4 + SCTP_COMMON_LEN + SCTP_INIT_FIXED;
    __u32 end = l4 + len;
    int v6 = p->k.family == 6;
#pragma clang loop unroll(disable)
    for (int i = 0; i < MH_PARAMS; i++) {
        __be16 hdr[2];
        if (off + 4 > end || bpf_skb_load_bytes(skb, off, hdr, 4))
            break;
        __u16 type = bpf_ntohs(hdr[0]), plen = bpf_ntohs(hdr[1]);
        if (plen < 4 || plen > 1500)
            break;
        if (n < MH_MAX && ((!v6 && type == SCTP_PARAM_IPV4 && plen == 8) ||
                           (v6 && type == SCTP_PARAM_IPV6 && plen == 20))) {
            struct addr old = {}, neu = {};
            if (v6 ? bpf_skb_load_bytes(skb, off + 4, &old, 16)
                   : bpf_skb_load_bytes(skb, off + 4, &old, 4))
                return -1;
            __u32 k = n;
            asm volatile("" : "+r"(k));        // keep the bound check for the verifier
            if (k >= MH_MAX)
                break;
            if (to_ep)
                pe->client[k] = old;
            else
                pe->ep[k] = old;
            if (k < own->n)
                neu = to_ep ? own->snat[k] : own->vip[k];
            else
                neu = to_ep ? t->snat : t->vip;
            if (v6 ? bpf_skb_store_bytes(skb, off + 4, &neu, 16, 0)
                   : bpf_skb_store_bytes(skb, off + 4, &neu, 4, 0))
                return -1;
#pragma unroll
            for (int w = 0; w < 4; w++) {
                __u32 j = nw;
                asm volatile("" : "+r"(j));
                if (j >= MH_WORDS || (w > 0 && !v6))
                    break;
                words[j].x = old.w[w] ^ neu.w[w];
                words[j].off = off + 4 + 4 * w - l4;
                nw++;
            }
            n++;
        }
        off += (plen + 3) & ~3u;
    }
    if (to_ep)
        pe->n_client = n;
    else
        pe->n_ep = n;
#pragma clang loop unroll(disable)
    for (int j = 0; j < MH_WORDS; j++) {
        if (j >= nw)
            break;
        __u32 x = words[j].x;
        if (!x)
            continue;
        int ok;
        __u32 dj = crc32c_delta(x, words[j].off, len, &ok);
        if (!ok)
            return -1;
        *d ^= dj;
    }
    return 0;
}

// The association is up: a conntrack pair for every alternate path both peers listed.
static __always_inline void mh_paths(struct ct_key *ok, struct mh_addrs *own)
{
    __u32 zero = 0;
    struct mh_peers *pe = mh_peer_map.lookup(ok);
    struct ct_entry *o = ct_map.lookup(ok);
    struct mh_scratch_t *sc = mh_scratch.lookup(&zero);
    if (!pe || !o || !sc)
        return;
    struct ct_entry *ap = &sc->a;
    // Field by field: a whole-struct copy between two map values goes through the stack.
    // Addresses: set per path below.
    ap->t.client_port = o->t.client_port;
    ap->t.vip_port = o->t.vip_port;
    ap->t.snat_port = o->t.snat_port;
    ap->t.ep_port = o->t.ep_port;
    ap->packets = 0;
    ap->bytes = 0;
    ap->fin_seen = 0;
    ap->nh.ifindex = 0;                        // no next hop: another path, another one
    ap->created_ns = o->created_ns;
    ap->last_ns = o->last_ns;
    ap->svc_id = o->svc_id;
    ap->ep_id = o->ep_id;
    ap->timeout_s = o->timeout_s;
    ap->proto = o->proto;
    ap->family = o->family;
    ap->flags = o->flags & ~CT_F_COUNTED;      // one association, counted once
    ap->state = CT_EST;
#pragma clang loop unroll(disable)
    for (int i = 0; i < MH_MAX; i++) {
        if (i >= pe->n_client || i >= pe->n_ep || i >= own->n)
            break;
        struct ct_key k = {};
        ap->t.client = pe->client[i];
        ap->t.vip = own->vip[i];
        ap->t.snat = own->snat[i];
        ap->t.ep = pe->ep[i];
        ap->dir = CT_DIR_ORIG;
        ct_orig_key(&ap->t, IPPROTO_SCTP, ap->family, &k);
        ct_map.update(&k, ap);
        ap->dir = CT_DIR_REPLY;
        ct_reply_key(&ap->t, IPPROTO_SCTP, ap->family, &k);
        ct_map.update(&k, ap);
    }
}

// Track a flow's state (lb.c): SCTP's own, or conntrack.h's for everything else. `sctp`
// is a constant of each compiled copy of the balancer.
static __always_inline void lb_track(struct ct_entry *o, struct pkt *p, __u8 dir, __u64 now,
                                     const int sctp)
{
    if (!sctp) {
        ct_track(o, p, dir, now);
        return;
    }
    if (o->last_ns != now)
        o->last_ns = now;
    if (sctp_track(o, p))
        ct_uncount(o);
}

// The flow of a translated packet (its reversed tuple is the other direction's key: either
// entry holds the whole translation) and its service's secondary addresses, if it has any.
static __always_inline struct ct_entry *mh_flow(struct pkt *p, struct mh_addrs **own)
{
    struct ct_key rk = {.src = p->k.dst, .dst = p->k.src, .sport = p->k.dport,
                        .dport = p->k.sport, .proto = IPPROTO_SCTP, .family = p->k.family};
    struct ct_entry *e = ct_map.lookup(&rk);
    if (!e)
        return 0;
    __u32 sid = e->svc_id;
    *own = mh_map.lookup(&sid);
    return *own && (*own)->n ? e : 0;
}

// INIT, INIT ACK of a multihomed service's flow (p: the translated packet).
static __always_inline int sctp_mh(struct __sk_buff *skb, struct pkt *p, __u32 *d)
{
    struct mh_addrs *own;
    struct ct_entry *e = mh_flow(p, &own);
    if (!e)
        return 0;
    struct ct_key ok = {};
    ct_orig_key(&e->t, IPPROTO_SCTP, p->k.family, &ok);
    struct mh_peers *pe = mh_peer_map.lookup(&ok);
    if (!pe) {
        __u32 zero = 0;
        struct mh_peers *fresh = mh_zero.lookup(&zero);
        if (!fresh)
            return 0;
        mh_peer_map.update(&ok, fresh);
        pe = mh_peer_map.lookup(&ok);
        if (!pe)
            return 0;
    }
    return mh_rewrite(skb, p, own, &e->t, pe, p->sctp_chunk == SCTP_INIT, d);
}

// The COOKIE ACK of a multihomed service's flow: its alternate paths (lb.c
// sluice_sctp_paths, a program of its own for its stack).
static __always_inline int sctp_mh_up(struct __sk_buff *skb, struct pkt *p)
{
    struct mh_addrs *own;
    struct ct_entry *e = mh_flow(p, &own);
    if (e) {
        struct ct_key ok = {};
        ct_orig_key(&e->t, IPPROTO_SCTP, p->k.family, &ok);
        mh_paths(&ok, own);
    }
    return skb->cb[SCTP_CB_VERDICT];
}

// The tail-call target's work (lb.c sluice_sctp_nat): p is the translated packet, parsed
// again; skb->cb holds what lib/sctp.h sctp_finish handed over.
static __always_inline int sctp_after_nat(struct __sk_buff *skb, struct pkt *p)
{
    __u32 x = skb->cb[SCTP_CB_X];
    int verdict = skb->cb[SCTP_CB_VERDICT];
    __u32 d = 0;
    if (x) {
        int ok;
        d = crc32c_delta(x, 0, sctp_len(skb, p), &ok);
        if (!ok)
            return TC_ACT_SHOT;
    }
    if ((p->sctp_chunk == SCTP_INIT || p->sctp_chunk == SCTP_INIT_ACK) && sctp_mh(skb, p, &d))
        return TC_ACT_SHOT;
    if (d) {
        __u32 off = p->l4_off + offsetof(struct sctp_common, checksum), sum;
        if (bpf_skb_load_bytes(skb, off, &sum, 4))
            return TC_ACT_SHOT;
        sum ^= d;
        if (bpf_skb_store_bytes(skb, off, &sum, 4, 0))
            return TC_ACT_SHOT;
    }
    if (p->sctp_chunk == SCTP_COOKIE_ACK)
        jmp_map.call(skb, JMP_SCTP_PATHS);
    return verdict;
}
