// firewall.h - stateful firewall and egress SNAT for flows the conntrack does not know.
//
// Only the first packet of a flow gets here: lb.c tail-calls sluice_fw (JMP_FW) on a
// conntrack miss while fw_live says a table is on. Packets of flows the conntrack knows
// (balanced, SNAT-ed, or allowed here: a "pass" entry, CT_F_PASS) never match rules again,
// and with no rules and no interface policy nothing changes on any path but one map read
// per new flow.
//
// Classification is tuple-space search (the daemon's appliance/firewall/compile.py builds
// the tables): a rule's port ranges are split into prefixes (a range is at most 30 of
// them), and each (rule, port prefixes) is filed under its shape: family, source and
// destination address prefix lengths, source and destination port prefix lengths, and
// whether the interface and the protocol are matched. Per shape, one hash lookup with the
// packet's fields masked to that shape finds the one rule (the best of those with that
// masked key: the others can never match first). Shapes are kept in order of their best
// preference and the walk stops as soon as no later shape can win. The cost follows the
// number of shapes (at most FW_MAX_TUPLES), not the number of rules.
//
// Two generations of every table (fw_live bit 0 says which is live): the daemon fills the
// idle one and flips the bit with one write, so a packet sees one whole rule set.
#pragma once

#define FW_MAX_TUPLES     24         // shapes per table (firewall, snat) and generation
#define FW_SHAPES FW_SHAPE(0) FW_SHAPE(1) FW_SHAPE(2) FW_SHAPE(3) FW_SHAPE(4) FW_SHAPE(5) \
    FW_SHAPE(6) FW_SHAPE(7) FW_SHAPE(8) FW_SHAPE(9) FW_SHAPE(10) FW_SHAPE(11) FW_SHAPE(12) \
    FW_SHAPE(13) FW_SHAPE(14) FW_SHAPE(15) FW_SHAPE(16) FW_SHAPE(17) FW_SHAPE(18) \
    FW_SHAPE(19) FW_SHAPE(20) FW_SHAPE(21) FW_SHAPE(22) FW_SHAPE(23) {}
#define FW_MAX_RULES      16384      // rule ids 1..FW_MAX_RULES-1 (counters index)
#define FW_MAX_KEYS       262144     // masked keys over both generations
#define FW_MAX_IFPOL      1024       // interface default policies, both generations
#define FW_MAX_SNAT       1024       // SNAT addresses per generation

#define FW_TABLE_FW       0
#define FW_TABLE_SNAT     1

// fw_live bits
#define FW_LIVE_GEN       1          // which generation is live
#define FW_LIVE_FW        2          // firewall rules or policies exist
#define FW_LIVE_SNAT      4          // SNAT rules exist and this node applies them (HA)

// Actions (fw_rule.action); appliance/firewall/model.py ACTIONS mirrors them.
#define FW_ALLOW          0
#define FW_DROP           1
#define FW_REJECT         2
#define FW_COUNT          3          // counted, then the interface's default policy
#define FW_MARK           4          // skb->mark = arg, then allowed (per packet, no state)
#define FW_REDIRECT       5          // out of interface arg (per packet, no state)
#define FW_SNAT           6          // allowed; source NAT to snat address arg (0: masquerade)
#define FW_TRAP           7          // a copy out of interface arg, then allowed
#define FW_NONE           255        // no rule matched

#define FW_TIMEOUT_TCP    240        // pass / SNAT flows' established timeouts (s)
#define FW_TIMEOUT_OTHER  20
#define FW_TIMEOUT_PROTO  120        // protocols without ports (lib/fw_other.h)

struct fw_key {
    __u32 tuple;            // index into fw_tuples (generation and table included)
    __u32 ifindex;          // 0 unless the shape matches the interface
    struct addr src;        // masked to the shape
    struct addr dst;
    __be16 sport;           // masked to the shape (network order)
    __be16 dport;
    __u8 proto;             // 0 unless the shape matches the protocol
    __u8 family;
    __u16 pad;
};

struct fw_rule {
    __u32 id;               // counters index
    __u32 pref;
    __u32 arg;              // mark / ifindex / snat index + 1 (0: masquerade)
    __u8 action;
    __u8 pad[3];
};

