// sctp_mh.h - SCTP after NAT, in the tail-called program sluice_sctp_nat: the CRC32c fix
// for changed ports, and multihoming (full-NAT services with secondary addresses).
//
// Multihoming: an association may use several addresses on each side. The peers list
// their extra addresses in the INIT / INIT ACK (IPv4 / IPv6 address parameters); behind a
// balancer those must be the balancer's own, or the peers would try paths that bypass it.
// A service's secondary addresses (mh_map, written by the driver) come in pairs, secondary
// VIP i (towards the clients) and secondary SNAT address i (towards the endpoints), each
// pair of one family, which need not be the primary VIP's. So:
//   INIT (client -> endpoint): the client's address parameters are remembered
//     (mh_peer_map, keyed by the flow's ORIG key) and the INIT lists exactly the service's
//     secondary SNAT addresses;
//   INIT ACK (endpoint -> client): the endpoint's are remembered and the INIT ACK lists
//     exactly the secondary VIPs;
//   COOKIE ACK (the association is up): for each i, a conntrack pair for the path
//     client address i <-> secondary VIP i <-> secondary SNAT address i <-> endpoint
//     address i (mh_paths).
// Peer address k of a family pairs with the k-th secondary of that family. The packet's
// parameters are rewritten in place, each to the next secondary of its family; one with
// none left becomes the primary address again (its family) or a Padding parameter (RFC
// 4820 type 0x8005: a receiver skips it). Secondaries no parameter took are appended: the
// packet grows (bpf_skb_change_tail; the INIT / INIT ACK is the packet's only chunk, RFC
// 9260 6.10), so a peer that lists fewer addresses than the service has, or none, still
// learns every secondary. In-place changes move the CRC32c linearly (each changed word's
// change carried to the packet's end, lib/crc32c.h); the appended bytes are then run
// through the CRC register itself.
#pragma once

#define MH_MAX           4          // secondary addresses per service (mirrored in layout.py)
#define MH_PARAMS        8          // parameters looked at in one INIT / INIT ACK
#define MH_WORDS         (MH_PARAMS * 5)   // words an in-place rewrite may change
#define MH_PEERS         65536
#define MH_GROW_MAX      1232       // no growth past this SCTP length (IPv6's minimum MTU)
#define SCTP_PARAM_IPV4  5
#define SCTP_PARAM_IPV6  6
#define SCTP_PARAM_PAD   0x8005     // RFC 4820 Padding: skipped by every receiver
#define SCTP_INIT_FIXED  20         // chunk header + INIT's fixed fields
#define SCTP_COMMON_LEN  12
#define MH_ALT_TIMEOUT   0xFFFFFFFFu   // an alternate path's own idle limit: none (mh_paths)

struct mh_addrs {                   // a service's own secondary addresses
    __u32 n;
    __u32 v6;                       // bit i: pair i is IPv6 (else IPv4)
    struct addr vip[MH_MAX];        // towards the clients
    struct addr snat[MH_MAX];       // towards the endpoints
};

struct mh_peers {                   // an association's peers' extra addresses, by pair
    __u32 client_mask;              // bit i: client[i] was listed
    __u32 ep_mask;                  // bit i: ep[i] was listed
    struct addr client[MH_MAX];
    struct addr ep[MH_MAX];
};

struct mh_word {
    __u32 x;                        // old ^ new, as loaded
    __u32 off;                      // from the SCTP common header
};

struct mh_scratch_t {
    struct ct_entry a;              // an alternate path's entry
    struct mh_word words[MH_WORDS]; // rewritten words by parameter slot, for the CRC32c
    __u32 k;                        // see mh_rewrite
    // What mh_rewrite hands to mh_finish (the next program, same CPU):
    __u32 nw;                       // words[] used
    __u32 len;                      // the SCTP packet's length
    __u32 d;                        // the checksum's change so far (changed ports)
    __u32 missing;                  // pairs to append
    __u32 to_ep;                    // an INIT (towards the endpoint)
    __u32 svc_id;
};

BPF_TABLE_PINNED("hash", __u32, struct mh_addrs, mh_map, MAX_SERVICES, PIN("mh2"), NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct mh_peers, mh_peer_map, MH_PEERS,
                 PIN("mhpeer2"));
// Off the 512-byte stack: a zeroed peers value to insert, and the alternate paths' entry.
BPF_ARRAY(mh_zero, struct mh_peers, 1);
// An alternate path's ORIG key -> its association's primary ORIG key (mh_paths).
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_key, mh_alt_map, MH_PEERS, PIN("mhalt"));
// Not pinned, so one per compile (lib/modules.h): it carries words from sluice_sctp_nat to
// sluice_sctp_paths across their tail call, which works only with both in one module.
BPF_PERCPU_ARRAY(mh_scratch, struct mh_scratch_t, 1);

