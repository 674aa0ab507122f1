/*
 * smtp.c - the SMTP/LMTP server protocol engine; see smtp.h.
 *
 * One struct pl_smtp per client.  Input accumulates in s->in and run()
 * takes from it a command line at a time (state S_CMD) or the message
 * text (S_DATA) as long as nothing blocks: a pending verdict, or more
 * than max_out reply bytes waiting.  That is how PIPELINING (RFC 2920)
 * works here: commands are answered strictly in order, replies pile up in
 * s->out and the transport sends them in one write.
 *
 * DATA (RFC 5321 §4.1.1.4, §4.5.2): the message ends only at
 * CRLF "." CRLF; a leading dot of any other line is removed.  A bare LF
 * makes the message fail (§2.3.8; a bare LF followed by "." is how
 * "SMTP smuggling" hides a second message), as do an over-long line and
 * a message over max_size; the text is still read to its end so that
 * the session stays in step.
 *
 * STARTTLS (RFC 3207): cmd_starttls() answers 220, empties s->in (what
 * followed the command in plaintext is never executed) and sets
 * tls_wanted, which blocks run() and pl_smtp_wants_input() until the
 * transport calls pl_smtp_tls_started().
 *
 * Extending: commands are dispatched in command(); each one's verdict
 * comes back through a finish_*() function, called at once or from
 * pl_smtp_resume().
 */
#include "smtp.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"

#define PATH_MAX_LEN 256   /* RFC 5321 §4.5.3.1.3, with the brackets */
#define LOCAL_MAX_LEN 64   /* §4.5.3.1.1 */
#define DOMAIN_MAX_LEN 255 /* §4.5.3.1.2 */
#define TEXT_MAX 400       /* our reply text, after sanitizing */

enum {
    S_CMD,
    S_DATA
};

struct pl_smtp {
    struct pl_smtp_config cfg; /* settings (strings below) */
    char *hostname;            /* cfg.hostname's copy */
    char *peer;                /* cfg.peer's copy, or NULL */
    pl_smtp_event_fn *fn;      /* the event callback */
    void *data;                /* its pointer */
    struct pl_buf in;          /* input not processed yet */
    struct pl_buf out;         /* replies not sent yet */
    int state;                 /* S_CMD or S_DATA */
    unsigned done : 1;         /* session over */
    unsigned skipping : 1;     /* discarding an over-long command line */
    unsigned ehlo : 1;         /* EHLO/LHLO (not HELO) was said */
    unsigned tls_wanted : 1;   /* STARTTLS accepted, handshake to come */
    unsigned tls_active : 1;   /* TLS is up */
    size_t tls_discarded;      /* plaintext bytes dropped after STARTTLS */
    int pending;               /* event type awaiting a verdict, 0: none */
    char *helo;                /* HELO argument, NULL before */
    unsigned errors;           /* client errors so far */
    /* The mail transaction. */
    unsigned has_mail : 1;         /* MAIL accepted */
    unsigned body_8bit : 1;        /* BODY=8BITMIME */
    unsigned smtputf8 : 1;         /* SMTPUTF8 */
    char from[PATH_MAX_LEN + 1];   /* reverse-path mailbox */
    size_t size;                   /* SIZE= */
    char **rcpts;                  /* accepted recipients */
    size_t nrcpts;                 /* how many */
    unsigned *notify;              /* their NOTIFY= bits (RFC 3461) */
    char **orcpt;                  /* their ORCPT=, or NULL */
    int ret;                       /* RET= */
    char *envid;                   /* ENVID=, or NULL */
    unsigned cur_notify;           /* the RCPT being decided: NOTIFY= */
    char *cur_orcpt;               /* ... and ORCPT= */
    unsigned rcpt_tries;           /* RCPT commands in the transaction */
    char cur[PATH_MAX_LEN + 1];    /* the MAIL/RCPT address being decided */
    struct pl_smtp_event ev;       /* the pending event */
    struct pl_smtp_reply *replies; /* verdict slots (max_rcpts or 1) */
    /* DATA. */
    struct pl_buf msg;      /* unstuffed text */
    size_t msg_size;        /* client bytes, unstuffed */
    size_t line_len;        /* bytes of the current line so far */
    unsigned bol : 1;       /* at the start of a line */
    unsigned prev_crlf : 1; /* the previous line ended in CRLF */
    unsigned too_big : 1;   /* over max_size */
    unsigned too_long : 1;  /* a line over max_text_line */
    unsigned bare_lf : 1;   /* a line ended in LF alone */
};

void pl_smtp_config_default(struct pl_smtp_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->proto = PL_SMTP_SMTP;
    cfg->hostname = "localhost";
    cfg->max_line = 512;
    cfg->max_text_line = 1000;
    cfg->max_size = 10 * 1024 * 1024;
    cfg->max_rcpts = 100;
    cfg->max_errors = 10;
    cfg->max_out = 64 * 1024;
    cfg->max_in = 256 * 1024;
    cfg->smtputf8 = 1;
    cfg->add_received = 1;
}

/* ---- Replies. */

/* Appends text with control characters replaced, at most TEXT_MAX. */
static void put_text(struct pl_buf *b, const char *t)
{
    size_t n = 0;
    for (; *t && n < TEXT_MAX; t++, n++) {
        unsigned char c = (unsigned char)*t;
        char ch = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        pl_buf_append(b, &ch, 1);
    }
}

static int is_enh(const char *e, int code)
{
    /* class "." subject "." detail (RFC 3463 §2), class matching code. */
    if (!e || e[0] != '0' + code / 100 || e[1] != '.')
        return 0;
    const char *p = e + 2;
    for (int part = 0; part < 2; part++) {
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 3)
            p++, digits++;
        if (!digits || *p != (part ? '\0' : '.'))
            return 0;
        if (!part)
            p++;
    }
    return 1;
}

