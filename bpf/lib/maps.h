// maps.h - every map, pinned under PIN_ROOT (set by the driver) so that a restarted
// control plane finds the same conntrack and tables: BPF_TABLE_PINNED reuses an existing
// pin and creates + pins the map otherwise. LAYOUT in the pin name: a struct change must
// get fresh maps, never reinterpret old bytes.
#pragma once

#ifndef PIN_ROOT
#define PIN_ROOT "/sys/fs/bpf/sluice"
#endif
#define LAYOUT "_v5"
#define PIN(name) PIN_ROOT "/" name LAYOUT
#define NO_PREALLOC 1   // BPF_F_NO_PREALLOC: memory only for filled entries

// bcc's BPF_RINGBUF_OUTPUT, pinned the way BPF_TABLE_PINNED pins (the section name
// "maps/<type>:<pin path>": bcc opens the pin, or creates the map and pins it): each
// module (lib/modules.h) is a compile of its own, and an unpinned ring would be a
// different ring in each, one the daemon never reads.
#define BPF_RINGBUF_PINNED(_name, _num_pages, _pin) \
struct _name##_table_t { \
  int key; \
  u32 leaf; \
  int (*ringbuf_output) (void *, u64, u64); \
  void* (*ringbuf_reserve) (u64); \
  void (*ringbuf_discard) (void *, u64); \
  void (*ringbuf_submit) (void *, u64); \
  u32 max_entries; \
}; \
__attribute__((section("maps/ringbuf:" _pin))) \
struct _name##_table_t _name = { .max_entries = ((_num_pages) * PAGE_SIZE) }

BPF_TABLE_PINNED("hash", struct svc_key, struct svc_info, svc_map, MAX_SERVICES, PIN("svc"));
BPF_TABLE_PINNED("hash", struct range_key, struct range_list, range_map, MAX_SERVICES,
                 PIN("range"));
BPF_TABLE_PINNED("hash", __u32, struct ep_info, ep_map, MAX_ENDPOINTS, PIN("ep"), NO_PREALLOC);
// Pinned as "selp" (pages): the older one-slot-per-entry "sel" map is another layout.
BPF_TABLE_PINNED("hash", struct sel_key, struct sel_page, sel_map, MAX_SEL_PAGES, PIN("selp"),
                 NO_PREALLOC);
// Endpoint and service ids are dense: what a new flow reads is in arrays, which the
// verifier inlines (no hashing). ep_map (hash) stays the control plane's record, the one
// a restarted daemon reads back; ep_arr holds the same entries (zeroed when removed).
BPF_TABLE_PINNED("array", __u32, struct ep_info, ep_arr, MAX_ENDPOINTS, PIN("eparr"));
// Small selection tables (SEL_SMALL): index svc_id * 2 + generation.
BPF_TABLE_PINNED("array", __u32, struct sel_small, sel_small_map, MAX_SERVICES * 2, PIN("selsm"));
// Round-robin counters: 64-bit, the one width whose atomic fetch-add bcc's LLVM emits with
// its result used (pinned as "rr64": "rr" held 32-bit counters).
BPF_TABLE_PINNED("array", __u32, __u64, rr_map, MAX_SERVICES, PIN("rr64"));
BPF_TABLE_PINNED("lru_hash", struct persist_key, struct persist_val, persist_map, MAX_PERSIST,
                 PIN("persist"));
BPF_TABLE_PINNED("lpm_trie", struct allow_key, __u8, allow_map, MAX_ALLOW, PIN("allow"),
                 NO_PREALLOC);  // LPM tries must be NO_PREALLOC
BPF_TABLE_PINNED("hash", struct ifaddr_key, struct addr, ifaddr_map, MAX_IFADDR, PIN("ifaddr"));
// Conntrack: IPv6 keys in ct_map, IPv4 keys in ct4_map (a compact key); every access goes
// through lib/ct_tables.h, which picks the table by the key's family. Each table holds up
// to CT_CAPACITY entries.
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_entry, ct_map, CT_CAPACITY, PIN("ct"));
BPF_TABLE_PINNED("lru_hash", struct ct4_key, struct ct_entry, ct4_map, CT_CAPACITY, PIN("ct4"));
// TCP flows until their handshake completes (lib/tcpstate.h): a SYN flood fills and
// recycles these smaller tables, never the established flows.
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_entry, syn_map, SYN_CAPACITY, PIN("syn"));
BPF_TABLE_PINNED("lru_hash", struct ct4_key, struct ct_entry, syn4_map, SYN_CAPACITY,
                 PIN("syn4"));
// SCTP: an association's ORIG tuple with the client's own verification tag (pad
// SCTP_TAG_INDEX) -> the endpoint's, its ORIG key's tag (lib/sctp_tags.h): for the packets
// that carry the client's tag towards us (T bit) or quote it (ICMP errors).
BPF_TABLE_PINNED("lru_hash", struct ct_key, __u32, sctp_tag_map, SCTP_TAGS, PIN("sctptag"));
// The route generation (one slot): the daemon adds one whenever netlink reports a route,
// neighbour or link change; next hops cached in an older generation are looked up again.
BPF_TABLE_PINNED("array", __u32, __u32, nh_gen_map, 1, PIN("nhgen"));
// Tail-call targets (JMP_*). Pinned: a prog array loses its entries when the last user
// reference goes, and the pin is what keeps ICMP errors translated while no daemon runs.
BPF_TABLE_PINNED("prog", int, int, jmp_map, JMP_MAX, PIN("jmp"));
// Where a new flow's entry is built (lb.c new_flow): not on the 512-byte stack. Not pinned:
// each module has its own, which is right as long as no data passes through it across a
// tail call (new_flow writes and reads it within one program).
BPF_PERCPU_ARRAY(ct_scratch, struct ct_entry, 1);
// Counters: per-CPU, so the hot path needs no atomics; the driver sums the CPUs.
BPF_TABLE_PINNED("percpu_array", __u32, struct counters, svc_stats, MAX_SERVICES, PIN("svcst"));
BPF_TABLE_PINNED("percpu_hash", __u32, struct counters, ep_stats, MAX_ENDPOINTS, PIN("epst"),
                 NO_PREALLOC);
// Endpoint ids below EP_STATS_ARRAY (most, see consts.h): an array's lookup is inlined, a
// hash's hashes and walks a bucket on every packet (~10 ns of the established path).
BPF_TABLE_PINNED("percpu_array", __u32, struct counters, ep_stats_arr, EP_STATS_ARRAY,
                 PIN("epsta"));
// Active-session gauges: shared (atomic add), least-connections reads them. Arrays (ids are
// dense): a least-connections scan reads up to LC_SCAN endpoint gauges per new flow, and an
// array lookup is inlined where a hash lookup hashes. ep_active costs 4 MiB (MAX_ENDPOINTS x
// 8 B); pinned as "epacta" ("epact" was a hash).
BPF_TABLE_PINNED("array", __u32, __s64, svc_active, MAX_SERVICES, PIN("svcact"));
BPF_TABLE_PINNED("array", __u32, __s64, ep_active, MAX_ENDPOINTS, PIN("epacta"));
#include "ct_tables.h"