// The verifier walks the parameter loop once per distinct state: which pair a parameter
// takes is computed without branches (the lowest free pair of its family, from bit
// masks), and rewritten words are kept by parameter slot, so that paths through one
// iteration differ only in values it need not tell apart.

// The index of `low`, a mask with at most one bit (1, 2, 4, 8) set; 0 for 0.
static __always_inline __u32 mh_bit_index(__u32 low)
{
    return ((low >> 1) - (low >> 3)) & (MH_MAX - 1);
}

// The pairs a service has, as a mask.
static __always_inline __u32 mh_all(struct mh_addrs *own)
{
    return ((1u << (own->n & 7)) - 1) & ((1u << MH_MAX) - 1);
}

// Append what the INIT / INIT ACK lacks: the pairs in `missing`, as parameters after its
// last byte (`len`: the SCTP packet's), with the chunk length and the IP length to match.
// *sum: the checksum of the packet before growth (its in-place changes applied), turned
// into the grown packet's.
static __always_inline int mh_grow(struct __sk_buff *skb, struct pkt *p, struct mh_addrs *own,
                                   int to_ep, __u32 missing, __u32 len, __u32 *sum)
{
    __u32 g = 0;
#pragma unroll
    for (__u32 i = 0; i < MH_MAX; i++)
        g += ((missing >> i) & 1) * (8 + 12 * ((own->v6 >> i) & 1));
    if (!g || len + g > MH_GROW_MAX)
        return 0;                              // left as it is: only as many paths
    // The chunk's length: the parameters before (padding included) and the new ones.
    __u32 off = p->l4_off + SCTP_COMMON_LEN, old;
    if (bpf_skb_load_bytes(skb, off, &old, 4))
        return -1;
    if (((bpf_ntohs(old >> 16) + 3) & ~3u) != len - SCTP_COMMON_LEN)
        return 0;                              // not the packet's only chunk: left as it is
    __be16 clen = bpf_htons(len - SCTP_COMMON_LEN + g);
    __u32 neu = (old & 0xffff) | (__u32)clen << 16;
    int ok;
    *sum ^= crc32c_delta(old ^ neu, SCTP_COMMON_LEN, len, &ok);
    if (!ok)
        return -1;
    if (bpf_skb_store_bytes(skb, off + 2, &clen, 2, 0))
        return -1;
    // The IP length.
    if (p->k.family == 4) {
        __u32 lo = p->l3_off + offsetof(struct iphdr, tot_len);
        __be16 o, n;
        if (bpf_skb_load_bytes(skb, lo, &o, 2))
            return -1;
        n = bpf_htons(bpf_ntohs(o) + g);
        if (bpf_skb_store_bytes(skb, lo, &n, 2, 0) ||
            bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), o, n, 2))
            return -1;
    } else {
        __u32 lo = p->l3_off + offsetof(struct ipv6hdr, payload_len);
        __be16 n = bpf_htons(len + g);
        if (bpf_skb_store_bytes(skb, lo, &n, 2, 0))
            return -1;
    }
    __u32 end = p->l4_off + len;
    if (bpf_skb_change_tail(skb, end + g, 0))
        return -1;
    // Each new parameter stored, and its words run through the CRC register
    // (reg = ~checksum, 4 bytes a step).
    __u32 reg = ~*sum;
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < MH_MAX; i++) {
        if (!((missing >> i) & 1))
            continue;
        __u32 w[5];
        struct addr *a = to_ep ? &own->snat[i] : &own->vip[i];
        if ((own->v6 >> i) & 1) {
            w[0] = bpf_htonl(SCTP_PARAM_IPV6 << 16 | 20);
            w[1] = a->w[0];
            w[2] = a->w[1];
            w[3] = a->w[2];
            w[4] = a->w[3];
            if (bpf_skb_store_bytes(skb, end, w, 20, 0))
                return -1;
            end += 20;
#pragma unroll
            for (int j = 0; j < 5; j++)
                reg = crc32c_word0(reg ^ w[j]);
        } else {
            w[0] = bpf_htonl(SCTP_PARAM_IPV4 << 16 | 8);
            w[1] = a->w[0];
            if (bpf_skb_store_bytes(skb, end, w, 8, 0))
                return -1;
            end += 8;
            reg = crc32c_word0(reg ^ w[0]);
            reg = crc32c_word0(reg ^ w[1]);
        }
    }
    *sum = ~reg;
    return 0;
}