/* One reply line; enh is added on 2xx/4xx/5xx (RFC 2034 §4). */
static void reply(struct pl_smtp *s, int code, const char *enh,
                  const char *text)
{
    char head[32];
    if (code < 200 || code > 599)
        code = 451;
    if (code / 100 == 3) {
        snprintf(head, sizeof(head), "%d ", code);
    } else {
        char def[8];
        if (!is_enh(enh, code)) {
            snprintf(def, sizeof(def), "%d.0.0", code / 100);
            enh = def;
        }
        snprintf(head, sizeof(head), "%d %s ", code, enh);
    }
    pl_buf_append_str(&s->out, head);
    put_text(&s->out, text ? text : "");
    pl_buf_append(&s->out, "\r\n", 2);
}

static void replyf(struct pl_smtp *s, int code, const char *enh,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void replyf(struct pl_smtp *s, int code, const char *enh,
                   const char *fmt, ...)
{
    char text[TEXT_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    reply(s, code, enh, text);
}

/* A reply caused by the client's mistake: counts toward max_errors. */
static void client_error(struct pl_smtp *s, int code, const char *enh,
                         const char *text)
{
    reply(s, code, enh, text);
    if (++s->errors >= s->cfg.max_errors && !s->done) {
        reply(s, 421, "4.7.0", "Too many errors, closing connection");
        s->done = 1;
    }
}

/* A verdict from the callback, or the default when its code is 0. */
static void verdict(struct pl_smtp *s, const struct pl_smtp_reply *r,
                    int defcode, const char *defenh, const char *deftext)
{
    if (!r || r->code == 0)
        reply(s, defcode, defenh, deftext);
    else
        reply(s, r->code, r->enh, r->text ? r->text : "");
}

/* ---- Transaction state. */

static void reset_transaction(struct pl_smtp *s)
{
    for (size_t i = 0; i < s->nrcpts; i++) {
        pl_free(s->rcpts[i]);
        pl_free(s->orcpt[i]);
        s->orcpt[i] = NULL;
    }
    s->nrcpts = 0;
    s->rcpt_tries = 0;
    s->ret = 0;
    pl_free(s->envid);
    s->envid = NULL;
    pl_free(s->cur_orcpt);
    s->cur_orcpt = NULL;
    s->has_mail = 0;
    s->body_8bit = 0;
    s->smtputf8 = 0;
    s->from[0] = '\0';
    s->size = 0;
    pl_buf_reset(&s->msg);
}

/* ---- Address syntax (RFC 5321 §4.1.2, RFC 6531 §3.3). */

/* The length of a well-formed UTF-8 sequence at p (non-ASCII), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *e)
{
    unsigned c = p[0];
    size_t n;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    if ((size_t)(e - p) < n)
        return 0;
    unsigned v = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    return n;
}

static int is_atext(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* A domain: sub-domain *("." sub-domain); returns its end or NULL. */
static const unsigned char *parse_domain(const unsigned char *p,
                                         const unsigned char *e, int utf8)
{
    const unsigned char *start = p;
    for (;;) {
        const unsigned char *label = p;
        while (p < e) {
            if (isalnum(*p) || *p == '-') {
                p++;
            } else if (*p >= 0x80 && utf8) {
                size_t n = utf8_seq(p, e);
                if (!n)
                    return NULL;
                p += n;
            } else {
                break;
            }
        }
        /* Let-dig [Ldh-str]: no hyphen first or last, 63 octets. */
        if (p == label || *label == '-' || p[-1] == '-' || p - label > 63)
            return NULL;
        if (p < e && *p == '.') {
            p++;
            continue;
        }
        break;
    }
    return p - start > DOMAIN_MAX_LEN ? NULL : p;
}

/* "[" (IPv4 / "IPv6:" IPv6 / tag ":" dcontent) "]" (§4.1.3). */
static const unsigned char *parse_literal(const unsigned char *p,
                                          const unsigned char *e)
{
    const unsigned char *close = memchr(p, ']', (size_t)(e - p));
    if (!close || close - p < 2 || close - p > 64)
        return NULL;
    char lit[72];
    size_t n = (size_t)(close - p - 1);
    memcpy(lit, p + 1, n);
    lit[n] = '\0';
    unsigned char addr[16];
    if (strncasecmp(lit, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, lit + 5, addr) == 1 ? close + 1 : NULL;
    if (isdigit((unsigned char)lit[0]))
        return inet_pton(AF_INET, lit, addr) == 1 ? close + 1 : NULL;
    const char *colon = strchr(lit, ':');
    if (!colon || colon == lit || !colon[1])
        return NULL;
    for (const char *q = lit; q < colon; q++)
        if (!isalnum((unsigned char)*q) && *q != '-')
            return NULL;
    for (const char *q = colon + 1; *q; q++)
        if (*q < 33 || *q > 126 || (*q >= 91 && *q <= 93))
            return NULL;
    return close + 1;
}

int pl_smtp_parse_path(struct pl_str in, int utf8, int null_ok, char *out,
                       size_t outlen, size_t *consumed)
{
    const unsigned char *p = (const unsigned char *)in.p;
    const unsigned char *e = p + in.len;
    if (!p || p >= e || *p != '<' || outlen < PATH_MAX_LEN + 1)
        return PL_EINVAL;
    const unsigned char *open = p++;
    if (p < e && *p == '>') {
        if (!null_ok)
            return PL_EINVAL;
        out[0] = '\0';
        *consumed = 2;
        return PL_OK;
    }
    /* A-d-l ":" -- a source route, accepted and ignored (§4.1.1.3). */
    if (p < e && *p == '@') {
        for (;;) {
            p++;
            if (!(p = parse_domain(p, e, utf8)))
                return PL_EINVAL;
            if (p < e && *p == ',' && p + 1 < e && p[1] == '@') {
                p++;
                continue;
            }
            break;
        }
        if (p >= e || *p != ':')
            return PL_EINVAL;
        p++;
    }
    const unsigned char *local = p;
    if (p < e && *p == '"') {
        for (p++; p < e && *p != '"'; p++) {
            if (*p == '\\') {
                if (++p >= e || *p < 32 || *p > 126)
                    return PL_EINVAL;
            } else if (*p >= 0x80 && utf8) {
                size_t n = utf8_seq(p, e);
                if (!n)
                    return PL_EINVAL;
                p += n - 1;
            } else if (*p < 32 || *p > 126) {
                return PL_EINVAL;
            }
        }
        if (p >= e)
            return PL_EINVAL;
        p++;
    } else {
        for (;;) {
            const unsigned char *atom = p;
            while (p < e) {
                if (is_atext(*p)) {
                    p++;
                } else if (*p >= 0x80 && utf8) {
                    size_t n = utf8_seq(p, e);
                    if (!n)
                        return PL_EINVAL;
                    p += n;
                } else {
                    break;
                }
            }
            if (p == atom)
                return PL_EINVAL;
            if (p < e && *p == '.') {
                p++;
                continue;
            }
            break;
        }
    }
    size_t local_len = (size_t)(p - local);
    /* "<Postmaster>" without a domain (§4.1.1.3). */
    if (p < e && *p == '>' && !null_ok && local_len == 10 &&
        strncasecmp((const char *)local, "postmaster", 10) == 0) {
        memcpy(out, local, 10);
        out[10] = '\0';
        *consumed = (size_t)(p + 1 - open);
        return PL_OK;
    }
    if (p >= e || *p != '@')
        return PL_EINVAL;
    p++;
    const unsigned char *dom = p;
    p = (p < e && *p == '[') ? parse_literal(p, e) : parse_domain(p, e, utf8);
    if (!p || p >= e || *p != '>')
        return PL_EINVAL;
    if (local_len > LOCAL_MAX_LEN || (size_t)(p + 1 - open) > PATH_MAX_LEN)
        return PL_ELIMIT;
    size_t n = local_len + 1 + (size_t)(p - dom);
    memcpy(out, local, local_len);
    out[local_len] = '@';
    memcpy(out + local_len + 1, dom, (size_t)(p - dom));
    out[n] = '\0';
    *consumed = (size_t)(p + 1 - open);
    return PL_OK;
}

static int has_8bit(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 1;
    return 0;
}

/* ---- Events. */

/* Calls the callback; 1 if the verdict is there, 0 if pending. */
static int emit(struct pl_smtp *s, size_t nreplies)
{
    memset(s->replies, 0, nreplies * sizeof(*s->replies));
    int rc = s->fn ? s->fn(s->data, s, &s->ev, s->replies) : PL_OK;
    if (rc == PL_EAGAIN) {
        s->pending = s->ev.type;
        return 0;
    }
    if (rc != PL_OK) {
        /* A failing callback is a local error (RFC 5321 451). */
        for (size_t i = 0; i < nreplies; i++)
            s->replies[i] = (struct pl_smtp_reply){451, "4.3.0",
                                                   "Local error in processing"};
    }
    return 1;
}

static void finish_helo(struct pl_smtp *s, const struct pl_smtp_reply *r)
{
    if (r && r->code >= 400) {
        pl_free(s->helo);
        s->helo = NULL;
        verdict(s, r, 0, NULL, NULL);
        return;
    }
    if (!s->ehlo) {
        /* No enhanced code on the HELO answer either (RFC 2034 §4). */
        pl_buf_printf(&s->out, "250 %s\r\n", s->hostname);
        return;
    }
    /* The EHLO reply: no enhanced code in it (RFC 2034 §4). */
    pl_buf_printf(&s->out, "250-%s\r\n", s->hostname);
    pl_buf_append_str(&s->out, "250-PIPELINING\r\n");
    pl_buf_printf(&s->out, "250-SIZE %zu\r\n", s->cfg.max_size);
    pl_buf_append_str(&s->out, "250-8BITMIME\r\n");
    pl_buf_append_str(&s->out, "250-DSN\r\n");
    if (s->cfg.tls != PL_SMTP_TLS_NONE && !s->tls_active)
        pl_buf_append_str(&s->out, "250-STARTTLS\r\n");
    if (s->cfg.smtputf8)
        pl_buf_append_str(&s->out, "250-SMTPUTF8\r\n");
    pl_buf_append_str(&s->out, "250 ENHANCEDSTATUSCODES\r\n");
}

static void finish_mail(struct pl_smtp *s, const struct pl_smtp_reply *r)
{
    if (r && r->code >= 400) {
        verdict(s, r, 0, NULL, NULL);
        reset_transaction(s);
        return;
    }
    s->has_mail = 1;
    replyf(s, 250, "2.1.0", "Sender <%s> OK", s->from);
}

static void finish_rcpt(struct pl_smtp *s, const struct pl_smtp_reply *r)
{
    if (r && r->code >= 400) {
        verdict(s, r, 0, NULL, NULL);
        return;
    }
    s->notify[s->nrcpts] = s->cur_notify;
    s->orcpt[s->nrcpts] = s->cur_orcpt;
    s->cur_orcpt = NULL;
    s->rcpts[s->nrcpts++] = pl_strdup(s->cur);
    replyf(s, 250, "2.1.5", "Recipient <%s> OK", s->cur);
}

/* The replies after DATA: one (SMTP) or one per recipient (LMTP). */
static void finish_data(struct pl_smtp *s, const struct pl_smtp_reply *r,
                        size_t n)
{
    size_t want = s->cfg.proto == PL_SMTP_LMTP ? s->nrcpts : 1;
    for (size_t i = 0; i < want; i++) {
        const struct pl_smtp_reply *ri = r && i < n ? &r[i] : NULL;
        if (s->cfg.proto == PL_SMTP_LMTP) {
            char text[PATH_MAX_LEN + 32];
            snprintf(text, sizeof(text), "<%s> delivered", s->rcpts[i]);
            verdict(s, ri, 250, "2.1.5", text);
        } else {
            verdict(s, ri, 250, "2.0.0", "Message accepted");
        }
    }
    reset_transaction(s);
}

/* The whole text is read: reply (LMTP: per recipient) or ask. */
static void end_data(struct pl_smtp *s)
{
    s->state = S_CMD;
    struct pl_smtp_reply fail = {0, NULL, NULL};
    if (s->too_big)
        fail = (struct pl_smtp_reply){552, "5.3.4",
                                      "Message size exceeds fixed limit"};
    else if (s->too_long)
        fail = (struct pl_smtp_reply){554, "5.6.0",
                                      "Message has a line longer than "
                                      "allowed (RFC 5321 4.5.3.1.6)"};
    else if (s->bare_lf)
        fail = (struct pl_smtp_reply){554, "5.6.0",
                                      "Message has a bare LF "
                                      "(RFC 5321 2.3.8)"};
    if (fail.code) {
        size_t want = s->cfg.proto == PL_SMTP_LMTP ? s->nrcpts : 1;
        for (size_t i = 0; i < want; i++)
            s->replies[i] = fail;
        finish_data(s, s->replies, want);
        return;
    }
    memset(&s->ev, 0, sizeof(s->ev));
    s->ev.type = PL_SMTP_EV_DATA;
    s->ev.helo = s->helo;
    s->ev.from = s->from;
    s->ev.rcpts = (const char *const *)s->rcpts;
    s->ev.nrcpts = s->nrcpts;
    s->ev.notifies = s->notify;
    s->ev.orcpts = (const char *const *)s->orcpt;
    s->ev.ret = s->ret;
    s->ev.envid = s->envid;
    s->ev.message = pl_buf_str(&s->msg);
    s->ev.size = s->size;
    s->ev.body_8bit = s->body_8bit;
    s->ev.smtputf8 = s->smtputf8;
    size_t want = s->cfg.proto == PL_SMTP_LMTP ? s->nrcpts : 1;
    if (emit(s, want))
        finish_data(s, s->replies, want);
}

/* ---- Commands. */

/* The argument after "FROM:"/"TO:" (case-insensitive), spaces allowed. */
static const char *after_keyword(const char *arg, const char *kw)
{
    size_t n = strlen(kw);
    if (strncasecmp(arg, kw, n) != 0)
        return NULL;
    arg += n;
    while (*arg == ' ')
        arg++;
    return arg;
}

/* RFC 3461 §4: xtext ("+" HEXCHAR HEXCHAR for what is not printable
 * ASCII, "+" or "="), decoded into a new string; NULL if malformed or
 * longer than max (100 for ENVID, §4.4) or decoding to a control
 * character. */
static char *xtext(const char *p, size_t n, size_t max)
{
    if (n == 0 || n > 3 * max)
        return NULL;
    char *out = pl_malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '+') {
            if (i + 2 >= n || !isxdigit((unsigned char)p[i + 1]) ||
                !isxdigit((unsigned char)p[i + 2])) {
                pl_free(out);
                return NULL;
            }
            char hex[3] = {p[i + 1], p[i + 2], 0};
            c = (unsigned char)strtoul(hex, NULL, 16);
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            pl_free(out);
            return NULL;
        }
        if (c < 32 || c == 127) {
            pl_free(out);
            return NULL;
        }
        *o++ = (char)c;
    }
    *o = '\0';
    if ((size_t)(o - out) > max) {
        pl_free(out);
        return NULL;
    }
    return out;
}

static unsigned notify_bit(const char *v, size_t l)
{
    static const char *const names[] = {"NEVER", "SUCCESS", "FAILURE", "DELAY"};
    for (unsigned i = 0; i < 4; i++)
        if (strlen(names[i]) == l && strncasecmp(v, names[i], l) == 0)
            return 1u << i;
    return 0;
}

/* The next "keyword[=value]" of a MAIL or RCPT parameter list (RFC 5321
 * §4.1.2, esmtp-param) at *p, which moves past it: 0 at the end.  *val is
 * NULL without "=". */
static int next_param(const char **p, const char **kw, size_t *kwlen,
                      const char **val, size_t *vlen)
{
    const char *c = *p;
    while (*c == ' ')
        c++;
    if (!*c) {
        *p = c;
        return 0;
    }
    *kw = c;
    while (*c && *c != ' ' && *c != '=')
        c++;
    *kwlen = (size_t)(c - *kw);
    *val = NULL;
    *vlen = 0;
    if (*c == '=') {
        *val = ++c;
        while (*c && *c != ' ')
            c++;
        *vlen = (size_t)(c - *val);
    }
    *p = c;
    return 1;
}

/* RCPT parameters (RFC 3461 NOTIFY and ORCPT) into s->cur_notify and
 * s->cur_orcpt; 0, or a reply was given. */
static int rcpt_params(struct pl_smtp *s, const char *p)
{
    s->cur_notify = 0;
    pl_free(s->cur_orcpt);
    s->cur_orcpt = NULL;
    const char *kw, *val;
    size_t kwlen, vlen;
    while (next_param(&p, &kw, &kwlen, &val, &vlen)) {
        if (kwlen == 6 && strncasecmp(kw, "NOTIFY", 6) == 0) {
            if (s->cur_notify || !val || vlen == 0)
                goto bad;
            /* "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) */
            for (const char *v = val, *e = val + vlen; v < e;) {
                const char *c = memchr(v, ',', (size_t)(e - v));
                size_t l = c ? (size_t)(c - v) : (size_t)(e - v);
                unsigned bit = notify_bit(v, l);
                if (!bit || (s->cur_notify & bit))
                    goto bad;
                s->cur_notify |= bit;
                v += l + (c ? 1 : 0);
                if (c && v == e)
                    goto bad; /* a trailing comma */
            }
            if ((s->cur_notify & PL_SMTP_NOTIFY_NEVER) &&
                s->cur_notify != PL_SMTP_NOTIFY_NEVER)
                goto bad;
        } else if (kwlen == 5 && strncasecmp(kw, "ORCPT", 5) == 0) {
            /* addr-type ";" xtext (§4.2); 500 characters at most. */
            const char *semi = val ? memchr(val, ';', vlen) : NULL;
            if (s->cur_orcpt || !semi || semi == val)
                goto bad;
            char *addr = xtext(semi + 1, (size_t)(val + vlen - semi - 1), 500);
            if (!addr)
                goto bad;
            size_t tl = (size_t)(semi - val);
            s->cur_orcpt = pl_malloc(tl + strlen(addr) + 2);
            snprintf(s->cur_orcpt, tl + strlen(addr) + 2, "%.*s;%s", (int)tl,
                     val, addr);
            pl_free(addr);
        } else {
            client_error(s, 555, "5.5.4",
                         "RCPT TO parameters not recognized or not "
                         "implemented");
            return -1;
        }
    }
    return 0;
bad:
    client_error(s, 501, "5.5.4", "Invalid RCPT TO parameter value");
    return -1;
}

/* MAIL parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8);
 * 0, or a reply was given. */
static int mail_params(struct pl_smtp *s, const char *p)
{
    int seen_size = 0, seen_body = 0, seen_utf8 = 0;
    const char *kw, *val;
    size_t kwlen, vlen;
    while (next_param(&p, &kw, &kwlen, &val, &vlen)) {
        if (kwlen == 4 && strncasecmp(kw, "SIZE", 4) == 0) {
            if (seen_size++ || !val || vlen == 0 || vlen > 20)
                goto bad;
            unsigned long long v = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (!isdigit((unsigned char)val[i]))
                    goto bad;
                v = v * 10 + (unsigned)(val[i] - '0');
                if (v > (unsigned long long)s->cfg.max_size) {
                    client_error(s, 552, "5.3.4",
                                 "Message size exceeds fixed maximum "
                                 "message size");
                    return -1;
                }
            }
            s->size = (size_t)v;
        } else if (kwlen == 4 && strncasecmp(kw, "BODY", 4) == 0) {
            if (seen_body++ || !val)
                goto bad;
            if (vlen == 8 && strncasecmp(val, "8BITMIME", 8) == 0)
                s->body_8bit = 1;
            else if (!(vlen == 4 && strncasecmp(val, "7BIT", 4) == 0))
                goto bad;
        } else if (kwlen == 8 && strncasecmp(kw, "SMTPUTF8", 8) == 0 &&
                   s->cfg.smtputf8) {
            if (seen_utf8++ || val)
                goto bad;
            s->smtputf8 = 1;
        } else if (kwlen == 3 && strncasecmp(kw, "RET", 3) == 0) {
            /* RFC 3461 §4.3 */
            if (s->ret || !val)
                goto bad;
            if (vlen == 4 && strncasecmp(val, "FULL", 4) == 0)
                s->ret = PL_SMTP_RET_FULL;
            else if (vlen == 4 && strncasecmp(val, "HDRS", 4) == 0)
                s->ret = PL_SMTP_RET_HDRS;
            else
                goto bad;
        } else if (kwlen == 5 && strncasecmp(kw, "ENVID", 5) == 0) {
            /* RFC 3461 §4.4: xtext, 100 characters at most */
            if (s->envid || !val || !(s->envid = xtext(val, vlen, 100)))
                goto bad;
        } else {
            client_error(s, 555, "5.5.4",
                         "MAIL FROM parameters not recognized or not "
                         "implemented");
            return -1;
        }
    }
    return 0;
bad:
    client_error(s, 501, "5.5.4", "Invalid MAIL FROM parameter value");
    return -1;
}

