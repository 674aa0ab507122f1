/*
 * test_peer.c - the peer's HTTP server (src/media/peer.c, peer.h,
 * doc/media.md "Peers"):
 *
 *   peer_parse      request heads: methods, targets (origin and absolute
 *                   form), keep-alive by version and Connection, heads
 *                   not complete yet, pipelined bytes left alone;
 *   peer_range      one bytes= range (a-b, a-, -n) resolved against a
 *                   size: 206 clipped to the file, 416 past it, anything
 *                   else (several ranges, other units) ignored: 200;
 *   peer_token      the token from ?token= (other parameters ignored)
 *                   or Authorization: Bearer, the query's first;
 *   peer_malformed  400 for broken request lines, fields, bodies, a
 *                   missing Host in 1.1; 431 past 8 KiB of head;
 *   peer_serve      a live server on loopback: 200, 206, 416, HEAD, 401,
 *                   403 (forged, expired), 404 (unknown, removed), 405,
 *                   keep-alive over several requests, 503 past max_conns,
 *                   and the stats counting all of it;
 *   peer_rate       the rate cap (a token bucket over all connections):
 *                   one download and two at once take as long as the
 *                   cap says, not less; an idle connection is closed
 *                   after idle_ms.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "media/peer.h"
#include "unit.h"

#define HEX "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static long parse(const char *s, struct pl_peer_req *r)
{
    return pl_peer_parse_request(s, strlen(s), r);
}

void test_peer_parse(void)
{
    struct pl_peer_req r;
    const char *s = "GET /m/" HEX " HTTP/1.1\r\nHost: x\r\n\r\nGET /n";
    CHECK_INT(parse(s, &r), (long)(strlen(s) - 6));
    CHECK_INT(r.method, PL_PEER_GET);
    CHECK_INT(r.is_media, 1);
    CHECK_INT(r.sha256[0], 0x00);
    CHECK_INT(r.sha256[1], 0x11);
    CHECK_INT(r.sha256[31], 0xff);
    CHECK_INT(r.keep_alive, 1);
    CHECK(r.token == NULL);
    CHECK_INT(r.range, PL_PEER_RANGE_NONE);

    /* not complete yet: 0 at every cut */
    for (size_t i = 0; i < strlen(s) - 6; i++)
        CHECK_INT(pl_peer_parse_request(s, i, &r), 0);

    CHECK(parse("HEAD /m/" HEX " HTTP/1.0\r\n\r\n", &r) > 0);
    CHECK_INT(r.method, PL_PEER_HEAD);
    CHECK_INT(r.keep_alive, 0);
    CHECK(parse("HEAD /m/" HEX " HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                &r) > 0);
    CHECK_INT(r.keep_alive, 1);
    CHECK(parse("GET /m/" HEX " HTTP/1.1\nHost: x\nConnection: foo, close\n\n",
                &r) > 0);
    CHECK_INT(r.keep_alive, 0);
    /* methods are case-sensitive */
    CHECK(parse("get /m/" HEX " HTTP/1.1\r\nHost: x\r\n\r\n", &r) > 0);
    CHECK_INT(r.method, PL_PEER_OTHER);
    CHECK(parse("DELETE /m/" HEX " HTTP/1.1\r\nHost: x\r\n\r\n", &r) > 0);
    CHECK_INT(r.method, PL_PEER_OTHER);
    /* absolute form, upper-case hex */
    CHECK(parse("GET http://h:8/m/00112233445566778899AABBCCDDEEFF001122334455"
                "66778899aabbccddeeff HTTP/1.1\r\nHost: h:8\r\n\r\n",
                &r) > 0);
    CHECK_INT(r.is_media, 1);
    CHECK_INT(r.sha256[10], 0xaa);
    /* not our paths */
    CHECK(parse("GET /m/" HEX "0 HTTP/1.1\r\nHost: x\r\n\r\n", &r) > 0);
    CHECK_INT(r.is_media, 0);
    CHECK(parse("GET /m/00112233445566778899aabbccddeeff00112233445566778899aa"
                "bbccddeefg HTTP/1.1\r\nHost: x\r\n\r\n",
                &r) > 0);
    CHECK_INT(r.is_media, 0);
    CHECK(parse("GET /x/" HEX " HTTP/1.1\r\nHost: x\r\n\r\n", &r) > 0);
    CHECK_INT(r.is_media, 0);
    /* an empty line before the request is skipped */
    CHECK(parse("\r\nGET /m/" HEX " HTTP/1.1\r\nHost: x\r\n\r\n", &r) > 0);
    CHECK_INT(r.is_media, 1);
}

static int range_of(const char *value, uint64_t size, uint64_t *off,
                    uint64_t *n)
{
    char buf[512];
    struct pl_peer_req r;
    snprintf(buf, sizeof(buf),
             "GET /m/" HEX " HTTP/1.1\r\nHost: x\r\nRange: %s\r\n\r\n", value);
    if (parse(buf, &r) <= 0)
        return -1;
    return pl_peer_resolve_range(&r, size, off, n);
}

void test_peer_range(void)
{
    uint64_t off = 99, n = 99;
    CHECK_INT(range_of("bytes=0-99", 1000, &off, &n), 206);
    CHECK_INT(off, 0);
    CHECK_INT(n, 100);
    CHECK_INT(range_of("bytes=990-2000", 1000, &off, &n), 206);
    CHECK_INT(off, 990);
    CHECK_INT(n, 10);
    CHECK_INT(range_of("bytes=500-", 1000, &off, &n), 206);
    CHECK_INT(off, 500);
    CHECK_INT(n, 500);
    CHECK_INT(range_of("bytes=-100", 1000, &off, &n), 206);
    CHECK_INT(off, 900);
    CHECK_INT(n, 100);
    CHECK_INT(range_of("bytes=-5000", 1000, &off, &n), 206);
    CHECK_INT(off, 0);
    CHECK_INT(n, 1000);
    CHECK_INT(range_of("bytes=999-999", 1000, &off, &n), 206);
    CHECK_INT(n, 1);
    CHECK_INT(range_of("BYTES = 1-2", 1000, &off, &n), 200); /* not bytes= */
    CHECK_INT(range_of("bytes=1000-", 1000, &off, &n), 416);
    CHECK_INT(range_of("bytes=1000-1001", 1000, &off, &n), 416);
    CHECK_INT(range_of("bytes=-0", 1000, &off, &n), 416);
    CHECK_INT(range_of("bytes=0-", 0, &off, &n), 416);
    CHECK_INT(range_of("bytes=-1", 0, &off, &n), 416);
    /* ignored: the whole file */
    static const char *const ignored[] = {"bytes=5-1",
                                          "bytes=1-2,4-5",
                                          "bytes=a-b",
                                          "items=0-1",
                                          "bytes=-",
                                          "bytes=1--2",
                                          "bytes=99999999999999999999-",
                                          "bytes= 1 - 2",
                                          ""};
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
        off = n = 7;
        int st = range_of(ignored[i], 1000, &off, &n);
        if (st != 200 || off != 0 || n != 1000)
            fprintf(stderr, "  range %s: %d\n", ignored[i], st);
        CHECK_INT(st, 200);
    }
    /* two Range fields: ignored */
    struct pl_peer_req r;
    CHECK(parse("GET /m/" HEX " HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n"
                "Range: bytes=2-3\r\n\r\n",
                &r) > 0);
    CHECK_INT(r.range, PL_PEER_RANGE_NONE);
}

