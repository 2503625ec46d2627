// vlan.h - a client's VLAN tags off a packet the balancer sends on: the one helper every
// path uses (lb.c translate_and_send for DNAT, full-NAT, one-arm and L2-DSR; the NAT64/46,
// L3-DSR and GTP-U programs before they parse).
//
// The tags belong to the link the frame came in on, not to the one it leaves by (an egress
// link's own tag, if any, comes from its VLAN device). Before TC ingress the kernel takes
// the outermost tag (802.1Q, or QinQ's 802.1ad) into skb metadata; a second one (QinQ's
// inner 802.1Q) stays in the frame, where parse.h steps over it (l3_off 18). One
// bpf_skb_vlan_pop clears the metadata tag and moves the frame's next tag (if any) into
// the metadata, or, with no metadata tag, drops the frame's own. Only packets the balancer
// sends on lose their tags: one it leaves to the stack keeps them (its VLAN device's).
#pragma once

// A tag left: in the metadata, or in the frame (skb->protocol is the frame's next type).
static __always_inline int vlan_tagged(struct __sk_buff *skb)
{
    asm volatile("" : "+r"(skb));              // each read at its own context offset: the
    __u32 proto = skb->protocol;               // verifier refuses a hoisted field pointer
    return skb->vlan_present || proto == bpf_htons(ETH_P_8021Q_) ||
           proto == bpf_htons(ETH_P_8021AD_);
}

// Pop every tag (at most three). Returns the bytes the frame lost (4 per tag that was in
// the frame), -1 when a tag is left.
static __always_inline int vlan_untag(struct __sk_buff *skb)
{
    __u32 len = skb->len;
    if (vlan_tagged(skb) && bpf_skb_vlan_pop(skb))
        return -1;
    if (vlan_tagged(skb) && bpf_skb_vlan_pop(skb))
        return -1;
    if (vlan_tagged(skb) && bpf_skb_vlan_pop(skb))
        return -1;
    if (vlan_tagged(skb))
        return -1;
    asm volatile("" : "+r"(skb));
    return len - skb->len;
}

// vlan_untag for a parsed packet: its offsets follow the frame. 0, or -1 (drop it).
static __always_inline int vlan_untag_pkt(struct __sk_buff *skb, struct pkt *p)
{
    int lost = vlan_untag(skb);
    if (lost < 0 || lost != p->l3_off - sizeof(struct ethhdr))
        return -1;
    if (lost) {                                // parse.h steps over one tag in the frame
        p->l3_off = sizeof(struct ethhdr);
        p->l4_off -= 4;
        if (p->csum_off)
            p->csum_off -= 4;
    }
    return 0;
}
