/*
 * dsn.c - RFC 3464 delivery status notifications; see dsn.h.
 *
 * Building: the three parts are made with GMime and the report's fields
 * written by hand (GMime has no class for them).  Parsing: GMime finds
 * the message/delivery-status part; its body is groups of header-like
 * fields separated by blank lines (RFC 3464 §2.1), read by fields().
 */
#include "gateway/mail/dsn.h"

#include <gmime/gmime.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "gateway/mail/mime.h"

static const char *const action_names[] = {
    NULL, "failed", "delayed", "delivered", "relayed", "expanded",
};

const char *pl_dsn_action_name(int action)
{
    if (action < PL_DSN_FAILED || action > PL_DSN_EXPANDED)
        return NULL;
    return action_names[action];
}

int pl_dsn_action_parse(const char *s)
{
    for (int i = PL_DSN_FAILED; i <= PL_DSN_EXPANDED; i++)
        if (s && strcasecmp(s, action_names[i]) == 0)
            return i;
    return 0;
}

/* class "." 1*3digit "." 1*3digit, class 2, 4 or 5 (RFC 3464 §2.3.4). */
static int is_status(const char *s)
{
    if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    s += 2;
    for (int part = 0; part < 2; part++) {
        int d = 0;
        while (*s >= '0' && *s <= '9' && d < 4)
            s++, d++;
        if (!d || d > 3 || *s != (part ? '\0' : '.'))
            return 0;
        s++;
    }
    return 1;
}

/* A field value: no CR/LF (which would start a new field). */
static int clean(const char *s)
{
    return !s || !strpbrk(s, "\r\n");
}

static int has_8bit(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 1;
    return 0;
}

static void put_date(GString *g, const char *name, time_t t)
{
    GDateTime *dt = g_date_time_new_from_unix_utc(t);
    char *s = g_mime_utils_header_format_date(dt);
    g_string_append_printf(g, "%s: %s\r\n", name, s);
    g_free(s);
    g_date_time_unref(dt);
}

static GMimePart *text_part(const char *subtype, const char *text)
{
    GMimeTextPart *t = g_mime_text_part_new_with_subtype(subtype);
    g_mime_text_part_set_text(t, text);
    g_mime_part_set_content_encoding(
        GMIME_PART(t),
        g_mime_part_get_best_content_encoding(GMIME_PART(t),
                                              GMIME_ENCODING_CONSTRAINT_7BIT));
    return GMIME_PART(t);
}

/* The original's header section (up to the first empty line), 64 KiB. */
static char *header_section(struct pl_str m)
{
    size_t n = 0;
    while (n < m.len) {
        const char *lf = memchr(m.p + n, '\n', m.len - n);
        size_t end = lf ? (size_t)(lf - m.p) + 1 : m.len;
        size_t linelen = end - n;
        if (linelen == 1 || (linelen == 2 && m.p[n] == '\r'))
            break;
        n = end;
    }
    if (n > 65536)
        n = 65536;
    gchar *v = g_utf8_make_valid(m.p ? m.p : "", (gssize)n);
    char *r = pl_strdup(v);
    g_free(v);
    return r;
}

