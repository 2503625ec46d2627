// pktharness.c - the warm meter's harness (bench/pktcost.py), not part of the appliance.
//
// BPF_PROG_TEST_RUN with repeat=N runs a program N times on the *same* skb. The balancer
// rewrites the packet (NAT, TTL), so from the second run on it would see a packet that no
// longer matches its flow. This harness runs first on every repetition: it writes the
// original frame back (from frame_map), optionally gives it a fresh source port (new-flow
// runs: every repetition a new flow), then tail-calls target[0] (the balancer, or the
// null program when the harness's own cost is measured). Its cost is measured with the
// null program as target and stated next to every warm figure.

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#define FRAME_MAX 256

struct frame {
    __u32 len;        // bytes of data to write back
    __u32 bump_off;   // offset of the TCP/UDP source port to vary per run; 0: none
    __u32 n;          // runs so far (source port = 1024 + n % 64000)
    __u32 pad;
    __u8 data[FRAME_MAX];
};

BPF_ARRAY(frame_map, struct frame, 1);
BPF_PROG_ARRAY(target, 1);

// The frame to write back and its length (14..FRAME_MAX, bounds the verifier can see);
// 0: none.
static __always_inline struct frame *frame_to_store(__u64 *len)
{
    __u32 k = 0;
    struct frame *f = frame_map.lookup(&k);
    if (!f)
        return 0;
    // Two checks with a barrier between them: folded into one (len - 14 > 242, on a
    // copy), they would leave the verifier no bounds on len itself.
    __u64 n = f->len;
    if (n > FRAME_MAX)
        return 0;
    asm volatile("" : "+r"(n));
    if (n < 14)
        return 0;
    *len = n;
    return f;
}

int pkt_harness(struct __sk_buff *skb)
{
    __u64 len = 0;
    struct frame *f = frame_to_store(&len);
    if (!f)
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, 0, f->data, len, 0))
        return TC_ACT_SHOT;
    __u32 off = f->bump_off;
    if (off && off <= FRAME_MAX - 2) {
        __u16 port = bpf_htons(1024 + f->n % 64000);
        f->n++;
        bpf_skb_store_bytes(skb, off, &port, 2, 0);
    }
    target.call(skb, 0);
    return TC_ACT_SHOT;                        // no target: never a real verdict
}

// The null target: what is left when the balancer is taken away (and the cold floor:
// run alone, one packet per call, it is the timer and the call itself).
int pkt_null(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}

// The same for the XDP fast path (bpf/xdp.c): its own prog array (a prog array holds one
// program type), the frame written back with bpf_xdp_store_bytes.
BPF_PROG_ARRAY(xdp_target, 1);
static long (*xdp_store)(struct xdp_md *, __u32, void *, __u32) =
    (void *)BPF_FUNC_xdp_store_bytes;

int xdp_harness(struct xdp_md *ctx)
{
    __u64 len = 0;
    struct frame *f = frame_to_store(&len);
    if (!f)
        return XDP_ABORTED;
    if (xdp_store(ctx, 0, f->data, len))
        return XDP_ABORTED;
    xdp_target.call(ctx, 0);
    return XDP_ABORTED;                        // no target: never a real verdict
}

int xdp_null(struct xdp_md *ctx)
{
    return XDP_PASS;
}
