// frag.h - fragmented IPv4 and IPv6 datagrams (UDP, TCP, ICMP echo, SCTP).
//
// Only the first fragment carries the L4 header, so only it can find (or create) the
// flow. Once it has been translated, (source, destination, id, protocol) -> its ports is
// recorded here; each later fragment of the datagram takes the ports from this record,
// then goes the ordinary conntrack way with them: same entry, same endpoint, same
// addresses, and nat.h leaves its (absent) L4 header alone. The first fragment's L4
// checksum update covers the whole datagram (it sums the changed fields only).
// SCTP: the record keeps the flow key's verification tag too (lib/sctp_frag.h).
//
// A later fragment with no record (it overtook its first fragment, or its datagram is not
// ours) goes to the stack untouched, as every fragment did before: a TC program cannot
// hold a packet. For a VIP the stack drops it (there is no route to a VIP, and no ICMP
// error is sent about a non-first fragment), so that datagram is lost as on a lossy link
// and the sender's retry gets through; its first fragment, still balanced, leaves the
// endpoint's reassembly to time out. Traffic to the balancer's own addresses is
// reassembled by its stack as before. State is bounded: an LRU map, and a record older
// than FRAG_TIMEOUT_NS is not used.
#pragma once

#define FRAG_CAPACITY    32768
// The fragments of one datagram leave their sender back to back; a short life keeps an
// IPv4 id (16 bits) that its sender wrapped from finding an older datagram's record.
#define FRAG_TIMEOUT_NS  (2 * NSEC)

struct frag_key {
    struct addr src;
    struct addr dst;
    __be32 id;
    __u8 proto;
    __u8 family;
    __u16 pad;
};

struct frag_val {
    __be16 sport;
    __be16 dport;
    __be32 vtag;            // SCTP: the key's verification tag (lib/sctp_tags.h)
    __u64 ts;
};

BPF_TABLE_PINNED("lru_hash", struct frag_key, struct frag_val, frag_map, FRAG_CAPACITY,
                 PIN("frag"));

static __always_inline void frag_key_of(struct pkt *p, struct frag_key *fk)
{
    fk->src = p->k.src;
    fk->dst = p->k.dst;
    fk->id = p->frag_id;
    fk->proto = p->k.proto;
    fk->family = p->k.family;
    fk->pad = 0;
}

// The first fragment of a datagram we translated: remember its ports for the rest.
static __always_inline void frag_record(struct pkt *p)
{
    struct frag_key fk = {};
    frag_key_of(p, &fk);
    struct frag_val v = {.sport = p->k.sport, .dport = p->k.dport, .vtag = p->k.vtag,
                         .ts = bpf_ktime_get_coarse_ns()};
    frag_map.update(&fk, &v);
}

// A later fragment: its ports from the first fragment's record; -1 without one.
static __always_inline int frag_ports(struct pkt *p, __u64 now)
{
    struct frag_key fk = {};
    frag_key_of(p, &fk);
    struct frag_val *v = frag_map.lookup(&fk);
    if (!v || (__s64)(now - v->ts) > (__s64)FRAG_TIMEOUT_NS)
        return -1;
    p->k.sport = v->sport;
    p->k.dport = v->dport;
    p->k.vtag = v->vtag;
    return 0;
}
