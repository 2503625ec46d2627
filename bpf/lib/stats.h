// stats.h - the per-service and per-endpoint counters (per-CPU: no atomics on the hot
// path; the driver sums the CPUs). Both hooks count here (lb.c, lib/xdp_fast.h), so a flow
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
    c = ep_stats.lookup(&ep_id);
    if (c) {
        c->packets++;
        c->bytes += p->len;
        c->sessions += new_flow;
    }
}
