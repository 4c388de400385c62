/* The benchmark's WebSocket load client: N connections on one epoll loop, counting the
 * publications they receive and timing those on a sample of connections. It replaces a Python
 * client that was itself the bottleneck, so the hot path does no allocation and no per-message
 * work beyond a few memmem/memchr scans of the payload.
 *
 * Driven by bench/loadclient.py: it prints `ready <n>` once every connection is taken on, then
 * reads commands, one a line, on stdin: `stats` prints one JSON line
 * {"received":R,"errors":E,"closed":C,"latencies_ns":[...]} (latencies since the previous
 * `stats`); `quit` or end of input closes everything and exits 0. See usage() for arguments.
 *
 * With a last argument `sse` the connections are Server-Sent Event streams instead: a plain
 * GET of PATH followed by the connection's hello (its query string, e.g. `?cf_connect=...`),
 * a 200 response, then events (`...\n\n`) counted like WebSocket messages; the chunked
 * encoding's size lines between them hold no marker and are skipped with them.
 *
 * LOADCLIENT_PROTOBUF=1 in the environment: the server speaks the Centrifuge protobuf format
 * (binary frames of varint-length-delimited replies). Hello frames then go out as binary
 * frames, and a server ping, an empty reply (a zero length) anywhere in a frame, is answered
 * with the empty command, the single byte 0; PING and ANSWER are unused (pass them empty).
 */
#define _GNU_SOURCE
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define READY_TIMEOUT_S 120     /* for one batch to be taken on */
#define READ_SIZE (256 * 1024)  /* one read; the buffer is shared by all connections */
#define MAX_HEAD 16384          /* an upgrade response with a longer head is not one */
#define MAX_FRAME (1u << 30)    /* a longer server frame is a protocol error */
#define MAX_EVENTS 1024

enum state { CONNECTING, UPGRADING, OPEN, CLOSED };

struct buf {
    uint8_t *p;
    size_t len, cap;
};

struct hello {  /* the frames one connection sends right after the upgrade */
    size_t count;
    struct buf *frames;
};

struct conn {
    int fd;
    enum state state;
    int ready, sample;
    uint32_t events;           /* the epoll interest now registered */
    const struct hello *hello;
    struct buf tail;           /* an incomplete frame (or response head) left by the last read */
    struct buf out;            /* what a write could not take yet */
};

/* Settings, from the command line. */
static const char *host, *port, *path;
static struct addrinfo *addr;
static struct buf marker, ping, answer, ready_marker;
/* LOADCLIENT_DEFLATE=1: offer permessage-deflate and inflate compressed (RSV1) messages, each
   alone (the server takes over no context), into one buffer reused for all. */
static int deflate_on;
static z_stream inflater;
static uint8_t *inflated;
static size_t capinflated;
static struct hello *hellos;
static size_t nhellos;
static int protobuf;  /* LOADCLIENT_PROTOBUF=1: binary hellos, protobuf pings */

/* Counters and samples, reported by `stats`. */
static uint64_t received, errors, closed;
static int64_t *latencies;
static size_t nlatencies, caplatencies;

static struct conn *conns;
static long nconns, nready, batch;  /* batch: connections opened at once (see usage) */
static long sources = 1;  /* LOADCLIENT_SOURCES: 127.0.0.x source addresses to spread over */
static int running;  /* every connection was taken on: failures count instead of ending us */
static int sse;      /* Server-Sent Events instead of WebSocket (see the top) */
static int ep;
static uint8_t *rbuf, *scratch;
static size_t rcap, scratchcap;
static uint32_t rng;

static void die(const char *fmt, const char *what) {
    fprintf(stderr, "loadclient: ");
    fprintf(stderr, fmt, what);
    fputc('\n', stderr);
    exit(1);
}

static void *grow(void *p, size_t size) {
    void *q = realloc(p, size);
    if (!q)
        die("%s", "out of memory");
    return q;
}

static void reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    b->p = grow(b->p, cap);
    b->cap = cap;
}

