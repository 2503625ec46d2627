// nat64.h - NAT64 (IPv6 VIP, IPv4 endpoints) and NAT46 (IPv4 VIP, IPv6 endpoints):
// RFC 7915 header translation of TCP and UDP flows, and of the ICMP errors about them.
//
// A flow whose endpoint is of the other family has CT_F_XLAT in both entries: the ORIG
// entry is keyed in the client's family, the REPLY entry in the endpoint's (its tuple's
// snat and ep are addresses of that family: the service's snat-address, or one-arm's own
// address on the endpoint's link). The main program tail-calls sluice_xlat (JMP_XLAT) for
// every packet of such a flow, after conntrack has tracked and counted it, so the
// established path of ordinary flows pays one flag test and no stack.
//
// Translation (bpf_skb_change_proto moves the headers, keeps GSO state consistent): the L4
// checksum is updated for the new pseudo-header (RFC 7915 section 4.5/5.5: only the
// addresses differ in sum; length and protocol sum the same in both) and the ports; the new
// IP header is written whole: traffic class <-> TOS, hop limit <-> TTL, IPv4 DF set (the
// path MTU is the endpoints' business, as with any router that does not fragment), no
// IPv4 options, no IPv6 extension headers but a fragment header. Fragments (frag.h finds
// their flow) map to each other (RFC 7915 4.1 / 5.1.1): IPv4 identification, offset and MF
// <-> a fragment header, DF clear. ICMP echo (ping) is translated too: types, identifier,
// and the checksum's ICMPv6 pseudo-header (xlat_echo). A fragmented ping's pseudo-header
// holds the whole message's length, which its first fragment (the one with the checksum)
// does not give: that fragment is translated without it and held (xlat_hold_map, LRU, per
// datagram) until the last fragment gives the length; then the held one gets the length
// into its checksum and leaves, as a clone, just before the last one (xlat_release). The
// middle fragments go as they come: the receiver reassembles in any order. A last
// fragment that overtakes its first, or a datagram over XLAT_HOLD_MAX bytes per fragment,
// is lost as on a lossy link (ping sends the next).
//
// ICMP errors about a translated flow (icmp_err.h finds the entry) are rebuilt in the other
// family, as pmtu.h builds its own: outer header, the mapped type/code (RFC 7915 4.2/5.2),
// and the quoted packet's IP header plus its first 8 bytes, both translated to what the
// receiver sent. Errors without an RFC 7915 mapping (parameter problems other than "next
// header") are dropped.
//
// The source of a translated error is the address its receiver talks to: the VIP towards
// the client, the snat address towards the endpoint, also when a router on the far side
// sent it. RFC 7915 maps a router's address only where an address mapping exists: an
// IPv4 router's address into IPv6 needs a NAT64 prefix (RFC 6052), which a balancer has
// none of for its clients, and the well-known 64:ff9b::/96 must not carry the non-global
// addresses backend networks use (RFC 6052 3.1); an IPv6 router's address has no IPv4
// form at all, and RFC 6791 (which RFC 7915 5.1 points to) then asks for an IPv4 address
// of the translator's own: the VIP is one, routed back through us like the flow. Receivers
// match an error to their socket by the quoted packet, not by its source (Linux, BSD,
// Windows), so PMTU discovery, "unreachable" and "prohibited" work; what is lost is the
// router's identity (a traceroute shows the VIP for the hops behind the balancer).
#pragma once

#define ICMP_TIME_EXCEEDED_   11
#define ICMP6_DEST_UNREACH_   1
#define ICMP6_TIME_EXCEEDED_  3
#define ICMP6_PARAM_PROB_     4
#define IP_MF_                0x2000

// The main program's way in (a tail call: translation needs a stack of its own).
static __always_inline int xlat_call(struct __sk_buff *skb)
{
    jmp_map.call(skb, JMP_XLAT);
    return TC_ACT_SHOT;                        // no translation program: drop, never leak
}

// Where the translated packet goes: (src:sport -> dst:dport) of direction `dir`.
static __always_inline void xlat_target(struct nat_tuple *t, __u8 dir, struct addr **src,
                                        __be16 *sport, struct addr **dst, __be16 *dport)
{
    if (dir == CT_DIR_ORIG) {
        *src = &t->snat;
        *sport = t->snat_port;
        *dst = &t->ep;
        *dport = t->ep_port;
    } else {
        *src = &t->vip;
        *sport = t->vip_port;
        *dst = &t->client;
        *dport = t->client_port;
    }
}

