// consts.h - every number the datapath and the control plane must agree on.
// appliance/datapath/layout.py mirrors these; change both together.
#pragma once

// Capacities. Hash maps marked NO_PREALLOC only cost memory for what the control plane
// fills, so the limits can be generous (10,000 services x 32 endpoints fit, Maglev too).
// appliance/datapath/layout.py derives what the config may ask for from these.
#define MAX_SERVICES      16384      // service ids are 1..MAX_SERVICES-1 (array index)
#define MAX_ENDPOINTS     524288     // endpoint ids (global, stable across restarts)
// Endpoint ids below this count in a per-CPU array (lib/stats.h: a lookup the verifier
// inlines), the rest in a per-CPU hash. 1.5 MiB per possible CPU; the driver gives out the
// lowest free id first, so every endpoint counts in the array up to 65,535 of them.
#define EP_STATS_ARRAY    65536
// Selection tables are stored in pages of SEL_PAGE slots (one sel_map entry each). A
// hash entry costs its 48-byte header, the 8-byte key and the value, rounded up to a
// kmalloc size: 1008 x 4 bytes fill a 4 KiB allocation (~4.06 bytes a slot), where one
// slot per entry cost ~64-96 bytes a slot and filled the map after ~255 Maglev services.
#define SEL_PAGE          1008
#define MAX_SEL_PAGES     131072     // pages over all services: at most 512 MiB if all used
// Tables of up to SEL_SMALL slots are also kept in an array slot per (service,
// generation), which the datapath reads instead of a page: no hash lookup on a new flow.
#define SEL_SMALL         32
#define MAX_RANGES        8          // port-range services per (vip, protocol)
#define MAX_PERSIST       262144     // persistence bindings (LRU)
#define MAX_IFADDR        1024       // (ifindex, family) -> own address, for one-arm
#define MAX_ALLOW         65536      // allowed-source prefixes over all services
#define LC_SCAN           32         // least-connections looks at this many slots
#define FNAT_TRIES        16         // source-port candidates tried in full-NAT

#ifndef CT_CAPACITY
#define CT_CAPACITY       1048576
#endif
#ifndef SYN_CAPACITY
#define SCTP_TAGS         16384               // sctp_tag_map (lib/sctp_tags.h)
#define SYN_CAPACITY      (CT_CAPACITY / 8)   // flows in their TCP handshake (syn_map)
#endif

// Tail calls (jmp_map): a second program keeps the main one under the 512-byte stack.
#define JMP_ICMP_ERR      0          // lib/icmp_err.h
#define JMP_TOO_BIG       1          // lib/pmtu.h
#define JMP_XLAT          2          // lib/nat64.h
#define JMP_FW            3          // lib/firewall.h: a new flow while rules are on
#define JMP_FW_LB         4          // lb.c: new_flow after the firewall (sluice_fw)
#define JMP_L3DSR         5          // lib/l3dsr.h
#define JMP_SCTP_NAT      6          // lib/sctp.h, lib/sctp_mh.h
#define JMP_SCTP_PATHS    7          // lib/sctp_mh.h
#define JMP_GTPU          8          // lib/gtpu.h
#define JMP_SCTP          9          // lb.c sluice_sctp
#define JMP_FW_OTHER      10         // lib/fw_other.h: packets the parser passes, while rules are on
#define JMP_QOS_EP        11         // bpf/qos.c sluice_qos_ep: endpoint policers, first packet
#define JMP_LB6           12         // lb.c sluice_lb6: the IPv6 balancer
#define JMP_MAX           13

// Algorithms (svc_info.algo)
#define ALG_RR            0
#define ALG_WEIGHTED      1
#define ALG_HASH          2
#define ALG_MAGLEV        3
#define ALG_LEASTCONN     4
#define ALG_PRIORITY      5
#define ALG_PERSIST       6
#define ALG_GTP_TEID      7          // lib/gtpu.h: per packet, by TEID, no conntrack

// Modes (svc_info.mode)
#define MODE_DNAT         0
#define MODE_ONEARM       1
#define MODE_FULLNAT      2
#define MODE_DSR          3

// svc_info.flags
#define SVC_F_RANGE       1          // port range: the destination port is kept
#define SVC_F_ALLOW       2          // only sources in allow_map may open flows
#define SVC_F_IPIP        4          // DSR through IP-in-IP / IPv6-in-IPv6 (lib/l3dsr.h)
#define SVC_F_POOL        8          // full-NAT source from a pool (lib/snatpool.h)
#define SVC_F_MIDSTREAM   16         // TCP: any segment may open a flow, not only a SYN

// ep_info.flags
#define EP_F_ELIGIBLE     1          // enabled and healthy: may get new flows
#define EP_F_DOWN         2          // health down (control plane only: survives a restart)

// Conntrack states
#define CT_NEW            0          // unreplied (TCP: SYN seen)
#define CT_EST            1
#define CT_FIN            2
#define CT_CLOSED         3          // RST seen, or FIN both ways

// ct_entry.dir
#define CT_DIR_ORIG       0          // client -> VIP
#define CT_DIR_REPLY      1          // endpoint -> client (or SNAT address)

// ct_entry.flags
#define CT_F_COUNTED      1          // still counted in the active-session gauges
#define CT_F_DSR          2          // direct server return: no rewrite, no reply entry
#define CT_F_XLAT         4          // NAT64/NAT46: the endpoint side is the other family
#define CT_F_PASS         8          // let in by the firewall, not translated (lib/fw_flow.h)
#define CT_F_IPIP         16         // L3-DSR: encapsulated towards the endpoint
#define CT_F_LC           32         // least-connections: in ep_active from its first packet
#define CT_F_MH_ALT       64         // an SCTP association's alternate path (lib/sctp_mh.h)
#define CT_F_TAIL         (CT_F_XLAT | CT_F_IPIP)   // handled by a program of their own

// ct_entry.tcp_seen
#define TCP_SEEN_SEQ      1          // tcp_seq holds a segment's
#define TCP_SEEN_ACK      2          // tcp_ack / tcp_win hold an ACK segment's
// ct_entry.tcp_wscale: the shift (0..14) | TCP_WS_SEEN when the SYN carried the option
#define TCP_WS_SEEN       0x80


// Timeouts (seconds). Established uses the service's inactivity timeout.
#define TO_TCP_SYN        30
#define TO_TCP_FIN        10
#define TO_TCP_CLOSED     2
#define TO_UNREPLIED      30

#define NSEC              1000000000ULL
// A reply packet of an established flow brings the ORIG entry (idle time, state) up to date
// at most this often; in between it needs no second lookup and writes nothing shared.
#define CT_SYNC_NS        (NSEC / 4)

#define FNAT_PORT_MIN     1024
#define FNAT_PORT_SPAN    64512      // 1024..65535
