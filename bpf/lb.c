// lb.c - Sluice's TC ingress load balancer (clsact, direct-action).
//
// Per packet: parse -> conntrack lookup -> (hit) translate and forward
//                                        -> (miss) service lookup -> select endpoint ->
//                                           create both conntrack entries -> translate ->
//                                           forward.
// Forwarding: through the next hop cached in the conntrack entry (MACs written, then
// bpf_redirect) while it is valid (lib/nexthop.h), else bpf_fib_lookup +
// bpf_redirect_neigh (lib/fwd.h), which refills the cache.
// Anything that is not ours (no service, unknown protocol, ICMP other than echo, a later
// fragment whose first was not translated: lib/frag.h) returns TC_ACT_OK untouched. The
// control plane never sees a data packet.
//
// Built by appliance/datapath (bcc), which inlines the lib/ headers and defines PIN_ROOT
// and CT_CAPACITY. Only uapi headers: the build tree may be older than the kernel.
//
// Compiled once per module (lib/modules.h): the same text each time, with one MODULE_* set
// to 1, which selects the program functions at the bottom of this file that the compile
// builds. A new program goes in the module of its feature.

#include "lib/uapi.h"
#include "lib/consts.h"
#include "lib/modules.h"
#include "lib/structs.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/vlan.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/conntrack.h"
#include "lib/tcpstate.h"
#include "lib/sctp_tags.h"
#include "lib/sctp_mh.h"
#include "lib/nexthop.h"
#include "lib/select.h"
#include "lib/svc_lookup.h"
#include "lib/fwd.h"
#include "lib/pmtu.h"
#include "lib/frag.h"
#include "lib/snatpool.h"
#include "lib/nat64.h"
#include "lib/icmp_err.h"
#include "lib/firewall.h"
#include "lib/l3dsr.h"
#include "lib/ha.h"
#include "lib/gtpu.h"
#include "lib/stats.h"
#include "lib/estab.h"
#include "lib/qos_hook.h"
#include "lib/nf_stages.h"

// The reply key is the flow's too: inserted with BPF_NOEXIST, so no flow ever overwrites
// another's. Source NAT: try source ports until one is free (not even across CPUs can two
// flows share a (snat address, port) towards an endpoint). DNAT: the key is the client's
// own tuple; another live flow holding it (two VIPs sharing an endpoint, one client port)
// keeps it, and this one is refused: the endpoint could not tell the two apart either.
// `syn`: the flow goes into syn_map (lib/tcpstate.h); a key must be free in both tables.
static __always_inline int claim_reply(struct ct_entry *e, struct pkt *p, __u64 now, int syn)
{
    struct ct_key rk = {};
    if (!(e->t.snat.w[0] != e->t.client.w[0] || e->t.snat.w[1] != e->t.client.w[1] ||
          e->t.snat.w[2] != e->t.client.w[2] || e->t.snat.w[3] != e->t.client.w[3])) {
        ct_reply_key(&e->t, p->k.proto, p->k.family, &rk);
        if (ct_claim(&rk, e, syn) == 0)
            return 0;
        if (!ct_reply_reclaim(&rk, now, &e->t))
            return -1;
        return ct_claim(&rk, e, syn);
    }
    __u8 family = ct_reply_family(e);          // NAT64/46: the endpoint's
    __u32 start = bpf_get_prandom_u32();
    for (int i = 0; i < FNAT_TRIES; i++) {
        e->t.snat_port = ha_snat_port(start + i * 7919);   // this node's range (HA pairs)
        ct_reply_key(&e->t, p->k.proto, family, &rk);
        if (ct_claim(&rk, e, syn) == 0)
            return 0;
    }
    return -1;
}

