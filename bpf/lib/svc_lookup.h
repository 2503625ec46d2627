// svc_lookup.h - the service a packet is for (its VIP, protocol and destination port, or
// the port range holding that port). Shared by the balancer (bpf/lb.c) and the QoS program
// (bpf/qos.c: a port-range service's first packet is policed and mirrored too).
#pragma once

static __always_inline struct svc_info *lookup_service(struct pkt *p)
{
    int l4 = l4_has_ports(p->k.proto);
    struct svc_key sk = {.vip = p->k.dst, .port = l4 ? p->k.dport : 0,
                         .proto = p->k.proto == IPPROTO_ICMPV6 ? IPPROTO_ICMP : p->k.proto,
                         .family = p->k.family};
    struct svc_info *s = svc_map.lookup(&sk);
    if (s || !l4)
        return s;
    struct range_key rk = {.vip = p->k.dst, .proto = p->k.proto, .family = p->k.family};
    struct range_list *rl = range_map.lookup(&rk);
    if (!rl)
        return 0;
    __u16 port = bpf_ntohs(p->k.dport);
#pragma unroll
    for (int i = 0; i < MAX_RANGES; i++) {
        if (i >= rl->n)
            break;
        if (port >= rl->lo[i] && port <= rl->hi[i]) {
            sk.port = bpf_htons(rl->lo[i]);
            return svc_map.lookup(&sk);
        }
    }
    return 0;
}
