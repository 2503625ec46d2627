// policer.h - three-color policers: RFC 2697 (srTCM) and RFC 2698 (trTCM), color-blind or
// color-aware, with drop or DSCP re-mark per color (lib/qos_maps.h: struct policer).
//
// Correct across CPUs by a spin lock in the policer's map value: all CPUs take from the
// same buckets. Per-CPU buckets with a share of the rate each were the other choice; they
// need no lock but pass only rate/ncpu when one flow lands on one CPU (RSS/RPS keep a flow
// on one CPU), so the configured rate would not hold. The critical section is a few
// arithmetic instructions; the lock is only taken by packets a policer applies to.
#pragma once

// Refill bucket `t` (max `max`) by elapsed x rate; return what overflowed (srTCM: to Te).
static __always_inline __u64 pol_fill(__u64 *t, __u64 max, __u64 elapsed, __u64 max_ns,
                                      __u64 rate)
{
    if (elapsed >= max_ns) {                   // long idle: full (and no overflow maths);
        *t = max;                              // srTCM's E bucket is then full too
        return ~0ULL;
    }
    __u64 add = elapsed * rate;                // < 2^64: max_ns = min(2^64 / rate, ...)
    __u64 room = max - *t;
    if (add <= room) {
        *t += add;
        return 0;
    }
    *t = max;
    return add - room;
}

// The color a color-aware policer reads from the packet's DSCP.
static __always_inline int pol_precolor(struct policer *pol, __u8 dscp)
{
    if (!(pol->flags & POL_F_AWARE))
        return POL_GREEN;
    __u64 bit = 1ULL << (dscp & 63);
    if (pol->red_dscp & bit)
        return POL_RED;
    if (pol->yellow_dscp & bit)
        return POL_YELLOW;
    return POL_GREEN;
}

// Meter one packet of `bits` (x 1e9 already) with pre-color `pre`: its color.
static __always_inline int pol_meter(struct policer *pol, __u64 cost, int pre, __u64 now)
{
    int color;
    bpf_spin_lock(&pol->lock);
    __u64 elapsed = now > pol->last_ns ? now - pol->last_ns : 0;
    pol->last_ns = now;
    if (pol->flags & POL_F_TRTCM) {
        // RFC 2698: P and C buckets refill independently at PIR and CIR.
        pol_fill(&pol->te, pol->e_max, elapsed, pol->e_max_ns, pol->pir);
        pol_fill(&pol->tc, pol->c_max, elapsed, pol->c_max_ns, pol->cir);
        if (pre == POL_RED || pol->te < cost) {
            color = POL_RED;
        } else if (pre == POL_YELLOW || pol->tc < cost) {
            color = POL_YELLOW;
            pol->te -= cost;
        } else {
            color = POL_GREEN;
            pol->te -= cost;
            pol->tc -= cost;
        }
    } else {
        // RFC 2697: one rate fills C first; what C cannot hold goes to E.
        __u64 over = pol_fill(&pol->tc, pol->c_max, elapsed, pol->c_max_ns, pol->cir);
        if (over) {
            __u64 room = pol->e_max - pol->te;
            pol->te = over >= room ? pol->e_max : pol->te + over;
        }
        if (pre == POL_GREEN && pol->tc >= cost) {
            color = POL_GREEN;
            pol->tc -= cost;
        } else if (pre != POL_RED && pol->te >= cost) {
            color = POL_YELLOW;
            pol->te -= cost;
        } else {
            color = POL_RED;
        }
    }
    bpf_spin_unlock(&pol->lock);
    return color;
}

// Read the DSCP of the packet (0 if it has no IP header we know).
static __always_inline __u8 pkt_dscp(struct __sk_buff *skb, struct pkt *p)
{
    __u8 b[2] = {};
    if (bpf_skb_load_bytes(skb, p->l3_off, b, 2))
        return 0;
    if (p->k.family == 4)
        return b[1] >> 2;
    return ((b[0] & 0x0f) << 2) | (b[1] >> 6);
}

// Write DSCP `dscp` (ECN kept); IPv4: the header checksum follows.
static __always_inline int pkt_set_dscp(struct __sk_buff *skb, struct pkt *p, __u8 dscp)
{
    __u8 b[2] = {};
    if (bpf_skb_load_bytes(skb, p->l3_off, b, 2))
        return -1;
    __u8 n[2] = {b[0], b[1]};
    if (p->k.family == 4) {
        n[1] = (dscp << 2) | (b[1] & 3);
        if (n[1] == b[1])
            return 0;
        __be16 o16 = bpf_htons(((__u16)b[0] << 8) | b[1]);
        __be16 n16 = bpf_htons(((__u16)n[0] << 8) | n[1]);
        if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), o16, n16, 2))
            return -1;
    } else {
        // Traffic class: low 4 bits of byte 0, high 4 bits of byte 1 (DSCP = its top 6).
        n[0] = (b[0] & 0xf0) | (dscp >> 2);
        n[1] = ((dscp & 3) << 6) | (b[1] & 0x3f);
    }
    return bpf_skb_store_bytes(skb, p->l3_off, n, 2, 0);
}

// Police the packet with policer `id`: TC_ACT_SHOT to drop it, else TC_ACT_UNSPEC (maybe
// re-marked). The color counters are per CPU (no atomics).
static __always_inline int police(struct __sk_buff *skb, struct pkt *p, __u32 id, __u64 now)
{
    struct policer *pol = qos_pol.lookup(&id);
    if (!pol)
        return TC_ACT_UNSPEC;
    // Bytes metered: the L3 packet (an aggregated GSO packet counts as one header + payload).
    __u32 len = p->len - p->l3_off;
    int pre = pol_precolor(pol, pkt_dscp(skb, p));
    int color = pol_meter(pol, (__u64)len * 8 * NSEC, pre, now);
    __u32 k = id * 4 + (color & 3);
    struct counters *c = qos_pol_st.lookup(&k);
    if (c) {
        c->packets++;
        c->bytes += len;
    }
    __u8 act = pol->action[color & 3];
    if (act == POL_ACT_DROP)
        return TC_ACT_SHOT;
    if (act == POL_ACT_MARK && pkt_set_dscp(skb, p, pol->dscp[color & 3]))
        return TC_ACT_SHOT;
    return TC_ACT_UNSPEC;
}