static void append(struct buf *b, const void *p, size_t n) {
    reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static uint32_t next_random(void) {  /* xorshift32: masks and keys need no more */
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void watch(struct conn *c, uint32_t events) {
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->events = events;
}

/* A connection is gone. Before `ready` that ends the run: the measurement would be wrong. */
static void drop(struct conn *c, uint64_t *counter, const char *why) {
    if (!running)
        die("a connection failed during setup: %s", why);
    close(c->fd);
    c->fd = -1;
    c->state = CLOSED;
    (*counter)++;
}

static void lost(struct conn *c, const char *why) { drop(c, &closed, why); }
static void failed(struct conn *c, const char *why) { drop(c, &errors, why); }

static void set_ready(struct conn *c) {
    c->ready = 1;
    nready++;
}

static void send_bytes(struct conn *c, const uint8_t *p, size_t n) {
    if (c->out.len == 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w == (ssize_t)n)
            return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                lost(c, strerror(errno));
                return;
            }
            w = 0;
        }
        p += w;
        n -= (size_t)w;
    }
    append(&c->out, p, n);
    watch(c, EPOLLIN | EPOLLOUT);
}

static void flush(struct conn *c) {
    size_t done = 0;
    while (done < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + done, c->out.len - done, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            lost(c, strerror(errno));
            return;
        }
        done += (size_t)w;
    }
    memmove(c->out.p, c->out.p + done, c->out.len - done);
    c->out.len -= done;
    if (c->out.len == 0)
        watch(c, EPOLLIN);
}

/* A client frame: FIN, the opcode, masked as RFC 6455 requires of clients. */
static void send_frame(struct conn *c, int opcode, const uint8_t *p, size_t n) {
    if (scratchcap < n + 14) {
        scratchcap = n + 14;
        scratch = grow(scratch, scratchcap);
    }
    size_t h = 0;
    scratch[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        scratch[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        scratch[h++] = 0x80 | 126;
        scratch[h++] = (uint8_t)(n >> 8);
        scratch[h++] = (uint8_t)n;
    } else {
        scratch[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            scratch[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t key = next_random();
    memcpy(scratch + h, &key, 4);
    const uint8_t *mask = scratch + h;
    h += 4;
    for (size_t i = 0; i < n; i++)
        scratch[h + i] = p[i] ^ mask[i & 3];
    send_bytes(c, scratch, h + n);
}

static void base64_key(char out[25]) {  /* 16 random bytes, base64: 24 characters */
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t raw[18] = {0};
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = next_random();
        memcpy(raw + i, &r, 4);
    }
    for (int i = 0; i < 6; i++) {
        uint32_t v = (uint32_t)raw[3 * i] << 16 | (uint32_t)raw[3 * i + 1] << 8 | raw[3 * i + 2];
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = digits[(v >> (18 - 6 * j)) & 63];
    }
    out[22] = out[23] = '=';  /* 16 bytes leave two bytes of padding */
    out[24] = 0;
}

static void start_upgrade(struct conn *c) {
    char key[25], request[8192];
    int n;
    if (sse) {
        const struct buf *query = c->hello && c->hello->count ? &c->hello->frames[0] : NULL;
        n = snprintf(request, sizeof request,
                     "GET %s%.*s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n\r\n",
                     path, query ? (int)query->len : 0, query ? (const char *)query->p : "",
                     host, port);
    } else {
        base64_key(key);
        n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, host, port, key,
                     deflate_on ? "Sec-WebSocket-Extensions: permessage-deflate\r\n" : "");
    }
    if (n < 0 || (size_t)n >= sizeof request)
        die("%s", "the upgrade request is too long (path?)");
    c->state = UPGRADING;
    watch(c, EPOLLIN);
    send_bytes(c, (const uint8_t *)request, (size_t)n);
}

/* Connection i leaves from 127.0.0.(1 + i % sources): one source address has about 28,000
 * ephemeral ports towards one server port, so 100,000 connections need several. Loopback
 * answers the whole of 127/8. The port is left to connect (IP_BIND_ADDRESS_NO_PORT), which
 * picks it per destination rather than reserving it on bind. */
static void bind_source(int fd, long i) {
    if (addr->ai_family != AF_INET)
        die("%s", "LOADCLIENT_SOURCES needs an IPv4 server address (127.0.0.1)");
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
    src.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(i % sources));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
        die("bind to a 127.0.0.x source: %s", strerror(errno));
}

static void open_conn(struct conn *c, long i, int sample) {
    c->sample = sample;
    c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* pongs go out at once */
    c->hello = nhellos ? &hellos[(size_t)i % nhellos] : NULL;
    c->state = CONNECTING;
    c->events = EPOLLOUT;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    if (sources > 1)
        bind_source(c->fd, i);
    if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) == 0)
        start_upgrade(c);
    else if (errno != EINPROGRESS)
        failed(c, strerror(errno));
}

