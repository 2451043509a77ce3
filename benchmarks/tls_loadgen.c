/*
 * tls_loadgen: the TLS load client of benchmarks/tls_bench.py (loopback only).
 *
 * The C loadgen speaks no TLS, and a Python TLS client costs as much per
 * request as a Python TLS server, so on a 2-core machine neither side would
 * saturate clearly.  This client does the TLS work in OpenSSL from C on one
 * epoll loop, so the server is what saturates (tls_bench.py reports both
 * sides' CPU).  It takes loadgen's flags and prints loadgen's JSON line and
 * progress events, so echo_bench.py's and callgrind_bench.py's machinery can
 * drive it unchanged.  Built by tls_bench.py (cc -O2 ... -lssl -lcrypto).
 *
 * Modes:
 *   echo (default)  --conns connections, each with one --size message in
 *                   flight (ping-pong), every echoed byte compared (--verify);
 *                   --duration after --warmup, or exactly --requests N.
 *   --mode stream   --conns connections (the scenario: 1), each writing the
 *                   stream in --size chunks (up to 256 KiB) while less than
 *                   --window bytes (4 MiB) are sent and not yet echoed, and
 *                   reading the echo back, every byte compared with what was
 *                   sent at that offset (a pattern of prime period, so a byte
 *                   dropped, added or moved shows).  A "request" is one --size
 *                   chunk echoed; MB_per_sec counts the bytes echoed.
 *   --handshakes    --conns slots, each in a loop: connect, full TLS handshake
 *                   (no session resumption), one --size ping-pong, close_notify
 *                   both ways, close.  A "request" is one such connection;
 *                   --requests N makes exactly N of them.
 *   --idle          open --conns connections, one ping each, print a "ready"
 *                   event, hold them idle for --duration seconds, close.
 *   --warm-conns K  before any of that: K connections one after another, each
 *                   --warm-pings 1 KiB round trips, then --warm-bulk bytes
 *                   echoed in 64 KiB writes, then close_notify both ways
 *                   (echo_bench.warm_server's warm-up, over TLS).
 *
 * --plain: the same client with no TLS at all (plain TCP: no --cafile, a
 * close is a FIN each way), so that one run can put a server's plain and TLS
 * figures side by side with one client.
 *
 * The server's certificate is verified against --cafile, for --server-name
 * (default: --host; an IP address is checked against the certificate's IP
 * SANs).  Output: ONE JSON line on stdout; progress events on stderr:
 *   {"event":"connected"} {"event":"ready"} {"event":"measure_start"} {"event":"measure_end"}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define PAT_MASK ((1u << 17) - 1)
#define MAX_SIZE (1 << 18)
#define STREAM_PERIOD 65521 /* prime: a shifted byte lands where another is expected */
#define STREAM_WINDOW (4 << 20)
#define BULK_CHUNK (1 << 16)
#define CLOSE_WAIT_S 5.0

enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSING };
enum { MODE_ECHO, MODE_HANDSHAKES, MODE_IDLE, MODE_STREAM };
/* what a read or a write could not do: the io_* functions' result when <= 0 */
enum { IO_WANT_READ = 0, IO_WANT_WRITE = -1, IO_CLOSED = -2, IO_ERROR = -3 };

struct conn {
    int fd;
    SSL *ssl;
    int state;
    uint32_t ev;     /* epoll events currently registered */
    int awaiting;    /* a message is in flight */
    size_t sent;     /* bytes of the current message written */
    size_t got;      /* bytes of its echo read */
    uint64_t t0;     /* when the message (handshake mode: the connection) started */
    uint32_t off;    /* pattern offset of the current message */
    uint64_t seq;    /* messages sent on this slot */
    uint64_t s_sent; /* stream mode: bytes of the stream written */
    uint64_t s_got;  /* stream mode: bytes of it echoed back */
};

/* ---- options ---- */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_conns = 100;
static int opt_size = 1024;
static double opt_duration = 5.0;
static double opt_warmup = 1.0;
static long long opt_requests = 0;
static int opt_verify = 0;
static int opt_mode = MODE_ECHO;
static const char *opt_cafile = NULL;
static const char *opt_server_name = NULL;
static double opt_connect_timeout = 30.0;
static int opt_connect_conc = 100;
static int opt_warm_conns = 0;
static int opt_warm_pings = 200;
static long opt_warm_bulk = 1 << 20;
static int opt_plain = 0;
static long opt_window = STREAM_WINDOW;

