// fw_flow.h - an allowed new flow the balancer does not own (no service): egress SNAT
// (a conntrack flow like full-NAT's, its reply port claimed with BPF_NOEXIST by
// claim_reply, so two flows never share one) or a "pass" entry pair (CT_F_PASS: both
// directions go to the stack untouched, and the replies of an allowed flow pass an
// interface whose default policy drops). Included by lb.c after new_flow: it uses
// claim_reply and translate_and_send.
#pragma once

static __always_inline void fw_flow_entry(struct ct_entry *e, struct pkt *p, __u64 now)
{
    e->t.client = p->k.src;
    e->t.vip = p->k.dst;
    e->t.ep = p->k.dst;
    e->t.snat = p->k.src;
    e->t.client_port = p->k.sport;
    e->t.vip_port = p->k.dport;
    e->t.ep_port = p->k.dport;
    e->t.snat_port = p->k.sport;
    e->created_ns = now;
    e->last_ns = now;
    e->timeout_s = p->k.proto == IPPROTO_TCP ? FW_TIMEOUT_TCP
                   : l4_has_ports(p->k.proto) || p->k.proto == IPPROTO_ICMP ||
                             p->k.proto == IPPROTO_ICMPV6 ? FW_TIMEOUT_OTHER : FW_TIMEOUT_PROTO;
    e->proto = p->k.proto;
    e->family = p->k.family;
    e->state = CT_NEW;
}

// `sync`: a flow event for HA sync (lib/ha.h); fw_other.h's protocol pairs send none.
static __always_inline int fw_pass_flow(struct pkt *p, __u64 now, int sync)
{
    __u32 zero = 0;
    struct ct_entry *e = ct_scratch.lookup(&zero);   // off the stack (new_flow's slot)
    if (!e)
        return TC_ACT_OK;
    __builtin_memset(e, 0, sizeof(*e));
    struct ct_key rk = {};
    fw_flow_entry(e, p, now);
    e->flags = CT_F_PASS;
    e->dir = CT_DIR_REPLY;
    ct_reply_key(&e->t, p->k.proto, p->k.family, &rk);
    ct_set(&rk, e);
    e->dir = CT_DIR_ORIG;
    p->k.vtag = 0;                             // SCTP: a pass flow's key has no tag
    ct_set(&p->k, e);
    if (sync)
        flow_event(e, FE_CREATED);             // HA sync (lib/ha.h)
    return TC_ACT_OK;
}

// arg: the SNAT address's index + 1 (0: masquerade) in its low 16 bits, a fixed source port
// (the rule's port, loxilb's toPort; 0: one allocated per flow) in its high 16.
static __always_inline int fw_snat_flow(struct __sk_buff *skb, struct pkt *p, __u64 now,
                                        __u32 gen, __u32 arg)
{
    if (p->ttl <= 1)
        return TC_ACT_OK;                      // the stack answers "time exceeded"
    if ((p->k.proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO_REQ) ||
        (p->k.proto == IPPROTO_ICMPV6 && p->icmp_type != ICMP6_ECHO_REQ) ||
        (p->k.proto == IPPROTO_TCP && (p->tcp_flags & TCP_RST)))
        return TC_ACT_OK;
    // The entry in the per-CPU scratch slot, as new_flow's: the stack cannot hold it too.
    __u32 zero = 0;
    struct ct_entry *e = ct_scratch.lookup(&zero);
    if (!e)
        return TC_ACT_SHOT;
    __builtin_memset(e, 0, sizeof(*e));
    struct bpf_fib_lookup f = {};
    fw_flow_entry(e, p, now);
    int rc = fib(skb, p, &p->k.src, &p->k.dst, &f);
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
        return TC_ACT_OK;                      // local or unroutable: not ours to NAT
    struct addr *own;
    __u32 index = arg & 0xffff;
    __u16 to_port = arg >> 16;
    if (index) {
        __u32 i = gen * FW_MAX_SNAT + ((index - 1) & (FW_MAX_SNAT - 1));
        own = fw_snat.lookup(&i);
    } else {                                   // masquerade: the egress interface's address
        struct ifaddr_key ik = {.ifindex = f.ifindex, .family = p->k.family};
        own = ifaddr_map.lookup(&ik);
    }
    if (!own)
        return TC_ACT_SHOT;
    e->t.snat = *own;
    e->dir = CT_DIR_REPLY;
    if (to_port && (p->k.proto == IPPROTO_TCP || p->k.proto == IPPROTO_UDP)) {
        // A fixed source port: one flow at a time per (address, port, peer address, peer
        // port); a second one is dropped while the first lives (its reply key is taken).
        struct ct_key rk = {};
        e->t.snat_port = bpf_htons(to_port);
        ct_reply_key(&e->t, p->k.proto, p->k.family, &rk);
        if (ct_claim(&rk, e, 0) && (!ct_reply_reclaim(&rk, now, &e->t) || ct_claim(&rk, e, 0)))
            return TC_ACT_SHOT;
    } else if (claim_reply(e, p, now, 0)) {  // 0: into ct_map (lib/tcpstate.h)
        return TC_ACT_SHOT;                    // no free source port: drop, the sender retries
    }
    e->dir = CT_DIR_ORIG;
    e->packets = 1;
    e->bytes = p->len;
    __u32 g = nh_generation();
    struct nexthop nh = {};
    int fast = 0;
    if (rc == BPF_FIB_LKUP_RET_SUCCESS && p->l3_off == sizeof(struct ethhdr)) {
        nh_store(e, p, &f, g, l3_len(skb, p), &nh);
        fast = 1;
    }
    if (ct_put(&p->k, e)) {
        ct_drop_reply(e, 0);                  // another CPU made this flow meanwhile
        return TC_ACT_SHOT;
    }
    flow_event(e, FE_CREATED);                // HA sync (lib/ha.h)
    return translate_and_send(skb, p, &e->t, CT_DIR_ORIG, 0, fast ? &nh : 0, rc, &f);
}

// After fw_filter let a flow in and no service owns it.
static __always_inline int fw_unbalanced(struct __sk_buff *skb, struct pkt *p, __u64 now,
                                         __u32 live, __s64 snat, __u8 stateful)
{
    __u32 gen = live & FW_LIVE_GEN;
    if (!(live & FW_LIVE_SNAT) || p->k.proto == IPPROTO_SCTP)
        snat = -1;                             // no SNAT rules, or HA: not the active node;
                                               // SCTP: its CRC32c covers the ports
    else if (snat < 0) {
        struct fw_rule *m = fw_match(p, skb->ingress_ifindex, gen, FW_TABLE_SNAT, 0);
        if (m && m->action == FW_SNAT) {
            fw_count(m->id, p, 1);
            snat = m->arg;
        }
    }
    if (snat >= 0)
        return fw_snat_flow(skb, p, now, gen, (__u32)snat);
    if (!(live & FW_LIVE_FW) || !stateful)
        return TC_ACT_OK;
    return fw_pass_flow(p, now, 1);
}
