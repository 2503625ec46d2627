// mirror.h - copies of packets to a mirror session (lib/qos_maps.h: struct mirror).
// The original is never changed: SPAN clones it as it is; RSPAN adds a VLAN tag, clones,
// and takes the tag off again; ERSPAN (no GRE/ERSPAN device in the kernel: the headers
// are built here) inserts the outer Ethernet/IPv4 or IPv6/GRE/ERSPAN headers in front of the
// frame, clones it out towards the collector and removes them again. bpf_clone_redirect
// unshares the original's head after cloning, so restoring it cannot touch the copy.
// Frames that cannot be wrapped in place (not IP, GSO aggregates) are cloned through the
// loopback's ingress first (erspan_loop), where the copy is the program's own.
#pragma once

#define GRE_F_SEQ         0x1000
#define GRE_P_ERSPAN2     0x88BE
#define GRE_P_ERSPAN3     0x22EB
#define BPF_FIB_LOOKUP_OUTPUT_ (1U << 1)
#ifndef AF_INET_
#define AF_INET_ 2
#endif
#ifndef AF_INET6_
#define AF_INET6_ 10
#endif

// What follows the outer IP header: GRE with a sequence number, the ERSPAN header (type II
// uses two of its words: the frame's MAC header then starts at w[2]), the MAC header.
struct erspan_tail {
    __be16 gre_flags;
    __be16 gre_proto;
    __be32 gre_seq;
    __be32 w[3];
    __u8 inner[14];
} __attribute__((packed));

struct erspan_h4 {
    __u8 mac[12];
    __be16 proto;
    struct iphdr ip;
    struct erspan_tail t;
} __attribute__((packed));

struct erspan_h6 {
    __u8 mac[12];
    __be16 proto;
    struct ipv6hdr ip;
    struct erspan_tail t;
} __attribute__((packed));

static __always_inline void mir_count(__u32 id, int what, __u32 len)
{
    __u32 k = id * 4 + what;
    struct counters *c = qos_mir_st.lookup(&k);
    if (c) {
        c->packets++;
        c->bytes += len;
    }
}

static __always_inline int rspan_copy(struct __sk_buff *skb, struct mirror *m)
{
    if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q_), m->vlan))
        return -1;
    int rc = bpf_clone_redirect(skb, m->ifindex, 0);
    if (bpf_skb_vlan_pop(skb))
        return -2;                             // the original could not be restored
    return rc;
}

static __always_inline __u16 csum_fold_(__u64 s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return ~s;
}

// The route to the collector for an outer packet of `tot_len` bytes (FIB, output mode).
static __always_inline int erspan_route(struct __sk_buff *skb, struct mirror *m,
                                        struct bpf_fib_lookup *f, __u32 tot_len, const int v6)
{
    f->l4_protocol = 47;
    if (v6) {
        f->family = AF_INET6_;
        __builtin_memcpy(f->ipv6_src, &m->src, 16);
        __builtin_memcpy(f->ipv6_dst, &m->dst, 16);
    } else {
        f->family = AF_INET_;
        f->ipv4_src = m->src.w[0];
        f->ipv4_dst = m->dst.w[0];
    }
    f->ifindex = m->ifindex;
    f->tot_len = tot_len;
    return bpf_fib_lookup(skb, f, sizeof(*f), BPF_FIB_LOOKUP_OUTPUT_);
}