static void cmd_helo(struct pl_smtp *s, const char *arg, int ehlo)
{
    if (!*arg) {
        client_error(s, 501, "5.5.4",
                     ehlo ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return;
    }
    /* HELO/EHLO again is a reset (RFC 5321 §4.1.4). */
    reset_transaction(s);
    pl_free(s->helo);
    s->helo = pl_strdup(arg);
    s->ehlo = ehlo ? 1 : 0;
    memset(&s->ev, 0, sizeof(s->ev));
    s->ev.type = PL_SMTP_EV_HELO;
    s->ev.helo = s->helo;
    if (emit(s, 1))
        finish_helo(s, s->replies);
}

/* With PL_SMTP_TLS_REQUIRE and no TLS yet: 530 (RFC 3207 §4); 1 if so. */
static int need_tls(struct pl_smtp *s)
{
    if (s->cfg.tls != PL_SMTP_TLS_REQUIRE || s->tls_active)
        return 0;
    client_error(s, 530, "5.7.0", "Must issue a STARTTLS command first");
    return 1;
}

static void cmd_starttls(struct pl_smtp *s, const char *arg)
{
    if (s->cfg.tls == PL_SMTP_TLS_NONE) {
        client_error(s, 502, "5.5.1", "Command not implemented");
        return;
    }
    if (*arg) {
        client_error(s, 501, "5.5.4", "Syntax: STARTTLS (no parameters)");
        return;
    }
    if (s->tls_active) {
        client_error(s, 503, "5.5.1", "TLS already active");
        return;
    }
    if (s->has_mail) {
        client_error(s, 503, "5.5.1",
                     "STARTTLS not allowed in a mail transaction");
        return;
    }
    reply(s, 220, "2.0.0", "Ready to start TLS");
    /* Whatever the client sent after STARTTLS in plaintext is dropped:
     * executing it after the handshake is the CVE-2011-0411 injection. */
    s->tls_discarded += s->in.len;
    pl_buf_reset(&s->in);
    s->tls_wanted = 1;
}

static void cmd_vrfy(struct pl_smtp *s)
{
    if (!need_tls(s))
        reply(s, 252, "2.5.0", "Cannot VRFY user, but will accept message");
}

static void cmd_mail(struct pl_smtp *s, const char *arg)
{
    if (need_tls(s))
        return;
    if (!s->helo) {
        client_error(s, 503, "5.5.1",
                     s->cfg.proto == PL_SMTP_LMTP ? "Send LHLO first"
                                                  : "Send HELO/EHLO first");
        return;
    }
    if (s->has_mail) {
        client_error(s, 503, "5.5.1", "Sender already specified");
        return;
    }
    const char *p = after_keyword(arg, "FROM:");
    if (!p || *p != '<') {
        client_error(s, 501, "5.5.2", "Syntax: MAIL FROM:<address>");
        return;
    }
    size_t used = 0;
    int rc = pl_smtp_parse_path(pl_str_c(p), s->cfg.smtputf8, 1, s->from,
                                sizeof(s->from), &used);
    if (rc == PL_ELIMIT) {
        client_error(s, 553, "5.1.7", "Sender address too long");
        return;
    }
    if (rc != PL_OK || (p[used] && p[used] != ' ')) {
        s->from[0] = '\0';
        client_error(s, 501, "5.1.7", "Bad sender address syntax");
        return;
    }
    if (mail_params(s, p + used) < 0) {
        reset_transaction(s);
        return;
    }
    if (has_8bit(s->from) && !s->smtputf8) {
        reset_transaction(s);
        client_error(s, 553, "5.6.7",
                     "Non-ASCII address without SMTPUTF8 (RFC 6531)");
        return;
    }
    memset(&s->ev, 0, sizeof(s->ev));
    s->ev.type = PL_SMTP_EV_MAIL;
    s->ev.helo = s->helo;
    s->ev.from = s->from;
    s->ev.size = s->size;
    s->ev.body_8bit = s->body_8bit;
    s->ev.smtputf8 = s->smtputf8;
    s->ev.ret = s->ret;
    s->ev.envid = s->envid;
    if (emit(s, 1))
        finish_mail(s, s->replies);
}

static void cmd_rcpt(struct pl_smtp *s, const char *arg)
{
    if (need_tls(s))
        return;
    if (!s->has_mail) {
        client_error(s, 503, "5.5.1", "Need MAIL command");
        return;
    }
    s->rcpt_tries++;
    const char *p = after_keyword(arg, "TO:");
    if (!p || *p != '<') {
        client_error(s, 501, "5.5.2", "Syntax: RCPT TO:<address>");
        return;
    }
    size_t used = 0;
    int rc = pl_smtp_parse_path(pl_str_c(p), s->smtputf8, 0, s->cur,
                                sizeof(s->cur), &used);
    if (rc == PL_ELIMIT) {
        client_error(s, 553, "5.1.3", "Recipient address too long");
        return;
    }
    if (rc != PL_OK || (p[used] && p[used] != ' ')) {
        /* Non-ASCII without SMTPUTF8 fails the ASCII grammar; say so. */
        char tmp[PATH_MAX_LEN + 1];
        if (!s->smtputf8 && s->cfg.smtputf8 &&
            pl_smtp_parse_path(pl_str_c(p), 1, 0, tmp, sizeof(tmp), &used) ==
                PL_OK)
            client_error(s, 553, "5.6.7",
                         "Non-ASCII address without SMTPUTF8 (RFC 6531)");
        else
            client_error(s, 501, "5.1.3",
                         "Bad destination mailbox address syntax");
        return;
    }
    if (rcpt_params(s, p + used) < 0)
        return;
    if (s->nrcpts >= s->cfg.max_rcpts) {
        /* RFC 5321 §4.5.3.1.10: 452, and the client sends the rest later. */
        reply(s, 452, "4.5.3", "Too many recipients");
        return;
    }
    memset(&s->ev, 0, sizeof(s->ev));
    s->ev.type = PL_SMTP_EV_RCPT;
    s->ev.helo = s->helo;
    s->ev.from = s->from;
    s->ev.rcpt = s->cur;
    s->ev.smtputf8 = s->smtputf8;
    s->ev.notify = s->cur_notify;
    s->ev.orcpt = s->cur_orcpt;
    s->ev.envid = s->envid;
    s->ev.ret = s->ret;
    if (emit(s, 1))
        finish_rcpt(s, s->replies);
}

static void start_received(struct pl_smtp *s)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    /* RFC 3848: the "S" of ESMTPS/UTF8SMTPS/LMTPS says TLS was used. */
    int t = s->tls_active;
    const char *with = s->cfg.proto == PL_SMTP_LMTP ? (t ? "LMTPS" : "LMTP")
                       : !s->ehlo                   ? "SMTP"
                       : s->smtputf8 ? (t ? "UTF8SMTPS" : "UTF8SMTP")
                       : t           ? "ESMTPS"
                                     : "ESMTP";
    pl_buf_append_str(&s->msg, "Received: from ");
    put_text(&s->msg, s->helo);
    if (s->peer) {
        pl_buf_append_str(&s->msg, " (");
        put_text(&s->msg, s->peer);
        pl_buf_append_str(&s->msg, ")");
    }
    pl_buf_printf(&s->msg, "\r\n\tby %s with %s; %s\r\n", s->hostname, with,
                  date);
}

