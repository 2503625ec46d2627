// sctp.h - SCTP in the balancer: parse (ports, verification tag, first chunk, length),
// which packets may open an association, the association's state, its timeouts, and the
// checksum fix after a port rewrite (lib/crc32c.h).
//
// An association is keyed by addresses, ports and verification tag (lib/sctp_tags.h):
// two associations on one 5-tuple (clients behind an SCTP-aware NAT) are two flows. Only
// an INIT (tag 0) creates a flow; every other packet must carry the verification tag its
// receiver chose. State follows the first chunk of each packet (bundling puts control
// chunks first, RFC 9260 6.10):
//   INIT -> CT_NEW; INIT ACK -> CT_NEW + SCTP_COOKIE_SEEN; COOKIE ACK (or any
//   DATA/SACK/HEARTBEAT once the cookie was echoed) -> CT_EST; SHUTDOWN, SHUTDOWN ACK ->
//   CT_FIN; SHUTDOWN COMPLETE, ABORT -> CT_CLOSED. DSR sees only the client's side: its
//   COOKIE ECHO establishes. Timeouts: 30 s for the handshake, the service's established,
//   10 s shutting down, 2 s closed (conntrack.h ct_timeout_ns).
// SCTP's CRC32c covers the SCTP header and chunks only, no pseudo-header: an address
// rewrite leaves it alone, a port rewrite changes it.
#pragma once

#include "crc32c.h"

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

#define SCTP_DATA              0
#define SCTP_INIT              1
#define SCTP_INIT_ACK          2
#define SCTP_SACK              3
#define SCTP_HEARTBEAT         4
#define SCTP_HEARTBEAT_ACK     5
#define SCTP_ABORT             6
#define SCTP_SHUTDOWN          7
#define SCTP_SHUTDOWN_ACK      8
#define SCTP_COOKIE_ECHO       10
#define SCTP_COOKIE_ACK        11
#define SCTP_SHUTDOWN_COMPLETE 14
#define SCTP_NO_CHUNK          0xFF     // a later fragment (parse.h): no chunk of its own

// Between INIT ACK and COOKIE ACK the state stays CT_NEW, marked in fin_seen (unused by
// SCTP otherwise): the timeouts are then TCP's as they stand (new: 30 s, fin: 10 s,
// closed: 2 s, established: the service's), so conntrack.h needs no SCTP case and the main
// program no SCTP branch.
#define SCTP_COOKIE_SEEN       4

struct sctp_common {
    __be16 source;
    __be16 dest;
    __be32 vtag;
    __u32 checksum;         // CRC32c, stored little-endian
    __u8 chunk_type;        // the first chunk's header
    __u8 chunk_flags;
    __be16 chunk_len;
};

