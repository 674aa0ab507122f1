/*
 * fuzz_mime.c - libFuzzer target for e-mail parsing (src/gateway/mail/
 * mime.c: pl_mail_parse on GMime, pl_mail_html_to_text).
 *
 * Input: a raw message (any bytes).  The first byte also picks small
 * limits (bit 0) so that the limit paths are reached.
 *
 * Invariants checked (abort() on violation):
 * - pl_mail_parse gives PL_OK, PL_EINVAL or PL_ELIMIT, and sets *out only
 *   on PL_OK;
 * - every string of the result is valid UTF-8 (text never NULL);
 * - the attachments respect the limits (count, total bytes), and the text
 *   is at most max_text bytes;
 * - the HTML converter's output (the input taken as HTML) is valid UTF-8
 *   when its input is, and converting its own output again (as text with
 *   no markup but entities) does not crash.
 *
 * Extending: add checks in check_msg().
 */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/mail/mime.h"
#include "log.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_mime: invariant violated: %s\n", what);
    abort();
}

static void utf8(const char *s, const char *what)
{
    if (s && !g_utf8_validate(s, -1, NULL))
        die(what);
}

static void check_msg(const struct pl_mail_msg *m,
                      const struct pl_mail_limits *l)
{
    if (!m->text)
        die("text is NULL");
    utf8(m->text, "text is not UTF-8");
    utf8(m->from, "from is not UTF-8");
    utf8(m->from_name, "from_name is not UTF-8");
    utf8(m->subject, "subject is not UTF-8");
    utf8(m->message_id, "message_id is not UTF-8");
    utf8(m->in_reply_to, "in_reply_to is not UTF-8");
    for (size_t i = 0; i < m->nto; i++)
        utf8(m->to[i], "a To address is not UTF-8");
    if (strlen(m->text) > l->max_text)
        die("text over max_text");
    if (m->natt > l->max_attachments)
        die("more attachments than max_attachments");
    size_t total = 0;
    for (size_t i = 0; i < m->natt; i++) {
        if (!m->att[i].name || !m->att[i].type || !m->att[i].data)
            die("attachment without name, type or data");
        utf8(m->att[i].name, "attachment name is not UTF-8");
        total += m->att[i].len;
    }
    if (total > l->max_attachment_bytes)
        die("attachments over max_attachment_bytes");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_log_set_level(PL_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = pl_malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);
    struct pl_str in = {size ? buf : NULL, size};
    struct pl_mail_limits l;
    pl_mail_limits_default(&l);
    if (size && (data[0] & 1)) {
        l.max_attachments = 2;
        l.max_attachment_bytes = 64;
        l.max_depth = 2;
        l.max_text = 50;
    }
    struct pl_mail_msg *m = NULL;
    int rc = pl_mail_parse(in, &l, &m);
    if (rc != PL_OK && rc != PL_EINVAL && rc != PL_ELIMIT)
        die("unexpected error code");
    if ((rc == PL_OK) != (m != NULL))
        die("out parameter and result disagree");
    if (m) {
        check_msg(m, &l);
        pl_mail_msg_free(m);
    }

    struct pl_buf t = {0};
    pl_mail_html_to_text(in, &t);
    if (g_utf8_validate(buf, (gssize)size, NULL) && !memchr(buf, 0, size) &&
        !g_utf8_validate(pl_buf_str(&t).p ? pl_buf_str(&t).p : "",
                         (gssize)t.len, NULL))
        die("HTML to text broke UTF-8");
    struct pl_buf t2 = {0};
    pl_mail_html_to_text(pl_buf_str(&t), &t2);
    pl_buf_reset(&t);
    pl_buf_reset(&t2);
    pl_free(buf);
    return 0;
}