struct fw_tuple {
    struct addr smask;
    struct addr dmask;
    __be16 spmask;          // port masks (network order)
    __be16 dpmask;
    __u32 min_pref;         // the best preference of any rule in this shape
    __u8 family;
    __u8 use_if;
    __u8 use_proto;
    __u8 pad;
};

struct fw_gen {
    __u32 n_tuples[2];      // per table
};

BPF_TABLE_PINNED("array", __u32, __u32, fw_live, 1, PIN("fwlive"));
BPF_TABLE_PINNED("array", __u32, struct fw_gen, fw_gens, 2, PIN("fwgen"));
BPF_TABLE_PINNED("array", __u32, struct fw_tuple, fw_tuples, 4 * FW_MAX_TUPLES, PIN("fwtup"));
BPF_TABLE_PINNED("hash", struct fw_key, struct fw_rule, fw_keys, FW_MAX_KEYS, PIN("fwkeys"),
                 NO_PREALLOC);
// (generation << 31 | ifindex) -> default action for packets no rule matched.
BPF_TABLE_PINNED("hash", __u32, __u8, fw_ifpol, FW_MAX_IFPOL, PIN("fwifpol"));
BPF_TABLE_PINNED("array", __u32, struct addr, fw_snat, 2 * FW_MAX_SNAT, PIN("fwsnat"));
// Per rule id: packets and bytes that matched the rule (first packets of flows, and every
// packet of stateless actions); sessions: flows it let in. Id 0 (FW_OWN_ID): the
// appliance's own flows let past a drop.
BPF_TABLE_PINNED("percpu_array", __u32, struct counters, fw_stats, FW_MAX_RULES, PIN("fwst"));
// Rule id -> digest of its table and name, for the daemon only (no program reads it): a
// restarted daemon gives each rule its id back, so its fw_stats counters go on
// (appliance/datapath/stable_ids.py).
struct fw_name {
    __u8 digest[16];
};
BPF_TABLE_PINNED("hash", __u32, struct fw_name, fw_names, FW_MAX_RULES, PIN("fwnames"),
                 NO_PREALLOC);

static __always_inline __u32 fw_live_bits(void)
{
    __u32 k = 0;
    __u32 *v = fw_live.lookup(&k);
    return v ? *v : 0;
}

// Per-CPU scratch for fw_match: the key and the best rule so far live in map memory, whose
// contents the verifier does not track, so the paths through each shape meet again (with
// them on the stack, every value of "best" was a path of its own and the walk exceeded the
// verifier's budget). The walk is unrolled: a loop's counter kept the states apart too.
struct fw_scratch {
    struct fw_key k;
    struct fw_rule best;
    struct ct_key pk;       // the packet's tuple: read from here, not from the stack
    __u32 ifindex;
    __u32 infra;            // FW_INFRA_*: which shapes may match it (fw_other.h)
};

// Infrastructure packets (lib/fw_other.h fw_infra): ICMP errors, IPv6 neighbour discovery
// and MLD, VRRP. Only rules that name their protocol (FW_INFRA_PROTO) and, for ICMP, their
// type too (FW_INFRA_TYPE) match them, and no default policy drops them: a broad drop rule
// never cuts neighbour discovery, Path MTU discovery or the HA pair's adverts.
#define FW_INFRA_PROTO    1
#define FW_INFRA_TYPE     2
BPF_PERCPU_ARRAY(fw_scratch_map, struct fw_scratch, 1);

// One shape: look the masked packet up, keep the rule if it beats the best so far.
// Returns 0 when no later shape can win (or there is none).
static __always_inline int fw_shape(struct fw_scratch *s, __u32 ti)
{
    struct fw_tuple *t = fw_tuples.lookup(&ti);
    if (!t || t->min_pref >= s->best.pref)
        return 0;
    if (t->family != s->pk.family)
        return 1;
    if (s->infra && (!t->use_proto ||
                     (s->infra == FW_INFRA_TYPE && (t->dpmask & bpf_htons(0xff00)) != bpf_htons(0xff00))))
        return 1;                              // a rule that does not name it
    s->k.tuple = ti;
    s->k.family = s->pk.family;
    s->k.ifindex = t->use_if ? s->ifindex : 0;
    s->k.proto = t->use_proto ? s->pk.proto : 0;
    s->k.sport = s->pk.sport & t->spmask;
    s->k.dport = s->pk.dport & t->dpmask;
    s->k.pad = 0;
#pragma unroll
    for (int w = 0; w < 4; w++) {
        s->k.src.w[w] = s->pk.src.w[w] & t->smask.w[w];
        s->k.dst.w[w] = s->pk.dst.w[w] & t->dmask.w[w];
    }
    struct fw_rule *r = fw_keys.lookup(&s->k);
    if (r && r->pref < s->best.pref)
        s->best = *r;
    return 1;
}

