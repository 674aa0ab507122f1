/*
 * frame.c - SIP framing without a network: where a message's header
 * section ends, what its Content-Length says, the start line checked to
 * the letter, and cutting messages out of streams and datagrams.
 *
 * Streams (TCP, TLS): CRLFs before a start line are ignored (RFC 3261
 * §7.5), and a double CRLF there is a keep-alive ping the caller answers
 * with one CRLF (RFC 5626 §3.5.1).  A message is its header section up to
 * the empty line, then exactly Content-Length body bytes; Content-Length
 * is mandatory on streams (§18.3), so without one (or with a malformed
 * one) framing is lost: the caller answers 400 if it can and closes.  A
 * message over max_message_size has its header section handed over (for
 * a 513, §21.5.7) and its body dropped as it arrives, so that the stream
 * goes on.  The search for the empty line resumes where it stopped: a
 * sender trickling a header section byte by byte costs linear time.
 *
 * Datagrams (UDP, §18.3): one message per datagram; bytes past
 * Content-Length are discarded; a body shorter than Content-Length is an
 * error (400 for a request, a response is dropped); without
 * Content-Length the body runs to the end of the datagram.
 *
 * Lines end in CRLF; a bare LF is tolerated (as libosip2 does).  Nothing
 * here allocates but the stream buffer (struct pl_buf) and
 * pl__sip_unfold's copy.
 */
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "sip_int.h"

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Whether s equals the lower-case literal lit, ignoring case. */
static int name_is(struct pl_str s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s.p[i]) != lit[i])
            return 0;
    return 1;
}