// Translate a packet of direction `dir` and send it: through the cached next hop `nh`
// (TTL, MACs and NAT in one pass, then bpf_redirect), or after the FIB lookup `rc`/`f`.
static __always_inline int translate_and_send(struct __sk_buff *skb, struct pkt *p,
                                              struct nat_tuple *t, __u8 dir, int dsr,
                                              struct nexthop *nh, int rc,
                                              struct bpf_fib_lookup *f)
{
    int err;
    if ((skb->vlan_present || p->l3_off != sizeof(struct ethhdr)) && vlan_untag_pkt(skb, p))
        return TC_ACT_SHOT;                    // the ingress link's tags (lib/vlan.h)
    if (dsr)                                   // only the MAC changes: next hop = endpoint
        err = nh ? dsr_rewrite(skb, p, nh) : 0;
    else if (dir == CT_DIR_ORIG)
        err = nat_orig(skb, p, t, nh);
    else
        err = nat_reply(skb, p, t, nh);
    if (err)
        return TC_ACT_SHOT;
    if (p->frag == FRAG_FIRST)
        frag_record(p);                        // the later fragments follow it (frag.h)
    if (nh)
        return bpf_redirect(nh->ifindex, 0);
    return fwd_finish(skb, p, rc, f);
}

// translate_and_send, then for SCTP (`sctp`: a constant of each compiled copy of the
// balancer) what follows NAT: the CRC32c, multihoming (lib/sctp.h sctp_finish).
static __always_inline int lb_send(struct __sk_buff *skb, struct pkt *p, struct nat_tuple *t,
                                   __u8 dir, int dsr, struct nexthop *nh, int rc,
                                   struct bpf_fib_lookup *f, const int sctp)
{
    __u32 x = 0;                               // what NAT changes the ports by
    if (sctp && !dsr) {
        __be16 sport = dir == CT_DIR_ORIG ? t->snat_port : t->vip_port;
        __be16 dport = dir == CT_DIR_ORIG ? t->ep_port : t->client_port;
        x = (__u16)(p->k.sport ^ sport) | (__u32)(__u16)(p->k.dport ^ dport) << 16;
    }
    int verdict = translate_and_send(skb, p, t, dir, dsr, nh, rc, f);
    return sctp ? sctp_finish(skb, p, verdict, x) : verdict;
}

// new_flow's answer when another CPU created the same flow first (not a TC verdict).
#define NEW_FLOW_LOST_RACE 0x10000

