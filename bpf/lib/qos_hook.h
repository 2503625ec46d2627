// qos_hook.h - endpoint policers on a flow's first packet.
//
// The QoS program (bpf/qos.c) runs before the balancer and knows a packet's endpoint from
// its conntrack entry: for a flow's first packet there is none yet, the balancer chooses
// it. So qos.c, when endpoint policers exist and a first packet belongs to a service,
// leaves QOS_EP_PENDING in skb->cb[QOS_CB_EP]; the balancer's new_flow, once it chose the
// endpoint and translated the packet, sees it and tail-calls sluice_qos_ep (bpf/qos.c,
// put in jmp_map by appliance/datapath/qos.py) with the endpoint and its own verdict in
// skb->cb: that program meters the packet with the endpoint's policer and returns the
// verdict or a drop. A stale cb value (qos.c not attached) can only look pending by
// chance, and then costs one policer lookup of the right endpoint. Not SCTP (its cb
// slots), not NAT64/L3-DSR flows (their own programs): those from their second packet.
#pragma once

#define QOS_CB_EP         3
#define QOS_CB_VERDICT    4
#define QOS_EP_PENDING    0x9051c0deu  // above every endpoint id (MAX_ENDPOINTS)

static __always_inline int qos_ep_first(struct __sk_buff *skb, __u32 ep_id, int verdict)
{
    skb->cb[QOS_CB_EP] = ep_id;
    skb->cb[QOS_CB_VERDICT] = verdict;
    jmp_map.call(skb, JMP_QOS_EP);
    return verdict;                            // no QoS program in its slot
}