void test_peer_token(void)
{
    struct pl_peer_req r;
    CHECK(parse("GET /m/" HEX "?a=1&token=abc-_9&b=2 HTTP/1.1\r\nHost: x\r\n"
                "\r\n",
                &r) > 0);
    CHECK_INT(r.is_media, 1);
    CHECK_INT(r.token_len, 6);
    CHECK(r.token && !memcmp(r.token, "abc-_9", 6));
    CHECK(parse("GET /m/" HEX "?token=q1&token=q2 HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Bearer b1\r\n\r\n",
                &r) > 0);
    CHECK(r.token && r.token_len == 2 && !memcmp(r.token, "q1", 2));
    CHECK(parse("GET /m/" HEX " HTTP/1.1\r\nHost: x\r\n"
                "authorization: bearer   tok  \r\n\r\n",
                &r) > 0);
    CHECK(r.token && r.token_len == 3 && !memcmp(r.token, "tok", 3));
    CHECK(parse("GET /m/" HEX "?token= HTTP/1.1\r\nHost: x\r\n\r\n", &r) > 0);
    CHECK(r.token != NULL);
    CHECK_INT(r.token_len, 0);
    CHECK(parse("GET /m/" HEX "?xtoken=a HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Basic abc\r\n\r\n",
                &r) > 0);
    CHECK(r.token == NULL);
}