// Rewrite the address parameters of the INIT / INIT ACK in hand (to_ep: an INIT on its way
// to the endpoint), remembering the originals in `pe`; the words it changed, and which
// secondaries no parameter took, are left in mh_scratch for mh_finish. *d: the checksum's
// change so far (changed ports).
static __always_inline int mh_rewrite(struct __sk_buff *skb, struct pkt *p, struct mh_addrs *own,
                                      struct nat_tuple *t, struct mh_peers *pe, int to_ep,
                                      __u32 *d)
{
    __u32 zero = 0;
    struct mh_scratch_t *sc = mh_scratch.lookup(&zero);
    if (!sc)
        return -1;
    struct mh_word *words = sc->words;
    __u32 used = 0, slots = 0;
    __u32 l4 = p->l4_off, len = sctp_len(skb, p);
    __u32 off = l4 + SCTP_COMMON_LEN + SCTP_INIT_FIXED;
    __u32 end = l4 + len;
    __u32 all = mh_all(own);
    int v6flow = p->k.family == 6;
    int whole = 0;                             // every parameter was looked at
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < MH_PARAMS + 1; i++) {
        __u32 hw;                              // type, length as stored
        if (off + 4 > end) {
            whole = off == end;
            break;
        }
        if (i >= MH_PARAMS || bpf_skb_load_bytes(skb, off, &hw, 4))
            break;
        __u16 type = bpf_ntohs(hw & 0xffff), plen = bpf_ntohs(hw >> 16);
        if (plen < 4 || plen > 1500 || off + plen > end)
            break;
        struct mh_word *wd = &words[i * 5];
        slots = i + 1;
#pragma unroll
        for (int w = 0; w < 5; w++)
            wd[w].x = 0;
        int v4p = type == SCTP_PARAM_IPV4 && plen == 8;
        int v6p = type == SCTP_PARAM_IPV6 && plen == 20;
        if (v4p || v6p) {
            struct addr old = {}, neu = {};
            if (bpf_skb_load_bytes(skb, off + 4, &old, v6p ? 16 : 4))
                return -1;
            __u32 cand = (v6p ? own->v6 : ~own->v6) & all & ~used;
            __u32 low = cand & -cand;          // the lowest free pair of its family
            // Through memory: the verifier then tracks the index as any value 0..3, not
            // as a function of `used` (which it would otherwise keep exact per path).
            sc->k = mh_bit_index(low);
            __u32 k = sc->k & (MH_MAX - 1);
            used |= low;
            __u32 newhdr = hw;
            if (low) {
                if (to_ep)
                    pe->client[k] = old;
                else
                    pe->ep[k] = old;
                neu = to_ep ? own->snat[k] : own->vip[k];
            } else if (v6p == v6flow) {
                neu = to_ep ? t->snat : t->vip;  // none left: the primary address again
            } else {
                newhdr = bpf_htonl(SCTP_PARAM_PAD << 16 | plen);
            }
            wd[0].x = hw ^ newhdr;
            wd[0].off = off - l4;
            if (wd[0].x && bpf_skb_store_bytes(skb, off, &newhdr, 4, 0))
                return -1;
            if (bpf_skb_store_bytes(skb, off + 4, &neu, v6p ? 16 : 4, 0))
                return -1;
#pragma unroll
            for (int w = 0; w < 4; w++) {
                wd[1 + w].x = old.w[w] ^ neu.w[w];   // zero past an IPv4 address
                wd[1 + w].off = off + 4 + 4 * w - l4;
            }
        }
        off += (plen + 3) & ~3u;
    }
    if (to_ep)
        pe->client_mask = used;
    else
        pe->ep_mask = used;
    // The checksum's change is worked out in the next program (mh_finish): here, the
    // verifier would walk its loop once for every way out of the loop above.
    sc->nw = slots * 5;
    sc->len = len;
    sc->d = *d;
    sc->missing = whole ? all & ~used : 0;
    sc->to_ep = to_ep;
    return 0;
}