// The L4 checksum and ports: old pseudo-header addresses `old` (olen bytes) become `nw`
// (nlen bytes); ports become sport/dport. Before the header move: p's offsets still hold.
static __always_inline int xlat_l4(struct __sk_buff *skb, struct pkt *p, __be32 *old, int olen,
                                   __be32 *nw, int nlen, __be16 sport, __be16 dport)
{
    __be16 ports[2];
    if (bpf_skb_load_bytes(skb, p->l4_off, ports, 4))
        return -1;
    __u64 fl = l4_csum_flags(p);
    if (p->k.proto == IPPROTO_UDP) {
        __be16 c = 0;
        if (bpf_skb_load_bytes(skb, p->csum_off, &c, 2) || !c)
            return -1;                         // UDP/IPv4 without checksum: RFC 7915 4.5 drop
    }
    __s64 diff = bpf_csum_diff(old, olen, nw, nlen, 0);
    if (diff < 0 || bpf_l4_csum_replace(skb, p->csum_off, 0, diff, BPF_F_PSEUDO_HDR | fl))
        return -1;
    if (ports[0] != sport && bpf_l4_csum_replace(skb, p->csum_off, ports[0], sport, 2 | fl))
        return -1;
    if (ports[1] != dport && bpf_l4_csum_replace(skb, p->csum_off, ports[1], dport, 2 | fl))
        return -1;
    ports[0] = sport;
    ports[1] = dport;
    return bpf_skb_store_bytes(skb, p->l4_off, ports, 4, 0) ? -1 : 0;
}

static __always_inline int xlat_set_ethertype(struct __sk_buff *skb, struct pkt *p, __u16 proto)
{
    __be16 e = bpf_htons(proto);
    return bpf_skb_store_bytes(skb, p->l3_off - 2, &e, 2, 0) ? -1 : 0;
}

// `frag_off`: host order (flags and offset); IP_DF_ for a packet that is no fragment.
static __always_inline void ip4_header(struct iphdr *ip, __u8 tos, __u16 len, __u8 ttl,
                                       __u8 proto, __be32 src, __be32 dst, __be16 id,
                                       __u16 frag_off)
{
    ip->version = 4;
    ip->ihl = 5;
    ip->tos = tos;
    ip->tot_len = bpf_htons(len);
    ip->id = id;
    ip->frag_off = bpf_htons(frag_off);
    ip->ttl = ttl;
    ip->protocol = proto;
    ip->check = 0;
    ip->saddr = src;
    ip->daddr = dst;
    ip->check = csum_fold_(bpf_csum_diff(0, 0, (void *)ip, sizeof(*ip), 0));
}

static __always_inline void ip6_header(struct ipv6hdr *ip6, __u8 tclass, __u16 plen, __u8 hl,
                                       __u8 next, struct addr *src, struct addr *dst)
{
    ip6->version = 6;
    ip6->priority = tclass >> 4;
    ip6->flow_lbl[0] = (tclass & 0xf) << 4;
    ip6->flow_lbl[1] = 0;
    ip6->flow_lbl[2] = 0;
    ip6->payload_len = bpf_htons(plen);
    ip6->nexthdr = next;
    ip6->hop_limit = hl;
    __builtin_memcpy(&ip6->saddr, src->w, 16);
    __builtin_memcpy(&ip6->daddr, dst->w, 16);
}

// ICMP echo (ping), RFC 7915 4.2 / 5.2: request 8 <-> 128, reply 0 <-> 129, the identifier
// is the flow's "port" (`id`). The two checksums differ by the ICMPv6 pseudo-header `ph`:
// added towards IPv6 (`to6`), taken away towards IPv4; the type and identifier changes
// are folded in with it, and the 8 header bytes written once. Before the header move.
static __always_inline int xlat_echo(struct __sk_buff *skb, struct pkt *p, struct pseudo6 *ph,
                                     int to6, __be16 id)
{
    __u8 h[8], n[8];
    if (bpf_skb_load_bytes(skb, p->l4_off, h, 8))
        return -1;
    __u16 oldc = *(__u16 *)(h + 2);
    __u8 type = h[0];
    if (to6)
        n[0] = type == ICMP_ECHO_REQ ? ICMP6_ECHO_REQ : ICMP6_ECHO_REP;
    else
        n[0] = type == ICMP6_ECHO_REQ ? ICMP_ECHO_REQ : ICMP_ECHO_REP;
    n[1] = h[1];
    n[2] = n[3] = h[2] = h[3] = 0;
    *(__be16 *)(n + 4) = id;
    *(__u16 *)(n + 6) = *(__u16 *)(h + 6);     // sequence number
    __s64 d = bpf_csum_diff((void *)h, 8, (void *)n, 8, 0);
    __s64 ps = bpf_csum_diff(0, 0, (void *)ph, sizeof(*ph), 0);
    if (d < 0 || ps < 0)
        return -1;
    __u16 pf = fold16((__u32)ps);
    __u16 c = ~fold16((__u64)(__u16)~oldc + (__u32)d + (to6 ? pf : (__u16)~pf));
    *(__u16 *)(n + 2) = c;
    return bpf_skb_store_bytes(skb, p->l4_off, n, 8, 0) ? -1 : 0;
}