void test_peer_malformed(void)
{
    struct pl_peer_req r;
    static const char *const bad[] = {
        "GET\r\nHost: x\r\n\r\n",
        "GET /m/x\r\nHost: x\r\n\r\n",
        "GET /m/x HTTP/2.0\r\nHost: x\r\n\r\n",
        "GET /m/x HTTP/1.1 \r\nHost: x\r\n\r\n",
        "GET  /m/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "G(T /m/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET m/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /m/x HTTP/1.1\r\n\r\n", /* no Host */
        "GET /m/x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "GET /m/x HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
        "GET /m/x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET /m/x HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        "GET /m/x HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
        "GET /m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
        "GET /m/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "GET /m/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long rc = parse(bad[i], &r);
        if (rc != -400)
            fprintf(stderr, "  bad[%zu]: %ld\n", i, rc);
        CHECK_INT(rc, -400);
    }
    CHECK(parse("GET /m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                &r) > 0);
    /* the head limit */
    size_t big = PL_PEER_MAX_HEAD + 100;
    char *b = malloc(big);
    memset(b, 'a', big);
    memcpy(b, "GET /m/x HTTP/1.1\r\nHost: x\r\nX-Pad: ", 34);
    CHECK_INT(pl_peer_parse_request(b, PL_PEER_MAX_HEAD - 1, &r), 0);
    CHECK_INT(pl_peer_parse_request(b, PL_PEER_MAX_HEAD, &r), -431);
    CHECK_INT(pl_peer_parse_request(b, big, &r), -431);
    /* a head ending right at the limit is fine */
    memcpy(b + PL_PEER_MAX_HEAD - 4, "\r\n\r\n", 4);
    CHECK_INT(pl_peer_parse_request(b, big, &r), PL_PEER_MAX_HEAD);
    free(b);
}

/* ---- live */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends req and reads one answer (head and Content-Length body) into
 * out; returns the status, -1 on EOF or timeout. */
static int roundtrip(int fd, const char *req, char *out, size_t cap,
                     size_t *bodylen)
{
    if (req && send(fd, req, strlen(req), MSG_NOSIGNAL) < 0)
        return -1;
    size_t got = 0;
    long long need = -1;
    char *body = NULL;
    while (need < 0 || (long long)(got - (size_t)(body - out)) < need) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0 || got + 1 >= cap)
            return -1;
        ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
        out[got] = '\0';
        if (!body && (body = strstr(out, "\r\n\r\n"))) {
            body += 4;
            const char *cl = strstr(out, "Content-Length: ");
            need = cl ? atoll(cl + 16) : 0;
            if (strncmp(req ? req : "", "HEAD", 4) == 0)
                need = 0;
        }
    }
    *bodylen = got - (size_t)(body - out);
    return atoi(out + 9);
}

void test_peer_serve(void)
{
    char dir[] = "/tmp/pl_peer_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/f", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 1000; i++)
        fputc('a' + i % 26, f);
    fclose(f);

    unsigned char sha[32], key[32], other[32];
    for (int i = 0; i < 32; i++)
        sha[i] = (unsigned char)(0x11 * (i % 16)), key[i] = (unsigned char)i,
        other[i] = (unsigned char)(i + 1);
    char tok[64], forged[64], expired[64];
    time_t now = time(NULL);
    pl_media_token_make(key, sha, now + 600, tok, sizeof(tok));
    pl_media_token_make(other, sha, now + 600, forged, sizeof(forged));
    pl_media_token_make(key, sha, now - 5, expired, sizeof(expired));

    struct pl_peer_opts o = {"127.0.0.1:0", 1, 0, 3000};
    char err[128];
    struct pl_peer *p = pl_peer_start(&o, err, sizeof(err));
    CHECK(p != NULL);
    if (!p)
        return;
    CHECK(pl_peer_port(p) > 0);
    CHECK_INT(pl_peer_add(p, sha, key, path), 0);

    char req[512], out[4096];
    size_t bl;
    int fd = dial(pl_peer_port(p));
    snprintf(req, sizeof(req),
             "GET /m/" HEX "?token=%s HTTP/1.1\r\nHost: x"
             "\r\n\r\n",
             tok);
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 200);
    CHECK_INT(bl, 1000);
    CHECK(strstr(out, "Accept-Ranges: bytes\r\n") != NULL);
    snprintf(req, sizeof(req),
             "GET /m/" HEX " HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer %s\r\nRange: bytes=26-28\r\n\r\n",
             tok);
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 206);
    CHECK_INT(bl, 3);
    CHECK(strstr(out, "Content-Range: bytes 26-28/1000\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\nabc") != NULL);
    snprintf(req, sizeof(req),
             "HEAD /m/" HEX "?token=%s HTTP/1.1\r\nHost: x"
             "\r\nRange: bytes=-10\r\n\r\n",
             tok);
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 206);
    CHECK_INT(bl, 0);
    CHECK(strstr(out, "Content-Length: 10\r\n") != NULL);
    snprintf(req, sizeof(req),
             "GET /m/" HEX "?token=%s HTTP/1.1\r\nHost: x"
             "\r\nRange: bytes=1000-\r\n\r\n",
             tok);
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 416);
    CHECK(strstr(out, "Content-Range: bytes */1000\r\n") != NULL);
    CHECK_INT(roundtrip(fd, "GET /m/" HEX " HTTP/1.1\r\nHost: x\r\n\r\n", out,
                        sizeof(out), &bl),
              401);
    snprintf(req, sizeof(req),
             "GET /m/" HEX "?token=%s HTTP/1.1\r\nHost: x"
             "\r\n\r\n",
             forged);
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 403);
    snprintf(req, sizeof(req),
             "GET /m/" HEX "?token=%s HTTP/1.1\r\nHost: x"
             "\r\n\r\n",
             expired);
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 403);
    snprintf(req, sizeof(req),
             "GET /m/" HEX "?token=garbage HTTP/1.1\r\n"
             "Host: x\r\n\r\n");
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 403);
    CHECK_INT(roundtrip(fd, "GET /m/ffff HTTP/1.1\r\nHost: x\r\n\r\n", out,
                        sizeof(out), &bl),
              404);
    CHECK_INT(roundtrip(fd, "PUT /m/" HEX " HTTP/1.1\r\nHost: x\r\n\r\n", out,
                        sizeof(out), &bl),
              405);

    /* max_conns 1: a second connection is told 503 and closed */
    int fd2 = dial(pl_peer_port(p));
    CHECK_INT(roundtrip(fd2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", out,
                        sizeof(out), &bl),
              503);
    CHECK(strstr(out, "Retry-After: 1\r\n") != NULL);
    CHECK_INT(roundtrip(fd2, NULL, out, sizeof(out), &bl), -1); /* closed */
    close(fd2);

    /* removed: no new request */
    pl_peer_remove(p, sha);
    snprintf(req, sizeof(req),
             "GET /m/" HEX "?token=%s HTTP/1.1\r\nHost: x"
             "\r\n\r\n",
             tok);
    CHECK_INT(roundtrip(fd, req, out, sizeof(out), &bl), 404);
    /* malformed: 400 and closed */
    CHECK_INT(roundtrip(fd, "GET /\r\n\r\n", out, sizeof(out), &bl), 400);
    CHECK_INT(roundtrip(fd, NULL, out, sizeof(out), &bl), -1);
    close(fd);

    struct pl_peer_stats st;
    pl_peer_stats(p, &st);
    CHECK_INT(st.bytes, 1003);
    CHECK_INT(st.requests, 3);
    CHECK_INT(st.refused, 4);
    CHECK_INT(st.busy, 1);
    pl_peer_stop(p);
    unlink(path);
    rmdir(dir);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads one answer with a body of n bytes; the bytes of body read. */