static __always_inline int new_flow(struct __sk_buff *skb, struct pkt *p, __u64 now,
                                    const int sctp)
{
    if (p->frag == FRAG_LATER)
        return TC_ACT_OK;                      // only a first fragment starts a flow
    if (p->k.proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO_REQ)
        return TC_ACT_OK;
    if (p->k.proto == IPPROTO_ICMPV6 && p->icmp_type != ICMP6_ECHO_REQ)
        return TC_ACT_OK;
    if (p->k.proto == IPPROTO_TCP && (p->tcp_flags & TCP_RST))
        return TC_ACT_OK;
    if (sctp && !sctp_may_create(p))
        return TC_ACT_OK;                      // only an INIT opens an association
    struct svc_info *s = lookup_service(p);
    if (!s || ha_paused(&p->k.dst))
        return TC_ACT_OK;                      // not ours, or a backup's VIP (lib/ha.h)
    if (s->algo == ALG_GTP_TEID) {             // per packet by TEID, no conntrack
        jmp_map.call(skb, JMP_GTPU);           // lib/gtpu.h
        return TC_ACT_SHOT;
    }
    if (p->ttl <= 1)
        return TC_ACT_OK;                      // the stack answers "time exceeded"
    struct svc_info svc = *s;                  // one consistent snapshot of the service
    NF_STAGE(NF_ST_SERVICE);
    // TCP: only a SYN opens a flow (its handshake in syn_map), unless the service picks up
    // flows mid-stream (asymmetric paths): then any segment does, straight into ct_map.
    int syn = 0;
    if (p->k.proto == IPPROTO_TCP) {
        syn = (p->tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN)) == TCP_SYN;
        if (!syn && !(svc.flags & SVC_F_MIDSTREAM))
            return TC_ACT_SHOT;                // no flow of ours: nobody to deliver it to
    }
    if (svc.flags & SVC_F_ALLOW) {
        struct allow_key ak = {.prefixlen = 32 + (p->k.family == 4 ? 32 : 128),
                               .svc_id = svc.id, .a = p->k.src};
        if (!allow_map.lookup(&ak))
            return TC_ACT_SHOT;                // not an allowed source
    }
    __u32 ep_id = select_endpoint(&svc, p, now);
    struct ep_info *ep = ep_id ? ep_arr.lookup(&ep_id) : 0;
    if (!ep || !ep->family)
        return TC_ACT_SHOT;                    // a service without endpoints drops
    NF_STAGE(NF_ST_SELECT);

    // The new entry is built in a per-CPU scratch slot: the stack cannot hold it too.
    __u32 zero = 0;
    struct ct_entry *e = ct_scratch.lookup(&zero);
    if (!e)
        return TC_ACT_SHOT;
    __builtin_memset(e, 0, sizeof(*e));
    struct bpf_fib_lookup f = {};
    int rc = 0;
    // The endpoint's own next hop answers for the FIB while it may (lib/nexthop.h): then
    // e->nh.ifindex is set (kept in the entry, not on the stack, which is full).
    if (ep->family == p->k.family && !(svc.flags & SVC_F_IPIP))
        ep_nh_get(skb, p, ep_id, &ep->addr, nh_generation(), l3_len(skb, p), &e->nh);
    e->t.client = p->k.src;
    e->t.vip = p->k.dst;
    e->t.ep = ep->addr;
    e->t.client_port = p->k.sport;
    e->t.vip_port = p->k.dport;
    e->t.ep_port = ep->port ? ep->port : p->k.dport;
    e->t.snat = p->k.src;
    e->t.snat_port = p->k.sport;
    if (svc.mode == MODE_FULLNAT) {
        e->t.snat = svc.snat;
        if (svc.flags & SVC_F_POOL)
            snat_from_pool(svc.id, &p->k.src, &e->t.snat);
    } else if (svc.mode == MODE_ONEARM) {
        // Our own address on the link towards the endpoint (filled by the control plane),
        // in the endpoint's family (NAT64/46: not the client's).
        if (!e->nh.ifindex) {
            __u8 family = p->k.family;
            p->k.family = ep->family;
            rc = fib(skb, p, &p->k.src, &e->t.ep, &f);
            p->k.family = family;
            if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
                return TC_ACT_SHOT;
        }
        struct ifaddr_key ik = {.ifindex = e->nh.ifindex ? e->nh.ifindex : f.ifindex,
                                .family = ep->family};
        struct addr *own = ifaddr_map.lookup(&ik);
        if (!own)
            return TC_ACT_SHOT;
        e->t.snat = *own;
    }
    e->created_ns = now;
    e->last_ns = now;
    e->svc_id = svc.id;
    e->ep_id = ep_id;
    e->timeout_s = svc.timeout_s;
    e->proto = p->k.proto;
    e->family = p->k.family;
    e->state = p->k.proto == IPPROTO_TCP && !syn ? CT_EST : CT_NEW;
    e->flags = CT_F_COUNTED | (svc.algo == ALG_LEASTCONN ? CT_F_LC : 0);
    if (sctp)
        sctp_tags_init(skb, p, e);             // lib/sctp_tags.h: verification tags
    if (ep->family != p->k.family) {
        if (p->k.proto == IPPROTO_SCTP)
            return TC_ACT_SHOT;                // NAT64/46: TCP, UDP and ICMP echo flows
        e->flags |= CT_F_XLAT;
        rc = -1;                               // the FIB is asked after translation
    }
    if (svc.flags & SVC_F_IPIP) {
        e->flags |= CT_F_IPIP;                 // lib/l3dsr.h
        rc = -1;                               // the FIB is asked with the tunnel's length
    }
    NF_STAGE(NF_ST_BUILD);
    e->dir = CT_DIR_REPLY;
    // The REPLY entry is a copy of `e`: it must not take the endpoint's next hop (the ORIG
    // direction's, from lib/nexthop.h ep_nh_get) as its own. Its copy gets a generation that
    // is not the current one (its first packet asks the FIB, which fills its own); the ORIG
    // entry gets it back.
    e->nh.gen = ~e->nh.gen;
    if (svc.mode == MODE_DSR)
        e->flags |= CT_F_DSR;                   // the endpoint answers the client directly
    else if (claim_reply(e, p, now, syn))
        return TC_ACT_SHOT;                    // no free reply tuple: drop, client retries
    e->nh.gen = ~e->nh.gen;
    NF_STAGE(NF_ST_REPLY);
    e->dir = CT_DIR_ORIG;
    if (p->k.proto == IPPROTO_TCP)
        tcp_note(skb, e, p);
    NF_STAGE(NF_ST_TCP);
    e->packets = 1;
    e->bytes = p->len;
    // At most one FIB lookup per new flow (one-arm's, above, already had the answer), none
    // when the endpoint's next hop answered: it goes into the entry before the entry goes
    // into the table.
    if (!e->nh.ifindex && svc.mode != MODE_ONEARM && !(e->flags & CT_F_TAIL))
        rc = fib(skb, p, svc.mode == MODE_DSR ? &p->k.src : &e->t.snat, &e->t.ep, &f);
    NF_STAGE(NF_ST_FIB);
    __u32 gen = nh_generation();
    __u32 len = l3_len(skb, p);
    struct nexthop nh = {};
    int fast = 0;
    if (e->nh.ifindex) {
        nh = e->nh;
        fast = 1;
    } else if (rc == BPF_FIB_LKUP_RET_SUCCESS && p->l3_off == sizeof(struct ethhdr)) {
        nh_store(e, p, &f, gen, len, &nh);
        ep_nh_store(skb, p, ep_id, &e->t.ep, &f, gen, len);
        fast = 1;
    }
    NF_STAGE(NF_ST_NEXTHOP);
    // The ORIG key: lb_entry found it in neither table a moment ago (or deleted it), so
    // only the insert's own BPF_NOEXIST can still see it taken (another CPU, same flow).
    if (ct_insert(&p->k, e, syn)) {
        // Another CPU made this flow meanwhile (its first packets arrived together): ours
        // must not replace it, and our reply entry must not stay behind as an orphan.
        if (!(e->flags & CT_F_DSR))
            ct_drop_reply(e, syn);
        return NEW_FLOW_LOST_RACE;
    }
    NF_STAGE(NF_ST_ORIG);
    flow_event(e, FE_CREATED);

    ct_count(e);
    count(p, svc.id, ep_id, 1);
    if (e->flags & CT_F_TAIL)
        return tail_call_flow(skb, e->flags);
    NF_STAGE(NF_ST_COUNT);
    int verdict = lb_send(skb, p, &e->t, CT_DIR_ORIG, svc.mode == MODE_DSR, fast ? &nh : 0, rc,
                          &f, sctp);
    NF_STAGE_END();
    if (!sctp && skb->cb[QOS_CB_EP] == QOS_EP_PENDING)
        return qos_ep_first(skb, ep_id, verdict);   // endpoint policer (lib/qos_hook.h)
    return verdict;
}

