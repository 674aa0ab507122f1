/*
 * fuzz_smtp.c - libFuzzer target for the SMTP/LMTP server engine
 * (src/gateway/mail/smtp.c).
 *
 * Input: one byte of settings, then what a client sends.  The settings
 * byte picks SMTP or LMTP (bit 0), small or default limits (bit 1), how
 * the bytes are cut into reads (bits 2-4: 1 to 128 bytes, or whole),
 * whether the transport reads the replies after every feed (bit 5: if
 * not, the engine must stop at max_out), and whether verdicts are given
 * later through pl_smtp_resume (bit 6), and whether STARTTLS is offered
 * (bit 7; required with the small limits: the transport "starts TLS" as
 * soon as the engine asks).  The event callback refuses
 * recipients starting with 'x' (550) and messages whose first byte is
 * 'T' (451).
 *
 * Invariants checked (abort() on violation):
 * - every reply line is "DDD" then SP or "-", ends in CRLF, is at most
 *   512 bytes (RFC 5321 §4.5.3.1.5), and outside the greeting, the
 *   EHLO/HELO answer and 354 carries an RFC 3463 code whose class is the
 *   reply's first digit (RFC 2034);
 * - waiting output never grows far past max_out;
 * - a DATA event's text holds at most max_size client bytes (plus the
 *   Received: field) and is made of CRLF-terminated lines (a bare LF
 *   fails the message: RFC 5321 §2.3.8);
 * - STARTTLS is accepted only when offered and not yet active, and no
 *   input is wanted between its 220 and the handshake;
 * - after the session ends, feeding gives PL_ECLOSED;
 * - each event has the fields its type promises.
 *
 * Extending: add checks in check_output() or on_event().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/mail/smtp.h"
#include "log.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_smtp: invariant violated: %s\n", what);
    fprintf(stderr, "  %s\n", detail ? detail : "");
    abort();
}

struct state {
    struct pl_smtp_config cfg;
    struct pl_buf out; /* every reply so far */
    size_t checked;    /* out bytes already checked */
    int ehlo_lines;    /* inside a multi-line 250 answer */
    int greeted;       /* the greeting was seen */
};

static int digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Checks each complete line of st->out after st->checked. */
static void check_output(struct state *st)
{
    struct pl_str o = pl_buf_str(&st->out);
    while (st->checked < o.len) {
        const char *p = o.p + st->checked;
        size_t left = o.len - st->checked;
        const char *lf = memchr(p, '\n', left);
        if (!lf)
            die("reply without LF", p);
        size_t n = (size_t)(lf - p) + 1;
        if (n < 6 || p[n - 2] != '\r')
            die("reply line not CRLF-terminated or too short", p);
        if (n > 512)
            die("reply line longer than 512", p);
        if (!digit(p[0]) || !digit(p[1]) || !digit(p[2]) ||
            (p[3] != ' ' && p[3] != '-') || p[0] < '2' || p[0] > '5')
            die("malformed reply code", p);
        int multi = p[3] == '-';
        int plain = !st->greeted || p[0] == '3' || st->ehlo_lines;
        if (!st->greeted && memcmp(p, "220 ", 4) != 0)
            die("greeting is not 220", p);
        /* A HELO/EHLO answer: "250 host" or "250-..." lines.  We know
         * one by its lack of an enhanced code, which only those have. */
        if (!plain && memcmp(p, "250", 3) == 0 && !(digit(p[4]) && p[5] == '.'))
            plain = 1;
        if (!plain) {
            if (p[4] != p[0] || p[5] != '.')
                die("reply without matching enhanced code", p);
            const char *q = p + 6;
            int d = 0;
            while (digit(*q))
                q++, d++;
            if (!d || d > 3 || *q != '.')
                die("bad enhanced code subject", p);
            q++;
            d = 0;
            while (digit(*q))
                q++, d++;
            if (!d || d > 3 || *q != ' ')
                die("bad enhanced code detail", p);
        }
        st->ehlo_lines = multi;
        st->greeted = 1;
        st->checked += n;
    }
}

