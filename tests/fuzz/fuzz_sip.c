/*
 * fuzz_sip.c - libFuzzer target for the SIP front end's input path
 * without a network: framing (src/sip/frame.c), parsing with libosip2
 * and the minimal parse (message.c), the request checks and verdicts
 * (dispatch.c: pl__sip_judge), transaction keys, tags and the responses
 * built for what is refused.
 *
 * Input: bytes a peer sends, used twice:
 *   - as one UDP datagram (pl__sip_frame_datagram);
 *   - as a TCP stream, cut into writes at each 0xff byte (which is
 *     dropped; it never occurs in UTF-8), framed by pl__sip_framer until
 *     it needs more or framing is lost.
 * The corpus (tests/fuzz/corpus/sip/) holds the RFC 4475 torture
 * messages, byte for byte, and streams of the tests' own.
 * max_message_size is 4096 here, so that the too-large path is reached.
 *
 * Invariants checked (abort() on violation):
 * - a framed message is within the limit, and its header section within
 *   the message; a stream's keep-alive is exactly a double CRLF;
 * - a response is never answered (verdict 0 or -1);
 * - a request answered with a status has an answer
 *   (pl__sip_stateless_bytes; only a minimally parsed one may lack one,
 *   when its answer would not parse back), which parses back with
 *   libosip2 as a response with that status, the same CSeq and the same
 *   top Via sent-by and branch (what the client matches it on, RFC 3261
 *   §17.1.3) - unless the request, parsed whole, has From, To or Via
 *   fields that do not read back as libosip2 writes them (it keeps them
 *   as they came);
 * - a request let through has a transaction key and is addressable;
 * - the tag of a request is the same when computed twice (§8.2.7);
 * - LeakSanitizer (on in the fuzz build) checks the heap at exit.
 *
 * Extending: a new invariant goes in judge().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "sip/sip_int.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_sip: invariant violated: %s\n", what);
    abort();
}

static const struct sip_settings settings = {
    .max_message_size = 4096,
    .max_headers = 64,
    .t1 = 500,
    .t2 = 4000,
    .t4 = 5000,
    .max_transactions = 1000,
};

/* Whether m's From, To and Via fields read back as libosip2 writes
 * them. */
static int fields_survive(osip_message_t *m)
{
    int ok = 1;
    char *s = NULL;
    osip_from_t *f = NULL;
    if (m->from) {
        ok &= osip_from_to_str(m->from, &s) == 0 && osip_from_init(&f) == 0 &&
              osip_from_parse(f, s) == 0;
        osip_from_free(f);
        osip_free(s);
        s = NULL;
        f = NULL;
    }
    if (m->to) {
        ok &= osip_to_to_str(m->to, &s) == 0 && osip_to_init(&f) == 0 &&
              osip_to_parse(f, s) == 0;
        osip_to_free(f);
        osip_free(s);
        s = NULL;
    }
    for (int i = 0; i < osip_list_size(&m->vias); i++) {
        osip_via_t *v = osip_list_get(&m->vias, i), *back = NULL;
        ok &= osip_via_to_str(v, &s) == 0 && osip_via_init(&back) == 0 &&
              osip_via_parse(back, s) == 0;
        osip_via_free(back);
        osip_free(s);
        s = NULL;
    }
    return ok;
}

/* Whether back (an answer to m, parsed back) keeps what the client
 * matches it on (§17.1.3): the top Via's sent-by and branch, the CSeq,
 * and the status code. */
static int same_answer(osip_message_t *m, osip_message_t *back, int code)
{
    osip_via_t *va = osip_list_get(&m->vias, 0);
    osip_via_t *vb = osip_list_get(&back->vias, 0);
    const char *ba = pl__sip_branch(m), *bb = pl__sip_branch(back);
    return !(back->status_code != code || !back->cseq || !m->cseq ||
             strcmp(back->cseq->number, m->cseq->number) != 0 ||
             strcmp(back->cseq->method, m->cseq->method) != 0 || !va || !vb ||
             strcasecmp(va->host, vb->host) != 0 ||
             (va->port ? !vb->port || strcmp(va->port, vb->port) != 0
                       : vb->port != NULL) ||
             (ba ? !bb || strcmp(ba, bb) != 0 : bb != NULL));
}