/* ---- state ---- */
static struct sockaddr_storage addr;
static socklen_t addr_len;
static int server_name_is_ip;
static SSL_CTX *ctx;
static int epfd;
static struct conn *conns;
static unsigned char pat[PAT_MASK + 1 + MAX_SIZE];
static unsigned char rbuf[1 << 16];
static unsigned char spat[STREAM_PERIOD + MAX_SIZE]; /* the stream's pattern, period STREAM_PERIOD */
static int measuring, issuing = 1, traffic;
static int n_open, n_connecting;
static uint64_t st_requests, st_bytes, st_issued, st_mismatch, st_excess;
static uint64_t err_connect, err_handshake, err_io, err_closed;
static char tls_version[32] = "", tls_cipher[64] = "";

/* latency samples (ns), a bounded reservoir */
#define LAT_CAP (1 << 20)
static uint64_t *lat;
static size_t lat_n;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void event(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static void fail(const char *reason) __attribute__((noreturn));
static void fail(const char *reason) {
    printf("{\"ok\":false,\"reason\":\"%s\"}\n", reason);
    fflush(stdout);
    exit(1);
}

static void usage(void) {
    fprintf(stderr,
            "usage: tls_loadgen --port P (--cafile CA.pem | --plain) [--host 127.0.0.1] [--server-name NAME]\n"
            "       [--conns N] [--size BYTES] [--duration S] [--warmup S] [--requests N] [--verify]\n"
            "       [--handshakes | --idle | --mode echo|stream] [--window BYTES]\n"
            "       [--connect-timeout S] [--connect-concurrency N]\n"
            "       [--warm-conns K] [--warm-pings P] [--warm-bulk BYTES]\n");
    exit(2);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(double p) {
    if (!lat_n) return -1;
    size_t i = (size_t)(p / 100.0 * (double)(lat_n - 1));
    return lat[i] / 1e3;
}

static void record_latency(uint64_t ns) {
    if (lat_n < LAT_CAP) lat[lat_n++] = ns;
}

/* ---- address: loopback only ---- */
static void resolve(void) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    memset(&addr, 0, sizeof addr);
    if (inet_pton(AF_INET, opt_host, &v4->sin_addr) == 1) {
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) fail("refusing: --host must be a loopback address");
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)opt_port);
        addr_len = sizeof *v4;
    } else if (inet_pton(AF_INET6, opt_host, &v6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) fail("refusing: --host must be a loopback address");
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)opt_port);
        addr_len = sizeof *v6;
    } else {
        fail("--host must be a numeric loopback address (127.0.0.1 or ::1)");
    }
}

/* ---- TLS ---- */
static void make_context(void) {
    if (opt_plain) return;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) fail("SSL_CTX_new failed");
    if (SSL_CTX_load_verify_locations(ctx, opt_cafile, NULL) != 1) fail("cannot load --cafile");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* every handshake is a full one: no client-side session reuse */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    unsigned char probe[16];
    server_name_is_ip = inet_pton(AF_INET, opt_server_name, probe) == 1 ||
                        inet_pton(AF_INET6, opt_server_name, probe) == 1;
}

static SSL *new_ssl(int fd) {
    SSL *ssl = SSL_new(ctx);
    if (!ssl) fail("SSL_new failed");
    SSL_set_fd(ssl, fd);
    if (server_name_is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), opt_server_name);
    } else {
        SSL_set_tlsext_host_name(ssl, opt_server_name);
        SSL_set1_host(ssl, opt_server_name);
    }
    return ssl;
}

static void note_session(SSL *ssl) {
    if (tls_version[0]) return;
    if (!ssl) {
        snprintf(tls_version, sizeof tls_version, "none (plain TCP)");
        return;
    }
    snprintf(tls_version, sizeof tls_version, "%s", SSL_get_version(ssl));
    snprintf(tls_cipher, sizeof tls_cipher, "%s", SSL_get_cipher_name(ssl));
}

static int tcp_socket(int nonblocking) {
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ---- I/O, over TLS or (--plain) not: > 0 bytes done, else an IO_* code ---- */
static int io_result(SSL *ssl, int r) {
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ: return IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return IO_CLOSED; /* the peer's close_notify */
    default: return IO_ERROR;
    }
}