static size_t drain_answer(int fd, size_t n)
{
    char buf[65536];
    size_t got = 0, head = 0;
    char *hb = calloc(1, 4096);
    while (!head || got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0)
            break;
        if (!head) {
            ssize_t r = recv(fd, hb + got, 4095 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
            char *e = strstr(hb, "\r\n\r\n");
            if (e) {
                head = (size_t)(e + 4 - hb);
                got -= head;
            }
            continue;
        }
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    free(hb);
    return got;
}

void test_peer_rate(void)
{
    char dir[] = "/tmp/pl_peer_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/f", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 150000; i++)
        fputc('x', f);
    fclose(f);
    unsigned char sha[32], key[32];
    for (int i = 0; i < 32; i++)
        sha[i] = (unsigned char)(0x11 * (i % 16)), key[i] = (unsigned char)i;
    char tok[64], req[512];
    pl_media_token_make(key, sha, time(NULL) + 600, tok, sizeof(tok));
    snprintf(req, sizeof(req),
             "GET /m/" HEX "?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", tok);

    /* 100 kB/s: a burst of 10 kB, then the cap */
    struct pl_peer_opts o = {"127.0.0.1:0", 4, 100000, 500};
    char err[128];
    struct pl_peer *p = pl_peer_start(&o, err, sizeof(err));
    CHECK(p != NULL);
    if (!p)
        return;
    pl_peer_add(p, sha, key, path);
    int fd = dial(pl_peer_port(p));
    double t0 = now_s();
    send(fd, req, strlen(req), MSG_NOSIGNAL);
    CHECK_INT(drain_answer(fd, 150000), 150000);
    double one = now_s() - t0;
    close(fd);
    if (one < 1.3 || one > 4)
        fprintf(stderr, "  one download: %.2f s\n", one);
    CHECK(one >= 1.3); /* (150000 - 10000) / 100000 = 1.4 s */
    CHECK(one < 4);

    /* two at once share the bucket: 300 kB at 100 kB/s */
    int a = dial(pl_peer_port(p)), b = dial(pl_peer_port(p));
    t0 = now_s();
    send(a, req, strlen(req), MSG_NOSIGNAL);
    send(b, req, strlen(req), MSG_NOSIGNAL);
    CHECK_INT(drain_answer(a, 150000), 150000);
    CHECK_INT(drain_answer(b, 150000), 150000);
    double two = now_s() - t0;
    if (two < 2.7 || two > 7)
        fprintf(stderr, "  two downloads: %.2f s\n", two);
    CHECK(two >= 2.7); /* (300000 - burst) / 100000 */
    CHECK(two < 7);
    close(a);
    close(b);

    /* idle_ms 500: a silent connection is closed */
    fd = dial(pl_peer_port(p));
    struct pollfd pf = {fd, POLLIN, 0};
    t0 = now_s();
    char c;
    CHECK_INT(poll(&pf, 1, 5000), 1);
    CHECK_INT(recv(fd, &c, 1, 0), 0);
    double idle = now_s() - t0;
    CHECK(idle >= 0.4 && idle < 3);
    close(fd);

    struct pl_peer_stats st;
    pl_peer_stats(p, &st);
    CHECK_INT(st.bytes, 450000);
    CHECK_INT(st.requests, 3);
    pl_peer_stop(p);
    unlink(path);
    rmdir(dir);
}
