/*
 * metalink.c - the Metalink 4 document of one file (RFC 5854), as
 * parleyd serves it next to the file (media.h, doc/media.md):
 *
 *   <?xml version="1.0" encoding="UTF-8"?>
 *   <metalink xmlns="urn:ietf:params:xml:ns:metalink">
 *     <generator>Parley/VERSION</generator>
 *     <origin dynamic="true">URL.meta4</origin>
 *     <published>2026-12-07T02:21:27Z</published>
 *     <file name="NAME">
 *       <size>BYTES</size>
 *       <hash type="sha-256">HEX</hash>
 *       <pieces length="BYTES" type="sha-256">
 *         <hash>HEX</hash>...      one per piece, in file order
 *       </pieces>
 *       <url priority="1">URL</url>...
 *       <wait xmlns="urn:parley:media:0"/>   only to a download that
 *                                   named a seat: wait for peers
 *     </file>
 *   </metalink>
 *
 * Each element is the one of its name in RFC 5854 §4.2; hash values are
 * lowercase hex, as metalink:hash has them.  "origin" is dynamic because
 * the sources change as peers come and go: a client may fetch it again.
 * Sources are written in the order given, each with its priority.
 *
 * Extending: another element of <file> is a line in pl_media_metalink
 * (the schema allows any order).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/version.h"
#include "media/media.h"

static void text(struct pl_buf *b, const char *s, int attr)
{
    pl_buf_append_escaped(b, s, strlen(s), attr);
}

void pl_media_metalink(const struct pl_media_info *m, struct pl_buf *out)
{
    char hex[2 * PL_MEDIA_HASH_LEN + 1], stamp[32];
    struct tm tm;
    time_t t = (time_t)m->published;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    pl_buf_append_str(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                           "<metalink xmlns=\"urn:ietf:params:xml:ns:"
                           "metalink\">\n");
    pl_buf_printf(out, "  <generator>Parley/%s</generator>\n", PL_VERSION);
    if (m->origin) {
        pl_buf_append_str(out, "  <origin dynamic=\"true\">");
        text(out, m->origin, 0);
        pl_buf_append_str(out, "</origin>\n");
    }
    pl_buf_printf(out, "  <published>%s</published>\n", stamp);
    pl_buf_append_str(out, "  <file name=\"");
    text(out, m->name, 1);
    pl_buf_printf(out, "\">\n    <size>%llu</size>\n",
                  (unsigned long long)m->size);
    pl_media_hex(m->sha256, PL_MEDIA_HASH_LEN, hex);
    pl_buf_printf(out, "    <hash type=\"sha-256\">%s</hash>\n", hex);
    if (m->piece_size && m->npieces && m->pieces) {
        pl_buf_printf(out, "    <pieces length=\"%lu\" type=\"sha-256\">\n",
                      (unsigned long)m->piece_size);
        for (uint64_t i = 0; i < m->npieces; i++) {
            pl_media_hex(m->pieces + i * PL_MEDIA_HASH_LEN, PL_MEDIA_HASH_LEN,
                         hex);
            pl_buf_printf(out, "      <hash>%s</hash>\n", hex);
        }
        pl_buf_append_str(out, "    </pieces>\n");
    }
    for (size_t i = 0; i < m->nsources; i++) {
        int pri = m->sources[i].priority;
        pl_buf_printf(out, "    <url priority=\"%d\">",
                      pri < 1        ? 1
                      : pri > 999999 ? 999999
                                     : pri);
        text(out, m->sources[i].url, 0);
        pl_buf_append_str(out, "</url>\n");
    }
    /* Foreign markup (RFC 5854 §6): Metalink clients skip it. */
    if (m->wait)
        pl_buf_append_str(out, "    <wait xmlns=\"urn:parley:media:0\"/>\n");
    pl_buf_append_str(out, "  </file>\n</metalink>\n");
}
