/*
 * fuzz_pidf.c - libFuzzer target for PIDF/RPID documents (src/sip/pidf.c).
 *
 * Input: the body of a SIP PUBLISH or NOTIFY, any bytes (a peer sends
 * what it likes with Content-Type: application/pidf+xml).
 *
 * Invariants checked (abort() on violation):
 * - pl_pidf_parse() returns PL_OK, PL_EINVAL or PL_ELIMIT, and leaves its
 *   out-parameter alone on failure;
 * - an accepted document gives a consistent struct: basic and show in
 *   range, a show only when open, priority -1..127, a note of valid UTF-8,
 *   at most PL_PIDF_MAX_NOTE bytes, without surrounding whitespace, a
 *   note_lang only with a note;
 * - pl_pidf_to_presence() of it yields a stanza (never NULL) whose type
 *   and children say the same;
 * - what Parley writes for that state (pl_pidf_write()) parses back to
 *   the same state (none becomes closed), and the written document is
 *   within the default limits, so a NOTIFY that Parley sends is one it
 *   would accept.
 *
 * Extending: add checks in check_state().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistr.h>

#include "alloc.h"
#include "error.h"
#include "jid.h"
#include "log.h"
#include "sip/pidf.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_pidf: invariant violated: %s\n", what);
    fprintf(stderr, "  %s\n", detail ? detail : "(null)");
    abort();
}

static int streq(const char *a, const char *b)
{
    return !a || !b ? a == b : strcmp(a, b) == 0;
}

static void check_state(const struct pl_pidf *p)
{
    if (p->basic != PL_PIDF_NONE && p->basic != PL_PIDF_OPEN &&
        p->basic != PL_PIDF_CLOSED)
        die("basic out of range", NULL);
    if (p->show < PL_SHOW_DND || p->show > PL_SHOW_CHAT)
        die("show out of range", NULL);
    if (p->show != PL_SHOW_NONE && p->basic != PL_PIDF_OPEN)
        die("a show without open status", pl_show_name(p->show));
    if (p->priority < -1 || p->priority > 127)
        die("priority out of range", NULL);
    if (p->note_lang && !p->note)
        die("note_lang without note", p->note_lang);
    if (p->note) {
        size_t n = strlen(p->note);
        if (n == 0 || n > PL_PIDF_MAX_NOTE)
            die("note length", p->note);
        if (u8_check((const uint8_t *)p->note, n))
            die("note is not UTF-8", p->note);
        if (strchr(" \t\r\n", p->note[0]) || strchr(" \t\r\n", p->note[n - 1]))
            die("note not trimmed", p->note);
    }
}

static void check_presence(const struct pl_pidf *p, struct pl_jid *from)
{
    struct pl_stanza *st = pl_pidf_to_presence(p, from->full, NULL);
    if (!st)
        die("pl_pidf_to_presence refused a parsed state", p->note);
    const char *type = pl_stanza_attr(st, "type");
    if ((p->basic == PL_PIDF_OPEN) != (type == NULL))
        die("presence type disagrees with basic", type);
    struct pl_node *root = pl_stanza_root(st);
    struct pl_node *show = pl_node_child(root, "show", PL_NS_CLIENT);
    const char *sv = show ? pl_node_text(st, show, NULL) : NULL;
    if (!streq(sv, pl_show_name(p->show)))
        die("presence show disagrees", sv);
    struct pl_node *status = pl_node_child(root, "status", PL_NS_CLIENT);
    const char *tv = status ? pl_node_text(st, status, NULL) : NULL;
    /* The XML parser turns CR into LF; a note has none after parsing. */
    if (!streq(tv, p->note))
        die("presence status disagrees", tv);
    (void)pl_stanza_serialize(st, PL_NS_CLIENT);
    pl_stanza_unref(st);
}

static void check_round_trip(const struct pl_pidf *p, struct pl_jid *from)
{
    struct pl_pidf_tuple t = {from, p};
    struct pl_buf b = {0};
    if (pl_pidf_write(from, &t, 1, &b) != PL_OK)
        die("pl_pidf_write failed", from->full);
    if (b.len > PL_PIDF_MAX_SIZE)
        die("written document over the size limit", NULL);
    struct pl_pidf q;
    int rc = pl_pidf_parse(pl_buf_str(&b), NULL, &q);
    if (rc != PL_OK)
        die("written document does not parse", pl_buf_cstr(&b));
    enum pl_pidf_basic want = p->basic == PL_PIDF_OPEN ? PL_PIDF_OPEN
                                                       : PL_PIDF_CLOSED;
    if (q.basic != want || q.show != p->show || q.priority != p->priority ||
        !streq(q.note, p->note))
        die("round trip changed the state", pl_buf_cstr(&b));
    pl_pidf_clear(&q);
    pl_buf_reset(&b);
}

static struct pl_jid *from_jid;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_log_set_level(PL_LOG_ERROR);
    if (pl_jid_parse(PL_STR("romeo@example.net/dr4hcr0st3lup4c"), &from_jid) !=
        PL_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so ASan sees any overread. */
    char *buf = pl_malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);
    struct pl_str in = {size ? buf : NULL, size};

    struct pl_pidf p;
    memset(&p, 0x5a, sizeof(p));
    int rc = pl_pidf_parse(in, NULL, &p);
    if (rc == PL_OK) {
        check_state(&p);
        check_presence(&p, from_jid);
        check_round_trip(&p, from_jid);
        pl_pidf_clear(&p);
    } else if (rc == PL_EINVAL || rc == PL_ELIMIT) {
        const unsigned char *q = (const unsigned char *)&p;
        for (size_t i = 0; i < sizeof(p); i++)
            if (q[i] != 0x5a)
                die("out parameter touched on failure", NULL);
    } else {
        die("unexpected error code", pl_strerror(rc));
    }
    /* The Content-Type check sees the same bytes. */
    rc = pl_pidf_check_type(in);
    if (rc != PL_OK && rc != PL_ENOT_ACCEPTABLE)
        die("pl_pidf_check_type: unexpected code", pl_strerror(rc));

    pl_free(buf);
    return 0;
}
