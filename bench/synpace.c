// synpace - a paced TCP SYN generator for bench/synrate.py (compiled at run time, cc -O2).
//   synpace IFNAME DST_MAC SRC_NET DST_ADDR DST_PORT RATE COUNT
// Sends COUNT IPv4 TCP SYNs out of IFNAME (AF_PACKET, qdisc bypassed) at RATE per second,
// each from a new source: SRC_NET's last octet 0..250 and source ports 1024..65535, so
// every SYN is a new flow. Batches of up to BATCH frames per sendmmsg, paced against the
// clock (the batch shrinks at low rates so packets stay evenly spread). trafgen's rate
// mode sends one frame per system call and topped out at 60-150 k SYN/s on one CPU here.
// Prints: "sent seconds".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FRAME 54                     // Ethernet 14 + IPv4 20 + TCP 20

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static uint32_t sum16(const uint8_t *p, int n, uint32_t s)
{
    for (int i = 0; i + 1 < n; i += 2)
        s += (uint32_t)p[i] << 8 | p[i + 1];
    return s;
}

// Source address octet `a` and port `port` into frame `f`, checksums recomputed.
static void fill(uint8_t *f, const uint8_t *tmpl, int a, int port, uint32_t seq)
{
    memcpy(f, tmpl, FRAME);
    uint8_t *ip = f + 14, *tcp = f + 34;
    ip[15] = (uint8_t)a;
    tcp[0] = port >> 8;
    tcp[1] = port & 0xff;
    tcp[4] = seq >> 24;
    tcp[5] = seq >> 16;
    tcp[6] = seq >> 8;
    tcp[7] = seq;
    uint16_t c = fold(sum16(ip, 20, 0));
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
    uint32_t ph = sum16(ip + 12, 8, 0) + 6 + 20;  // pseudo-header: addresses, proto, length
    c = fold(sum16(tcp, 20, ph));
    tcp[16] = c >> 8;
    tcp[17] = c & 0xff;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: synpace IFNAME DST_MAC SRC_NET DST_ADDR DST_PORT RATE COUNT\n");
        return 2;
    }
    unsigned mac[6];
    struct in_addr src, dst;
    if (sscanf(argv[2], "%x:%x:%x:%x:%x:%x", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4],
               &mac[5]) != 6 || !inet_aton(argv[3], &src) || !inet_aton(argv[4], &dst)) {
        fprintf(stderr, "synpace: bad MAC or address\n");
        return 2;
    }
    int dport = atoi(argv[5]);
    double rate = atof(argv[6]);
    long count = atol(argv[7]);
    int ifindex = if_nametoindex(argv[1]);
    if (!ifindex || rate <= 0 || count < 1 || dport < 1 || dport > 65535) {
        fprintf(stderr, "synpace: bad interface, rate, count or port\n");
        return 2;
    }
    int s = socket(AF_PACKET, SOCK_RAW, 0);   // protocol 0: send only, nothing received
    if (s < 0) {
        perror("socket");
        return 1;
    }
    int one = 1;
    setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifindex,
                             .sll_halen = 6, .sll_protocol = htons(ETH_P_IP)};
    uint8_t tmpl[FRAME] = {0};
    for (int i = 0; i < 6; i++)
        tmpl[i] = to.sll_addr[i] = (uint8_t)mac[i];
    tmpl[6] = 0x02;                           // a locally administered source MAC
    tmpl[12] = 0x08;                          // IPv4
    uint8_t *ip = tmpl + 14, *tcp = tmpl + 34;
    ip[0] = 0x45;
    ip[3] = 40;                               // total length
    ip[6] = 0x40;                             // DF
    ip[8] = 64;                               // TTL
    ip[9] = 6;                                // TCP
    memcpy(ip + 12, &src, 4);
    memcpy(ip + 16, &dst, 4);
    tcp[2] = dport >> 8;
    tcp[3] = dport & 0xff;
    tcp[12] = 5 << 4;                         // data offset
    tcp[13] = 0x02;                           // SYN
    tcp[14] = 64240 >> 8;
    tcp[15] = 64240 & 0xff;

    static uint8_t frames[BATCH][FRAME];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = frames[i];
        iov[i].iov_len = FRAME;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof(to);
    }
    // A batch at most every 100 us: at 100 k/s that is 10 frames, at 1 M/s 64 (the cap).
    int batch = (int)(rate / 10000);
    batch = batch < 1 ? 1 : batch > BATCH ? BATCH : batch;
    long sent = 0, flow = 0;
    uint32_t seq = 0x12345678;
    double start = now();
    while (sent < count) {
        int n = count - sent < batch ? (int)(count - sent) : batch;
        double due = start + sent / rate;     // when the first of these is due
        double t;
        while ((t = now()) < due)
            if (due - t > 200e-6)
                usleep((useconds_t)((due - t) * 1e6) - 100);
        for (int i = 0; i < n; i++, flow++) {
            seq = seq * 1103515245u + 12345u;
            fill(frames[i], tmpl, (int)(flow % 251), 1024 + (int)(flow / 251 % 64512), seq);
        }
        int done = 0;
        while (done < n) {
            int r = sendmmsg(s, msgs + done, n - done, 0);
            if (r < 0 && errno == ENOBUFS) {
                // The frame was dropped on its way (with the qdisc bypassed, a full receive
                // backlog behind the veth says so): sent and lost, as the path lost it.
                done++;
                continue;
            }
            if (r < 0) {
                perror("sendmmsg");
                return 1;
            }
            done += r;
        }
        sent += n;
    }
    printf("%ld %.6f\n", sent, now() - start);
    return 0;
}