// The second half of an INIT / INIT ACK's rewrite (lb.c sluice_sctp_paths; mh_rewrite
// left its words in mh_scratch): the checksum's change, then growth.
static __always_inline int mh_finish(struct __sk_buff *skb, struct pkt *p)
{
    __u32 zero = 0;
    struct mh_scratch_t *sc = mh_scratch.lookup(&zero);
    if (!sc)
        return TC_ACT_SHOT;
    __u32 nw = sc->nw, len = sc->len, d = sc->d;
    // crc32c_delta without its checks in the loop (a branch there multiplies the
    // verifier's states word after word): the table is filled (its last entry is written
    // last) and every word lies inside the packet (mh_rewrite), so each carries its change
    // len - off - 4 bytes; an unchanged word (x 0) adds 0.
    __u32 last = SCTP_CRC_MAX_LEN - 1;
    __u32 *filled = crc_shift.lookup(&last);
    if (!filled || !*filled || len >= SCTP_CRC_MAX_LEN)
        return TC_ACT_SHOT;
#pragma clang loop unroll(disable)
    for (__u32 j = 0; j < MH_WORDS; j++) {
        if (j >= nw)
            break;
        __u32 m = (len - sc->words[j].off - 4) & (SCTP_CRC_MAX_LEN - 1);
        __u32 *sh = crc_shift.lookup(&m);
        if (!sh)
            return TC_ACT_SHOT;
        d ^= crc32c_mul(*sh, crc32c_word0(sc->words[j].x));
    }
    __u32 co = p->l4_off + offsetof(struct sctp_common, checksum), sum;
    if (bpf_skb_load_bytes(skb, co, &sum, 4))
        return TC_ACT_SHOT;
    sum ^= d;
    __u32 sid = sc->svc_id;
    struct mh_addrs *own = mh_map.lookup(&sid);
    if (sc->missing && own && sctp_len(skb, p) == len &&
        mh_grow(skb, p, own, sc->to_ep, sc->missing, len, &sum))
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, co, &sum, 4, 0))
        return TC_ACT_SHOT;
    return skb->cb[SCTP_CB_VERDICT];
}

// The association is up: a conntrack pair for every alternate path. Pair i's path runs
// from the client's address i (or its primary address, when it listed none of that
// family) to the endpoint's address i (or its primary), through secondary VIP i and SNAT
// address i. Its entries are marked CT_F_MH_ALT, not counted (one association, counted
// once), and live as long as their association: mh_alt_map names each path's primary
// flow, whose idle time the path's packets refresh (mh_alt_seen), and the sweep
// (appliance/datapath/conntrack.py) removes the paths of a flow that is gone or closed.
// ok: the flow's ORIG key without its tag (mh_peer_map's key), `tag`: the tag.
static __always_inline void mh_paths(struct ct_key *ok, __u32 tag, struct mh_addrs *own)
{
    __u32 zero = 0;
    struct mh_peers *pe = mh_peer_map.lookup(ok);
    ok->vtag = tag;                            // the flow's own key (lib/sctp_tags.h)
    struct ct_entry *o = ct_get(ok);
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
    ap->timeout_s = MH_ALT_TIMEOUT;            // its association's: see mh_alt_seen
    ap->tcp_seq = o->tcp_seq;                  // the verification tags (lib/sctp_tags.h)
    ap->tcp_ack = o->tcp_ack;
    ap->proto = o->proto;
    ap->flags = (o->flags & ~CT_F_COUNTED) | CT_F_MH_ALT;
    ap->state = CT_EST;
    __u32 cm = pe->client_mask, em = pe->ep_mask;
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < MH_MAX; i++) {
        if (i >= own->n)
            break;
        __u8 fam = (own->v6 >> i) & 1 ? 6 : 4;
        if ((!(cm & (1u << i)) || !(em & (1u << i))) && fam != o->family)
            continue;                          // no address of that family on a side
        ap->t.client = cm & (1u << i) ? pe->client[i] : o->t.client;
        ap->t.ep = em & (1u << i) ? pe->ep[i] : o->t.ep;
        ap->t.vip = own->vip[i];
        ap->t.snat = own->snat[i];
        ap->family = fam;
        struct ct_key k = {};
        ap->dir = CT_DIR_REPLY;
        ct_reply_key(&ap->t, IPPROTO_SCTP, fam, &k);
        ct_set(&k, ap);
        ap->dir = CT_DIR_ORIG;
        ct_orig_key(&ap->t, IPPROTO_SCTP, fam, &k);
        k.vtag = ap->tcp_seq;
        mh_alt_map.update(&k, ok);
        ct_set(&k, ap);
    }
}