int pl_dsn_build(const struct pl_dsn *d, struct pl_buf *out, char **message_id)
{
    if (!d->nrcpts || !d->rcpts || !d->from || !d->to || !d->reporting_mta ||
        !clean(d->reporting_mta) || !clean(d->envelope_id))
        return PL_EINVAL;
    int global = has_8bit(d->reporting_mta) || has_8bit(d->envelope_id);
    int worst = PL_DSN_DELIVERED;
    for (size_t i = 0; i < d->nrcpts; i++) {
        const struct pl_dsn_rcpt *r = &d->rcpts[i];
        if (!r->final_recipient || !pl_dsn_action_name(r->action) ||
            !is_status(r->status) || !clean(r->final_recipient) ||
            !clean(r->original_recipient) || !clean(r->remote_mta) ||
            !clean(r->diagnostic))
            return PL_EINVAL;
        global |= has_8bit(r->final_recipient) ||
                  has_8bit(r->original_recipient) || has_8bit(r->diagnostic);
        if (r->action == PL_DSN_FAILED)
            worst = PL_DSN_FAILED;
        else if (r->action == PL_DSN_DELAYED && worst != PL_DSN_FAILED)
            worst = PL_DSN_DELAYED;
    }
    pl__mail_gmime_init();

    /* The machine-readable part (RFC 3464 §2.2, §2.3). */
    GString *f = g_string_new(NULL);
    g_string_append_printf(f, "Reporting-MTA: dns; %s\r\n", d->reporting_mta);
    if (d->envelope_id)
        g_string_append_printf(f, "Original-Envelope-Id: %s\r\n",
                               d->envelope_id);
    if (d->arrival)
        put_date(f, "Arrival-Date", d->arrival);
    for (size_t i = 0; i < d->nrcpts; i++) {
        const struct pl_dsn_rcpt *r = &d->rcpts[i];
        const char *type = global ? "utf-8" : "rfc822";
        g_string_append(f, "\r\n");
        if (r->original_recipient)
            g_string_append_printf(f, "Original-Recipient: %s; %s\r\n", type,
                                   r->original_recipient);
        g_string_append_printf(f, "Final-Recipient: %s; %s\r\n", type,
                               r->final_recipient);
        g_string_append_printf(f, "Action: %s\r\n",
                               pl_dsn_action_name(r->action));
        g_string_append_printf(f, "Status: %s\r\n", r->status);
        if (r->remote_mta)
            g_string_append_printf(f, "Remote-MTA: %s\r\n", r->remote_mta);
        if (r->diagnostic)
            g_string_append_printf(f, "Diagnostic-Code: %s\r\n", r->diagnostic);
        if (r->last_attempt)
            put_date(f, "Last-Attempt-Date", r->last_attempt);
        if (r->will_retry_until)
            put_date(f, "Will-Retry-Until", r->will_retry_until);
    }

    /* The human-readable part. */
    GString *h = g_string_new(NULL);
    if (d->text) {
        g_string_append(h, d->text);
    } else {
        g_string_append_printf(h, "This is the mail gateway at %s.\n\n",
                               d->reporting_mta);
        g_string_append(h, worst == PL_DSN_FAILED
                               ? "Your message could not be delivered to:\n"
                           : worst == PL_DSN_DELAYED
                               ? "Your message has not been delivered yet "
                                 "to the following; delivery will be "
                                 "retried:\n"
                               : "Your message was delivered to:\n");
        for (size_t i = 0; i < d->nrcpts; i++)
            g_string_append_printf(h, "  %s: %s (%s)%s%s\n",
                                   d->rcpts[i].final_recipient,
                                   pl_dsn_action_name(d->rcpts[i].action),
                                   d->rcpts[i].status,
                                   d->rcpts[i].diagnostic ? "\n    " : "",
                                   d->rcpts[i].diagnostic
                                       ? d->rcpts[i].diagnostic
                                       : "");
    }

    GMimeMultipart *mp = g_mime_multipart_new_with_subtype("report");
    g_mime_object_set_content_type_parameter(GMIME_OBJECT(mp), "report-type",
                                             "delivery-status");
    GMimePart *human = text_part("plain", h->str);
    g_mime_multipart_add(mp, GMIME_OBJECT(human));
    g_object_unref(human);

    GMimePart *ds = g_mime_part_new_with_type("message",
                                              global ? "global-delivery-status"
                                                     : "delivery-status");
    GMimeStream *fs = g_mime_stream_mem_new_with_buffer(f->str, f->len);
    GMimeDataWrapper *dw =
        g_mime_data_wrapper_new_with_stream(fs, GMIME_CONTENT_ENCODING_DEFAULT);
    g_mime_part_set_content(ds, dw);
    if (global)
        g_mime_part_set_content_encoding(ds, GMIME_CONTENT_ENCODING_8BIT);
    g_object_unref(dw);
    g_object_unref(fs);
    g_mime_multipart_add(mp, GMIME_OBJECT(ds));
    g_object_unref(ds);

    char *hdrs = NULL;
    if (d->original.len) {
        hdrs = header_section(d->original);
        GMimePart *orig = text_part("rfc822-headers", hdrs);
        g_mime_multipart_add(mp, GMIME_OBJECT(orig));
        g_object_unref(orig);
    }

    GMimeMessage *msg = g_mime_message_new(TRUE);
    g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_FROM,
                               "Mail Delivery System", d->from);
    g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, "", d->to);
    g_mime_message_set_subject(msg,
                               worst == PL_DSN_FAILED
                                   ? "Delivery Status Notification (Failure)"
                               : worst == PL_DSN_DELAYED
                                   ? "Delivery Status Notification (Delay)"
                                   : "Delivery Status Notification (Success)",
                               NULL);
    GDateTime *date = d->date ? g_date_time_new_from_unix_utc(d->date)
                              : g_date_time_new_now_utc();
    g_mime_message_set_date(msg, date);
    g_date_time_unref(date);
    char *id = g_mime_utils_generate_message_id(
        d->id_domain ? d->id_domain : d->reporting_mta);
    g_mime_message_set_message_id(msg, id);
    g_mime_object_set_header(GMIME_OBJECT(msg), "Auto-Submitted",
                             "auto-replied", NULL);
    g_mime_message_set_mime_part(msg, GMIME_OBJECT(mp));
    g_object_unref(mp);

    GMimeFormatOptions *fo = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
    GMimeStream *s = g_mime_stream_mem_new();
    g_mime_object_write_to_stream(GMIME_OBJECT(msg), fo, s);
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
    pl_buf_append(out, ba->data, ba->len);
    g_object_unref(s);
    g_mime_format_options_free(fo);
    g_object_unref(msg);
    g_string_free(f, TRUE);
    g_string_free(h, TRUE);
    pl_free(hdrs);
    if (message_id)
        *message_id = pl_strdup(id);
    g_free(id);
    return PL_OK;
}