static int plain_result(ssize_t r, int reading) {
    if (r > 0) return (int)r;
    if (r == 0) return IO_CLOSED; /* FIN (recv only) */
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return reading ? IO_WANT_READ : IO_WANT_WRITE;
    return IO_ERROR;
}

static int io_read(SSL *ssl, int fd, unsigned char *buf, size_t n) {
    if (!ssl) return plain_result(recv(fd, buf, n, 0), 1);
    int r = SSL_read(ssl, buf, (int)n);
    return r > 0 ? r : io_result(ssl, r);
}

static int io_write(SSL *ssl, int fd, const unsigned char *buf, size_t n) {
    if (!ssl) return plain_result(send(fd, buf, n, MSG_NOSIGNAL), 0);
    int r = SSL_write(ssl, buf, (int)n);
    return r > 0 ? r : io_result(ssl, r);
}

/* Our close_notify (TLS), or our FIN (plain). */
static void io_shutdown(SSL *ssl, int fd) {
    if (ssl) SSL_shutdown(ssl);
    else shutdown(fd, SHUT_WR);
}

/* ---- the warm-up: blocking sockets, one connection at a time ---- */
static int warm_read(SSL *ssl, int fd, const unsigned char *expect, size_t n) {
    size_t got = 0;
    while (got < n) {
        int r = io_read(ssl, fd, rbuf, n - got < sizeof rbuf ? n - got : sizeof rbuf);
        if (r <= 0) return -1;
        if (memcmp(rbuf, expect + got, (size_t)r) != 0) return -2;
        got += (size_t)r;
    }
    return 0;
}

static int warm_write(SSL *ssl, int fd, const unsigned char *data, size_t n) {
    size_t sent = 0;
    while (sent < n) {
        int r = io_write(ssl, fd, data + sent, n - sent);
        if (r <= 0) return -1;
        sent += (size_t)r;
    }
    return 0;
}

static void warm_up(void) {
    uint64_t t0 = now_ns();
    unsigned long long echoed = 0;
    for (int i = 0; i < opt_warm_conns; i++) {
        int fd = tcp_socket(0);
        if (fd < 0) fail("warm-up: socket failed");
        struct timeval tv = {.tv_sec = (time_t)opt_connect_timeout, .tv_usec = 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&addr, addr_len) != 0) fail("warm-up: connect failed");
        SSL *ssl = opt_plain ? NULL : new_ssl(fd);
        if (ssl && SSL_connect(ssl) != 1) fail("warm-up: TLS handshake failed (certificate or server?)");
        note_session(ssl);
        for (int k = 0; k < opt_warm_pings; k++) {
            const unsigned char *msg = pat + (((uint32_t)i * 4099u + (uint32_t)k * 131u) & PAT_MASK);
            if (warm_write(ssl, fd, msg, 1024) || warm_read(ssl, fd, msg, 1024)) fail("warm-up: ping-pong failed or differed");
            echoed += 1024;
        }
        for (long done = 0; done < opt_warm_bulk;) {
            size_t n = (size_t)(opt_warm_bulk - done < BULK_CHUNK ? opt_warm_bulk - done : BULK_CHUNK);
            const unsigned char *msg = pat + (((uint32_t)done * 7u + (uint32_t)i) & PAT_MASK);
            if (warm_write(ssl, fd, msg, n) || warm_read(ssl, fd, msg, n)) fail("warm-up: bulk echo failed or differed");
            done += (long)n;
            echoed += n;
        }
        io_shutdown(ssl, fd);                  /* our close_notify (or FIN) */
        while (io_read(ssl, fd, rbuf, sizeof rbuf) > 0) {
        }                                      /* up to the server's close_notify or FIN */
        if (ssl) SSL_free(ssl);
        close(fd);
    }
    event("{\"event\":\"warmed\",\"conns\":%d,\"bytes_echoed\":%llu,\"seconds\":%.3f}", opt_warm_conns, echoed,
          (now_ns() - t0) / 1e9);
}