static void connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err)
        failed(c, strerror(err));
    else
        start_upgrade(c);
}

/* Is the payload, or one newline-separated line of it (a batched frame), the ping? */
static int is_ping(const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    for (;;) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl ? nl : end;
        if ((size_t)(stop - p) == ping.len && memcmp(p, ping.p, ping.len) == 0)
            return 1;
        if (!nl)
            return 0;
        p = nl + 1;
    }
}

/* Send times stamped by the publisher (`"t":<ns>`, or JSON-escaped `\"t\":<ns>` where the
 * server wraps the body in a string, as socket.io does), each made a latency sample. */
static void sample_times(const uint8_t *p, size_t n) {
    static const char *keys[] = {"\"t\":", "\\\"t\\\":"};
    const uint8_t *end = p + n;
    int64_t now = 0;
    for (int k = 0; k < 2; k++) {
        size_t klen = strlen(keys[k]);
        const uint8_t *q = p;
        while ((q = memmem(q, (size_t)(end - q), keys[k], klen))) {
            q += klen;
            int64_t t = 0;
            const uint8_t *digits = q;
            while (q < end && *q >= '0' && *q <= '9')
                t = t * 10 + (*q++ - '0');
            if (q == digits)
                continue;
            if (!now)
                now = now_ns(CLOCK_REALTIME);
            if (nlatencies == caplatencies) {
                caplatencies = caplatencies ? 2 * caplatencies : 4096;
                latencies = grow(latencies, caplatencies * sizeof *latencies);
            }
            latencies[nlatencies++] = now - t;
        }
    }
}

/* Is one of the length-delimited protobuf replies of the payload empty (the server's ping)? */
static int has_protobuf_ping(const uint8_t *p, size_t n) {
    size_t pos = 0;
    while (pos < n) {
        uint64_t len = 0;
        int shift = 0;
        while (pos < n && shift < 64) {
            uint8_t b = p[pos++];
            len |= (uint64_t)(b & 0x7f) << shift;
            shift += 7;
            if (!(b & 0x80))
                break;
        }
        if (len == 0)
            return 1;
        if (len > n - pos)
            return 0;
        pos += (size_t)len;
    }
    return 0;
}

static void message(struct conn *c, const uint8_t *p, size_t n) {
    if (marker.len) {
        const uint8_t *q = p, *end = p + n;
        while ((q = memmem(q, (size_t)(end - q), marker.p, marker.len))) {
            received++;
            q += marker.len;
        }
    }
    if (ping.len && is_ping(p, n))
        send_frame(c, 0x1, answer.p, answer.len);
    if (protobuf && has_protobuf_ping(p, n))
        send_frame(c, 0x2, (const uint8_t *)"", 1);  /* the empty command: one zero byte */
    if (!c->ready && ready_marker.len && memmem(p, n, ready_marker.p, ready_marker.len))
        set_ready(c);
    if (c->sample)
        sample_times(p, n);
}