/* ---- Parsing. */

/* "type; value" -> value, trimmed (pl_strdup); the whole if no ';'. */
static char *typed_value(const char *v, int strip_type)
{
    const char *semi = strip_type ? strchr(v, ';') : NULL;
    if (semi)
        v = semi + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return pl_strndup(v, n);
}

/*
 * Calls fn for each field of each group of the body (groups separated
 * by blank lines; folded lines joined).  group counts from 0.
 */
typedef void field_fn(void *ctx, int group, const char *name,
                      const char *value);

static void fields(const char *p, size_t n, field_fn *fn, void *ctx)
{
    int group = 0, in_group = 0;
    GString *line = g_string_new(NULL);
    size_t i = 0;
    while (i <= n) {
        const char *lf = i < n ? memchr(p + i, '\n', n - i) : NULL;
        size_t end = lf ? (size_t)(lf - p) : n;
        size_t len = end - i;
        if (len && p[i + len - 1] == '\r')
            len--;
        int blank = len == 0;
        int cont = !blank && (p[i] == ' ' || p[i] == '\t');
        if (!cont && line->len) {
            char *colon = strchr(line->str, ':');
            if (colon) {
                *colon = '\0';
                fn(ctx, group, line->str, colon + 1);
            }
            g_string_truncate(line, 0);
        }
        if (blank) {
            if (in_group)
                group++;
            in_group = 0;
        } else {
            g_string_append_len(line, p + i, (gssize)len);
            in_group = 1;
        }
        if (!lf)
            break;
        i = end + 1;
    }
    if (line->len) {
        char *colon = strchr(line->str, ':');
        if (colon) {
            *colon = '\0';
            fn(ctx, group, line->str, colon + 1);
        }
    }
    g_string_free(line, TRUE);
}

struct parse_ctx {
    struct pl_dsn_report *r;
    int first_group; /* the per-message group's index (0) */
    int last_group;  /* the group of the last recipient added */
};

static void on_field(void *data, int group, const char *name, const char *value)
{
    struct parse_ctx *c = data;
    struct pl_dsn_report *r = c->r;
    if (group == 0) {
        if (strcasecmp(name, "Reporting-MTA") == 0 && !r->reporting_mta)
            r->reporting_mta = typed_value(value, 1);
        else if (strcasecmp(name, "Original-Envelope-Id") == 0 &&
                 !r->envelope_id)
            r->envelope_id = typed_value(value, 0);
        else if (strcasecmp(name, "Arrival-Date") == 0 && !r->arrival_date)
            r->arrival_date = typed_value(value, 0);
        return;
    }
    if (group != c->last_group) {
        if (r->nrcpts >= 1000)
            return;
        r->rcpts = pl_realloc(r->rcpts, (r->nrcpts + 1) * sizeof(*r->rcpts));
        memset(&r->rcpts[r->nrcpts], 0, sizeof(*r->rcpts));
        r->nrcpts++;
        c->last_group = group;
    }
    struct pl_dsn_report_rcpt *x = &r->rcpts[r->nrcpts - 1];
    if (strcasecmp(name, "Final-Recipient") == 0 && !x->final_recipient) {
        x->final_recipient = typed_value(value, 1);
    } else if (strcasecmp(name, "Original-Recipient") == 0 &&
               !x->original_recipient) {
        x->original_recipient = typed_value(value, 1);
    } else if (strcasecmp(name, "Action") == 0) {
        char *a = typed_value(value, 0);
        /* "failed (comment)" is allowed: take the first word. */
        a[strcspn(a, " \t(")] = '\0';
        x->action = pl_dsn_action_parse(a);
        pl_free(a);
    } else if (strcasecmp(name, "Status") == 0 && !x->status) {
        x->status = typed_value(value, 0);
        x->status[strcspn(x->status, " \t(")] = '\0';
    } else if (strcasecmp(name, "Remote-MTA") == 0 && !x->remote_mta) {
        x->remote_mta = typed_value(value, 0);
    } else if (strcasecmp(name, "Diagnostic-Code") == 0 && !x->diagnostic) {
        x->diagnostic = typed_value(value, 0);
    }
}

