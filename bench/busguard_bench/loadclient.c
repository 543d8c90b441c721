/* Closed-loop Modbus TCP map reader for `busguard bench` (3): the DCIM side, compiled.
 *
 * Why C: on a 2-core machine the client shares the cores with the server it measures. The
 * Python selectors client (bench/busguard_bench/clients.py) spends 19-26 us of CPU per request, so
 * at 23,000 requests/s it takes 0.6-0.8 of a core from the server, and the tail it reports
 * follows the client's own scheduling. This loop (epoll, one outstanding request per
 * connection, frames built once) spends a few microseconds per request. The bench compiles it
 * with the system's `cc` when there is one and falls back to the Python loop when not; both
 * servers under comparison are always read by the same client.
 *
 * Usage: loadclient HOST PORT UNIT CLIENTS DURATION_S OUT_PREFIX FC,ADDR,COUNT...
 * Each connection reads the blocks in turn (one map read), then starts again, until
 * DURATION_S has passed or SIGTERM came (`start`/`stop`). Writes, in nanoseconds as native
 * uint32: OUT_PREFIX.map (map reads), OUT_PREFIX.req (each request, send to the reply's
 * arrival in this socket: the kernel's receive timestamp, SO_TIMESTAMPNS) and OUT_PREFIX.seen
 * (send to this loop reading the reply). Prints one JSON line with the counts on stdout.
 *
 * Why two request latencies: client and server share two cores here, so the time from the
 * reply's arrival to this loop running again (the client's own scheduling: its core waking
 * from a halt, or the server thread finishing its slice) would count as the server's. The
 * kernel stamp ends the request where a remote DCIM's network would (docs/benchmarks.md,
 * step 10). A reply that comes without a stamp counts its seen latency (`unstamped`).
 * A lost connection counts as an error and is re-opened after 50 ms (as the Python client).
 * It ends with its parent (PR_SET_PDEATHSIG; the parent's pid in $LOADCLIENT_PARENT).
 * Exit 2 on bad arguments, 3 when the first connections cannot be opened.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECONNECT_NS 50000000LL
#define MAX_REPLY 512 /* 125 registers: 7 + 2 + 250 bytes */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} lats_t;

typedef struct {
    int fd;
    int block;        /* the block whose reply is awaited */
    int ok;           /* no exception reply in this map read */
    uint16_t tid;
    int64_t t_req, t_map;
    int64_t t_req_rt, t_rx_rt; /* CLOCK_REALTIME, the kernel stamp's clock */
    int64_t reconnect_at; /* 0: connected */
    size_t have;
    unsigned char buf[MAX_REPLY];
} conn_t;

static int nblocks;
static unsigned char (*frames)[12];
static struct sockaddr_storage addr;
static socklen_t addrlen;
static lats_t map_lat, req_lat, seen_lat;
static long unstamped;
static long errors, exceptions;
static volatile sig_atomic_t stopping;

static void on_term(int sig) { (void)sig; stopping = 1; }

static int64_t rt_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void push(lats_t *l, int64_t ns) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 65536;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) { perror("realloc"); exit(4); }
    }
    l->v[l->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int open_conn(int ep, conn_t *c, int index) {
    int fd = socket(addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0) { close(fd); return -1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)index};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { close(fd); return -1; }
    c->fd = fd;
    c->have = 0;
    c->reconnect_at = 0;
    return 0;
}

static int send_req(conn_t *c, int64_t t) {
    unsigned char *f = frames[c->block];
    c->tid++;
    f[0] = (unsigned char)(c->tid >> 8);
    f[1] = (unsigned char)c->tid;
    c->t_req = t;
    c->t_req_rt = rt_ns();
    c->t_rx_rt = 0;
    return send(c->fd, f, 12, MSG_NOSIGNAL) == 12 ? 0 : -1;
}

static int begin(conn_t *c, int64_t t) {
    c->block = 0;
    c->ok = 1;
    c->t_map = t;
    return send_req(c, t);
}

static void fail(int ep, conn_t *c, int64_t t) {
    errors++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->reconnect_at = t + RECONNECT_NS;
}

/* Take what arrived; -1 when the connection went. */
static int readable(conn_t *c) {
    struct iovec iov = {c->buf + c->have, sizeof c->buf - c->have};
    char ctl[128];
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof ctl};
    ssize_t got = recvmsg(c->fd, &mh, 0);
    if (got > 0) {
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                c->t_rx_rt = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            }
        }
    }
    if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        return -1;
    }
    c->have += (size_t)got;
    if (c->have < 6) return 0;
    size_t want = 6 + (((size_t)c->buf[4] << 8) | c->buf[5]);
    if (want > sizeof c->buf) return -1; /* not a reply to a <= 125-register read */
    if (c->have < want) return 0;
    int64_t t = now_ns();
    int64_t stamped = c->t_rx_rt - c->t_req_rt;
    if (!c->t_rx_rt || stamped < 0 || stamped > t - c->t_req) {
        unstamped++; /* no stamp, or the wall clock stepped: what this loop saw */
        stamped = t - c->t_req;
    }
    push(&req_lat, stamped);
    push(&seen_lat, t - c->t_req);
    if (c->have > 7 && (c->buf[7] & 0x80)) c->ok = 0;
    c->have = 0; /* one request in flight: nothing follows the reply */
    if (++c->block < nblocks) return send_req(c, t);
    push(&map_lat, now_ns() - c->t_map);
    if (!c->ok) exceptions++;
    return begin(c, now_ns());
}

