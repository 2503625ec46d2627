// xdp.c - Sluice's XDP fast path, attached to the interfaces whose model says `hook xdp`
// (appliance/datapath/xdp.py), in front of the TC program (lb.c) that stays on them too.
// It forwards packets of established flows with a cached next hop and passes everything
// else to TC: lib/xdp_fast.h. Same pinned maps as lb.c (lib/maps.h): the two hooks share
// conntrack, counters and the route generation. Compiled as its own bcc module, only when
// some interface asks for it, so lb.c's verifier budget is untouched.

#include "lib/uapi.h"

#include "lib/consts.h"
#include "lib/structs.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/conntrack.h"
#include "lib/tcpstate.h"
#include "lib/nexthop.h"
#include "lib/ha.h"
#include "lib/stats.h"
#include "lib/xdp_fast.h"

int sluice_xdp(struct xdp_md *ctx)
{
    int verdict = xdp_fast(ctx);
    if (verdict == XDP_PASS)
        xdp_count(XDP_STAT_PASS);
    return verdict;
}