static void cmd_data(struct pl_smtp *s, const char *arg)
{
    if (*arg) {
        client_error(s, 501, "5.5.4", "Syntax: DATA");
        return;
    }
    if (need_tls(s))
        return;
    if (!s->has_mail) {
        client_error(s, 503, "5.5.1", "Need MAIL command");
        return;
    }
    if (s->nrcpts == 0) {
        /* RFC 5321 §3.3; RFC 2920 §3.1 for the pipelined case. */
        if (s->rcpt_tries)
            client_error(s, 554, "5.5.1", "No valid recipients");
        else
            client_error(s, 503, "5.5.1", "Need RCPT command");
        return;
    }
    pl_buf_reset(&s->msg);
    if (s->cfg.add_received)
        start_received(s);
    s->msg_size = 0;
    s->line_len = 0;
    s->bol = 1;
    s->prev_crlf = 1;
    s->too_big = s->too_long = s->bare_lf = 0;
    s->state = S_DATA;
    reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

/* One command line, CRLF removed, NUL-terminated. */
static void command(struct pl_smtp *s, char *line)
{
    char *sp = strchr(line, ' ');
    char *arg = sp ? sp + 1 : line + strlen(line);
    size_t vlen = sp ? (size_t)(sp - line) : strlen(line);
    /* Trailing spaces are common and harmless. */
    size_t alen = strlen(arg);
    while (alen && (arg[alen - 1] == ' ' || arg[alen - 1] == '\t'))
        arg[--alen] = '\0';
    int lmtp = s->cfg.proto == PL_SMTP_LMTP;
#define IS(v) (vlen == sizeof(v) - 1 && strncasecmp(line, v, vlen) == 0)
    if (IS("EHLO") && !lmtp)
        cmd_helo(s, arg, 1);
    else if (IS("HELO") && !lmtp)
        cmd_helo(s, arg, 0);
    else if (IS("LHLO") && lmtp)
        cmd_helo(s, arg, 1);
    else if (IS("MAIL"))
        cmd_mail(s, arg);
    else if (IS("RCPT"))
        cmd_rcpt(s, arg);
    else if (IS("DATA"))
        cmd_data(s, arg);
    else if (IS("RSET")) {
        if (*arg) {
            client_error(s, 501, "5.5.4", "Syntax: RSET");
        } else {
            reset_transaction(s);
            reply(s, 250, "2.0.0", "OK");
        }
    } else if (IS("NOOP"))
        reply(s, 250, "2.0.0", "OK");
    else if (IS("QUIT")) {
        reply(s, 221, "2.0.0", "Bye");
        s->done = 1;
    } else if (IS("STARTTLS"))
        cmd_starttls(s, arg);
    else if (IS("VRFY"))
        cmd_vrfy(s);
    else if (IS("HELP"))
        reply(s, 214, "2.0.0",
              lmtp ? "Commands: LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY"
                   : "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT "
                     "VRFY");
    else if (IS("HELO") || IS("EHLO"))
        client_error(s, 500, "5.5.1", "This is LMTP: use LHLO");
    else if (IS("BDAT") || IS("EXPN") || IS("AUTH") || IS("ETRN") ||
             IS("TURN") || IS("ATRN") || IS("SEND") || IS("SOML") || IS("SAML"))
        client_error(s, 502, "5.5.1", "Command not implemented");
    else
        client_error(s, 500, "5.5.1", "Command unrecognized");
#undef IS
}

/* ---- Input. */

/* Appends text to the message within max_size. */
static void take_text(struct pl_smtp *s, const char *p, size_t n)
{
    s->msg_size += n;
    if (s->msg_size > s->cfg.max_size) {
        s->too_big = 1;
        return;
    }
    pl_buf_append(&s->msg, p, n);
}

/* Processes DATA text from s->in; 0 when more input is needed. */
static int data_step(struct pl_smtp *s)
{
    struct pl_str in = pl_buf_str(&s->in);
    const char *lf = memchr(in.p, '\n', in.len);
    if (!lf) {
        /* Keep a short partial line to see its end; an over-long one
         * goes now (it cannot be the terminator). */
        if (in.len + s->line_len < s->cfg.max_text_line)
            return 0;
        /* A CR at the end stays: with the LF it is the line's CRLF. */
        size_t take = in.len - (in.p[in.len - 1] == '\r' ? 1 : 0);
        if (take == 0)
            return 0;
        size_t skip = (s->bol && in.p[0] == '.') ? 1 : 0;
        s->too_long = 1;
        s->line_len += take;
        take_text(s, in.p + skip, take - skip);
        s->bol = 0;
        pl_buf_consume(&s->in, take);
        return 1;
    }
    size_t len = (size_t)(lf - in.p) + 1;
    int crlf = len >= 2 && lf[-1] == '\r';
    if (s->bol && in.p[0] == '.') {
        if (len == 3 && crlf && s->prev_crlf) {
            pl_buf_consume(&s->in, len);
            end_data(s);
            return 1;
        }
        /* Transparency (RFC 5321 §4.5.2): drop the first dot. */
        take_text(s, in.p + 1, len - 1);
    } else {
        take_text(s, in.p, len);
    }
    if (s->line_len + len > s->cfg.max_text_line)
        s->too_long = 1;
    if (!crlf)
        s->bare_lf = 1;
    s->line_len = 0;
    s->bol = 1;
    s->prev_crlf = crlf;
    pl_buf_consume(&s->in, len);
    return 1;
}

/* Processes one command line from s->in; 0 when more input is needed. */
static int cmd_step(struct pl_smtp *s)
{
    struct pl_str in = pl_buf_str(&s->in);
    const char *lf = memchr(in.p, '\n', in.len);
    if (s->skipping) {
        pl_buf_consume(&s->in, lf ? (size_t)(lf - in.p) + 1 : in.len);
        s->skipping = lf ? 0 : 1;
        return lf != NULL;
    }
    if (!lf) {
        if (in.len < s->cfg.max_line)
            return 0;
        /* RFC 5321 §4.5.3.1.4: "500 Line too long". */
        pl_buf_consume(&s->in, in.len);
        s->skipping = 1;
        client_error(s, 500, "5.5.2", "Line too long");
        return 1;
    }
    size_t len = (size_t)(lf - in.p) + 1;
    if (len > s->cfg.max_line) {
        pl_buf_consume(&s->in, len);
        client_error(s, 500, "5.5.2", "Line too long");
        return 1;
    }
    char line[len + 1];
    size_t n = len - 1;
    memcpy(line, in.p, n);
    if (n && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    pl_buf_consume(&s->in, len);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 && c != '\t') {
            client_error(s, 500, "5.5.2", "Control character in command");
            return 1;
        }
    }
    command(s, line);
    return 1;
}