// The best rule of `table` that matches the packet (action FW_NONE: none), or 0. ICMP is
// matched with its type and code as the destination port (type << 8 | code), which is how
// compile.py files a rule's icmp-type and icmp-code, and no source port.
static __always_inline struct fw_rule *fw_match(struct pkt *p, __u32 ifindex, __u32 gen,
                                                __u32 table, __u32 infra)
{
    __u32 zero = 0;
    struct fw_scratch *s = fw_scratch_map.lookup(&zero);
    if (!s)
        return 0;
    s->best.action = FW_NONE;
    s->best.id = 0;
    s->best.pref = 0xffffffff;
    s->pk = p->k;
    if (p->k.proto == IPPROTO_ICMP || p->k.proto == IPPROTO_ICMPV6) {
        s->pk.sport = 0;
        s->pk.dport = bpf_htons((__u16)p->icmp_type << 8 | p->icmp_code);
    }
    s->ifindex = ifindex;
    s->infra = infra;
    struct fw_gen *g = fw_gens.lookup(&gen);
    if (!g)
        return &s->best;
    __u32 n = table ? g->n_tuples[1] : g->n_tuples[0];
    __u32 base = (gen * 2 + table) * FW_MAX_TUPLES;
    // Written out (FW_SHAPES), not a loop: clang turned a loop of more than two shapes
    // into one whose counter the verifier could not bound.
#define FW_SHAPE(i) if (n > i && fw_shape(s, base + i))
    FW_SHAPES
#undef FW_SHAPE
    return &s->best;
}

static __always_inline void fw_count(__u32 id, struct pkt *p, int session)
{
    struct counters *c = fw_stats.lookup(&id);
    if (c) {
        c->packets++;
        c->bytes += p->len;
        c->sessions += session;
    }
}

// TCP RST (for TCP) or ICMP / ICMPv6 "administratively prohibited" (anything else) back
// to the sender, out of the interface the packet came in on. Built in place like lib/pmtu.h.
struct fw_rst4 {
    struct iphdr ip;
    struct tcphdr tcp;
};

struct fw_rst6 {
    struct ipv6hdr ip;
    struct tcphdr tcp;
};

struct fw_pseudo4 {
    __be32 src;
    __be32 dst;
    __u8 zero;
    __u8 proto;
    __be16 len;
};

