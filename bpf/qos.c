// qos.c - Sluice's QoS program: mirror sessions and policers (lib/mirror.h,
// lib/policer.h), run before the balancer.
//
// Attached with tcx (BPF_TCX_INGRESS / BPF_TCX_EGRESS), which the kernel runs ahead of
// the clsact filters, where the balancer (bpf/lb.c, clsact prio 1) is: it returns
// TCX_NEXT (TC_ACT_UNSPEC) for every packet it does not drop, so the balancer and any
// other filter see the packet next. It is attached only to interfaces where something is
// configured (appliance/datapath/qos.py): without policers or mirrors the balancer's
// path is exactly what it was. Built from this file alone, sharing the balancer's pinned
// maps (service and conntrack lookups: which service and endpoint a packet belongs to).

#include "lib/uapi.h"

#include "lib/consts.h"
#include "lib/structs.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/svc_lookup.h"
#include "lib/qos_maps.h"
#include "lib/policer.h"
#include "lib/mirror.h"
#include "lib/qos_hook.h"

static __always_inline int qos_run(struct __sk_buff *skb, __u32 dir)
{
    struct qos_if_key ik = {.ifindex = skb->ifindex, .dir = dir};
    struct qos_attach *ap = qos_if.lookup(&ik);
    struct qos_attach ifa = {};
    if (ap)
        ifa = *ap;
    // The interface's mirror sees every frame as it came (ARP too), before any policer.
    if (ifa.mirror && mirror_packet(skb, ifa.mirror, dir))
        return TC_ACT_SHOT;
    struct pkt p = {};
    if (parse_packet(skb, &p) != PARSE_OK)
        return TC_ACT_UNSPEC;
    __u64 now = 0;
    if (ifa.policer) {
        now = bpf_ktime_get_ns();
        if (police(skb, &p, ifa.policer, now) == TC_ACT_SHOT)
            return TC_ACT_SHOT;
    }
    if (dir != QOS_DIR_IN || p.icmp_err)
        return TC_ACT_UNSPEC;
    __u32 zero = 0;
    struct qos_cfg *cfg = qos_cfg.lookup(&zero);
    __u32 flags = cfg ? cfg->flags : 0;
    if (!flags)
        return TC_ACT_UNSPEC;
    if (!now)
        now = bpf_ktime_get_ns();
    if (flags & QOS_HAVE_SRC) {
        struct qos_src_key sk = {.prefixlen = 32 + (p.k.family == 4 ? 32 : 128),
                                 .family = p.k.family, .a = p.k.src};
        struct qos_attach *sa = qos_src.lookup(&sk);
        if (sa && sa->policer && police(skb, &p, sa->policer, now) == TC_ACT_SHOT)
            return TC_ACT_SHOT;
    }
    if (!(flags & (QOS_HAVE_SVC | QOS_HAVE_EP)))
        return TC_ACT_UNSPEC;
    // Which service (and endpoint) the packet belongs to: its conntrack entry (a TCP flow
    // still in its handshake: syn_map's), or for the first packet of a flow the service
    // (exact port or port range: lib/svc_lookup.h).
    __u32 svc_id = 0, ep_id = 0;
    int reply = 0;
    struct ct_entry *e = ct_get(&p.k);
    if (!e && p.k.proto == IPPROTO_TCP)
        e = syn_get(&p.k);
    if (e) {
        svc_id = e->svc_id;
        if (e->dir == CT_DIR_ORIG)
            ep_id = e->ep_id;
        else
            reply = 1;
    } else {
        struct svc_info *s = lookup_service(&p);
        if (s)
            svc_id = s->id;
        if (s && (flags & QOS_HAVE_EP))        // the balancer polices it once it chose
            skb->cb[QOS_CB_EP] = QOS_EP_PENDING;   // the endpoint (lib/qos_hook.h)
    }
    if (svc_id && (flags & QOS_HAVE_SVC)) {
        struct qos_attach *sa = qos_svc.lookup(&svc_id);
        if (sa) {
            struct qos_attach a = *sa;
            // A service's mirror copies both directions; its policer the client's side.
            if (a.mirror && mirror_packet(skb, a.mirror, reply))
                return TC_ACT_SHOT;
            if (a.policer && !reply && police(skb, &p, a.policer, now) == TC_ACT_SHOT)
                return TC_ACT_SHOT;
        }
    }
    if (ep_id && (flags & QOS_HAVE_EP)) {
        struct qos_attach *ea = qos_ep.lookup(&ep_id);
        if (ea && ea->policer && police(skb, &p, ea->policer, now) == TC_ACT_SHOT)
            return TC_ACT_SHOT;
    }
    return TC_ACT_UNSPEC;
}

int sluice_qos_in(struct __sk_buff *skb)
{
    return qos_run(skb, QOS_DIR_IN);
}

int sluice_qos_out(struct __sk_buff *skb)
{
    return qos_run(skb, QOS_DIR_OUT);
}

// At the loopback's ingress while an ERSPAN session exists: the copies erspan_loop cloned
// there (not IP, or GSO aggregates) are wrapped and sent to the collector; any other
// packet goes on (lib/mirror.h).
int sluice_qos_mir(struct __sk_buff *skb)
{
    int rc = erspan_looped(skb);
    return rc == -1 ? TC_ACT_UNSPEC : rc;
}

// Tail-called by the balancer (JMP_QOS_EP) after it chose a new flow's endpoint and
// translated its first packet: that endpoint's policer, then the balancer's verdict.
int sluice_qos_ep(struct __sk_buff *skb)
{
    __u32 ep_id = skb->cb[QOS_CB_EP];
    int verdict = skb->cb[QOS_CB_VERDICT];
    skb->cb[QOS_CB_EP] = 0;
    struct pkt p = {};
    if (parse_packet(skb, &p) != PARSE_OK)
        return verdict;
    struct qos_attach *ea = qos_ep.lookup(&ep_id);
    if (ea && ea->policer && police(skb, &p, ea->policer, bpf_ktime_get_ns()) == TC_ACT_SHOT)
        return TC_ACT_SHOT;
    return verdict;
}