struct frag6hdr {                  // RFC 8200 4.5
    __u8 next;
    __u8 reserved;
    __be16 off_m;                  // offset (8-octet units) << 3 | M
    __be32 id;
};

// IPv6 -> IPv4, in place; p then describes the IPv4 packet. A fragment (parse.h: a fragment
// header right after the fixed header) becomes an IPv4 fragment (RFC 7915 5.1.1): the
// identification's low 16 bits, the offset and M, DF clear; the first one's L4 checksum
// update covers the datagram (as frag.h's), later ones have no L4 header to touch.
static __always_inline int xlat_6to4(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                                     __be16 sport, struct addr *dst, __be16 dport, __u32 *whole)
{
    struct ipv6hdr h6;
    struct frag6hdr fh = {};
    __u32 hl = p->l4_off - p->l3_off;          // 40, or 48 with a fragment header
    if ((hl != sizeof(h6) && hl != sizeof(h6) + sizeof(fh)) ||
        bpf_skb_load_bytes(skb, p->l3_off, &h6, sizeof(h6)))
        return -1;                             // other extension headers: not translated
    if (hl != sizeof(h6) && bpf_skb_load_bytes(skb, p->l3_off + sizeof(h6), &fh, sizeof(fh)))
        return -1;
    __be32 nw[2] = {src->w[0], dst->w[0]};
    __u8 proto = p->k.proto;
    if (proto == IPPROTO_ICMPV6) {
        // The ICMPv6 checksum covers the whole message in its pseudo-header's length: a
        // first fragment is translated without it (xlat_hold adds it later), the last one
        // gives it (*whole).
        __u32 frag_len = bpf_ntohs(h6.payload_len) - (hl - sizeof(h6));
        __u16 om = bpf_ntohs(fh.off_m);
        struct pseudo6 ph = {.len = p->frag ? 0 : bpf_htonl(frag_len), .next = IPPROTO_ICMPV6};
        ph.src = h6.saddr;
        ph.dst = h6.daddr;
        if (p->frag == FRAG_LATER) {
            if (!(om & 1))
                *whole = (om >> 3) * 8 + frag_len;
        } else if (xlat_echo(skb, p, &ph, 0, sport)) {
            return -1;
        }
        proto = IPPROTO_ICMP;
    } else if (p->frag != FRAG_LATER &&
               xlat_l4(skb, p, (__be32 *)&h6.saddr, 32, nw, 8, sport, dport)) {
        return -1;
    }
    if (hl != sizeof(h6) && bpf_skb_adjust_room(skb, -(__s32)sizeof(fh), BPF_ADJ_ROOM_NET, 0))
        return -1;                             // the fragment header goes
    if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0))
        return -1;
    struct iphdr ip;
    __u8 tclass = (h6.priority << 4) | (h6.flow_lbl[0] >> 4);
    __be16 id = 0;
    __u16 fo = IP_DF_;
    if (p->frag) {
        __u16 om = bpf_ntohs(fh.off_m);
        id = bpf_htons((__u16)bpf_ntohl(fh.id));
        fo = (om >> 3) | (om & 1 ? IP_MF_ : 0);
    }
    ip4_header(&ip, tclass, bpf_ntohs(h6.payload_len) - (hl - sizeof(h6)) + sizeof(ip),
               h6.hop_limit, proto, nw[0], nw[1], id, fo);
    if (bpf_skb_store_bytes(skb, p->l3_off, &ip, sizeof(ip), 0) ||
        xlat_set_ethertype(skb, p, ETH_P_IP))
        return -1;
    p->k.family = 4;
    p->k.proto = proto;
    p->l4_off = p->l3_off + sizeof(ip);
    p->csum_off -= hl - sizeof(ip);
    return 0;
}