static int write_lats(const char *prefix, const char *ext, const lats_t *l) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return -1; }
    size_t w = l->n ? fwrite(l->v, sizeof *l->v, l->n, f) : 0;
    fclose(f);
    return w == l->n ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s HOST PORT UNIT CLIENTS DURATION_S OUT_PREFIX FC,ADDR,COUNT...\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *prefix = argv[6];
    int unit = atoi(argv[3]), nclients = atoi(argv[4]);
    double duration = atof(argv[5]);
    if (nclients < 1 || duration <= 0 || unit < 0 || unit > 255) {
        fprintf(stderr, "loadclient: bad UNIT, CLIENTS or DURATION_S\n");
        return 2;
    }
    /* never outlive the bench process that started us (it stops us with SIGTERM): it names
     * itself in LOADCLIENT_PARENT, so a parent gone before the prctl is seen too */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    const char *parent = getenv("LOADCLIENT_PARENT");
    if (parent && getppid() != (pid_t)atol(parent)) return 0;
    nblocks = argc - 7;
    frames = calloc((size_t)nblocks, sizeof *frames);
    if (!frames) { perror("calloc"); return 4; }
    for (int i = 0; i < nblocks; i++) {
        unsigned fc, a, n;
        if (sscanf(argv[7 + i], "%u,%u,%u", &fc, &a, &n) != 3 || fc > 255 || a > 65535 ||
            n < 1 || n > 125) {
            fprintf(stderr, "loadclient: bad block %s (FC,ADDR,COUNT; COUNT 1..125)\n",
                    argv[7 + i]);
            return 2;
        }
        unsigned char *f = frames[i];
        f[2] = 0; f[3] = 0;  /* protocol id */
        f[4] = 0; f[5] = 6;  /* length */
        f[6] = (unsigned char)unit;
        f[7] = (unsigned char)fc;
        f[8] = (unsigned char)(a >> 8); f[9] = (unsigned char)a;
        f[10] = (unsigned char)(n >> 8); f[11] = (unsigned char)n;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0) {
        fprintf(stderr, "loadclient: cannot resolve %s:%s\n", host, port);
        return 2;
    }
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)nclients, sizeof *conns);
    if (ep < 0 || !conns) { perror("loadclient"); return 4; }
    for (int i = 0; i < nclients; i++) {
        if (open_conn(ep, &conns[i], i) < 0) {
            fprintf(stderr, "loadclient: cannot connect to %s:%s: %s\n", host, port,
                    strerror(errno));
            return 3;
        }
    }
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t t0 = now_ns(), end = t0 + (int64_t)(duration * 1e9);
    for (int i = 0; i < nclients; i++)
        if (begin(&conns[i], now_ns()) < 0) fail(ep, &conns[i], now_ns());
    struct epoll_event evs[256];
    int64_t t;
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while ((t = now_ns()) < end && !stopping) {
        int64_t wait_ns = end - t;
        for (int i = 0; i < nclients; i++) {
            conn_t *c = &conns[i];
            if (!c->reconnect_at) continue;
            if (c->reconnect_at <= t) {
                if (open_conn(ep, c, i) == 0) {
                    if (begin(c, now_ns()) < 0) fail(ep, c, now_ns());
                } else {
                    errors++;
                    c->reconnect_at = t + RECONNECT_NS;
                }
            }
            if (c->reconnect_at && c->reconnect_at - t < wait_ns) wait_ns = c->reconnect_at - t;
        }
        int ms = (int)(wait_ns / 1000000) + 1;
        if (ms > 100) ms = 100;
        int n = epoll_wait(ep, evs, 256, ms);
        for (int k = 0; k < n; k++) {
            conn_t *c = &conns[evs[k].data.u32];
            if (c->fd < 0) continue;
            if (readable(c) < 0) fail(ep, c, now_ns());
        }
    }
    int64_t t1 = now_ns();
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 ((ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
                  (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec)) / 1e6;
    if (write_lats(prefix, "map", &map_lat) < 0 || write_lats(prefix, "req", &req_lat) < 0 ||
        write_lats(prefix, "seen", &seen_lat) < 0)
        return 4;
    printf("{\"reads\": %zu, \"requests\": %zu, \"errors\": %ld, \"exception_replies\": %ld, "
           "\"unstamped\": %ld, \"wall_s\": %.6f, \"cpu_s\": %.6f}\n",
           map_lat.n, req_lat.n, errors, exceptions, unstamped, (t1 - t0) / 1e9, cpu);
    return 0;
}