#include "lib/fw_flow.h"
#include "lib/fw_other.h"
#include "lib/sctp_frag.h"

// A flow the conntrack does not know: through the firewall first while it has rules (which
// continues in sluice_fw_lb), else new_flow right here: no tail call and no second parse
// per new flow (with new_flow inlined, sluice_lb verified at ~572k and sluice_lb6 at ~543k
// of the 1M instructions the verifier allows, 2026-11-30 afternoon). A flow another CPU
// made meanwhile (two first packets at once) loses this packet: the sender retransmits.
// SCTP, in a program of its own already, comes back here from the firewall marked as let
// in (lib/sctp.h).
static __always_inline int start_flow(struct __sk_buff *skb, struct pkt *p, __u64 now,
                                      const int sctp)
{
    if ((fw_live_bits() & (FW_LIVE_FW | FW_LIVE_SNAT)) && !(sctp && sctp_fw_passed(skb)))
        jmp_map.call(skb, JMP_FW);
    int rc = new_flow(skb, p, now, sctp);
    return rc == NEW_FLOW_LOST_RACE ? TC_ACT_SHOT : rc;
}

// The balancer, compiled three times: sluice_lb and sluice_lb6 (everything but SCTP, one
// family each: `fam`) and sluice_sctp (SCTP only, both families, a tail call from the
// other two). The verifier explores each protocol's paths through the whole program;
// SCTP's own, in the main program, put it over its budget. With the family a constant it
// knows which conntrack table a lookup of the packet's own key reads (lib/ct_tables.h:
// IPv4 under the compact key, IPv6 under the full one); one balancer for both families
// would be walked once per table after every lookup: twice its budget.
static __always_inline int lb_entry(struct __sk_buff *skb, const int sctp, const int fam)
{
    NF_STAGE_START();
    if (fam == 4 && frame_is_ipv6(skb)) {
        // sluice_lb is the IPv4 balancer, IPv6's is sluice_lb6. An untagged IPv6 packet
        // met sluice_lb6 already: it is attached as a filter of its own ahead of this one
        // (protocol ipv6; appliance/datapath/program.py), so getting here means it left the
        // packet to the stack, or nothing IPv6 is loaded yet: pass. A VLAN-tagged one (TC
        // matches a filter's protocol against the tag's) is handed over here. An IPv4
        // packet pays one test: parse reads the same words. A return of its own keeps LLVM
        // from merging this call with another (one call with a slot known only at run
        // time: an indirect jump, not a direct one; tests/test_datapath_families.py checks
        // the bytecode).
        if (skb->protocol == bpf_htons(ETH_P_IPV6) && !skb->vlan_present)
            return TC_ACT_UNSPEC;
        jmp_map.call(skb, JMP_LB6);
        return TC_ACT_UNSPEC;
    }
    struct pkt p = {};
    int parsed = parse_packet_f(skb, &p, fam);
    if (parsed == PARSE_SCTP && !sctp)
        jmp_map.call(skb, JMP_SCTP);           // lib/sctp.h
    if (parsed != (sctp ? PARSE_SCTP : PARSE_OK)) {
        if (!sctp)
            fw_other_hook(skb);                // other protocols meet the firewall too
        return TC_ACT_OK;
    }
    if (p.icmp_err) {
        jmp_map.call(skb, JMP_ICMP_ERR);
        return TC_ACT_OK;                      // no tail-call target: leave it alone
    }
    __u64 now = bpf_ktime_get_coarse_ns();     // timestamps need no finer than a tick
    if (sctp && p.frag)
        return sctp_frag(skb, &p, now);        // lib/sctp_frag.h
    if (p.frag == FRAG_LATER && frag_ports(&p, now))
        return TC_ACT_OK;                      // its first fragment was not ours (frag.h)

    int syn;                                   // the flow is in syn_map (lib/tcpstate.h)
    int tcp = p.k.proto == IPPROTO_TCP;
    struct ct_entry *e = sctp ? sctp_find(&p, &syn) : ct_find_f(&p.k, &syn, fam);
    if (!sctp && e && est_plain(e, &p, now))
        goto send;                             // an established flow's plain ACK (estab.h)
    if (e && ha_hold(e))
        return TC_ACT_SHOT;                    // a peer's flow on a backup waits (lib/ha.h)
    if (e && e->dir == CT_DIR_ORIG) {
        int expired = ct_expired(e, now);      // once: it is on every packet's path
        if (expired && tcp && e->state == CT_EST && !(p.tcp_flags & TCP_SYN))
            return TC_ACT_SHOT;                // timed out: the sweep resets both ends
        if (expired ||
            (tcp && (e->state == CT_CLOSED || e->state == CT_FIN) &&
             (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) ||
            (sctp && sctp_restarts(e, &p))) {
            // Expired, or a new TCP connection reusing the tuple of a flow that is closing
            // or closed: start afresh.
            flow_event(e, FE_GONE);
            ct_delete_flow(e);
            e = 0;
        }
    }
    if (!e) {
        NF_STAGE(NF_ST_LOOKUP);
        return start_flow(skb, &p, now, sctp);
    }
    if (sctp && !(e = sctp_tag_ok(skb, &p, e)))
        return TC_ACT_SHOT;                    // another verification tag: not this flow's

    struct ct_entry *ho = 0;                   // the ORIG entry, for ha_track after tcp_note
    __u8 before = 0;
    // The family of the flow's other key (the other entry's): the endpoint's for NAT64/46.
    const int ofam = fam && (e->flags & CT_F_XLAT) ? 10 - fam : fam;
    if (e->dir == CT_DIR_ORIG) {
        if (p.ttl <= 1)
            return TC_ACT_OK;
        if (tcp && (p.tcp_flags & TCP_RST)) {
            struct ct_key rk = {};
            ct_reply_key(&e->t, e->proto, ct_reply_family(e), &rk);
            if (!tcp_rst_ok(e, (e->flags & CT_F_DSR) ? 0 : ct_lookup_in_f(&rk, syn, ofam), &p))
                return TC_ACT_SHOT;            // not in the window: not this flow's
        }
        before = e->state;
        lb_track(e, &p, CT_DIR_ORIG, now, sctp);
        if (syn && e->state == CT_EST && !(p.tcp_flags & (TCP_SYN | TCP_RST))) {
            e = tcp_promote(e, &p.k, fam);     // the handshake is complete
            if (!e)
                return TC_ACT_SHOT;
        }
        ho = e;
    } else if (p.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) || e->state != CT_EST ||
               now - e->last_ns >= CT_SYNC_NS ||
               (sctp && sctp_reply_changes_state(&p))) {
        // A reply that changes the flow's state, or the first in CT_SYNC_NS: the ORIG
        // entry holds state and idle time. Other replies of an established flow were seen
        // alive a moment ago and need neither its lookup nor a write to it.
        struct ct_key ok = {};
        ct_orig_key(&e->t, e->proto, e->family, &ok);
        if (sctp)
            ok.vtag = e->tcp_seq;              // lib/sctp_tags.h: the ORIG key's tag
        struct ct_entry *o = ct_lookup_in_f(&ok, syn, ofam);
        if (!o || ct_expired(o, now)) {
            if (o && tcp && o->state == CT_EST)
                return TC_ACT_SHOT;            // timed out: the sweep resets both ends
            flow_event(o ? o : e, FE_GONE);
            ct_delete_flow(o ? o : e);
            return TC_ACT_OK;
        }
        if (p.ttl <= 1)
            return TC_ACT_OK;
        if (tcp && (p.tcp_flags & TCP_RST) && !tcp_rst_ok(e, o, &p))
            return TC_ACT_SHOT;                // not in the window: not this flow's
        before = o->state;
        lb_track(o, &p, CT_DIR_REPLY, now, sctp);
        ho = o;
        if (sctp)
            sctp_tags_ack(skb, &p, o, e);
        e->state = o->state;
        e->last_ns = now;
    } else if (p.ttl <= 1) {
        return TC_ACT_OK;
    }
    if (tcp)
        tcp_note(skb, e, &p);                  // one call site (the verifier's budget)
    if (ho)
        ha_track(ho, before);                  // after tcp_note: its event has this segment
    if (e->flags & CT_F_PASS)
        return TC_ACT_OK;                      // let in by the firewall: the stack forwards
    e->packets++;
    e->bytes += p.len;
    count(&p, e->svc_id, e->ep_id, 0);
    if (e->flags & CT_F_TAIL)                  // NAT64/46, L3-DSR: lib/nat64.h, l3dsr.h
        return tail_call_flow(skb, e->flags);
send:;
    struct nat_tuple *t = &e->t;
    int dsr = e->flags & CT_F_DSR;
    __u32 gen = nh_generation();
    __u32 len = l3_len(skb, &p);
    struct nexthop nh;
    if (nh_get(e, &p, gen, len, &nh))
        return lb_send(skb, &p, t, e->dir, dsr, &nh, 0, 0, sctp);
    struct bpf_fib_lookup f = {};
    int rc;
    if (dsr)
        rc = fib(skb, &p, &p.k.src, &t->ep, &f);
    else if (e->dir == CT_DIR_ORIG)
        rc = fib(skb, &p, &t->snat, &t->ep, &f);
    else
        rc = fib(skb, &p, &t->vip, &t->client, &f);
    if (rc == BPF_FIB_LKUP_RET_SUCCESS && p.l3_off == sizeof(struct ethhdr)) {
        nh_store(e, &p, &f, gen, len, &nh);
        return lb_send(skb, &p, t, e->dir, dsr, &nh, rc, &f, sctp);
    }
    return lb_send(skb, &p, t, e->dir, dsr, 0, rc, &f, sctp);
}