static __always_inline int fw_send_back(struct __sk_buff *skb)
{
    __u8 mac[12];
    if (bpf_skb_load_bytes(skb, 0, mac, 12))
        return TC_ACT_SHOT;
    __u8 sw[12];
    __builtin_memcpy(sw, mac + 6, 6);
    __builtin_memcpy(sw + 6, mac, 6);
    if (bpf_skb_store_bytes(skb, 0, sw, 12, 0))
        return TC_ACT_SHOT;
    return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int fw_rst(struct __sk_buff *skb, struct pkt *p)
{
    if (p->tcp_flags & TCP_RST)
        return TC_ACT_SHOT;                    // never answer a reset
    struct tcphdr in = {};
    if (bpf_skb_load_bytes(skb, p->l4_off, &in, sizeof(in)))
        return TC_ACT_SHOT;
    __u32 l4len = p->len - p->l4_off;
    __u32 payload = l4len > in.doff * 4u ? l4len - in.doff * 4u : 0;
    struct tcphdr th = {};
    th.source = in.dest;
    th.dest = in.source;
    th.doff = 5;
    th.rst = 1;
    if (in.ack) {
        th.seq = in.ack_seq;
    } else {
        th.ack = 1;
        th.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + payload + in.syn + in.fin);
    }
    __s64 sum;
    if (p->k.family == 4) {
        struct fw_rst4 m = {};
        struct fw_pseudo4 ph = {.src = p->k.dst.w[0], .dst = p->k.src.w[0],
                                .proto = IPPROTO_TCP, .len = bpf_htons(sizeof(th))};
        m.ip.version = 4;
        m.ip.ihl = 5;
        m.ip.tot_len = bpf_htons(sizeof(m));
        m.ip.ttl = PMTU_TTL;
        m.ip.protocol = IPPROTO_TCP;
        m.ip.saddr = p->k.dst.w[0];
        m.ip.daddr = p->k.src.w[0];
        m.tcp = th;
        sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
        m.tcp.check = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.tcp, sizeof(m.tcp), sum));
        m.ip.check = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.ip, sizeof(m.ip), 0));
        if (bpf_skb_change_tail(skb, p->l3_off + sizeof(m), 0))
            return TC_ACT_SHOT;
        if (bpf_skb_store_bytes(skb, p->l3_off, &m, sizeof(m), BPF_F_RECOMPUTE_CSUM))
            return TC_ACT_SHOT;
    } else {
        struct fw_rst6 m = {};
        struct pseudo6 ph = {};
        m.ip.version = 6;
        m.ip.payload_len = bpf_htons(sizeof(th));
        m.ip.nexthdr = IPPROTO_TCP;
        m.ip.hop_limit = PMTU_TTL;
        __builtin_memcpy(&m.ip.saddr, &p->k.dst, 16);
        __builtin_memcpy(&m.ip.daddr, &p->k.src, 16);
        m.tcp = th;
        ph.src = m.ip.saddr;
        ph.dst = m.ip.daddr;
        ph.len = bpf_htonl(sizeof(th));
        ph.next = IPPROTO_TCP;
        sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
        m.tcp.check = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.tcp, sizeof(m.tcp), sum));
        if (bpf_skb_change_tail(skb, p->l3_off + sizeof(m), 0))
            return TC_ACT_SHOT;
        if (bpf_skb_store_bytes(skb, p->l3_off, &m, sizeof(m), BPF_F_RECOMPUTE_CSUM))
            return TC_ACT_SHOT;
    }
    return fw_send_back(skb);
}

// ICMP destination unreachable, "communication administratively prohibited" (v4 code 13,
// v6 type 1 code 1), quoting the header and 8 bytes: lib/pmtu.h's builder.
static __always_inline int fw_unreach(struct __sk_buff *skb, struct pkt *p)
{
    if ((p->k.proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO_REQ) ||
        (p->k.proto == IPPROTO_ICMPV6 && p->icmp_type != ICMP6_ECHO_REQ))
        return TC_ACT_SHOT;                    // no error about anything but a request
    int rc = p->k.family == 4 ? icmp_error_build(skb, p, ICMP_DEST_UNREACH_, 13, 0)
                              : icmp_error_build(skb, p, 1, 1, 0);
    return rc == -1 ? fw_send_back(skb) : TC_ACT_SHOT;
}

static __always_inline int fw_reject(struct __sk_buff *skb, struct pkt *p)
{
    if (p->k.proto == IPPROTO_TCP)
        return fw_rst(skb, p);
    return fw_unreach(skb, p);
}

// The appliance's own flows. Connections its own sockets open (health probes, the BGP
// sessions ExaBGP opens, the HA sync channel to its peers) leave through the stack, not
// through this program, so the conntrack has no entry for them and their replies arrive
// here as new flows. The kernel's socket table knows them: a TCP or UDP socket connected to
// exactly this packet's peer (a listener or an unconnected socket is not one). ICMP echo
// replies to any of its own addresses (ICMP probes, the HA witness) count too.
// Like the replies of an allowed flow, they pass before any rule; fw_stats[FW_OWN_ID]
// counts them. Only asked for a packet about to be dropped or rejected.
#define FW_OWN_ID 0
#define TCP_LISTEN_ 10