static GByteArray *leaf_bytes(GMimeObject *o, GMimeStream **keep)
{
    GMimeStream *s = g_mime_stream_mem_new();
    *keep = s;
    if (GMIME_IS_PART(o)) {
        GMimeDataWrapper *dw = g_mime_part_get_content(GMIME_PART(o));
        if (dw)
            g_mime_data_wrapper_write_to_stream(dw, s);
    } else if (GMIME_IS_MESSAGE_PART(o)) {
        GMimeMessage *m = g_mime_message_part_get_message(
            GMIME_MESSAGE_PART(o));
        if (m)
            g_mime_object_write_to_stream(GMIME_OBJECT(m), NULL, s);
    }
    return g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
}

int pl_dsn_parse(struct pl_str raw, struct pl_dsn_report **out)
{
    pl__mail_gmime_init();
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(raw.p ? raw.p : "",
                                                       raw.len);
    GMimeParser *parser = g_mime_parser_new_with_stream(s);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    g_object_unref(s);
    if (!msg)
        return PL_EINVAL;
    int rc = PL_EINVAL;
    struct pl_dsn_report *r = NULL;
    GMimeObject *top = g_mime_message_get_mime_part(msg);
    GMimeContentType *ct = top ? g_mime_object_get_content_type(top) : NULL;
    const char *rt = ct ? g_mime_content_type_get_parameter(ct, "report-type")
                        : NULL;
    if (!GMIME_IS_MULTIPART(top) ||
        !g_mime_content_type_is_type(ct, "multipart", "report") || !rt ||
        strcasecmp(rt, "delivery-status") != 0)
        goto done;
    GMimeMultipart *mp = GMIME_MULTIPART(top);
    r = pl_calloc(1, sizeof(*r));
    int found = 0;
    for (int i = 0; i < g_mime_multipart_get_count(mp); i++) {
        GMimeObject *part = g_mime_multipart_get_part(mp, i);
        GMimeContentType *pct = g_mime_object_get_content_type(part);
        GMimeStream *keep = NULL;
        if (g_mime_content_type_is_type(pct, "message", "delivery-status") ||
            g_mime_content_type_is_type(pct, "message",
                                        "global-delivery-status")) {
            if (found++)
                continue;
            GByteArray *ba = leaf_bytes(part, &keep);
            struct parse_ctx c = {r, 0, 0};
            fields((const char *)ba->data, ba->len, on_field, &c);
            g_object_unref(keep);
        } else if (g_mime_content_type_is_type(pct, "text", "rfc822-headers") ||
                   g_mime_content_type_is_type(pct, "message", "rfc822")) {
            GByteArray *ba = leaf_bytes(part, &keep);
            GMimeStream *hs =
                g_mime_stream_mem_new_with_buffer((const char *)ba->data,
                                                  ba->len);
            GMimeParser *hp = g_mime_parser_new_with_stream(hs);
            GMimeMessage *om = g_mime_parser_construct_message(hp, NULL);
            if (om) {
                const char *mid = g_mime_message_get_message_id(om);
                if (mid && !r->original_message_id)
                    r->original_message_id = pl_strdup(mid);
                g_object_unref(om);
            }
            g_object_unref(hp);
            g_object_unref(hs);
            g_object_unref(keep);
        }
    }
    if (!found || r->nrcpts == 0)
        goto done;
    rc = PL_OK;
    *out = r;
    r = NULL;
done:
    pl_dsn_report_free(r);
    g_object_unref(msg);
    return rc;
}

void pl_dsn_report_free(struct pl_dsn_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nrcpts; i++) {
        pl_free(r->rcpts[i].final_recipient);
        pl_free(r->rcpts[i].original_recipient);
        pl_free(r->rcpts[i].status);
        pl_free(r->rcpts[i].remote_mta);
        pl_free(r->rcpts[i].diagnostic);
    }
    pl_free(r->rcpts);
    pl_free(r->reporting_mta);
    pl_free(r->envelope_id);
    pl_free(r->arrival_date);
    pl_free(r->original_message_id);
    pl_free(r);
}