static int on_event(void *data, struct pl_smtp *s,
                    const struct pl_smtp_event *ev,
                    struct pl_smtp_reply *replies)
{
    struct state *st = data;
    switch (ev->type) {
    case PL_SMTP_EV_HELO:
        if (!ev->helo || !*ev->helo)
            die("HELO event without a name", NULL);
        break;
    case PL_SMTP_EV_MAIL:
        if (!ev->from)
            die("MAIL event without from", NULL);
        break;
    case PL_SMTP_EV_RCPT:
        if (!ev->rcpt || !*ev->rcpt)
            die("RCPT event without an address", NULL);
        if (ev->rcpt[0] == 'x')
            replies[0] = (struct pl_smtp_reply){550, "5.1.1", "no\r\nsuch"};
        break;
    case PL_SMTP_EV_DATA: {
        if (!ev->nrcpts || !ev->rcpts || ev->nrcpts > st->cfg.max_rcpts)
            die("DATA event with a bad recipient list", NULL);
        struct pl_str m = ev->message;
        if (m.len > st->cfg.max_size + 1024)
            die("message over max_size", NULL);
        /* Lines with a bare LF or no end fail the message: what is
         * delivered is CRLF-terminated lines only. */
        if (m.len && (m.len < 2 || m.p[m.len - 1] != '\n'))
            die("message does not end in a line end", NULL);
        for (size_t i = 0; i < m.len; i++)
            if (m.p[i] == '\n' && (i == 0 || m.p[i - 1] != '\r'))
                die("message holds a bare LF", NULL);
        if (m.len && m.p[0] == 'T')
            replies[0] = (struct pl_smtp_reply){451, NULL, NULL};
        break;
    }
    default: die("unknown event", NULL);
    }
    return PL_OK;
}

/* The deferring variant: every verdict later (the default). */
static int on_event_later(void *data, struct pl_smtp *s,
                          const struct pl_smtp_event *ev,
                          struct pl_smtp_reply *replies)
{
    on_event(data, s, ev, replies);
    return PL_EAGAIN;
}

static void drain(struct state *st, struct pl_smtp *s, int read_replies)
{
    struct pl_str o = pl_smtp_output(s);
    size_t bound = st->cfg.max_out + (st->cfg.max_rcpts + 16) * 512;
    if (o.len > bound)
        die("output beyond max_out", NULL);
    if (!read_replies && !pl_smtp_is_done(s))
        return;
    pl_buf_append(&st->out, o.p, o.len);
    pl_smtp_output_sent(s, o.len);
    check_output(st);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_log_set_level(PL_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    data++;
    size--;
    struct state st = {0};
    pl_smtp_config_default(&st.cfg);
    st.cfg.proto = flags & 1 ? PL_SMTP_LMTP : PL_SMTP_SMTP;
    if (flags & 2) {
        st.cfg.max_line = 80;
        st.cfg.max_text_line = 100;
        st.cfg.max_size = 300;
        st.cfg.max_rcpts = 3;
        st.cfg.max_errors = 4;
        st.cfg.max_out = 1024;
    }
    st.cfg.peer = "192.0.2.1";
    /* 0x80: STARTTLS offered (required with the small limits). */
    st.cfg.tls = !(flags & 0x80) ? PL_SMTP_TLS_NONE
                 : flags & 2     ? PL_SMTP_TLS_REQUIRE
                                 : PL_SMTP_TLS_OFFER;
    size_t step = (flags >> 2) & 7 ? (size_t)1 << (((flags >> 2) & 7) - 1)
                                   : size;
    int read_replies = !(flags & 0x20);
    int later = flags & 0x40;
    struct pl_smtp *s = pl_smtp_new(&st.cfg, later ? on_event_later : on_event,
                                    &st);
    drain(&st, s, 1);

    /* A copy of exactly the bytes, so ASan sees any overread. */
    char *buf = pl_malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);
    size_t i = 0;
    int rounds = 0;
    while (i < size && rounds++ < 100000) {
        size_t k = step && size - i > step ? step : size - i;
        int rc = pl_smtp_feed(s, buf + i, k);
        i += k;
        if (rc != PL_OK && rc != PL_ECLOSED)
            die("feed gave an unexpected code", pl_strerror(rc));
        while (pl_smtp_is_pending(s)) {
            struct pl_smtp_reply none[1] = {{0, NULL, NULL}};
            if (pl_smtp_resume(s, none, 1) != PL_OK)
                die("resume refused while pending", NULL);
        }
        drain(&st, s, read_replies);
        if (pl_smtp_tls_wanted(s)) {
            /* The transport's handshake: no input may be taken before. */
            if (pl_smtp_wants_input(s))
                die("input wanted while TLS is to start", NULL);
            if (st.cfg.tls == PL_SMTP_TLS_NONE || pl_smtp_tls_active(s))
                die("STARTTLS accepted when not offered", NULL);
            drain(&st, s, 1);
            pl_smtp_tls_started(s);
        }
        if (rc == PL_ECLOSED) {
            if (!pl_smtp_is_done(s))
                die("PL_ECLOSED but not done", NULL);
            if (pl_smtp_feed(s, "NOOP\r\n", 6) != PL_ECLOSED)
                die("feed after the end accepted", NULL);
            break;
        }
    }
    pl_smtp_timeout(s);
    drain(&st, s, 1);
    pl_smtp_free(s);
    pl_buf_reset(&st.out);
    pl_free(buf);
    return 0;
}