/* A compressed message: inflated (with the flush tail RFC 7692 leaves off), then handled. */
static void inflate_message(struct conn *c, const uint8_t *p, size_t n) {
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    int tail_fed = 0;
    inflateReset(&inflater);
    inflater.next_in = (Bytef *)p;
    inflater.avail_in = (uInt)n;
    size_t out = 0;
    for (;;) {
        if (capinflated - out < 65536) {
            capinflated = capinflated ? 2 * capinflated : 1 << 20;
            inflated = grow(inflated, capinflated);
        }
        inflater.next_out = inflated + out;
        inflater.avail_out = (uInt)(capinflated - out);
        int rc = inflate(&inflater, Z_SYNC_FLUSH);
        out = (size_t)(inflater.next_out - inflated);
        if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
            failed(c, "the server sent data that does not inflate");
            return;
        }
        if (inflater.avail_in == 0 && !tail_fed) {
            inflater.next_in = (Bytef *)tail;
            inflater.avail_in = 4;
            tail_fed = 1;
            continue;
        }
        if (inflater.avail_in == 0 && inflater.avail_out > 0)
            break;
    }
    message(c, inflated, out);
}

/* Handles the complete frames at the start of p; returns how many bytes they took. */
static size_t frames(struct conn *c, const uint8_t *p, size_t len) {
    size_t pos = 0;
    while (len - pos >= 2 && c->state == OPEN) {
        const uint8_t *f = p + pos;
        uint64_t n = f[1] & 0x7f;
        size_t head = 2;
        if (f[1] & 0x80) {
            failed(c, "the server masked a frame");
            break;
        }
        if (n == 126) {
            head = 4;
            if (len - pos < head)
                break;
            n = (uint64_t)f[2] << 8 | f[3];
        } else if (n == 127) {
            head = 10;
            if (len - pos < head)
                break;
            n = 0;
            for (int i = 2; i < 10; i++)
                n = n << 8 | f[i];
        }
        if (n > MAX_FRAME) {
            failed(c, "a frame longer than 1 GiB");
            break;
        }
        if (len - pos < head + n)
            break;
        const uint8_t *payload = f + head;
        switch (f[0] & 0x0f) {
        case 0x0:  /* a continuation: counted like a whole message (no server here fragments) */
        case 0x1:
        case 0x2:
            if (f[0] & 0x40)
                inflate_message(c, payload, n);
            else
                message(c, payload, n);
            break;
        case 0x8:
            lost(c, "close frame");
            break;
        case 0x9:
            send_frame(c, 0xA, payload, n);  /* a protocol-level ping: pong the same payload */
            break;
        default:
            break;  /* pong, or reserved */
        }
        pos += head + n;
    }
    return pos;
}

/* SSE: the complete events at the start of p, as one message (markers are counted in it
 * alike); returns how many bytes they took. */
static size_t events(struct conn *c, const uint8_t *p, size_t len) {
    size_t end = len;
    while (end >= 2) {
        const uint8_t *nl = memrchr(p, '\n', end);
        if (!nl)
            break;
        size_t at = (size_t)(nl - p);
        if (at >= 1 && p[at - 1] == '\n') {
            message(c, p, at + 1);
            return at + 1;
        }
        end = at;
    }
    if (len > MAX_FRAME)
        failed(c, "an event longer than 1 GiB");
    return 0;
}

static size_t body(struct conn *c, const uint8_t *p, size_t len) {
    return sse ? events(c, p, len) : frames(c, p, len);
}

/* The upgrade response, then the frames that follow it in the same read. */
static size_t upgrade(struct conn *c, const uint8_t *p, size_t len) {
    const uint8_t *end = memmem(p, len, "\r\n\r\n", 4);
    if (!end) {
        if (len > MAX_HEAD)
            failed(c, "no end to the upgrade response");
        return 0;
    }
    if (len < 12 || memcmp(p, sse ? "HTTP/1.1 200" : "HTTP/1.1 101", 12) != 0) {
        const uint8_t *eol = memchr(p, '\r', len);
        char status[128];
        snprintf(status, sizeof status, "%.*s", (int)(eol - p), (const char *)p);
        failed(c, status);
        return len;
    }
    c->state = OPEN;
    if (!ready_marker.len)
        set_ready(c);
    for (size_t i = 0; !sse && c->hello && i < c->hello->count; i++)
        send_frame(c, protobuf ? 0x2 : 0x1, c->hello->frames[i].p, c->hello->frames[i].len);
    size_t head = (size_t)(end - p) + 4;
    return head + body(c, p + head, len - head);
}