static int is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Looks for the empty line ending a header section in p[0..n), from
 * *from on (a previous search's stopping point).  Returns the section's
 * length (through the empty line) or 0, then setting *from where to
 * resume.
 */
static size_t find_end(const char *p, size_t n, size_t *from)
{
    size_t i = *from;
    while (i < n) {
        const char *lf = memchr(p + i, '\n', n - i);
        if (!lf) {
            *from = n;
            return 0;
        }
        i = (size_t)(lf - p);
        if (i + 1 >= n)
            break; /* what follows decides */
        if (p[i + 1] == '\n')
            return i + 2;
        if (p[i + 1] == '\r') {
            if (i + 2 >= n)
                break;
            if (p[i + 2] == '\n')
                return i + 3;
        }
        i++;
    }
    *from = i;
    return 0;
}

int pl__sip_header_next(const char *p, size_t hlen, size_t *pos,
                        struct pl_str *name, struct pl_str *value)
{
    size_t i = *pos;
    if (i == 0) {
        const char *lf = memchr(p, '\n', hlen);
        if (!lf)
            return 0;
        i = (size_t)(lf - p) + 1;
    }
    /* The empty line, or the end. */
    if (i >= hlen || p[i] == '\n' ||
        (p[i] == '\r' && i + 1 < hlen && p[i + 1] == '\n'))
        return 0;
    size_t start = i;
    /* The field runs to a line end not followed by SP or HT. */
    size_t end = i;
    for (;;) {
        const char *lf = memchr(p + end, '\n', hlen - end);
        if (!lf) {
            end = hlen;
            break;
        }
        end = (size_t)(lf - p) + 1;
        if (end >= hlen || !is_wsp(p[end]))
            break;
    }
    *pos = end;
    const char *colon = memchr(p + start, ':', end - start);
    /* The name may not span lines. */
    const char *lf = memchr(p + start, '\n', end - start);
    if (!colon || (lf && lf < colon)) {
        name->p = p + start;
        name->len = 0;
        colon = p + start - 1;
    } else {
        size_t nl = (size_t)(colon - (p + start));
        while (nl && is_wsp(p[start + nl - 1]))
            nl--;
        name->p = p + start;
        name->len = nl;
    }
    size_t vs = (size_t)(colon - p) + 1, ve = end;
    while (vs < ve && (is_wsp(p[vs]) || p[vs] == '\r' || p[vs] == '\n'))
        vs++;
    while (ve > vs &&
           (is_wsp(p[ve - 1]) || p[ve - 1] == '\r' || p[ve - 1] == '\n'))
        ve--;
    value->p = p + vs;
    value->len = ve - vs;
    return 1;
}

char *pl__sip_unfold(struct pl_str v)
{
    char *out = pl_malloc(v.len + 1);
    size_t o = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.p[i];
        if (c == '\r' || c == '\n') {
            /* CRLF (or LF) and the whitespace after it: one space. */
            while (i + 1 < v.len && (v.p[i + 1] == '\r' || v.p[i + 1] == '\n'))
                i++;
            while (i + 1 < v.len && is_wsp(v.p[i + 1]))
                i++;
            c = ' ';
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

/* Content-Length = 1*DIGIT (RFC 3261 §20.14), kept below 2^31. */
static long parse_clen(struct pl_str v)
{
    if (!v.len || v.len > 10)
        return -1;
    long n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        n = n * 10 + (v.p[i] - '0');
    }
    return n > 0x7fffffffL ? -1 : n;
}

/* Which single-valued field a name is (long or compact form), or 0. */
static unsigned single_of(struct pl_str name)
{
    if (name_is(name, "from") || name_is(name, "f"))
        return SIP_H_FROM;
    if (name_is(name, "to") || name_is(name, "t"))
        return SIP_H_TO;
    if (name_is(name, "call-id") || name_is(name, "i"))
        return SIP_H_CALL_ID;
    if (name_is(name, "cseq"))
        return SIP_H_CSEQ;
    if (name_is(name, "max-forwards"))
        return SIP_H_MAX_FORWARDS;
    if (name_is(name, "content-length") || name_is(name, "l"))
        return SIP_H_CONTENT_LENGTH;
    if (name_is(name, "content-type") || name_is(name, "c"))
        return SIP_H_CONTENT_TYPE;
    return 0;
}

/* Fills s from the header section p[0..hlen). */
static void scan_headers(const char *p, size_t hlen, struct sip_scan *s)
{
    memset(s, 0, sizeof(*s));
    s->hlen = hlen;
    s->clen = -1;
    s->nul = memchr(p, '\0', hlen) != NULL;
    for (const char *lf = memchr(p, '\n', hlen); lf;
         lf = memchr(lf + 1, '\n', hlen - (size_t)(lf + 1 - p)))
        if (lf == p || lf[-1] != '\r') {
            s->lf_only = 1;
            break;
        }
    size_t pos = 0;
    struct pl_str name, value;
    while (pl__sip_header_next(p, hlen, &pos, &name, &value)) {
        s->nheaders++;
        unsigned bit = single_of(name);
        if (!bit)
            continue;
        if (s->seen & bit)
            s->dup |= bit;
        s->seen |= bit;
        if (bit == SIP_H_CONTENT_LENGTH) {
            long n = parse_clen(value);
            if (n < 0 || (s->clen >= 0 && n != s->clen))
                s->clen_bad = 1;
            else
                s->clen = n;
        }
    }
}

int pl__sip_scan(const char *p, size_t n, struct sip_scan *s)
{
    size_t from = 0;
    size_t hlen = find_end(p, n, &from);
    if (!hlen)
        return PL_EAGAIN;
    scan_headers(p, hlen, s);
    return PL_OK;
}

/* token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" /
 * "'" / "~"), RFC 3261 §25.1. */
static int is_token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c && strchr("-.!%*_+`'~", c));
}

/* SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT ("SIP" in any case). */
static int is_version(struct pl_str v)
{
    if (v.len < 7 || lower((unsigned char)v.p[0]) != 's' ||
        lower((unsigned char)v.p[1]) != 'i' ||
        lower((unsigned char)v.p[2]) != 'p' || v.p[3] != '/')
        return 0;
    size_t i = 4, d1 = 0, d2 = 0;
    while (i < v.len && v.p[i] >= '0' && v.p[i] <= '9')
        i++, d1++;
    if (i >= v.len || v.p[i] != '.')
        return 0;
    i++;
    while (i < v.len && v.p[i] >= '0' && v.p[i] <= '9')
        i++, d2++;
    return d1 && d2 && i == v.len;
}