static void run(struct pl_smtp *s)
{
    while (!s->done && !s->pending && !s->tls_wanted &&
           s->out.len < s->cfg.max_out && s->in.len > 0) {
        int progressed = s->state == S_DATA ? data_step(s) : cmd_step(s);
        if (!progressed)
            break;
    }
    if (s->done)
        pl_buf_reset(&s->in);
}

/* ---- API. */

struct pl_smtp *pl_smtp_new(const struct pl_smtp_config *cfg,
                            pl_smtp_event_fn *fn, void *data)
{
    struct pl_smtp *s = pl_calloc(1, sizeof(*s));
    s->cfg = *cfg;
    if (s->cfg.max_line < 64)
        s->cfg.max_line = 64;
    if (s->cfg.max_text_line < 64)
        s->cfg.max_text_line = 64;
    if (s->cfg.max_rcpts < 1)
        s->cfg.max_rcpts = 1;
    if (s->cfg.max_errors < 1)
        s->cfg.max_errors = 1;
    if (s->cfg.max_out < 1024)
        s->cfg.max_out = 1024;
    if (s->cfg.max_in < s->cfg.max_line + 65536)
        s->cfg.max_in = s->cfg.max_line + 65536;
    s->hostname = pl_strdup(cfg->hostname ? cfg->hostname : "localhost");
    s->peer = cfg->peer ? pl_strdup(cfg->peer) : NULL;
    s->cfg.hostname = s->hostname;
    s->cfg.peer = s->peer;
    s->fn = fn;
    s->data = data;
    s->rcpts = pl_calloc(s->cfg.max_rcpts, sizeof(*s->rcpts));
    s->notify = pl_calloc(s->cfg.max_rcpts, sizeof(*s->notify));
    s->orcpt = pl_calloc(s->cfg.max_rcpts, sizeof(*s->orcpt));
    s->replies = pl_calloc(s->cfg.max_rcpts, sizeof(*s->replies));
    /* The greeting carries no enhanced code (RFC 2034 §4). */
    pl_buf_printf(&s->out, "220 %s %s Parley\r\n", s->hostname,
                  s->cfg.proto == PL_SMTP_LMTP ? "LMTP" : "ESMTP");
    return s;
}