// IPv4 -> IPv6, in place; p then describes the IPv6 packet. A fragment gets a fragment
// header (RFC 7915 4.1): the identification zero-extended, the offset and MF.
static __always_inline int xlat_4to6(struct __sk_buff *skb, struct pkt *p, struct addr *src,
                                     __be16 sport, struct addr *dst, __be16 dport, __u32 *whole)
{
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, p->l3_off, &ip, sizeof(ip)))
        return -1;
    __be32 old[2] = {ip.saddr, ip.daddr};
    __be32 nw[8];
    __builtin_memcpy(nw, src->w, 16);
    __builtin_memcpy(nw + 4, dst->w, 16);
    __u8 proto = p->k.proto;
    __u32 plen = bpf_ntohs(ip.tot_len) - sizeof(ip);
    if (proto == IPPROTO_ICMP) {
        struct pseudo6 ph = {.len = p->frag ? 0 : bpf_htonl(plen), .next = IPPROTO_ICMPV6};
        __builtin_memcpy(&ph.src, src->w, 16);
        __builtin_memcpy(&ph.dst, dst->w, 16);
        __u16 fo = bpf_ntohs(ip.frag_off);
        if (p->frag == FRAG_LATER) {           // see xlat_6to4
            if (!(fo & IP_MF_))
                *whole = (fo & 0x1FFF) * 8 + plen;
        } else if (xlat_echo(skb, p, &ph, 1, sport)) {
            return -1;
        }
        proto = IPPROTO_ICMPV6;
    } else if (p->frag != FRAG_LATER && xlat_l4(skb, p, old, 8, nw, 32, sport, dport)) {
        return -1;
    }
    if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
        return -1;
    __u32 fl = p->frag ? sizeof(struct frag6hdr) : 0;
    if (fl && bpf_skb_adjust_room(skb, fl, BPF_ADJ_ROOM_NET, 0))
        return -1;                             // room for the fragment header
    struct ipv6hdr h6;
    ip6_header(&h6, ip.tos, plen + fl, ip.ttl, fl ? IPV6_FRAGHDR_ : proto, src, dst);
    if (bpf_skb_store_bytes(skb, p->l3_off, &h6, sizeof(h6), 0) ||
        xlat_set_ethertype(skb, p, ETH_P_IPV6))
        return -1;
    if (fl) {
        __u16 fo = bpf_ntohs(ip.frag_off);
        struct frag6hdr fh = {.next = proto,
                              .off_m = bpf_htons((fo & 0x1FFF) << 3 | !!(fo & IP_MF_)),
                              .id = bpf_htonl(bpf_ntohs(ip.id))};
        if (bpf_skb_store_bytes(skb, p->l3_off + sizeof(h6), &fh, sizeof(fh), 0))
            return -1;
    }
    p->k.family = 6;
    p->k.proto = proto;
    p->l4_off = p->l3_off + sizeof(h6) + fl;
    p->csum_off += sizeof(h6) + fl - sizeof(ip);
    return 0;
}

// The translated packet leaves through next hop `nh`: TTL - 1 and MACs (nat.h's job for
// other flows, here with the fixed offsets of an untagged frame).
static __always_inline int xlat_send(struct __sk_buff *skb, struct pkt *p, struct nexthop *nh)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if (p->k.family == 4) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > data_end)
            return TC_ACT_SHOT;
        __u16 *ttlw = (void *)ip + 8;          // TTL and protocol: one checksum word
        __u16 ow = *ttlw;
        ip->ttl--;
        ip->check = ~fold16((__u16)~ip->check + (__u64)(__u16)~ow + *ttlw);
    } else {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > data_end)
            return TC_ACT_SHOT;
        ip6->hop_limit--;
    }
    __builtin_memcpy(eth->h_dest, nh->dmac, 6);
    __builtin_memcpy(eth->h_source, nh->smac, 6);
    return bpf_redirect(nh->ifindex, 0);
}

// --- fragmented pings (see the top) ---------------------------------------------------

#define XLAT_HOLD_MAX  2048                    // bytes of a held first fragment (its frame)
#define XLAT_HOLDS     256

