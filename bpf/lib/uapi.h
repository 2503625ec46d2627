// uapi.h - the kernel uapi headers the programs use, included first by lb.c and qos.c.
//
// uapi/linux/in.h and tcp.h include <linux/socket.h>, which bcc resolves to the kernel's
// own (not uapi) header: with linux/uio.h and what that pulls in, ~0.4 s of CPU per
// compile (of ~1 s for all headers), for one typedef and one struct that its uapi half
// defines. So the uapi half is included and the kernel header's guard set.
#pragma once

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/socket.h>
#define _LINUX_SOCKET_H
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
