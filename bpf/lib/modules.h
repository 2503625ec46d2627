// modules.h - which program functions of lb.c a compile builds.
//
// lb.c is compiled by bcc once per module, from the same text (same headers, same map
// declarations, so every module opens the same pinned maps), with that module's MODULE_*
// defined to 1 (appliance/datapath/program.py MODULES): "core" when the daemon loads
// (the balancer, every new flow, ICMP errors, packets too big), each other one the first
// time a service or rule needs its feature, which puts its programs into jmp_map. The LLVM
// time of a compile is that of the programs it builds: a daemon without SCTP, NAT64,
// L3-DSR, GTP-U or firewall rules compiles none of theirs.
#pragma once

#ifndef MODULE_CORE
#define MODULE_CORE   0              // sluice_lb, sluice_icmp_err, sluice_too_big
#endif
#ifndef MODULE_IPV6
#define MODULE_IPV6   0              // sluice_lb6
#endif
#ifndef MODULE_SCTP
#define MODULE_SCTP   0              // sluice_sctp, sluice_sctp_nat, sluice_sctp_paths
#endif
#ifndef MODULE_XLAT
#define MODULE_XLAT   0              // sluice_xlat (NAT64/NAT46)
#endif
#ifndef MODULE_L3DSR
#define MODULE_L3DSR  0              // sluice_l3dsr
#endif
#ifndef MODULE_GTPU
#define MODULE_GTPU   0              // sluice_gtpu
#endif
#ifndef MODULE_FW
#define MODULE_FW     0              // sluice_fw, sluice_fw_lb (firewall rules, egress SNAT)
#endif