static __always_inline int fw_own_flow(struct __sk_buff *skb, struct pkt *p)
{
    __u8 proto = p->k.proto;
    if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        if (p->icmp_type != (proto == IPPROTO_ICMP ? ICMP_ECHO_REP : ICMP6_ECHO_REP))
            return 0;
        // To any address of the appliance's (a secondary one, another interface's): the
        // FIB does not forward to a local address.
        struct bpf_fib_lookup f = {};
        return fib(skb, p, &p->k.src, &p->k.dst, &f) == BPF_FIB_LKUP_RET_NOT_FWDED;
    }
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
        return 0;
    struct bpf_sock_tuple t = {};
    __u32 size;
    if (p->k.family == 4) {
        t.ipv4.saddr = p->k.src.w[0];
        t.ipv4.daddr = p->k.dst.w[0];
        t.ipv4.sport = p->k.sport;
        t.ipv4.dport = p->k.dport;
        size = sizeof(t.ipv4);
    } else {
        __builtin_memcpy(t.ipv6.saddr, &p->k.src, 16);
        __builtin_memcpy(t.ipv6.daddr, &p->k.dst, 16);
        t.ipv6.sport = p->k.sport;
        t.ipv6.dport = p->k.dport;
        size = sizeof(t.ipv6);
    }
    struct bpf_sock *sk;
    if (proto == IPPROTO_TCP)
        sk = bpf_sk_lookup_tcp(skb, &t, size, BPF_F_CURRENT_NETNS, 0);
    else
        sk = bpf_sk_lookup_udp(skb, &t, size, BPF_F_CURRENT_NETNS, 0);
    if (!sk)
        return 0;
    int own = sk->dst_port != 0 && sk->state != TCP_LISTEN_;
    bpf_sk_release(sk);
    return own;
}

#define FW_CONTINUE (-1)

// The firewall's verdict on a new flow's first packet: FW_CONTINUE (allowed: the caller
// balances it, or fw_unbalanced lets it through) or a TC action. *snat_arg is set when
// the flow is to be source-NATed (firewall action snat) or left -1.
static __always_inline int fw_filter(struct __sk_buff *skb, struct pkt *p, __u32 live,
                                     __s64 *snat_arg, __u8 *stateful, __u32 infra)
{
    *snat_arg = -1;
    *stateful = 1;
    if (!(live & FW_LIVE_FW))
        return FW_CONTINUE;
    __u32 gen = live & FW_LIVE_GEN;
    __u32 ifindex = skb->ingress_ifindex;
    struct fw_rule *m = fw_match(p, ifindex, gen, FW_TABLE_FW, infra);
    if (!m)
        return TC_ACT_SHOT;
    __u8 action = m->action;
    __u8 matched = action != FW_NONE;
    __u32 arg = m->arg, id = m->id;
    if ((action == FW_NONE || action == FW_COUNT) && !infra) {
        __u32 pk = (gen << 31) | ifindex;
        __u8 *pol = fw_ifpol.lookup(&pk);
        action = pol ? *pol : FW_ALLOW;
    } else if (action == FW_NONE || action == FW_COUNT) {
        action = FW_ALLOW;
    }
    if ((action == FW_DROP || action == FW_REJECT) && fw_own_flow(skb, p)) {
        fw_count(FW_OWN_ID, p, 1);             // not the rule's: the rules never decided it
        return FW_CONTINUE;                    // a "pass" pair: its next packets skip this
    }
    if (matched)
        fw_count(id, p, 0);
    switch (action) {
    case FW_DROP:
        return TC_ACT_SHOT;
    case FW_REJECT:
        return fw_reject(skb, p);
    case FW_MARK:
        skb->mark = arg;
        *stateful = 0;
        break;
    case FW_REDIRECT:
        return bpf_redirect(arg, 0);
    case FW_TRAP:
        bpf_clone_redirect(skb, arg, 0);
        *stateful = 0;
        break;
    case FW_SNAT:
        *snat_arg = arg;
        break;
    }
    return FW_CONTINUE;
}

// lb.c: a packet the balancer's parser passes to the stack (or an ICMP error about no flow
// of ours) meets the firewall too while it has rules (lib/fw_other.h). Not on any path of
// a packet the balancer handles.
static __always_inline void fw_other_hook(struct __sk_buff *skb)
{
    if (fw_live_bits() & FW_LIVE_FW)
        jmp_map.call(skb, JMP_FW_OTHER);
}