void pl__sip_start_line(const char *p, size_t n, struct sip_start *sl)
{
    memset(sl, 0, sizeof(*sl));
    const char *lf = memchr(p, '\n', n);
    size_t len = lf ? (size_t)(lf - p) : n;
    if (len && p[len - 1] == '\r')
        len--;
    if (len >= 4 && lower((unsigned char)p[0]) == 's' &&
        lower((unsigned char)p[1]) == 'i' &&
        lower((unsigned char)p[2]) == 'p' && p[3] == '/') {
        /* Status-Line = SIP-Version SP Status-Code SP Reason-Phrase. */
        sl->is_response = 1;
        const char *sp = memchr(p, ' ', len);
        if (!sp)
            return;
        sl->version = (struct pl_str){p, (size_t)(sp - p)};
        size_t i = (size_t)(sp - p) + 1, d = 0;
        int code = 0;
        while (i < len && p[i] >= '0' && p[i] <= '9' && d < 4)
            code = code * 10 + (p[i++] - '0'), d++;
        if (d == 3 && code >= 100 && code <= 699 && i < len && p[i] == ' ')
            sl->status = code;
        sl->ok = is_version(sl->version) && sl->status;
        return;
    }
    /* Request-Line = Method SP Request-URI SP SIP-Version. */
    size_t i = 0;
    while (i < len && is_token_char((unsigned char)p[i]))
        i++;
    sl->method = (struct pl_str){p, i};
    if (!i || i >= len || p[i] != ' ')
        return;
    size_t us = ++i;
    while (i < len && p[i] != ' ' && (unsigned char)p[i] > 0x20 && p[i] != 0x7f)
        i++;
    sl->uri = (struct pl_str){p + us, i - us};
    if (i == us || i >= len || p[i] != ' ')
        return;
    sl->version = (struct pl_str){p + i + 1, len - i - 1};
    const char *colon = memchr(sl->uri.p, ':', sl->uri.len);
    if (colon) {
        sl->scheme = (struct pl_str){sl->uri.p, (size_t)(colon - sl->uri.p)};
        /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
        int ok = sl->scheme.len > 0;
        for (size_t k = 0; ok && k < sl->scheme.len; k++) {
            unsigned char c = (unsigned char)sl->scheme.p[k];
            int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
            ok = k == 0 ? alpha
                        : alpha || (c >= '0' && c <= '9') || c == '+' ||
                              c == '-' || c == '.';
        }
        sl->scheme_ok = ok;
    }
    sl->ok = sl->scheme_ok && is_version(sl->version);
}

/* ---- streams ---- */

void pl__sip_framer_feed(struct sip_framer *f, const char *p, size_t n)
{
    if (f->dead || !n)
        return;
    /* Drop what the last result spanned before the buffer may move. */
    if (f->consume) {
        pl_buf_consume(&f->in, f->consume);
        f->consume = 0;
    }
    pl_buf_append(&f->in, p, n);
}

void pl__sip_framer_free(struct sip_framer *f)
{
    pl_buf_reset(&f->in);
    f->consume = f->scanned = f->hlen = 0;
    f->skip = 0;
}