// A packet on an alternate path (its ORIG entry `o`, tracked): the association's primary
// flow lives on, or takes the path's end (SHUTDOWN, ABORT, SHUTDOWN COMPLETE seen here);
// a path whose association is gone or closed closes too (the sweep removes it).
static __always_inline void mh_alt_seen(struct ct_entry *o, __u64 now)
{
    struct ct_key k = {};
    ct_orig_key_of(o, &k);
    struct ct_key *pk = mh_alt_map.lookup(&k);
    if (pk)
        k = *pk;                               // a map value: ct_get works on its own copy
    struct ct_entry *prim = pk ? ct_get(&k) : 0;
    if (!prim || prim->state == CT_CLOSED) {
        o->state = CT_CLOSED;
        return;
    }
    if (prim->last_ns < now)
        prim->last_ns = now;
    if (o->state == CT_FIN || o->state == CT_CLOSED) {
        prim->state = o->state;
        if (o->state == CT_CLOSED)
            ct_uncount(prim);
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
    __u8 before = o->state;
    int tick = o->last_ns != now;
    if (tick)
        o->last_ns = now;
    if (sctp_track(o, p))
        ct_uncount(o);
    if ((o->flags & CT_F_MH_ALT) && (tick || o->state != before))
        mh_alt_seen(o, now);
}

// The flow of a translated packet (its reversed tuple is the other direction's key: either
// entry holds the whole translation) and its service's secondary addresses, if it has any.
// Towards an endpoint that is the REPLY key (no tag); towards the client the ORIG key, with
// the tag lib/sctp_tags.h sctp_tags_ack left in skb->cb.
static __always_inline struct ct_entry *mh_flow(struct __sk_buff *skb, struct pkt *p,
                                                struct mh_addrs **own)
{
    struct ct_key rk = {.src = p->k.dst, .dst = p->k.src, .sport = p->k.dport,
                        .dport = p->k.sport, .proto = IPPROTO_SCTP, .family = p->k.family};
    struct ct_entry *e = ct_get(&rk);
    if (!e && p->sctp_chunk != SCTP_INIT) {
        rk.vtag = skb->cb[SCTP_CB_OTAG];
        e = ct_get(&rk);
    }
    if (!e)
        return 0;
    __u32 sid = e->svc_id;
    *own = mh_map.lookup(&sid);
    return *own && (*own)->n ? e : 0;
}

// INIT, INIT ACK of a multihomed service's flow (p: the translated packet): 1 when its
// parameters were rewritten (mh_finish completes it), 0 when it is not such a packet,
// -1 when it cannot be rewritten.
static __always_inline int sctp_mh(struct __sk_buff *skb, struct pkt *p, __u32 *d)
{
    struct mh_addrs *own;
    struct ct_entry *e = mh_flow(skb, p, &own);
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
    __u32 zero = 0;
    struct mh_scratch_t *sc = mh_scratch.lookup(&zero);
    if (!sc)
        return -1;
    sc->svc_id = e->svc_id;
    return mh_rewrite(skb, p, own, &e->t, pe, p->sctp_chunk == SCTP_INIT, d) ? -1 : 1;
}

// Multihoming's second program (lb.c sluice_sctp_paths, a program of its own for its
// stack and the verifier's budget): an INIT / INIT ACK's checksum and growth (mh_finish),
// or, at the COOKIE ACK, the association's alternate paths.
static __always_inline int sctp_mh_up(struct __sk_buff *skb, struct pkt *p)
{
    if (p->sctp_chunk == SCTP_INIT || p->sctp_chunk == SCTP_INIT_ACK)
        return mh_finish(skb, p);
    struct mh_addrs *own;
    struct ct_entry *e = mh_flow(skb, p, &own);
    if (e) {
        struct ct_key ok = {};
        ct_orig_key(&e->t, IPPROTO_SCTP, p->k.family, &ok);
        mh_paths(&ok, e->tcp_seq, own);
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
    if (p->sctp_chunk == SCTP_INIT || p->sctp_chunk == SCTP_INIT_ACK) {
        int mh = sctp_mh(skb, p, &d);
        skb->cb[SCTP_CB_X] = 1;                // its checksum is not right yet
        if (mh > 0)
            jmp_map.call(skb, JMP_SCTP_PATHS); // mh_finish: the checksum and growth
        if (mh)
            return TC_ACT_SHOT;                // never with a wrong checksum
    }
    if (d) {
        __u32 off = p->l4_off + offsetof(struct sctp_common, checksum), sum;
        if (bpf_skb_load_bytes(skb, off, &sum, 4))
            return TC_ACT_SHOT;
        sum ^= d;
        if (bpf_skb_store_bytes(skb, off, &sum, 4, 0))
            return TC_ACT_SHOT;
    }
    if (p->sctp_chunk == SCTP_COOKIE_ACK) {
        skb->cb[SCTP_CB_X] = 0;
        jmp_map.call(skb, JMP_SCTP_PATHS);
    }
    return verdict;
}
