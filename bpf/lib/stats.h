// stats.h - the per-service and per-endpoint counters (per-CPU: no atomics on the hot
// path; the driver sums the CPUs). Both are per-CPU arrays, whose lookups the verifier
// inlines: an established packet makes no counter helper call (endpoint ids from
// EP_STATS_ARRAY up, rare, count in the ep_stats hash). Both hooks count here (lb.c, lib/xdp_fast.h), so a flow
// forwarded by XDP shows in `sluice lb list`, SNMP and Prometheus like any other.
#pragma once

static __always_inline void count(struct pkt *p, __u32 svc_id, __u32 ep_id, int new_flow)
{
    struct counters *c = svc_stats.lookup(&svc_id);
    if (c) {
        c->packets++;
        c->bytes += p->len;
        c->sessions += new_flow;
    }
    c = ep_id < EP_STATS_ARRAY ? ep_stats_arr.lookup(&ep_id) : ep_stats.lookup(&ep_id);
    if (c) {
        c->packets++;
        c->bytes += p->len;
        c->sessions += new_flow;
    }
}