void pl_smtp_free(struct pl_smtp *s)
{
    if (!s)
        return;
    reset_transaction(s);
    pl_free(s->rcpts);
    pl_free(s->notify);
    pl_free(s->orcpt);
    pl_free(s->replies);
    pl_free(s->helo);
    pl_free(s->hostname);
    pl_free(s->peer);
    pl_buf_reset(&s->in);
    pl_buf_reset(&s->out);
    pl_buf_reset(&s->msg);
    pl_free(s);
}

void *pl_smtp_data(const struct pl_smtp *s)
{
    return s->data;
}

const struct pl_smtp_config *pl_smtp_config(const struct pl_smtp *s)
{
    return &s->cfg;
}

int pl_smtp_feed(struct pl_smtp *s, const char *p, size_t n)
{
    if (s->done)
        return PL_ECLOSED;
    if (s->tls_wanted) {
        /* Plaintext after STARTTLS, before the handshake: never run. */
        s->tls_discarded += n;
        return PL_OK;
    }
    if (n)
        pl_buf_append(&s->in, p, n);
    run(s);
    if (!s->done && s->in.len > s->cfg.max_in) {
        /* A client that pipelines far past what we answer (RFC 2920
         * §3.1 lets a server stop it). */
        reply(s, 421, "4.7.0", "Too much pipelined input, closing");
        s->done = 1;
        pl_buf_reset(&s->in);
    }
    return s->done ? PL_ECLOSED : PL_OK;
}

