// nf_stages.h - where a new flow's time goes: optional timestamps between the stages of
// the new-flow path (lb.c lb_entry/new_flow), for bench/newflow_stages.py. Compiled in only
// when NF_STAGES is defined (that bench's own build of the program); otherwise every
// marker is empty and the program is the same instruction for instruction.
// Each stage adds the time since the previous marker to its per-CPU slot; the bench divides
// by the flows it sent and subtracts a marker's own cost (slot NF_ST_SELF: two markers back
// to back).
#pragma once

#define NF_ST_LOOKUP      1          // parse, clock, both conntrack tables missed
#define NF_ST_SERVICE     2          // service lookup, HA pause check, checks
#define NF_ST_SELECT      3          // endpoint selection + the endpoint's record
#define NF_ST_BUILD       4          // the entry built in the scratch slot
#define NF_ST_REPLY       5          // the REPLY key's insert (after NF_ST_CHECK)
#define NF_ST_TCP         6          // TCP numbers and the SYN's window scale noted
#define NF_ST_FIB         7          // the FIB lookup
#define NF_ST_NEXTHOP     8          // the next hop stored in the entry
#define NF_ST_ORIG        9          // the ORIG entry inserted
#define NF_ST_COUNT       10         // flow event, gauges, counters
#define NF_ST_SEND        11         // NAT and redirect
#define NF_ST_SELF        12         // a marker's own cost
#define NF_ST_CHECK       13         // the REPLY key looked up in the other table (tcpstate.h)
#define NF_ST_LAST        15         // the previous marker's time

#ifdef NF_STAGES
BPF_PERCPU_ARRAY(nf_stages, __u64, NF_ST_LAST + 1);

static __always_inline void nf_stage(__u32 i)
{
    __u32 k = NF_ST_LAST;
    __u64 now = bpf_ktime_get_ns();
    __u64 *last = nf_stages.lookup(&k);
    if (!last)
        return;
    if (i < NF_ST_LAST) {
        __u64 *s = nf_stages.lookup(&i);
        if (s)
            *s += now - *last;
    }
    *last = bpf_ktime_get_ns();               // the marker's own work is not the next stage's
}
#define NF_STAGE(i) nf_stage(i)
#define NF_STAGE_START() nf_stage(NF_ST_LAST)
#define NF_STAGE_END() do { nf_stage(NF_ST_SEND); nf_stage(NF_ST_SELF); } while (0)
#else
#define NF_STAGE(i) do {} while (0)
#define NF_STAGE_START() do {} while (0)
#define NF_STAGE_END() do {} while (0)
#endif