struct xlat_held {
    __u32 len;                                 // of the frame in b
    __u32 csum_off;                            // its ICMP / ICMPv6 checksum
    __u32 to6;                                 // translated to ICMPv6: the length adds
    __u32 pad;
    __u8 b[XLAT_HOLD_MAX];
};
// Not pinned (the xlat module's own): a restart loses what is held, as a lossy link would.
BPF_TABLE("lru_hash", struct frag_key, struct xlat_held, xlat_hold_map, XLAT_HOLDS);
BPF_PERCPU_ARRAY(xlat_hold_buf, struct xlat_held, 1);

// n if within [lo, hi], else 0: 64-bit, both tests on the register the helper call then
// gets (with 32-bit values LLVM tests zero-extended copies the verifier cannot link).
static __always_inline __u64 xlat_len(__u64 n, __u64 lo, __u64 hi)
{
    asm volatile("" : "+r"(n));
    if (n > hi)
        return 0;
    asm volatile("" : "+r"(n));
    if (n < lo)
        return 0;
    return n;
}

// A translated first fragment of a ping (without the length in its checksum): held.
static __always_inline int xlat_hold(struct __sk_buff *skb, struct pkt *p, struct frag_key *fk)
{
    __u32 zero = 0, len = skb->len;
    struct xlat_held *h = xlat_hold_buf.lookup(&zero);
    if (!h || len < sizeof(struct ethhdr) || len > XLAT_HOLD_MAX)
        return TC_ACT_SHOT;
    h->len = len;
    h->csum_off = p->l4_off + 2;
    h->to6 = p->k.family == 6;
    __u64 n = xlat_len(len, sizeof(struct ethhdr), XLAT_HOLD_MAX);
    if (!n || bpf_skb_load_bytes(skb, 0, h->b, n))
        return TC_ACT_SHOT;
    xlat_hold_map.update(fk, h);
    return TC_ACT_SHOT;                        // it leaves with the last fragment
}

// The last fragment of a ping (translated, `whole`: the message's length), about to leave
// by next hop `nh`: its held first fragment first, the length in its checksum, as a clone
// of this packet turned into it; then this packet back as it was.
static __always_inline void xlat_release(struct __sk_buff *skb, struct pkt *p,
                                         struct frag_key *fk, __u32 whole, struct nexthop *nh)
{
    __u32 zero = 0, len = skb->len;
    __u64 n;
    struct xlat_held *h = xlat_hold_map.lookup(fk);
    struct xlat_held *me = xlat_hold_buf.lookup(&zero);
    if (!h || !me || len < sizeof(struct ethhdr) || len > XLAT_HOLD_MAX)
        return;
    __u32 hlen = h->len, co = h->csum_off;
    if (hlen < sizeof(struct ethhdr) || hlen > XLAT_HOLD_MAX || co > XLAT_HOLD_MAX - 2)
        return;
    // The length's two 16-bit words into (to ICMPv6) or out of (to ICMP) the checksum.
    __u16 c = *(__u16 *)(h->b + co);
    __u32 w = (whole >> 16) + (whole & 0xffff);
    __u16 l = bpf_htons(fold16(w));
    c = ~fold16((__u64)(__u16)~c + (h->to6 ? l : (__u16)~l));
    *(__u16 *)(h->b + co) = c;
    me->len = len;
    n = xlat_len(len, sizeof(struct ethhdr), XLAT_HOLD_MAX);
    if (!n || bpf_skb_load_bytes(skb, 0, me->b, n) || bpf_skb_change_tail(skb, hlen, 0))
        goto restore;
    n = xlat_len(h->len, sizeof(struct ethhdr), XLAT_HOLD_MAX);
    if (!n || bpf_skb_store_bytes(skb, 0, h->b, n, BPF_F_RECOMPUTE_CSUM))
        goto restore;
    xlat_hold_map.delete(fk);
    if (xlat_send(skb, p, nh) == TC_ACT_REDIRECT)
        bpf_clone_redirect(skb, nh->ifindex, 0);
restore:
    n = xlat_len(me->len, sizeof(struct ethhdr), XLAT_HOLD_MAX);
    if (n && !bpf_skb_change_tail(skb, n, 0)) {
        n = xlat_len(me->len, sizeof(struct ethhdr), XLAT_HOLD_MAX);
        if (n)
            bpf_skb_store_bytes(skb, 0, me->b, n, BPF_F_RECOMPUTE_CSUM);
    }
}

