// qos_maps.h - the maps of the QoS program (bpf/qos.c): policers and mirror sessions and
// what they are attached to. Pinned beside the balancer's (PIN, lib/maps.h); written by
// appliance/datapath/qos.py, which mirrors these structs.
#pragma once

#define MAX_POLICERS      1024       // policer ids 1..MAX_POLICERS-1 (0: none)
#define MAX_MIRRORS       64         // mirror session ids 1..MAX_MIRRORS-1 (0: none)
#define MAX_QOS_IF        256        // (interface, direction) attachments
#define MAX_QOS_EP        65536      // endpoint attachments
#define MAX_QOS_SRC       16384      // client-prefix attachments

// qos_cfg flags: which attachment kinds exist, so a packet looks up only those.
#define QOS_HAVE_SVC      1
#define QOS_HAVE_EP       2
#define QOS_HAVE_SRC      4

#define QOS_DIR_IN        0
#define QOS_DIR_OUT       1

// What a packet is policed by / mirrored to: ids, 0 for none.
struct qos_attach {
    __u32 policer;
    __u32 mirror;
};

struct qos_if_key {
    __u32 ifindex;
    __u32 dir;              // QOS_DIR_IN / QOS_DIR_OUT
};

// Client prefixes: LPM trie, prefixlen counts the bits after itself (32 for family).
struct qos_src_key {
    __u32 prefixlen;
    __u32 family;
    struct addr a;
};

struct qos_cfg {
    __u32 flags;
    __u32 loop_ifindex;     // the loopback while sluice_qos_mir is attached there, else 0
};

// An ERSPAN copy cloned through the loopback (lib/mirror.h erspan_loop): its skb->mark is
// QOS_MIR_MARK | direction << 6 | session id (marks 0x51ce0000-0x51ce007f are the QoS
// program's own), and its skb->priority the interface the frame was seen on.
#define QOS_MIR_MARK      0x51ce0000u
#define QOS_MIR_MARK_MASK 0xffffff80u

// A policer's configuration and its buckets, behind one spin lock: every CPU takes
// tokens from the same buckets, so the rate holds whatever the flows' spread over CPUs.
// Tokens are counted in bit-nanoseconds (bits x 1e9): a refill is elapsed_ns x rate
// (bit/s), exact without a division; a packet costs len x 8 x 1e9.
struct policer {
    struct bpf_spin_lock lock;
    __u32 flags;            // POL_F_*
    __u64 cir;              // bit/s
    __u64 pir;              // bit/s (trTCM; srTCM: unused)
    __u64 c_max;            // CBS in bit-ns
    __u64 e_max;            // srTCM: EBS, trTCM: PBS, in bit-ns
    __u64 c_max_ns;         // elapsed time after which the C bucket is full anyway
    __u64 e_max_ns;         // same for the P bucket (trTCM)
    __u64 tc;               // tokens, bit-ns
    __u64 te;               // srTCM: Te, trTCM: Tp
    __u64 last_ns;
    __u64 yellow_dscp;      // color-aware: DSCP values (bit n = DSCP n) arriving yellow
    __u64 red_dscp;         // ... arriving red; any other DSCP arrives green
    __u8 action[4];         // per color (POL_GREEN..POL_RED): POL_ACT_*
    __u8 dscp[4];           // per color: the DSCP POL_ACT_MARK writes
};

#define POL_F_TRTCM       1          // RFC 2698 two-rate; else RFC 2697 single-rate
#define POL_F_AWARE       2          // color-aware: the packet's DSCP gives its pre-color

#define POL_GREEN         0
#define POL_YELLOW        1
#define POL_RED           2

#define POL_ACT_PASS      0
#define POL_ACT_DROP      1
#define POL_ACT_MARK      2

#define MIR_SPAN          1          // a copy out of a local interface
#define MIR_RSPAN         2          // the same with a VLAN tag
#define MIR_ERSPAN2       3          // GRE + ERSPAN type II to a remote IPv4 address
#define MIR_ERSPAN3       4          // GRE + ERSPAN type III

struct mirror {
    __u32 type;             // MIR_*
    __u32 ifindex;          // SPAN/RSPAN: the mirror interface; ERSPAN: the egress towards dst
    __u32 sample;           // mirror one packet in `sample` (0, 1: every packet)
    __u16 vlan;             // RSPAN: VLAN id of the copy; ERSPAN: the VLAN field
    __u16 session;          // ERSPAN session id (10 bits)
    struct addr src;        // ERSPAN outer source address (IPv4: w[0])
    struct addr dst;        // ERSPAN collector
    __u8 ttl;
    __u8 dscp;
    __u8 family;            // ERSPAN outer header: 4 or 6
    __u8 pad;
};

// Per color of a policer (index id * 4 + color) / per mirror session (index id * 4 +
// MIR_ST_*): packets and bytes, per CPU.
#define MIR_ST_SENT       0
#define MIR_ST_SKIPPED    1          // sampled out
#define MIR_ST_FAILED     2          // no route/neighbour to the collector, or a helper failed
#define MIR_ST_NOT_IP     3          // ERSPAN: not IP (ARP) or a GSO aggregate: not carried

BPF_TABLE_PINNED("array", __u32, struct qos_cfg, qos_cfg, 1, PIN("qcfg"));
BPF_TABLE_PINNED("array", __u32, struct policer, qos_pol, MAX_POLICERS, PIN("qpol"));
BPF_TABLE_PINNED("percpu_array", __u32, struct counters, qos_pol_st, MAX_POLICERS * 4,
                 PIN("qpolst"));
// "qmir2": struct mirror with IPv6 addresses (the daemon unlinks an older "qmir").
BPF_TABLE_PINNED("array", __u32, struct mirror, qos_mir, MAX_MIRRORS, PIN("qmir2"));
BPF_TABLE_PINNED("percpu_array", __u32, struct counters, qos_mir_st, MAX_MIRRORS * 4,
                 PIN("qmirst"));
BPF_TABLE_PINNED("array", __u32, __u64, qos_mir_seq, MAX_MIRRORS, PIN("qmirseq"));
// (kind << 16 | id) -> digest of the policer's / session's name (kind 1: policer, 2: mirror),
// for the daemon only: a restarted daemon gives each its id back, and a policer whose config
// did not change keeps its buckets and counters (appliance/datapath/stable_ids.py).
struct qos_name {
    __u8 digest[16];
};
BPF_TABLE_PINNED("hash", __u32, struct qos_name, qos_names, MAX_POLICERS + MAX_MIRRORS,
                 PIN("qnames"), NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct qos_if_key, struct qos_attach, qos_if, MAX_QOS_IF, PIN("qif"));
BPF_TABLE_PINNED("hash", __u32, struct qos_attach, qos_svc, MAX_SERVICES, PIN("qsvc"),
                 NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct qos_attach, qos_ep, MAX_QOS_EP, PIN("qep"),
                 NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct qos_src_key, struct qos_attach, qos_src, MAX_QOS_SRC,
                 PIN("qsrc"), NO_PREALLOC);