struct pl_str pl_smtp_output(const struct pl_smtp *s)
{
    return pl_buf_str(&s->out);
}

void pl_smtp_output_sent(struct pl_smtp *s, size_t n)
{
    if (n > s->out.len)
        n = s->out.len;
    pl_buf_consume(&s->out, n);
    if (s->out.len == 0)
        pl_buf_reset(&s->out);
    run(s);
}

int pl_smtp_wants_input(const struct pl_smtp *s)
{
    return !s->done && !s->pending && !s->tls_wanted &&
           s->out.len < s->cfg.max_out;
}

int pl_smtp_tls_wanted(const struct pl_smtp *s)
{
    return s->tls_wanted && !s->done;
}

void pl_smtp_tls_started(struct pl_smtp *s)
{
    /* RFC 3207 §4.2: forget what the client said before, even the
     * HELO/EHLO argument; the greeting is not repeated. */
    s->tls_wanted = 0;
    s->tls_active = 1;
    reset_transaction(s);
    pl_free(s->helo);
    s->helo = NULL;
    s->ehlo = 0;
    s->skipping = 0;
    s->state = S_CMD;
    pl_buf_reset(&s->in);
}

int pl_smtp_tls_active(const struct pl_smtp *s)
{
    return s->tls_active;
}

size_t pl_smtp_tls_discarded(const struct pl_smtp *s)
{
    return s->tls_discarded;
}