#if MODULE_CORE
// The IPv4 balancer, attached behind sluice_lb6's filter; hands tagged IPv6 packets over.
int sluice_lb(struct __sk_buff *skb)
{
    return lb_entry(skb, 0, 4);
}
#endif

#if MODULE_IPV6
// The IPv6 balancer: a TC filter of its own for untagged IPv6 packets, a tail-call target
// for VLAN-tagged ones (sluice_lb: lb_entry).
int sluice_lb6(struct __sk_buff *skb)
{
    return lb_entry(skb, 0, 6);
}
#endif

#if MODULE_SCTP
// Tail-call target for SCTP packets.
int sluice_sctp(struct __sk_buff *skb)
{
    return lb_entry(skb, 1, 0);
}
#endif

#if MODULE_CORE
// Tail-call target for ICMP errors (lib/icmp_err.h): parses the packet again.
int sluice_icmp_err(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (parse_packet(skb, &p) != PARSE_OK || !p.icmp_err)
        return TC_ACT_OK;
    int rc = handle_icmp_error(skb, &p);
    if (rc != ICMP_ERR_NOT_OURS)
        return rc;
    fw_other_hook(skb);                        // no flow's: the firewall's rules apply
    return TC_ACT_OK;
}
#endif

#if MODULE_XLAT
// Tail-call target for packets of NAT64/NAT46 flows (lib/nat64.h).
int sluice_xlat(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (vlan_untag(skb) < 0)                   // the client's VLAN tags stay on its link
        return TC_ACT_SHOT;
    if (parse_packet(skb, &p) != PARSE_OK)
        return TC_ACT_SHOT;
    if (p.icmp_err)
        return handle_xlat_error(skb, &p);
    return handle_xlat(skb, &p);
}
#endif

