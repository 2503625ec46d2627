// mirror.h - copies of packets to a mirror session (lib/qos_maps.h: struct mirror).
// The original is never changed: SPAN clones it as it is; RSPAN adds a VLAN tag, clones,
// and takes the tag off again; ERSPAN (no GRE/ERSPAN device in the kernel: the headers
// are built here) inserts the outer Ethernet/IPv4 or IPv6/GRE/ERSPAN headers in front of the
// frame, clones it out towards the collector and removes them again. bpf_clone_redirect
// unshares the original's head after cloning, so restoring it cannot touch the copy.
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

// Type II (v3 = 0) or III (v3 = 1), outer IPv4 (v6 = 0) or IPv6 (v6 = 1). 0: sent, -1: no
// copy, -2: the original is damaged, -3: a frame ERSPAN does not carry here.
static __always_inline int erspan_copy(struct __sk_buff *skb, struct mirror *m, __u32 id,
                                       __u32 dir, const int v3, const int v6)
{
    const __u32 elen = v3 ? 12 : 8;            // ERSPAN header
    const __u32 n = (v6 ? 40 : 20) + 8 + elen + 14;   // inserted after the MAC header
    // Not carried: an aggregate (its copy could not be segmented), or a frame that is not
    // IP (the room for the headers is made behind the MAC header, which needs an IP one).
    if (skb->gso_segs > 1 ||
        (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6)))
        return -3;
    struct bpf_fib_lookup f = {};
    f.l4_protocol = 47;
    if (v6) {
        f.family = AF_INET6_;
        __builtin_memcpy(f.ipv6_src, &m->src, 16);
        __builtin_memcpy(f.ipv6_dst, &m->dst, 16);
    } else {
        f.family = AF_INET_;
        f.ipv4_src = m->src.w[0];
        f.ipv4_dst = m->dst.w[0];
    }
    f.ifindex = m->ifindex;
    f.tot_len = skb->len + n;
    if (bpf_fib_lookup(skb, &f, sizeof(f), BPF_FIB_LOOKUP_OUTPUT_) != BPF_FIB_LKUP_RET_SUCCESS)
        return -1;
    __u8 orig[14];
    if (bpf_skb_load_bytes(skb, 0, orig, 14))
        return -1;
    __u32 frame = skb->len;
    __u64 *seqp = qos_mir_seq.lookup(&id);
    __u32 seq = seqp ? (__u32)__sync_fetch_and_add(seqp, 1) : 0;

    struct erspan_tail t = {};
    t.gre_flags = bpf_htons(GRE_F_SEQ);
    t.gre_proto = bpf_htons(v3 ? GRE_P_ERSPAN3 : GRE_P_ERSPAN2);
    t.gre_seq = bpf_htonl(seq);
    __u32 vlan = m->vlan & 0xfff, sess = m->session & 0x3ff;
    if (v3) {
        __u64 ts = bpf_ktime_get_ns() / 100000;   // granularity 00: 100 microseconds
        t.w[0] = bpf_htonl((2U << 28) | (vlan << 16) | sess);
        t.w[1] = bpf_htonl((__u32)ts);
        t.w[2] = bpf_htonl((dir & 1) << 3);       // D: 0 ingress, 1 egress
        __builtin_memcpy((__u8 *)&t.w[0] + 12, orig, 14);
    } else {
        t.w[0] = bpf_htonl((1U << 28) | (vlan << 16) | sess);
        t.w[1] = bpf_htonl(skb->ifindex & 0xfffff); // index: the port seen on
        __builtin_memcpy((__u8 *)&t.w[0] + 8, orig, 14);
    }
    if (bpf_skb_adjust_room(skb, n, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
        return -1;
    int stored;
    if (v6) {
        struct erspan_h6 h = {};
        __builtin_memcpy(h.mac, f.dmac, 6);
        __builtin_memcpy(h.mac + 6, f.smac, 6);
        h.proto = bpf_htons(ETH_P_IPV6);
        h.ip.version = 6;
        h.ip.priority = m->dscp >> 2;          // traffic class: DSCP, ECN 0
        h.ip.flow_lbl[0] = (m->dscp & 3) << 6;
        h.ip.payload_len = bpf_htons(8 + elen + frame);
        h.ip.nexthdr = 47;                     // GRE
        h.ip.hop_limit = m->ttl;
        __builtin_memcpy(&h.ip.saddr, &m->src, 16);
        __builtin_memcpy(&h.ip.daddr, &m->dst, 16);
        h.t = t;
        stored = bpf_skb_store_bytes(skb, 0, &h, 14 + n, 0);
    } else {
        struct erspan_h4 h = {};
        __builtin_memcpy(h.mac, f.dmac, 6);
        __builtin_memcpy(h.mac + 6, f.smac, 6);
        h.proto = bpf_htons(ETH_P_IP);
        h.ip.version = 4;
        h.ip.ihl = 5;
        h.ip.tos = m->dscp << 2;
        h.ip.tot_len = bpf_htons(20 + 8 + elen + frame);
        h.ip.frag_off = bpf_htons(0x4000);     // DF
        h.ip.ttl = m->ttl;
        h.ip.protocol = 47;                    // GRE
        h.ip.saddr = m->src.w[0];
        h.ip.daddr = m->dst.w[0];
        h.ip.check = csum_fold_(bpf_csum_diff(0, 0, (void *)&h.ip, 20, 0));
        h.t = t;
        stored = bpf_skb_store_bytes(skb, 0, &h, 14 + n, 0);
    }
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
    mir_count(id, rc == 0 ? MIR_ST_SENT : rc == -3 ? MIR_ST_NOT_IP : MIR_ST_FAILED, len);
    return rc == -2;
}