/* ---- the event loop's connections ---- */
static void set_events(struct conn *c, uint32_t ev) {
    if (c->ev == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->ev = ev;
}

static void conn_free(struct conn *c) {
    if (c->state == S_OPEN || c->state == S_CLOSING) n_open--;
    if (c->state == S_CONNECTING || c->state == S_HANDSHAKE) n_connecting--;
    if (c->ssl) SSL_free(c->ssl);
    if (c->fd >= 0) close(c->fd); /* also removes it from epoll */
    c->ssl = NULL;
    c->fd = -1;
    c->state = S_FREE;
    c->awaiting = 0;
}

static void conn_fail(struct conn *c, uint64_t *counter) {
    if (counter) (*counter)++;
    conn_free(c);
}

static void start_connect(struct conn *c) {
    c->fd = tcp_socket(1);
    if (c->fd < 0) {
        err_connect++;
        return;
    }
    c->state = S_CONNECTING;
    c->ev = EPOLLOUT;
    c->t0 = now_ns();
    n_connecting++;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
    if (connect(c->fd, (struct sockaddr *)&addr, addr_len) != 0 && errno != EINPROGRESS) conn_fail(c, &err_connect);
}

static const unsigned char *message(struct conn *c) { return pat + c->off; }

static void try_write(struct conn *c);

static void send_message(struct conn *c) {
    if (!issuing) return;
    if (opt_requests && st_issued >= (uint64_t)opt_requests) return;
    st_issued++;
    c->seq++;
    c->off = (uint32_t)(((uint64_t)(c - conns) * 2654435761u + c->seq * 131u) & PAT_MASK);
    c->sent = c->got = 0;
    c->awaiting = 1;
    if (opt_mode != MODE_HANDSHAKES) c->t0 = now_ns();
    try_write(c);
}

static void begin_close(struct conn *c) {
    c->state = S_CLOSING;
    c->awaiting = 0;
    io_shutdown(c->ssl, c->fd);
    set_events(c, EPOLLIN);
}

static void stream_write(struct conn *c);

static void on_open(struct conn *c) {
    n_connecting--;
    n_open++;
    c->state = S_OPEN;
    note_session(c->ssl);
    set_events(c, EPOLLIN);
    if ((opt_mode == MODE_ECHO || opt_mode == MODE_STREAM) && !traffic) return; /* the traffic starts later */
    if (!issuing) begin_close(c);
    else if (opt_mode == MODE_STREAM) stream_write(c);
    else send_message(c);
}

static void do_handshake(struct conn *c) {
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        on_open(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) set_events(c, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE) set_events(c, EPOLLIN | EPOLLOUT);
    else conn_fail(c, &err_handshake);
}

static void try_write(struct conn *c) {
    while (c->sent < (size_t)opt_size) {
        int r = io_write(c->ssl, c->fd, message(c) + c->sent, (size_t)opt_size - c->sent);
        if (r > 0) {
            c->sent += (size_t)r;
            continue;
        }
        if (r == IO_WANT_WRITE) set_events(c, EPOLLIN | EPOLLOUT);
        else if (r != IO_WANT_READ) conn_fail(c, &err_io);
        return;
    }
    set_events(c, EPOLLIN);
}

/* Stream mode: write the stream while the echo lags less than --window behind.
 * (A retried write passes the same bytes and length, as OpenSSL requires.) */
static void stream_write(struct conn *c) {
    uint64_t limit = opt_requests ? (uint64_t)opt_requests * (uint64_t)opt_size : UINT64_MAX;
    while (issuing && c->s_sent < limit && c->s_sent - c->s_got < (uint64_t)opt_window) {
        size_t in_chunk = (size_t)(c->s_sent % (uint64_t)opt_size);
        int r = io_write(c->ssl, c->fd, spat + c->s_sent % STREAM_PERIOD, (size_t)opt_size - in_chunk);
        if (r > 0) {
            if (in_chunk == 0) st_issued++;
            c->s_sent += (uint64_t)r;
            continue;
        }
        if (r == IO_WANT_WRITE) set_events(c, EPOLLIN | EPOLLOUT);
        else if (r != IO_WANT_READ) conn_fail(c, &err_io);
        return;
    }
    set_events(c, EPOLLIN);
}

static void complete(struct conn *c, uint64_t t) {
    c->awaiting = 0;
    if (measuring) {
        record_latency(t - c->t0);
        st_requests++;
        st_bytes += (uint64_t)opt_size;
    }
    if (opt_mode == MODE_HANDSHAKES) {
        begin_close(c); /* then a new connection in this slot, once this one is closed */
    } else if (opt_mode == MODE_ECHO) {
        send_message(c);
    }
}

/* A read that returned no data (r <= 0): wait, or the end of a closing connection. */
static void read_stopped(struct conn *c, int r) {
    if (r == IO_WANT_READ) return;
    if (r == IO_WANT_WRITE) {
        set_events(c, EPOLLIN | EPOLLOUT);
        return;
    }
    if (c->state == S_CLOSING) { /* the server's close_notify or FIN: done */
        int refill = opt_mode == MODE_HANDSHAKES && issuing && !(opt_requests && st_issued >= (uint64_t)opt_requests);
        conn_free(c);
        if (refill) start_connect(c);
        return;
    }
    conn_fail(c, r == IO_CLOSED ? &err_closed : &err_io);
}

static void stream_read(struct conn *c) {
    for (;;) {
        int r = io_read(c->ssl, c->fd, rbuf, sizeof rbuf);
        if (r <= 0) {
            read_stopped(c, r);
            return;
        }
        size_t n = (size_t)r;
        if (c->state == S_CLOSING) continue; /* late data after our close_notify */
        if (c->s_got + n > c->s_sent) {
            st_excess += n;
            conn_fail(c, &err_io);
            return;
        }
        if (opt_verify && memcmp(rbuf, spat + c->s_got % STREAM_PERIOD, n) != 0) st_mismatch++;
        uint64_t chunks_before = c->s_got / (uint64_t)opt_size;
        c->s_got += n;
        if (measuring) {
            st_bytes += n;
            st_requests += c->s_got / (uint64_t)opt_size - chunks_before;
        }
    }
}

static void try_read(struct conn *c) {
    if (opt_mode == MODE_STREAM) {
        stream_read(c);
        return;
    }
    for (;;) {
        int r = io_read(c->ssl, c->fd, rbuf, sizeof rbuf);
        if (r > 0) {
            size_t n = (size_t)r;
            if (c->state == S_CLOSING) continue; /* late data after our close_notify */
            if (!c->awaiting || c->got + n > (size_t)opt_size) {
                st_excess += n;
                conn_fail(c, &err_io);
                return;
            }
            if (opt_verify && memcmp(rbuf, message(c) + c->got, n) != 0) st_mismatch++;
            c->got += n;
            if (c->got == (size_t)opt_size && c->sent == (size_t)opt_size) {
                complete(c, now_ns());
                if (c->state == S_FREE) return;
            }
            continue;
        }
        read_stopped(c, r);
        return;
    }
}

static void dispatch(int nev, struct epoll_event *evs) {
    for (int i = 0; i < nev; i++) {
        struct conn *c = evs[i].data.ptr;
        uint32_t ev = evs[i].events;
        if (c->state == S_CONNECTING) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err || (ev & (EPOLLERR | EPOLLHUP))) {
                conn_fail(c, &err_connect);
                continue;
            }
            c->state = S_HANDSHAKE;
            if (opt_plain) {
                on_open(c);
                continue;
            }
            c->ssl = new_ssl(c->fd);
            do_handshake(c);
            continue;
        }
        if (c->state == S_HANDSHAKE) {
            do_handshake(c);
            continue;
        }
        if (c->state == S_FREE) continue;
        if (opt_mode == MODE_STREAM) {
            if (c->state == S_OPEN && (ev & EPOLLOUT)) stream_write(c);
            if (c->state != S_FREE && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) try_read(c);
            if (c->state == S_OPEN) stream_write(c); /* the echo made room in the window */
            continue;
        }
        if ((ev & EPOLLOUT) && c->state == S_OPEN && c->awaiting && c->sent < (size_t)opt_size) try_write(c);
        if (c->state != S_FREE && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) try_read(c);
        if (c->state == S_OPEN && c->awaiting && c->sent < (size_t)opt_size) try_write(c);
    }
}