#if MODULE_L3DSR
// Tail-call target for client packets of L3-DSR flows (lib/l3dsr.h).
int sluice_l3dsr(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (vlan_untag(skb) < 0)                   // the client's VLAN tags stay on its link
        return TC_ACT_SHOT;
    if (parse_packet(skb, &p) != PARSE_OK || p.icmp_err)
        return TC_ACT_SHOT;
    return handle_l3dsr(skb, &p);
}
#endif

#if MODULE_SCTP
// Tail-call target for translated SCTP packets: CRC32c, multihoming (lib/sctp_mh.h).
int sluice_sctp_nat(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (parse_packet(skb, &p) != PARSE_SCTP)
        return TC_ACT_SHOT;
    return sctp_after_nat(skb, &p);
}
#endif

#if MODULE_SCTP
// Tail-call target after sluice_sctp_nat: multihoming's second half (lib/sctp_mh.h): an
// INIT / INIT ACK's checksum and growth, a COOKIE ACK's alternate paths.
int sluice_sctp_paths(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (parse_packet(skb, &p) != PARSE_SCTP)
        return skb->cb[SCTP_CB_X] ? TC_ACT_SHOT : skb->cb[SCTP_CB_VERDICT];
    return sctp_mh_up(skb, &p);
}
#endif