static void readable(struct conn *c) {
    for (;;) {
        /* The tail of the last read goes first, so frames are parsed from one buffer. */
        size_t off = c->tail.len;
        if (rcap < off + READ_SIZE) {
            rcap = off + READ_SIZE;
            rbuf = grow(rbuf, rcap);
        }
        if (off)
            memcpy(rbuf, c->tail.p, off);
        ssize_t n = recv(c->fd, rbuf + off, READ_SIZE, 0);
        if (n == 0) {
            lost(c, "closed by the server");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                lost(c, strerror(errno));
            return;
        }
        size_t len = off + (size_t)n;
        size_t used = c->state == UPGRADING ? upgrade(c, rbuf, len) : body(c, rbuf, len);
        if (c->state == CLOSED)
            return;
        c->tail.len = 0;
        append(&c->tail, rbuf + used, len - used);
        /* A short read drained the socket: epoll (level-triggered) reports what comes next,
         * which saves the extra read that would only say EAGAIN. */
        if ((size_t)n < READ_SIZE)
            return;
    }
}

static void print_stats(void) {
    printf("{\"received\":%llu,\"errors\":%llu,\"closed\":%llu,\"latencies_ns\":[",
           (unsigned long long)received, (unsigned long long)errors,
           (unsigned long long)closed);
    for (size_t i = 0; i < nlatencies; i++)
        printf(i ? ",%lld" : "%lld", (long long)latencies[i]);
    printf("]}\n");
    fflush(stdout);
    nlatencies = 0;
}