static int wait_ms(uint64_t deadline) {
    uint64_t t = now_ns();
    if (t >= deadline) return 0;
    uint64_t ms = (deadline - t) / 1000000 + 1;
    return ms > 1000 ? 1000 : (int)ms;
}

static void run_until(uint64_t deadline, int (*done)(void)) {
    struct epoll_event evs[MAX_EVENTS];
    while (now_ns() < deadline && !done()) {
        int nev = epoll_wait(epfd, evs, MAX_EVENTS, wait_ms(deadline));
        if (nev < 0 && errno != EINTR) fail("epoll_wait failed");
        if (nev > 0) dispatch(nev, evs);
    }
}

static int started;
static int connect_done(void) {
    while (started < opt_conns && n_connecting < opt_connect_conc) start_connect(&conns[started++]);
    return started >= opt_conns && n_connecting == 0;
}

static int idle_answered(void) {
    for (int i = 0; i < opt_conns; i++)
        if (conns[i].state == S_OPEN && conns[i].awaiting) return 0;
    return 1;
}

static int never(void) { return 0; }

static int all_requests_done(void) {
    if (n_open == 0 && n_connecting == 0) return 1;
    return opt_requests && st_requests >= (uint64_t)opt_requests;
}

static int all_closed(void) { return n_open == 0 && n_connecting == 0; }