int pl_smtp_is_done(const struct pl_smtp *s)
{
    return s->done;
}

int pl_smtp_is_pending(const struct pl_smtp *s)
{
    return s->pending != 0;
}

int pl_smtp_resume(struct pl_smtp *s, const struct pl_smtp_reply *replies,
                   size_t n)
{
    if (!s->pending)
        return PL_EINVAL;
    int type = s->pending;
    s->pending = 0;
    const struct pl_smtp_reply *r = n ? replies : NULL;
    switch (type) {
    case PL_SMTP_EV_HELO: finish_helo(s, r); break;
    case PL_SMTP_EV_MAIL: finish_mail(s, r); break;
    case PL_SMTP_EV_RCPT: finish_rcpt(s, r); break;
    case PL_SMTP_EV_DATA: finish_data(s, replies, n); break;
    }
    if (!s->done)
        run(s);
    return PL_OK;
}

void pl_smtp_timeout(struct pl_smtp *s)
{
    if (s->done)
        return;
    reply(s, 421, "4.4.2", "Timeout, closing connection");
    s->done = 1;
    s->pending = 0;
    pl_buf_reset(&s->in);
}

void pl_smtp_shutdown(struct pl_smtp *s)
{
    if (s->done)
        return;
    reply(s, 421, "4.3.2", "Service shutting down, closing connection");
    s->done = 1;
    s->pending = 0;
    pl_buf_reset(&s->in);
}