// GRE (with the session's sequence number) and the ERSPAN header of a copy; `orig`: the
// frame's own MAC header, which follows the ERSPAN words. `trunc`: the T bit (the copy
// carries the frame's first bytes only). `port`: the interface the frame was seen on.
static __always_inline void erspan_tail_fill(struct erspan_tail *t, struct mirror *m, __u32 id,
                                             __u32 dir, __u32 port, __u32 trunc, __u8 *orig,
                                             const int v3)
{
    __u64 *seqp = qos_mir_seq.lookup(&id);
    __u32 seq = seqp ? (__u32)__sync_fetch_and_add(seqp, 1) : 0;
    t->gre_flags = bpf_htons(GRE_F_SEQ);
    t->gre_proto = bpf_htons(v3 ? GRE_P_ERSPAN3 : GRE_P_ERSPAN2);
    t->gre_seq = bpf_htonl(seq);
    __u32 vlan = m->vlan & 0xfff, sess = m->session & 0x3ff, tb = trunc ? 1U << 10 : 0;
    if (v3) {
        __u64 ts = bpf_ktime_get_ns() / 100000;   // granularity 00: 100 microseconds
        t->w[0] = bpf_htonl((2U << 28) | (vlan << 16) | tb | sess);
        t->w[1] = bpf_htonl((__u32)ts);
        t->w[2] = bpf_htonl((dir & 1) << 3);       // D: 0 ingress, 1 egress
        __builtin_memcpy((__u8 *)&t->w[0] + 12, orig, 14);
    } else {
        t->w[0] = bpf_htonl((1U << 28) | (vlan << 16) | tb | sess);
        t->w[1] = bpf_htonl(port & 0xfffff);       // index: the port seen on
        __builtin_memcpy((__u8 *)&t->w[0] + 8, orig, 14);
    }
}

// The outer Ethernet and IPv4 / IPv6 headers of a copy whose GRE payload is `payload` bytes.
static __always_inline void erspan_h4_fill(struct erspan_h4 *h, struct mirror *m,
                                           struct bpf_fib_lookup *f, __u32 payload)
{
    __builtin_memcpy(h->mac, f->dmac, 6);
    __builtin_memcpy(h->mac + 6, f->smac, 6);
    h->proto = bpf_htons(ETH_P_IP);
    h->ip.version = 4;
    h->ip.ihl = 5;
    h->ip.tos = m->dscp << 2;
    h->ip.tot_len = bpf_htons(20 + payload);
    h->ip.frag_off = bpf_htons(0x4000);        // DF
    h->ip.ttl = m->ttl;
    h->ip.protocol = 47;                       // GRE
    h->ip.saddr = m->src.w[0];
    h->ip.daddr = m->dst.w[0];
    h->ip.check = csum_fold_(bpf_csum_diff(0, 0, (void *)&h->ip, 20, 0));
}

static __always_inline void erspan_h6_fill(struct erspan_h6 *h, struct mirror *m,
                                           struct bpf_fib_lookup *f, __u32 payload)
{
    __builtin_memcpy(h->mac, f->dmac, 6);
    __builtin_memcpy(h->mac + 6, f->smac, 6);
    h->proto = bpf_htons(ETH_P_IPV6);
    h->ip.version = 6;
    h->ip.priority = m->dscp >> 2;             // traffic class: DSCP, ECN 0
    h->ip.flow_lbl[0] = (m->dscp & 3) << 6;
    h->ip.payload_len = bpf_htons(payload);
    h->ip.nexthdr = 47;                        // GRE
    h->ip.hop_limit = m->ttl;
    __builtin_memcpy(&h->ip.saddr, &m->src, 16);
    __builtin_memcpy(&h->ip.daddr, &m->dst, 16);
}

// Writes the first 14 + outer bytes of the headers (outer MAC, IP, GRE, ERSPAN and, when
// outer counts it, the frame's own MAC header kept in t) at the front of the copy, the
// room already made; the outer IP header's payload is gre_payload bytes. 0 on success.
static __always_inline int erspan_store_outer(struct __sk_buff *skb, struct mirror *m,
                                              struct bpf_fib_lookup *f, struct erspan_tail *t,
                                              __u32 gre_payload, __u32 outer, const int v6)
{
    if (v6) {
        struct erspan_h6 h = {};
        erspan_h6_fill(&h, m, f, gre_payload);
        h.t = *t;
        return bpf_skb_store_bytes(skb, 0, &h, 14 + outer, 0);
    }
    struct erspan_h4 h = {};
    erspan_h4_fill(&h, m, f, gre_payload);
    h.t = *t;
    return bpf_skb_store_bytes(skb, 0, &h, 14 + outer, 0);
}