static void quit(void) {
    for (long i = 0; i < nconns; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    exit(0);
}

static void command(void) {
    static char line[4096];
    static size_t len;
    ssize_t n = read(STDIN_FILENO, line + len, sizeof line - 1 - len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        quit();  /* end of input: whoever drove us is gone */
    }
    len += (size_t)n;
    char *start = line, *nl;
    while ((nl = memchr(start, '\n', len - (size_t)(start - line)))) {
        *nl = 0;
        if (strcmp(start, "stats") == 0)
            print_stats();
        else if (strcmp(start, "quit") == 0)
            quit();
        else if (*start)
            fprintf(stderr, "loadclient: unknown command: %s\n", start);
        start = nl + 1;
    }
    len -= (size_t)(start - line);
    memmove(line, start, len);
    if (len == sizeof line - 1)
        len = 0;  /* a line that long is no command */
}

static void poll_once(int timeout_ms) {
    static struct epoll_event events[MAX_EVENTS];
    int n = epoll_wait(ep, events, MAX_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct conn *c = events[i].data.ptr;
        if (!c) {
            command();
            continue;
        }
        uint32_t ev = events[i].events;
        if (c->state == CONNECTING) {
            connected(c);
            continue;
        }
        if (c->state != CLOSED && (ev & EPOLLOUT))
            flush(c);
        if (c->state != CLOSED && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            readable(c);
    }
}

static int hex(int ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* One hello a line; its frames' payloads in hex, separated by single spaces; an empty line is
 * a connection that sends nothing. */
static void load_hellos(const char *file) {
    FILE *f = fopen(file, "rb");
    if (!f)
        die("cannot open the hello file: %s", strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        hellos = grow(hellos, (nhellos + 1) * sizeof *hellos);
        struct hello *h = &hellos[nhellos++];
        h->count = 0;
        h->frames = NULL;
        for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) {
            size_t len = strlen(tok);
            if (len % 2)
                die("odd hex in the hello file: %s", tok);
            h->frames = grow(h->frames, (h->count + 1) * sizeof *h->frames);
            struct buf *b = &h->frames[h->count++];
            *b = (struct buf){0};
            reserve(b, len / 2);
            for (size_t i = 0; i < len; i += 2) {
                int hi = hex(tok[i]), lo = hex(tok[i + 1]);
                if (hi < 0 || lo < 0)
                    die("not hex in the hello file: %s", tok);
                b->p[b->len++] = (uint8_t)(hi << 4 | lo);
            }
        }
    }
    free(line);
    fclose(f);
}

static struct buf arg(const char *s) {
    return (struct buf){.p = (uint8_t *)s, .len = strlen(s), .cap = 0};
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadclient HOST PORT PATH N SAMPLE_EVERY HELLO_FILE MARKER PING ANSWER "
            "READY BATCH [sse]\n"
            "  N connections to ws://HOST:PORT/PATH; connection i times publications when\n"
            "  i %% SAMPLE_EVERY == 0 (0: none) and sends hello i %% (lines in HELLO_FILE);\n"
            "  MARKER is counted once a publication; a payload (or line of one) equal to PING\n"
            "  is answered with ANSWER; READY in a payload means the connection is taken on.\n"
            "  PING, READY may be empty (no ping; ready at the upgrade). Connections open\n"
            "  BATCH at a time, each batch taken on before the next (more at once can\n"
            "  overflow a listen backlog). With `sse`, Server-Sent Events: a GET of PATH\n"
            "  followed by the connection's hello (a query string). LOADCLIENT_SOURCES=K\n"
            "  spreads connections over the source addresses 127.0.0.1 to 127.0.0.K (past\n"
            "  ~28,000 connections).\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 12 && !(argc == 13 && strcmp(argv[12], "sse") == 0))
        usage();
    sse = argc == 13;
    host = argv[1];
    port = argv[2];
    path = argv[3];
    nconns = atol(argv[4]);
    long sample_every = atol(argv[5]);
    load_hellos(argv[6]);
    marker = arg(argv[7]);
    ping = arg(argv[8]);
    answer = arg(argv[9]);
    ready_marker = arg(argv[10]);
    batch = atol(argv[11]);
    deflate_on = getenv("LOADCLIENT_DEFLATE") && !strcmp(getenv("LOADCLIENT_DEFLATE"), "1");
    if (deflate_on && inflateInit2(&inflater, -15) != Z_OK)
        die("%s", "zlib: inflateInit2 failed");
    protobuf = getenv("LOADCLIENT_PROTOBUF") && strcmp(getenv("LOADCLIENT_PROTOBUF"), "1") == 0;
    sources = getenv("LOADCLIENT_SOURCES") ? atol(getenv("LOADCLIENT_SOURCES")) : 1;
    if (sources < 1 || sources > 250)
        die("%s", "LOADCLIENT_SOURCES must be 1 to 250");
    if (nconns <= 0 || sample_every < 0 || batch <= 0)
        usage();

    struct rlimit lim;  /* one descriptor per connection: as many as we may have */
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOFBF, 1 << 20);
    rng = (uint32_t)now_ns(CLOCK_REALTIME) ^ (uint32_t)getpid() << 16;
    if (!rng)
        rng = 1;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(host, port, &hints, &addr);
    if (gai)
        die("cannot resolve the host: %s", gai_strerror(gai));

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    struct epoll_event in = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &in) < 0)
        die("stdin cannot be polled: %s", strerror(errno));

    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns)
        die("%s", "out of memory");
    for (long start = 0; start < nconns; start += batch) {
        long end = start + batch < nconns ? start + batch : nconns;
        for (long i = start; i < end; i++)
            open_conn(&conns[i], i, sample_every && i % sample_every == 0);
        int64_t deadline = now_ns(CLOCK_MONOTONIC) + (int64_t)READY_TIMEOUT_S * 1000000000;
        while (nready < end) {
            int64_t left = deadline - now_ns(CLOCK_MONOTONIC);
            if (left <= 0) {
                fprintf(stderr, "loadclient: %ld of %ld connections not ready after %d s\n",
                        end - nready, end - start, READY_TIMEOUT_S);
                exit(1);
            }
            poll_once(left > 1000000000 ? 1000 : (int)(left / 1000000) + 1);
        }
    }
    running = 1;
    printf("ready %ld\n", nconns);
    fflush(stdout);
    for (;;)
        poll_once(-1);
}