// Tail-call body (JMP_XLAT): a packet of a CT_F_XLAT flow, already tracked and counted by
// the main program. Translate it, then forward it as the main program does (the cached
// next hop of its direction, else the FIB, which refills the cache).
static __always_inline int handle_xlat(struct __sk_buff *skb, struct pkt *p)
{
    if (p->l3_off != sizeof(struct ethhdr))
        return TC_ACT_SHOT;
    if (p->frag == FRAG_LATER && frag_ports(p, bpf_ktime_get_coarse_ns()))
        return TC_ACT_SHOT;                    // as the main program found them (frag.h)
    int syn;                                   // a TCP handshake's flow: syn_map (tcpstate.h)
    struct ct_entry *e = ct_find(&p->k, &syn);
    if (!e || !(e->flags & CT_F_XLAT))
        return TC_ACT_OK;
    struct nat_tuple t = e->t;
    struct addr *src, *dst;
    __be16 sport, dport;
    xlat_target(&t, e->dir, &src, &sport, &dst, &dport);
    if (!l4_has_ports(p->k.proto) && e->dir == CT_DIR_REPLY)
        sport = t.client_port;                 // ICMP echo: the client's own identifier
    if (p->frag == FRAG_FIRST)
        frag_record(p);                        // keyed as the later fragments arrive
    int ping = !l4_has_ports(p->k.proto) && p->frag;
    struct frag_key fk = {};
    frag_key_of(p, &fk);                       // a fragmented ping's datagram, as received
    __u32 whole = 0;                           // the last fragment of a ping: its length
    int err = p->k.family == 6 ? xlat_6to4(skb, p, src, sport, dst, dport, &whole)
                               : xlat_4to6(skb, p, src, sport, dst, dport, &whole);
    if (err)
        return TC_ACT_SHOT;
    if (ping && p->frag == FRAG_FIRST)
        return xlat_hold(skb, p, &fk);
    p->k.src = *src;
    p->k.dst = *dst;
    p->k.sport = sport;
    p->k.dport = dport;
    p->len = skb->len;
    __u32 gen = nh_generation();
    __u32 len = l3_len(skb, p);
    struct nexthop nh;
    if (!nh_get(e, p, gen, len, &nh)) {
        struct bpf_fib_lookup f = {};
        int rc = fib(skb, p, src, dst, &f);
        if (rc != BPF_FIB_LKUP_RET_SUCCESS)
            return fwd_finish(skb, p, rc, &f);
        nh_store(e, p, &f, gen, len, &nh);
    }
    if (ping && whole)
        xlat_release(skb, p, &fk, whole, &nh);
    return xlat_send(skb, p, &nh);
}

// --- ICMP errors about a translated flow ------------------------------------------------

struct xlat_err4 {                 // what an IPv4 receiver gets
    struct iphdr ip;
    __u8 type;
    __u8 code;
    __sum16 csum;
    __be16 unused;
    __be16 mtu;                    // fragmentation needed; else zero
    struct iphdr qip;              // the quoted header
    __be16 qports[2];
    __be16 qw[2];                  // the quoted L4 header's next 4 bytes
};

struct xlat_err6 {                 // what an IPv6 receiver gets
    struct ipv6hdr ip;
    __u8 type;
    __u8 code;
    __sum16 csum;
    __be32 mtu;                    // packet too big / parameter problem's pointer; else zero
    struct ipv6hdr qip;
    __be16 qports[2];
    __be16 qw[2];
};

// ICMPv4 type/code -> ICMPv6 (RFC 7915 4.2); -1: no mapping (drop).
static __always_inline int map_err_4to6(__u8 type, __u8 code, __u8 *t6, __u8 *c6, __u32 *mtu)
{
    if (type == ICMP_TIME_EXCEEDED_) {
        *t6 = ICMP6_TIME_EXCEEDED_;
        *c6 = code;
        return 0;
    }
    if (type != ICMP_DEST_UNREACH_)
        return -1;
    *t6 = ICMP6_DEST_UNREACH_;
    switch (code) {
    case 2:                                    // protocol unreachable
        *t6 = ICMP6_PARAM_PROB_;
        *c6 = 1;
        *mtu = 6;                              // pointer: the next header field
        return 0;
    case 3:
        *c6 = 4;                               // port unreachable
        return 0;
    case 4:                                    // fragmentation needed
        *t6 = ICMP6_PKT_TOOBIG_;
        *c6 = 0;
        *mtu = *mtu + 20 < IPV6_MIN_MTU_ ? IPV6_MIN_MTU_ : *mtu + 20;
        return 0;
    case 9:
    case 10:
    case 13:
        *c6 = 1;                               // administratively prohibited
        return 0;
    default:
        *c6 = 0;                               // no route to destination
        return 0;
    }
}