// A frame ERSPAN cannot wrap in place (not IP: the room is made behind an IP header; a GSO
// aggregate: its copy could not be segmented) is cloned into the loopback's ingress, marked
// (QOS_MIR_MARK | dir << 6 | session; its interface in skb->priority), where sluice_qos_mir
// (bpf/qos.c, attached there by appliance/datapath/qos.py while an ERSPAN session exists)
// owns the copy: it may cut it to what the collector's path carries (the T bit) and wrap
// it (erspan_looped). -4: looped (counted there), -3: no loop attached.
static __always_inline int erspan_loop(struct __sk_buff *skb, __u32 id, __u32 dir)
{
    __u32 zero = 0;
    struct qos_cfg *c = qos_cfg.lookup(&zero);
    if (!c || !c->loop_ifindex)
        return -3;
    __u32 mark = skb->mark, prio = skb->priority;
    skb->mark = QOS_MIR_MARK | (dir & 1) << 6 | (id & 0x3f);
    skb->priority = skb->ifindex;
    int rc = bpf_clone_redirect(skb, c->loop_ifindex, BPF_F_INGRESS);
    skb->mark = mark;
    skb->priority = prio;
    return rc ? -1 : -4;
}

// Type II (v3 = 0) or III (v3 = 1), outer IPv4 (v6 = 0) or IPv6 (v6 = 1). 0: sent, -1: no
// copy, -2: the original is damaged, -3: a frame ERSPAN does not carry here, -4: looped.
static __always_inline int erspan_copy(struct __sk_buff *skb, struct mirror *m, __u32 id,
                                       __u32 dir, const int v3, const int v6)
{
    const __u32 elen = v3 ? 12 : 8;            // ERSPAN header
    const __u32 n = (v6 ? 40 : 20) + 8 + elen + 14;   // inserted after the MAC header
    if (skb->gso_segs > 1 ||
        (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6)))
        return erspan_loop(skb, id, dir);
    struct bpf_fib_lookup f = {};
    int r = erspan_route(skb, m, &f, skb->len + n, v6);
    if (r == BPF_FIB_LKUP_RET_FRAG_NEEDED)
        return erspan_loop(skb, id, dir);      // a full-size frame: the looped copy is cut
    if (r != BPF_FIB_LKUP_RET_SUCCESS)
        return -1;
    __u8 orig[14];
    if (bpf_skb_load_bytes(skb, 0, orig, 14))
        return -1;
    __u32 frame = skb->len;
    struct erspan_tail t = {};
    erspan_tail_fill(&t, m, id, dir, skb->ifindex, 0, orig, v3);
    if (bpf_skb_adjust_room(skb, n, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
        return -1;
    int stored = erspan_store_outer(skb, m, &f, &t, 8 + elen + frame, n, v6);
    int rc = -1;
    if (!stored)
        rc = bpf_clone_redirect(skb, f.ifindex, 0) ? -1 : 0;
    // Back to the original: zero what is removed (checksum-complete skbs subtract it),
    // remove it, and put the frame's own MAC header back.
    __u8 zero[40 + 8 + 12 + 14] = {};
    if (bpf_skb_store_bytes(skb, 14, zero, n, 0) ||
        bpf_skb_adjust_room(skb, -(__s32)n, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO) ||
        bpf_skb_store_bytes(skb, 0, orig, 14, 0))
        return -2;
    return rc;
}

// The looped copy (erspan_loop), ours to change: cut to what the collector's path carries
// (an aggregate always loses its GSO state: one copy, T bit set when cut), the outer
// headers pushed in front of the frame's own MAC header, sent. A TC verdict.
static __always_inline int erspan_looped_v(struct __sk_buff *skb, struct mirror *m, __u32 id,
                                           __u32 dir, __u32 port, const int v3, const int v6)
{
    const __u32 elen = v3 ? 12 : 8;
    const __u32 outer = (v6 ? 40 : 20) + 8 + elen;    // outer IP + GRE + ERSPAN
    __u32 frame = skb->len;
    struct bpf_fib_lookup f = {};
    int r = erspan_route(skb, m, &f, outer + frame, v6);
    __u32 keep = frame;
    if (r == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        keep = f.mtu_result > outer + 14 ? f.mtu_result - outer : 14;
        __builtin_memset(&f, 0, sizeof(f));
        r = erspan_route(skb, m, &f, outer + keep, v6);
    }
    if (r != BPF_FIB_LKUP_RET_SUCCESS)
        return -1;
    if ((skb->gso_segs > 1 || keep < frame) && bpf_skb_change_tail(skb, keep, 0))
        return -1;
    __u8 orig[14];
    if (bpf_skb_load_bytes(skb, 0, orig, 14) || bpf_skb_change_head(skb, 14 + outer, 0))
        return -1;
    struct erspan_tail t = {};
    erspan_tail_fill(&t, m, id, dir, port, keep < frame, orig, v3);
    if (erspan_store_outer(skb, m, &f, &t, 8 + elen + keep, outer, v6))
        return -1;
    return bpf_redirect(f.ifindex, 0);
}

// sluice_qos_mir's body: a copy erspan_loop marked, or -1 (not one: the caller passes it).
static __always_inline int erspan_looped(struct __sk_buff *skb)
{
    __u32 mark = skb->mark;
    if ((mark & QOS_MIR_MARK_MASK) != QOS_MIR_MARK)
        return -1;
    __u32 id = mark & 0x3f, dir = (mark >> 6) & 1, port = skb->priority, len = skb->len;
    skb->mark = 0;
    struct mirror *mp = qos_mir.lookup(&id);
    if (!mp)
        return TC_ACT_SHOT;
    struct mirror m = *mp;
    int rc = TC_ACT_SHOT;
    if (m.type == MIR_ERSPAN3)
        rc = m.family == 6 ? erspan_looped_v(skb, &m, id, dir, port, 1, 1)
                           : erspan_looped_v(skb, &m, id, dir, port, 1, 0);
    else if (m.type == MIR_ERSPAN2)
        rc = m.family == 6 ? erspan_looped_v(skb, &m, id, dir, port, 0, 1)
                           : erspan_looped_v(skb, &m, id, dir, port, 0, 0);
    mir_count(id, rc == TC_ACT_REDIRECT ? MIR_ST_SENT : MIR_ST_FAILED, len);
    return rc == TC_ACT_REDIRECT ? rc : TC_ACT_SHOT;
}

// Copy the packet to mirror session `id` (maybe sampled out). Non-zero: the original
// could not be restored and must be dropped.
static __always_inline int mirror_packet(struct __sk_buff *skb, __u32 id, __u32 dir)
{
    struct mirror *mp = qos_mir.lookup(&id);
    if (!mp || !mp->type)
        return 0;
    struct mirror m = *mp;
    __u32 len = skb->len;
    if (m.sample > 1 && bpf_get_prandom_u32() % m.sample) {
        mir_count(id, MIR_ST_SKIPPED, len);
        return 0;
    }
    int rc;
    if (m.type == MIR_SPAN)
        rc = bpf_clone_redirect(skb, m.ifindex, 0) ? -1 : 0;
    else if (m.type == MIR_RSPAN)
        rc = rspan_copy(skb, &m);
    else if (m.type == MIR_ERSPAN3)
        rc = m.family == 6 ? erspan_copy(skb, &m, id, dir, 1, 1) : erspan_copy(skb, &m, id, dir, 1, 0);
    else
        rc = m.family == 6 ? erspan_copy(skb, &m, id, dir, 0, 1) : erspan_copy(skb, &m, id, dir, 0, 0);
    if (rc != -4)                              // a looped copy is counted where it is sent
        mir_count(id, rc == 0 ? MIR_ST_SENT : rc == -3 ? MIR_ST_NOT_IP : MIR_ST_FAILED, len);
    return rc == -2;
}