int pl__sip_framer_next(struct sip_framer *f, size_t max,
                        struct sip_frame_out *out)
{
    memset(out, 0, sizeof(*out));
    if (f->dead)
        return SIP_FRAME_MORE;
    if (f->consume) {
        pl_buf_consume(&f->in, f->consume);
        f->consume = 0;
    }
    for (;;) {
        struct pl_str b = pl_buf_str(&f->in);
        if (f->skip) {
            size_t k = f->skip < b.len ? (size_t)f->skip : b.len;
            pl_buf_consume(&f->in, k);
            f->skip -= k;
            if (f->skip)
                return SIP_FRAME_MORE;
            continue;
        }
        if (!b.len) {
            /* Nothing pending: give the memory back. */
            pl_buf_reset(&f->in);
            return SIP_FRAME_MORE;
        }
        /* Line ends before a start line (§7.5); a double CRLF is a ping
         * (RFC 5626 §3.5.1), a lone one (or LF) is skipped. */
        if (b.p[0] == '\r' || b.p[0] == '\n') {
            static const char ping[] = "\r\n\r\n";
            size_t k = b.len < 4 ? b.len : 4;
            if (memcmp(b.p, ping, k) == 0) {
                if (k < 4)
                    return SIP_FRAME_MORE; /* a ping, or a lone CRLF */
                f->consume = 4;
                f->scanned = 0;
                return SIP_FRAME_PING;
            }
            size_t skip = b.p[0] == '\n'                ? 1
                          : b.len > 1 && b.p[1] == '\n' ? 2
                                                        : 1;
            pl_buf_consume(&f->in, skip);
            f->scanned = 0;
            continue;
        }
        size_t hlen = f->hlen;
        if (!hlen) {
            hlen = find_end(b.p, b.len, &f->scanned);
            if (!hlen) {
                if (b.len > max) {
                    /* No end of the headers within the limit: nothing
                     * addresses an answer, the stream cannot be framed. */
                    f->dead = 1;
                    return SIP_FRAME_BAD;
                }
                return SIP_FRAME_MORE;
            }
            f->scanned = 0;
            scan_headers(b.p, hlen, &f->scan);
        }
        out->scan = f->scan;
        out->p = f->in.data + f->in.off; /* b.p, writable */
        out->n = hlen;
        f->hlen = 0;
        if (out->scan.clen < 0 || out->scan.clen_bad) {
            /* §18.3: Content-Length is what frames a stream. */
            f->dead = 1;
            return SIP_FRAME_BAD;
        }
        uint64_t total = (uint64_t)hlen + (uint64_t)out->scan.clen;
        if (total > max) {
            f->consume = hlen;
            f->skip = (uint64_t)out->scan.clen;
            return SIP_FRAME_TOO_LARGE;
        }
        if (b.len < total) {
            /* The body is on its way: the headers are not scanned
             * again. */
            f->hlen = hlen;
            memset(out, 0, sizeof(*out));
            return SIP_FRAME_MORE;
        }
        out->n = (size_t)total;
        f->consume = (size_t)total;
        return SIP_FRAME_MSG;
    }
}

/* ---- datagrams ---- */

int pl__sip_frame_datagram(char *p, size_t n, size_t max,
                           struct sip_frame_out *out)
{
    memset(out, 0, sizeof(*out));
    while (n && (*p == '\r' || *p == '\n')) {
        p++;
        n--;
    }
    if (!n)
        return SIP_FRAME_PING;
    out->p = p;
    if (pl__sip_scan(p, n, &out->scan) != PL_OK) {
        /* No empty line: malformed, but what there is may address a
         * 400 (or a 513 if it is too large as well). */
        out->n = n;
        out->scan.hlen = n;
        out->scan.clen = -1;
        return n > max ? SIP_FRAME_TOO_LARGE : SIP_FRAME_BAD;
    }
    size_t hlen = out->scan.hlen;
    if (n > max) {
        out->n = hlen;
        return SIP_FRAME_TOO_LARGE;
    }
    if (out->scan.clen_bad) {
        out->n = hlen;
        return SIP_FRAME_BAD;
    }
    if (out->scan.clen < 0) {
        out->n = n;
        return SIP_FRAME_MSG;
    }
    if ((size_t)out->scan.clen > n - hlen) {
        out->n = hlen;
        return SIP_FRAME_SHORT;
    }
    out->n = hlen + (size_t)out->scan.clen; /* the rest is discarded */
    return SIP_FRAME_MSG;
}