// Ports as TCP and UDP have them (the ct key, the service key, NAT).
static __always_inline int l4_has_ports(__u8 proto)
{
    return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

// parse.h: fill p from the SCTP common header and first chunk.
static __always_inline int sctp_parse(struct pkt *p, void *data, void *data_end)
{
    __u32 l4 = p->l4_off;
    if (l4 > 18 + sizeof(struct ipv6hdr) + 8)  // (IPv6: + a fragment header)
        return PARSE_PASS;
    struct sctp_common *sh = data + l4;
    if ((void *)(sh + 1) > data_end)
        return PARSE_PASS;
    p->k.sport = sh->source;
    p->k.dport = sh->dest;
    p->k.vtag = sh->vtag;                      // lib/sctp_tags.h: part of the ORIG key
    p->csum_off = l4 + offsetof(struct sctp_common, checksum);
    p->sctp_chunk = sh->chunk_type;
    p->sctp_init = sh->chunk_type == SCTP_INIT && sh->vtag == 0;
    return PARSE_SCTP;
}

// The SCTP packet's length (the IP payload: its CRC32c covers all of it), 0 if unreadable.
static __always_inline __u32 sctp_len(struct __sk_buff *skb, struct pkt *p)
{
    __be16 n;
    __u32 off = p->l3_off + (p->k.family == 4 ? offsetof(struct iphdr, tot_len)
                                              : offsetof(struct ipv6hdr, payload_len));
    if (bpf_skb_load_bytes(skb, off, &n, 2))
        return 0;
    __u32 len = bpf_ntohs(n);
    if (p->k.family == 4)
        len = len > sizeof(struct iphdr) ? len - sizeof(struct iphdr) : 0;
    return len;
}

// A packet that may open an association: an INIT with verification tag 0.
static __always_inline int sctp_may_create(struct pkt *p)
{
    return p->sctp_init;
}

// A reply whose chunk changes the association's state (the slow reply path in lb.c).
static __always_inline int sctp_reply_changes_state(struct pkt *p)
{
    __u8 c = p->sctp_chunk;
    return c == SCTP_ABORT || c == SCTP_SHUTDOWN || c == SCTP_SHUTDOWN_ACK ||
           c == SCTP_SHUTDOWN_COMPLETE;
}

// A new INIT on a closed (or closing) association's tuple starts a new one.
static __always_inline int sctp_restarts(struct ct_entry *o, struct pkt *p)
{
    return p->sctp_init && (o->state == CT_CLOSED || o->state == CT_FIN);
}

// 1: the association just closed (the caller leaves the active-session gauges).
static __always_inline int sctp_track(struct ct_entry *o, struct pkt *p)
{
    __u8 c = p->sctp_chunk;
    if (c == SCTP_ABORT || c == SCTP_SHUTDOWN_COMPLETE) {
        o->state = CT_CLOSED;
        return 1;
    }
    if (o->state == CT_CLOSED)
        return 0;
    if (c == SCTP_SHUTDOWN || c == SCTP_SHUTDOWN_ACK) {
        o->state = CT_FIN;
        return 0;
    }
    if (o->state == CT_FIN)
        return 0;
    if (c == SCTP_INIT_ACK || (c == SCTP_COOKIE_ECHO && !(o->flags & CT_F_DSR))) {
        if (o->state == CT_NEW)
            o->fin_seen |= SCTP_COOKIE_SEEN;
    } else if (c == SCTP_COOKIE_ACK || c == SCTP_COOKIE_ECHO) {
        o->state = CT_EST;                     // DSR: the endpoint's answers bypass us
    } else if ((c == SCTP_DATA || c == SCTP_SACK || c == SCTP_HEARTBEAT ||
                c == SCTP_HEARTBEAT_ACK) && (o->fin_seen & SCTP_COOKIE_SEEN)) {
        o->state = CT_EST;                     // the COOKIE ACK came bundled or was lost
    }
    return 0;
}

// Verification tags: lib/sctp_tags.h.

// The packets that matter to multihoming (lib/sctp_mh.h).
static __always_inline int sctp_handshake(struct pkt *p)
{
    __u8 c = p->sctp_chunk;
    return c == SCTP_INIT || c == SCTP_INIT_ACK || c == SCTP_COOKIE_ACK;
}

// What follows NAT runs in a program of its own (JMP_SCTP_NAT, lib/sctp_mh.h): the CRC32c
// fix's 64 steps per packet, inlined at every place lb.c translates, put the main program
// over the verifier's budget, and multihoming's parameter rewrite is longer still.
// lb.c lb_send computes what the ports change by (x); once the packet is translated and
// its verdict known (a redirect stays pending across a tail call), sctp_finish hands both
// over in skb->cb. Only packets whose ports changed and the handshake's INIT, INIT ACK and
// COOKIE ACK go there. A packet whose checksum cannot be fixed is dropped, never sent with
// a wrong one.
#define SCTP_CB_X       0
#define SCTP_CB_VERDICT 1
#define SCTP_CB_FW      2
#define SCTP_CB_OTAG    3                      // the ORIG key's tag (lib/sctp_tags.h)

// The firewall (lb.c sluice_fw) let a new SCTP flow in: back to sluice_sctp, marked so
// that its start_flow does not ask the firewall again. A value, not a bit: skb->cb holds
// whatever an earlier layer left there.
#define SCTP_FW_PASSED  0x53435446u

static __always_inline void sctp_fw_pass(struct __sk_buff *skb)
{
    skb->cb[SCTP_CB_FW] = SCTP_FW_PASSED;
    jmp_map.call(skb, JMP_SCTP);
}

static __always_inline int sctp_fw_passed(struct __sk_buff *skb)
{
    if (skb->cb[SCTP_CB_FW] != SCTP_FW_PASSED)
        return 0;
    skb->cb[SCTP_CB_FW] = 0;
    return 1;
}

static __always_inline int sctp_finish(struct __sk_buff *skb, struct pkt *p, int verdict,
                                       __u32 x)
{
    if (!x && !sctp_handshake(p))
        return verdict;
    skb->cb[SCTP_CB_X] = x;
    skb->cb[SCTP_CB_VERDICT] = verdict;
    jmp_map.call(skb, JMP_SCTP_NAT);
    return x ? TC_ACT_SHOT : verdict;          // no target: never a wrong checksum
}