#if MODULE_GTPU
// Tail-call target for gtp-teid services (lib/gtpu.h).
int sluice_gtpu(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (vlan_untag(skb) < 0)                   // the client's VLAN tags stay on its link
        return TC_ACT_SHOT;
    if (parse_packet(skb, &p) != PARSE_OK)
        return TC_ACT_OK;
    struct svc_info *s = lookup_service(&p);
    return s ? gtpu_forward(skb, &p, s) : TC_ACT_OK;
}
#endif

#if MODULE_CORE
// Tail-call target for packets too big for their egress link (lib/pmtu.h).
int sluice_too_big(struct __sk_buff *skb)
{
    struct pkt p = {};
    int parsed = parse_packet(skb, &p);
    if (parsed != PARSE_OK && parsed != PARSE_SCTP)
        return TC_ACT_OK;
    return handle_too_big(skb, &p);
}
#endif

#if MODULE_FW
// Tail-call target for new flows while the firewall or SNAT has rules (lib/firewall.h).
int sluice_fw(struct __sk_buff *skb)
{
    struct pkt p = {};
    int parsed = parse_packet(skb, &p);
    if ((parsed != PARSE_OK && parsed != PARSE_SCTP) || p.icmp_err)
        return TC_ACT_OK;
    __u64 now = bpf_ktime_get_coarse_ns();
    if (p.frag == FRAG_LATER && frag_ports(&p, now))
        return TC_ACT_OK;
    if (p.k.proto == IPPROTO_ICMP || p.k.proto == IPPROTO_ICMPV6)
        bpf_skb_load_bytes(skb, p.l4_off + 1, &p.icmp_code, 1);   // rules match type, code
    __u32 live = fw_live_bits();
    __s64 snat = -1;
    __u8 stateful = 1;
    int rc = fw_filter(skb, &p, live, &snat, &stateful, 0);
    if (rc != FW_CONTINUE)
        return rc;
    if (lookup_service(&p)) {
        // The balancer's own new-flow path, in a program of its own (the verifier would
        // not take both in one); SCTP's is sluice_sctp, told the firewall let it in.
        if (parsed == PARSE_SCTP)
            sctp_fw_pass(skb);
        else
            jmp_map.call(skb, JMP_FW_LB);
        return TC_ACT_SHOT;
    }
    return fw_unbalanced(skb, &p, now, live, snat, stateful);
}
#endif

#if MODULE_FW
// Tail-call target, while the firewall has rules, for the packets the balancer's parser
// leaves to the stack (other IP protocols, ICMP other than echo, IPv4 options, IPv6
// extension headers) and ICMP errors about no flow of ours (lib/fw_other.h).
int sluice_fw_other(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (fw_parse_loose(skb, &p))
        return TC_ACT_OK;
    return fw_other(skb, &p);
}
#endif

#if MODULE_FW
// Tail-call target after sluice_fw while the firewall or SNAT has rules: a new flow (not
// SCTP's) the firewall let in and a service owns. Without rules, start_flow runs new_flow
// in sluice_lb itself, so this copy of it is compiled only with the firewall module.
int sluice_fw_lb(struct __sk_buff *skb)
{
    struct pkt p = {};
    if (parse_packet(skb, &p) != PARSE_OK || p.icmp_err)
        return TC_ACT_OK;
    __u64 now = bpf_ktime_get_coarse_ns();
    if (p.frag == FRAG_LATER && frag_ports(&p, now))
        return TC_ACT_OK;
    int rc = new_flow(skb, &p, now, 0);
    return rc == NEW_FLOW_LOST_RACE ? TC_ACT_SHOT : rc;   // the other CPU's flow: retried
}
#endif