// ICMPv6 type/code -> ICMPv4 (RFC 7915 5.2); -1: no mapping (drop).
static __always_inline int map_err_6to4(__u8 type, __u8 code, __u8 *t4, __u8 *c4, __u32 *mtu)
{
    *t4 = ICMP_DEST_UNREACH_;
    if (type == ICMP6_DEST_UNREACH_) {
        *c4 = code == 1 ? 10 : code == 4 ? 3 : 1;
        return 0;
    }
    if (type == ICMP6_PKT_TOOBIG_) {
        *c4 = ICMP_FRAG_NEEDED_;
        *mtu = *mtu > 0xffff + 20 ? 0xffff : *mtu - 20;
        return 0;
    }
    if (type == ICMP6_TIME_EXCEEDED_) {
        *t4 = ICMP_TIME_EXCEEDED_;
        *c4 = code;
        return 0;
    }
    if (type == ICMP6_PARAM_PROB_ && code == 1) {
        *c4 = 2;                               // unrecognised next header: protocol unreachable
        return 0;
    }
    return -1;
}

// The error `p`, found by icmp_err.h in the entry of direction `dir` of flow `t`, rebuilt
// for its receiver in the other family. `iph`: the quoted header's offset.
static __always_inline int xlat_icmp_error(struct __sk_buff *skb, struct pkt *p,
                                           struct nat_tuple *t, __u8 dir, __u32 iph)
{
    __u8 type = 0, code = 0;
    __be32 mtu_be = 0;
    __u8 hdr[4];
    if (bpf_skb_load_bytes(skb, p->l4_off, hdr, 4) ||
        bpf_skb_load_bytes(skb, p->l4_off + 4, &mtu_be, 4))
        return TC_ACT_OK;
    type = hdr[0];
    code = hdr[1];
    // The quoted packet, as the receiver sent it (icmp_err.h's nisrc/nidst).
    struct addr *qsrc, *qdst, *osrc, *odst;
    __be16 qsport, qdport;
    if (dir == CT_DIR_REPLY) {                 // to the client: it sent client -> vip
        qsrc = &t->client;
        qsport = t->client_port;
        qdst = &t->vip;
        qdport = t->vip_port;
        odst = &t->client;
    } else {                                   // to the endpoint: it sent ep -> snat
        qsrc = &t->ep;
        qsport = t->ep_port;
        qdst = &t->snat;
        qdport = t->snat_port;
        odst = &t->ep;
    }
    // The error's source: the address the receiver sent to (the VIP, or the snat address),
    // whether the endpoint or a router between it and us sent it (see the top of this file).
    osrc = dir == CT_DIR_REPLY ? &t->vip : &t->snat;
    __be16 qw[2];
    __u8 iproto;
    __u8 ittl = 0;
    if (p->k.family == 4) {                    // rebuild as ICMPv6
        struct iphdr qi;
        if (bpf_skb_load_bytes(skb, iph, &qi, sizeof(qi)) ||
            bpf_skb_load_bytes(skb, iph + sizeof(qi) + 4, qw, 4))
            return TC_ACT_OK;
        iproto = qi.protocol;
        ittl = qi.ttl;
        struct xlat_err6 m = {};
        __u32 mtu = bpf_ntohs(((__be16 *)&mtu_be)[1]);
        __u8 t6 = 0, c6 = 0;
        if (map_err_4to6(type, code, &t6, &c6, &mtu))
            return TC_ACT_SHOT;
        ip6_header(&m.ip, 0, sizeof(m) - sizeof(m.ip), PMTU_TTL, IPPROTO_ICMPV6, osrc, odst);
        m.type = t6;
        m.code = c6;
        m.mtu = bpf_htonl(mtu);
        ip6_header(&m.qip, qi.tos, bpf_ntohs(qi.tot_len) - sizeof(qi), ittl, iproto, qsrc, qdst);
        m.qports[0] = qsport;
        m.qports[1] = qdport;
        m.qw[0] = qw[0];
        m.qw[1] = qw[1];
        struct pseudo6 ph = {};
        ph.src = m.ip.saddr;
        ph.dst = m.ip.daddr;
        ph.len = bpf_htonl(sizeof(m) - sizeof(m.ip));
        ph.next = IPPROTO_ICMPV6;
        __s64 sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
        m.csum = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.type, sizeof(m) - sizeof(m.ip), sum));
        if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) ||
            bpf_skb_change_tail(skb, p->l3_off + sizeof(m), 0) ||
            bpf_skb_store_bytes(skb, p->l3_off, &m, sizeof(m), BPF_F_RECOMPUTE_CSUM) ||
            xlat_set_ethertype(skb, p, ETH_P_IPV6))
            return TC_ACT_SHOT;
        p->k.family = 6;
        p->k.proto = IPPROTO_ICMPV6;
    } else {                                   // rebuild as ICMPv4
        struct ipv6hdr qi;
        if (bpf_skb_load_bytes(skb, iph, &qi, sizeof(qi)) ||
            bpf_skb_load_bytes(skb, iph + sizeof(qi) + 4, qw, 4))
            return TC_ACT_OK;
        iproto = qi.nexthdr;
        struct xlat_err4 m = {};
        __u32 mtu = bpf_ntohl(mtu_be);
        __u8 t4 = 0, c4 = 0;
        if (map_err_6to4(type, code, &t4, &c4, &mtu))
            return TC_ACT_SHOT;
        ip4_header(&m.ip, 0, sizeof(m), PMTU_TTL, IPPROTO_ICMP, osrc->w[0], odst->w[0], 0,
                   IP_DF_);
        m.type = t4;
        m.code = c4;
        m.mtu = t4 == ICMP_DEST_UNREACH_ && c4 == ICMP_FRAG_NEEDED_ ? bpf_htons(mtu) : 0;
        __u8 tclass = (qi.priority << 4) | (qi.flow_lbl[0] >> 4);
        ip4_header(&m.qip, tclass, bpf_ntohs(qi.payload_len) + sizeof(struct iphdr),
                   qi.hop_limit, iproto, qsrc->w[0], qdst->w[0], 0, IP_DF_);
        m.qports[0] = qsport;
        m.qports[1] = qdport;
        m.qw[0] = qw[0];
        m.qw[1] = qw[1];
        m.csum = csum_fold_(bpf_csum_diff(0, 0, (void *)&m.type, sizeof(m) - sizeof(m.ip), 0));
        if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) ||
            bpf_skb_change_tail(skb, p->l3_off + sizeof(m), 0) ||
            bpf_skb_store_bytes(skb, p->l3_off, &m, sizeof(m), BPF_F_RECOMPUTE_CSUM) ||
            xlat_set_ethertype(skb, p, ETH_P_IP))
            return TC_ACT_SHOT;
        p->k.family = 4;
        p->k.proto = IPPROTO_ICMP;
    }
    p->k.src = *osrc;
    p->k.dst = *odst;
    p->ttl = PMTU_TTL;
    p->len = skb->len;
    return forward(skb, p, osrc, odst);
}

