// udprr - UDP request/response for bench/run.py (compiled at run time with cc -O2).
//   udprr server PORT                         echo every datagram back (until killed)
//   udprr client ADDR PORT FLOWS SECONDS MAX  FLOWS connected sockets, one request in
//       flight each; stops after SECONDS or MAX answered requests, whichever comes first.
//       A request unanswered for 200 ms counts as lost and is re-sent.
//       Prints: "answered lost seconds"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    char buf[2048];
    if (argc == 3 && !strcmp(argv[1], "server")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("bind");
            return 1;
        }
        printf("READY\n");
        fflush(stdout);
        for (;;) {
            struct sockaddr_in from;
            socklen_t fl = sizeof(from);
            ssize_t n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
            if (n > 0)
                sendto(s, buf, n, 0, (struct sockaddr *)&from, fl);
        }
    }
    if (argc != 7 || strcmp(argv[1], "client")) {
        fprintf(stderr, "usage: udprr server PORT | client ADDR PORT FLOWS SECONDS MAX\n");
        return 2;
    }
    int flows = atoi(argv[4]);
    double seconds = atof(argv[5]);
    long max = atol(argv[6]);
    if (flows < 1 || flows > 1024)
        return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    struct pollfd pf[1024];
    double sent[1024];
    static const char req[32] = "udprr-request";
    double start = now(), end = start + seconds;
    for (int i = 0; i < flows; i++) {
        pf[i].fd = socket(AF_INET, SOCK_DGRAM, 0);
        pf[i].events = POLLIN;
        if (connect(pf[i].fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("connect");
            return 1;
        }
        send(pf[i].fd, req, sizeof(req), 0);
        sent[i] = now();
    }
    long answered = 0, lost = 0;
    double t = now();
    while (t < end && answered < max) {
        int n = poll(pf, flows, 20);
        t = now();
        for (int i = 0; i < flows; i++) {
            if (pf[i].revents & POLLIN) {
                if (recv(pf[i].fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                    answered++;
                send(pf[i].fd, req, sizeof(req), 0);
                sent[i] = t;
            } else if (t - sent[i] > 0.2) {
                lost++;
                send(pf[i].fd, req, sizeof(req), 0);
                sent[i] = t;
            }
        }
        (void)n;
    }
    printf("%ld %ld %.3f\n", answered, lost, now() - start);
    return 0;
}
