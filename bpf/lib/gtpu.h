// gtpu.h - GTP-U (N3) tunnels balanced by their TEID (algorithm gtp-teid).
//
// Every G-PDU of one tunnel must reach the same UPF whatever its outer 5-tuple, and one
// outer 5-tuple (gNB:2152 -> VIP:2152) usually carries many tunnels. So a gtp-teid service
// keeps no conntrack: each packet is balanced on its own by the TEID in its GTP-U header
// (the slot table is a Maglev table: UPFs coming and going move only their share of the
// tunnels), DNAT'ed (or, in DSR, only re-addressed at L2) and forwarded. The inner packet
// is not touched. The UPF answers from its own address (the model allows only modes
// default and dsr: a source NAT would need the state this does not keep). A packet that is
// not GTPv1 (or too short) hashes as TEID 0: one endpoint, consistently.
#pragma once

#define GTPU_PORT 2152

struct gtpu_hdr {
    __u8 flags;             // version (3 bits) = 1, PT = 1, E, S, PN
    __u8 type;              // 255: G-PDU
    __be16 len;
    __be32 teid;
};

static __always_inline __u32 gtpu_teid(struct __sk_buff *skb, struct pkt *p)
{
    struct gtpu_hdr h;
    if (p->k.proto != IPPROTO_UDP ||
        bpf_skb_load_bytes(skb, p->l4_off + sizeof(struct udphdr), &h, sizeof(h)) ||
        (h.flags & 0xf0) != 0x30)
        return 0;
    return bpf_ntohl(h.teid);
}

static __always_inline __u32 gtpu_hash(__u32 teid, __u32 svc_id)
{
    return mix32(teid ^ mix32(svc_id));
}

// One packet of a gtp-teid service `s` (a tail call from lb.c new_flow; p parsed again):
// choose by TEID, translate, forward. No conntrack entry, no active-session gauge.
static __always_inline int gtpu_forward(struct __sk_buff *skb, struct pkt *p, struct svc_info *s)
{
    if (p->ttl <= 1)
        return TC_ACT_OK;                      // the stack answers "time exceeded"
    struct svc_info svc = *s;
    if (svc.flags & SVC_F_ALLOW) {
        struct allow_key ak = {.prefixlen = 32 + (p->k.family == 4 ? 32 : 128),
                               .svc_id = svc.id, .a = p->k.src};
        if (!allow_map.lookup(&ak))
            return TC_ACT_SHOT;
    }
    if (!svc.n_slots)
        return TC_ACT_SHOT;
    __u32 ep_id = sel_slot(&svc, gtpu_hash(gtpu_teid(skb, p), svc.id) % svc.n_slots);
    struct ep_info *ep = ep_id ? ep_arr.lookup(&ep_id) : 0;
    if (!ep || !ep->family)
        return TC_ACT_SHOT;
    struct addr dst = ep->addr;
    __be16 dport = ep->port ? ep->port : p->k.dport;
    struct bpf_fib_lookup f = {};
    int rc = fib(skb, p, &p->k.src, &dst, &f);
    // DSR: the FIB's next hop is the endpoint and redirect_neigh writes its MAC.
    if (svc.mode != MODE_DSR &&
        nat_rewrite(skb, p, &p->k.src, p->k.sport, &dst, dport, p->k.sport, 0))
        return TC_ACT_SHOT;
    struct counters *c = svc_stats.lookup(&svc.id);
    if (c) {
        c->packets++;
        c->bytes += p->len;
    }
    c = ep_stats.lookup(&ep_id);
    if (c) {
        c->packets++;
        c->bytes += p->len;
    }
    return fwd_finish(skb, p, rc, &f);
}