static void judge(int kind, char *p, size_t n, const struct sip_scan *scan,
                  int stream)
{
    osip_message_t *m = NULL;
    int is_response = 0;
    struct sip_verdict v;
    pl__sip_judge(kind, p, n, scan, stream, &m, &is_response, &v);
    if (!m)
        return;
    if (is_response && v.code > 0)
        die("a response is answered");
    if (!is_response && v.code > 0) {
        size_t len = 0;
        char *s = pl__sip_stateless_bytes(m, &v, &len);
        if (!s) {
            /* An addressable request goes unanswered only when its
             * answer would not parse back (fields libosip2 read leniently
             * and writes in a form it then refuses): check that. */
            if (!pl__sip_addressable(m))
                die("a request answered with a status is not addressable");
            char tag[17];
            pl__sip_make_tag(m, tag);
            osip_message_t *r = pl__sip_response_build(m, v.code, v.reason,
                                                       tag);
            size_t rl = 0;
            char *rs = r ? pl__sip_serialize(r, &rl) : NULL;
            osip_message_t *back = NULL;
            osip_message_init(&back);
            int good = rs && osip_message_parse(back, rs, rl) == 0 &&
                       same_answer(m, back, v.code);
            osip_message_free(back);
            osip_message_free(r);
            pl_free(rs);
            if (good && !v.hdr_name)
                die("a request whose answer parses back got none");
            osip_message_free(m);
            return;
        }
        osip_message_t *back = NULL;
        osip_message_init(&back);
        if (osip_message_parse(back, s, len) != 0) {
            /* libosip2 does not always read back the fields it parsed
             * itself (a lenient From or To); the answer copies them, so
             * only a request whose fields survive must give an answer
             * that parses back. */
            if (!v.minimal && !fields_survive(m)) {
                osip_message_free(back);
                pl_free(s);
                osip_message_free(m);
                return;
            }
            fprintf(stderr, "%.*s\n", (int)len, s);
            die("the response does not parse back");
        }
        if (!same_answer(m, back, v.code)) {
            fprintf(stderr, "%.*s\n", (int)len, s);
            die("the response parsed back differs");
        }
        osip_message_free(back);
        pl_free(s);
    }
    if (!is_response && v.code == 0) {
        if (!pl__sip_addressable(m))
            die("a request let through cannot be addressed");
        char *key = pl__sip_txn_key(m, NULL);
        if (!key)
            die("a request let through has no transaction key");
        pl_free(key);
        char a[17], b[17];
        pl__sip_make_tag(m, a);
        pl__sip_make_tag(m, b);
        if (strcmp(a, b) != 0)
            die("the tag of a request changes");
    }
    osip_message_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        init = 1;
        pl_log_set_level(PL_LOG_ERROR);
        pl__sip_osip_init();
        pl__sip_set_settings(&settings);
    }
    size_t max = (size_t)settings.max_message_size;

    /* One datagram, in a buffer of its own: the parser blanks fields in
     * place (pl__sip_parse), and the fuzzer's input is read-only. */
    char *dgram = malloc(size ? size : 1);
    if (!dgram)
        return 0;
    memcpy(dgram, data, size);
    struct sip_frame_out out;
    int kind = pl__sip_frame_datagram(dgram, size, max, &out);
    if (kind == SIP_FRAME_MSG && (out.n > max || out.scan.hlen > out.n))
        die("a datagram message over the limit or past its end");
    if (kind != SIP_FRAME_PING)
        judge(kind, out.p, out.n, &out.scan, 0);
    free(dgram);

    /* A stream, written in pieces cut at 0xff. */
    struct sip_framer f;
    memset(&f, 0, sizeof(f));
    size_t start = 0;
    int dead = 0;
    for (size_t i = 0; i <= size && !dead; i++) {
        if (i < size && data[i] != 0xff)
            continue;
        pl__sip_framer_feed(&f, (const char *)data + start, i - start);
        start = i + 1;
        for (;;) {
            kind = pl__sip_framer_next(&f, max, &out);
            if (kind == SIP_FRAME_MORE)
                break;
            if (kind == SIP_FRAME_PING) {
                if (out.n)
                    die("a ping carries bytes");
                continue;
            }
            if (kind == SIP_FRAME_MSG &&
                (out.n > max || out.scan.hlen > out.n ||
                 (size_t)out.scan.clen + out.scan.hlen != out.n))
                die("a stream message is not its headers and body");
            judge(kind, out.p, out.n, &out.scan, 1);
            if (kind == SIP_FRAME_BAD) {
                dead = 1;
                break;
            }
        }
    }
    pl__sip_framer_free(&f);
    return 0;
}