// Tail-call body for an ICMP error that icmp_err.h found to quote a CT_F_XLAT flow: find
// that flow again from the quoted header (the tail call keeps no state) and rebuild it.
static __always_inline int handle_xlat_error(struct __sk_buff *skb, struct pkt *p)
{
    __u32 iph = p->l4_off + 8;
    __u32 il4;
    struct ct_key k = {};
    if (p->k.family == 4) {
        struct iphdr ih;
        if (bpf_skb_load_bytes(skb, iph, &ih, sizeof(ih)) || ih.ihl != 5)
            return TC_ACT_OK;
        k.proto = ih.protocol;
        k.src.w[0] = ih.daddr;
        k.dst.w[0] = ih.saddr;
        il4 = iph + sizeof(ih);
    } else {
        struct ipv6hdr ih;
        if (bpf_skb_load_bytes(skb, iph, &ih, sizeof(ih)))
            return TC_ACT_OK;
        k.proto = ih.nexthdr;
        __builtin_memcpy(&k.src, &ih.daddr, 16);
        __builtin_memcpy(&k.dst, &ih.saddr, 16);
        il4 = iph + sizeof(ih);
    }
    __be16 ports[2];
    if (bpf_skb_load_bytes(skb, il4, ports, 4))
        return TC_ACT_OK;
    k.sport = ports[1];
    k.dport = ports[0];
    k.family = p->k.family;
    int syn;                                   // a TCP handshake's flow: syn_map (tcpstate.h)
    struct ct_entry *e = ct_find(&k, &syn);
    if (!e || !(e->flags & CT_F_XLAT))
        return TC_ACT_OK;
    struct nat_tuple t = e->t;
    return xlat_icmp_error(skb, p, &t, e->dir, iph);
}
