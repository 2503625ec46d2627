// smoke.c - the smallest useful TC classifier: counts packets and bytes per IP protocol.
//
// Used by tests/test_bcc_smoke.py to prove that the toolchain works end to end on this
// machine: bcc compiles it, appliance.netlink attaches it (clsact, direct-action), and
// real packets show up in the map. It never changes or drops a packet.
//
// Only uapi/ headers: bcc builds against a header tree that may be older than the running
// kernel, and the uapi is the part that stays compatible.

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

// Slot for frames that are neither IPv4 nor IPv6 (ARP, ...). 255 is IANA "reserved",
// so it cannot collide with a real protocol number.
#define SMOKE_NON_IP 255

struct smoke_counter {
    u64 packets;
    u64 bytes;
};

// Key: IPv4 protocol / IPv6 next header (0..254), or SMOKE_NON_IP. Per-CPU so the hot
// path needs no atomic operations; user space sums the CPUs.
BPF_PERCPU_ARRAY(smoke_counters, struct smoke_counter, 256);

int smoke_count(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    u32 key = SMOKE_NON_IP;

    // Every header access is bounds-checked first: the verifier insists, and a short
    // frame must simply count as non-IP.
    if ((void *)(eth + 1) <= data_end) {
        if (eth->h_proto == htons(ETH_P_IP)) {
            struct iphdr *ip = (void *)(eth + 1);
            if ((void *)(ip + 1) <= data_end)
                key = ip->protocol;
        } else if (eth->h_proto == htons(ETH_P_IPV6)) {
            struct ipv6hdr *ip6 = (void *)(eth + 1);
            if ((void *)(ip6 + 1) <= data_end)
                key = ip6->nexthdr;
        }
    }

    struct smoke_counter *c = smoke_counters.lookup(&key);
    if (c) {
        c->packets += 1;
        c->bytes += skb->len;
    }
    return TC_ACT_OK;
}