/* Stop issuing, close every connection with close_notify both ways (bounded). */
static void close_all(void) {
    issuing = 0;
    for (int i = 0; i < opt_conns; i++) {
        struct conn *c = &conns[i];
        if (c->state == S_OPEN) begin_close(c);
        else if (c->state == S_CONNECTING) conn_free(c);
    }
    run_until(now_ns() + (uint64_t)(CLOSE_WAIT_S * 1e9), all_closed);
    for (int i = 0; i < opt_conns; i++)
        if (conns[i].state != S_FREE) conn_free(&conns[i]);
}

static void parse(int argc, char **argv) {
    enum { O_HOST = 1, O_PORT, O_CONNS, O_SIZE, O_DURATION, O_WARMUP, O_REQUESTS, O_VERIFY, O_HANDSHAKES,
           O_IDLE, O_CAFILE, O_NAME, O_CTIMEOUT, O_CCONC, O_WCONNS, O_WPINGS, O_WBULK, O_PIPELINE, O_MODE,
           O_PLAIN, O_WINDOW };
    static struct option longs[] = {
        {"host", 1, 0, O_HOST}, {"port", 1, 0, O_PORT}, {"conns", 1, 0, O_CONNS}, {"size", 1, 0, O_SIZE},
        {"duration", 1, 0, O_DURATION}, {"warmup", 1, 0, O_WARMUP}, {"requests", 1, 0, O_REQUESTS},
        {"verify", 0, 0, O_VERIFY}, {"handshakes", 0, 0, O_HANDSHAKES}, {"idle", 0, 0, O_IDLE},
        {"cafile", 1, 0, O_CAFILE}, {"server-name", 1, 0, O_NAME}, {"connect-timeout", 1, 0, O_CTIMEOUT},
        {"connect-concurrency", 1, 0, O_CCONC}, {"warm-conns", 1, 0, O_WCONNS},
        {"warm-pings", 1, 0, O_WPINGS}, {"warm-bulk", 1, 0, O_WBULK}, {"pipeline", 1, 0, O_PIPELINE},
        {"mode", 1, 0, O_MODE}, {"plain", 0, 0, O_PLAIN}, {"window", 1, 0, O_WINDOW}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (o) {
        case O_HOST: opt_host = optarg; break;
        case O_PORT: opt_port = atoi(optarg); break;
        case O_CONNS: opt_conns = atoi(optarg); break;
        case O_SIZE: opt_size = atoi(optarg); break;
        case O_DURATION: opt_duration = atof(optarg); break;
        case O_WARMUP: opt_warmup = atof(optarg); break;
        case O_REQUESTS: opt_requests = atoll(optarg); break;
        case O_VERIFY: opt_verify = 1; break;
        case O_HANDSHAKES: opt_mode = MODE_HANDSHAKES; break;
        case O_IDLE: opt_mode = MODE_IDLE; break;
        case O_CAFILE: opt_cafile = optarg; break;
        case O_NAME: opt_server_name = optarg; break;
        case O_CTIMEOUT: opt_connect_timeout = atof(optarg); break;
        case O_CCONC: opt_connect_conc = atoi(optarg); break;
        case O_WCONNS: opt_warm_conns = atoi(optarg); break;
        case O_WPINGS: opt_warm_pings = atoi(optarg); break;
        case O_WBULK: opt_warm_bulk = atol(optarg); break;
        case O_PIPELINE: if (atoi(optarg) != 1) fail("--pipeline: only 1 (ping-pong) is supported"); break;
        case O_MODE:
            if (strcmp(optarg, "stream") == 0) opt_mode = MODE_STREAM;
            else if (strcmp(optarg, "echo") == 0) opt_mode = MODE_ECHO;
            else fail("--mode: echo or stream");
            break;
        case O_PLAIN: opt_plain = 1; break;
        case O_WINDOW: opt_window = atol(optarg); break;
        default: usage();
        }
    }
    if (opt_port <= 0 || opt_port > 65535 || (!opt_cafile && !opt_plain)) usage();
    if (opt_conns < 1 || opt_conns > 100000) fail("--conns must be 1..100000");
    if (opt_size < 1 || opt_size > MAX_SIZE) fail("--size must be 1..262144");
    if (opt_window < 1 || opt_window > (1L << 30)) fail("--window must be 1..1 GiB");
    if (!(opt_duration >= 0 && opt_duration <= 3600)) fail("--duration must be 0..3600");
    if (!(opt_warmup >= 0 && opt_warmup <= 600)) fail("--warmup must be 0..600");
    if (!(opt_connect_timeout > 0 && opt_connect_timeout <= 600)) fail("--connect-timeout must be 0..600");
    if (opt_connect_conc < 1) fail("--connect-concurrency must be >= 1");
    if (opt_requests < 0 || (opt_requests && opt_mode == MODE_IDLE)) fail("--requests: not with --idle; >= 1");
    if (opt_warm_conns < 0 || opt_warm_conns > 100 || opt_warm_pings < 0 || opt_warm_pings > 100000 ||
        opt_warm_bulk < 0 || opt_warm_bulk > (1L << 30))
        fail("--warm-conns 0..100, --warm-pings 0..100000, --warm-bulk 0..1 GiB");
    if (opt_requests) opt_warmup = 0; /* every request counts */
    if (!opt_server_name) opt_server_name = opt_host;
}

int main(int argc, char **argv) {
    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (size_t i = 0; i < sizeof pat; i++) pat[i] = (unsigned char)((i * 7 + (i >> 8) * 13) & 0xFF);
    for (size_t i = 0; i < sizeof spat; i++) spat[i] = (unsigned char)(((i % STREAM_PERIOD) * 7 + 3) & 0xFF);
    resolve();
    make_context();
    lat = malloc(LAT_CAP * sizeof *lat);
    conns = calloc((size_t)opt_conns, sizeof *conns);
    if (!lat || !conns) fail("out of memory");
    for (int i = 0; i < opt_conns; i++) conns[i].fd = -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) fail("epoll_create1 failed");

    if (opt_warm_conns) warm_up();

    /* phase 1: connect and handshake (echo and idle modes), bounded */
    uint64_t t_conn0 = now_ns();
    double connect_s = 0;
    if (opt_mode != MODE_HANDSHAKES) {
        measuring = opt_mode == MODE_IDLE;
        run_until(t_conn0 + (uint64_t)(opt_connect_timeout * 1e9), connect_done);
        for (int i = 0; i < opt_conns; i++)
            if (conns[i].state == S_CONNECTING || conns[i].state == S_HANDSHAKE) conn_fail(&conns[i], &err_connect);
        connect_s = (now_ns() - t_conn0) / 1e9;
        event("{\"event\":\"connected\",\"connected\":%d,\"connect_s\":%.3f}", n_open, connect_s);
        if (n_open == 0) fail("no connection established (server down, or certificate not trusted?)");
    }

    if (opt_mode == MODE_IDLE) {
        run_until(now_ns() + (uint64_t)(opt_connect_timeout * 1e9), idle_answered);
        measuring = 0;
        int answered = (int)st_requests;
        event("{\"event\":\"ready\",\"connected\":%d,\"answered\":%d}", n_open, answered);
        uint64_t h0 = now_ns();
        run_until(h0 + (uint64_t)(opt_duration * 1e9), never);
        double hold_s = (now_ns() - h0) / 1e9;
        int held = n_open;
        qsort(lat, lat_n, sizeof *lat, cmp_u64);
        close_all();
        printf("{\"ok\":%s,\"mode\":\"idle\",\"conns\":%d,\"held\":%d,\"answered\":%d,\"connect_s\":%.3f,"
               "\"hold_s\":%.3f,\"ping_p50_us\":%.1f,\"ping_p99_us\":%.1f,\"errors\":%llu,"
               "\"handshake_errors\":%llu,\"mismatches\":%llu,\"tls_version\":\"%s\",\"cipher\":\"%s\"}\n",
               answered == opt_conns ? "true" : "false", opt_conns, held, answered, connect_s, hold_s,
               pct_us(50), pct_us(99),
               (unsigned long long)(err_connect + err_handshake + err_io + err_closed),
               (unsigned long long)err_handshake, (unsigned long long)(st_mismatch + st_excess), tls_version,
               tls_cipher);
        return answered == opt_conns ? 0 : 1;
    }

    /* phase 2: traffic; handshake mode connects here, every slot in a loop */
    issuing = traffic = 1;
    uint64_t t_start = now_ns();
    if (opt_mode == MODE_HANDSHAKES) {
        for (int i = 0; i < opt_conns && !(opt_requests && i >= opt_requests); i++) start_connect(&conns[i]);
    } else {
        for (int i = 0; i < opt_conns; i++)
            if (conns[i].state == S_OPEN) {
                if (opt_mode == MODE_STREAM) stream_write(&conns[i]);
                else send_message(&conns[i]);
            }
    }
    uint64_t t_measure = t_start + (uint64_t)(opt_warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(opt_duration * 1e9);
    if (opt_requests) measuring = 1;
    run_until(t_measure, never);
    measuring = 1;
    uint64_t m0 = now_ns();
    double cpu0 = cpu_s();
    event("{\"event\":\"measure_start\"}");
    run_until(t_end, all_requests_done);
    uint64_t m1 = now_ns();
    double cpu1 = cpu_s();
    measuring = 0;
    event("{\"event\":\"measure_end\"}");
    double elapsed = (m1 - m0) / 1e9;
    double cpu_pct = elapsed > 0 ? (cpu1 - cpu0) / elapsed * 100.0 : 0;
    int open_at_end = n_open;
    close_all();
    qsort(lat, lat_n, sizeof *lat, cmp_u64);
    int complete_ok = !opt_requests || st_requests == (uint64_t)opt_requests;
    uint64_t errors = err_connect + err_handshake + err_io + err_closed;
    printf("{\"ok\":%s,%s\"mode\":\"%s\",\"conns\":%d,\"open_at_end\":%d,\"size\":%d,\"warmup_s\":%.3f,"
           "\"duration_s\":%.3f,\"connect_s\":%.3f,\"requests\":%llu,\"requests_per_sec\":%.1f,\"bytes\":%llu,"
           "\"MB_per_sec\":%.2f,\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"errors\":%llu,\"connect_errors\":%llu,"
           "\"handshake_errors\":%llu,\"io_errors\":%llu,\"closed_by_peer\":%llu,\"mismatches\":%llu,"
           "\"excess_bytes\":%llu,\"verify\":%s,\"client_cpu_pct\":%.1f,\"tls_version\":\"%s\",\"cipher\":\"%s\"}\n",
           complete_ok ? "true" : "false",
           complete_ok ? "" : "\"reason\":\"not all --requests completed before the --duration limit\",",
           opt_mode == MODE_HANDSHAKES ? "handshakes" : opt_mode == MODE_STREAM ? "stream" : "echo", opt_conns, open_at_end, opt_size, opt_warmup,
           elapsed, connect_s, (unsigned long long)st_requests, elapsed > 0 ? st_requests / elapsed : 0,
           (unsigned long long)st_bytes, elapsed > 0 ? st_bytes / elapsed / 1e6 : 0, pct_us(50), pct_us(99),
           (unsigned long long)errors, (unsigned long long)err_connect, (unsigned long long)err_handshake,
           (unsigned long long)err_io, (unsigned long long)err_closed,
           (unsigned long long)(st_mismatch + st_excess), (unsigned long long)st_excess,
           opt_verify ? "true" : "false", cpu_pct, tls_version, tls_cipher);
    return complete_ok ? 0 : 1;
}
