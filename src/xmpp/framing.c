/*
 * framing.c - XML stream framing shared by c2s, s2s and component
 * streams; see framing.h.
 *
 * The header's attribute order is fixed (namespace declarations, version,
 * xml:lang, id, from, to): XML does not care, but byte-exact tests and
 * captured traces do, so a new flag adds its attribute without moving the
 * others.
 */
#include "framing.h"

#include "conn.h"
#include "listen.h"
#include "random.h"
#include "stats.h"

#include <string.h>

static void attr(struct pl_buf *b, const char *name, const char *value)
{
    pl_buf_append_str(b, " ");
    pl_buf_append_str(b, name);
    pl_buf_append_str(b, "='");
    pl_buf_append_escaped(b, value, strlen(value), 1);
    pl_buf_append_str(b, "'");
}

void pl_stream_header(struct pl_buf *b, const char *content_ns,
                      const char *from, const char *to, const char *id,
                      unsigned flags)
{
    pl_buf_append_str(b, "<?xml version='1.0'?><stream:stream");
    attr(b, "xmlns", content_ns);
    pl_buf_append_str(b, " xmlns:stream='" PL_NS_STREAMS "'");
    if (flags & PL_STREAM_DIALBACK)
        pl_buf_append_str(b, " xmlns:db='jabber:server:dialback'");
    if (flags & PL_STREAM_V1)
        pl_buf_append_str(b, " version='1.0'");
    if (flags & PL_STREAM_LANG)
        pl_buf_append_str(b, " xml:lang='en'");
    if (id)
        attr(b, "id", id);
    if (from)
        attr(b, "from", from);
    if (to)
        attr(b, "to", to);
    pl_buf_append_str(b, ">");
}

void pl_stream_id(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    size_t k = (n - 1) / 2 < sizeof(raw) ? (n - 1) / 2 : sizeof(raw);
    pl_random(raw, k);
    for (size_t i = 0; i < k; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * k] = '\0';
}

int pl_stream_is_stanza(const struct pl_node *root, const char *content_ns)
{
    return strcmp(root->ns, content_ns) == 0 &&
           (strcmp(root->name, "message") == 0 ||
            strcmp(root->name, "presence") == 0 ||
            strcmp(root->name, "iq") == 0);
}

void pl_stream_error_xml(struct pl_buf *b, const char *cond, const char *text)
{
    pl_stream_error_elem(b, cond, text);
    pl_buf_append_str(b, "</stream:stream>");
}

void pl_stream_error_elem(struct pl_buf *b, const char *cond, const char *text)
{
    pl_stats_stream_error(cond);
    pl_buf_printf(b, "<stream:error><%s xmlns='" PL_NS_STREAM_ERRORS "'/>",
                  cond);
    if (text) {
        pl_buf_append_str(b, "<text xmlns='" PL_NS_STREAM_ERRORS
                             "' xml:lang='en'>");
        pl_buf_append_escaped(b, text, strlen(text), 0);
        pl_buf_append_str(b, "</text>");
    }
    pl_buf_append_str(b, "</stream:error>");
}

void pl_stream_refuse(struct pl_conn *conn, const char *content_ns,
                      const char *from, unsigned flags, int why)
{
    struct pl_buf b = {0};
    pl_stream_header(&b, content_ns, from, NULL, NULL, flags);
    int per_ip = why == PL_REFUSE_PER_IP;
    pl_stream_error_xml(&b, per_ip ? "policy-violation" : "resource-constraint",
                        per_ip ? "too many connections from your address"
                               : "server is full");
    pl_conn_write(conn, b.data + b.off, b.len);
    pl_buf_reset(&b);
    pl_stat_inc(stream_errors);
}

/*
 * Whether the start tag that follows the element's name (pieces v[0..n),
 * from byte k of v[0]) declares attr ("xmlns" or "xmlns:stream"), values
 * skipped by their quotes.
 */
static int declares(const struct pl_str *v, int n, size_t k, const char *attr)
{
    size_t al = strlen(attr);
    char quote = 0;
    int in_name = 0; /* reading an attribute's name */
    int same = 0;    /* ...and it is attr so far */
    int named = 0;   /* the last name read was attr (before '=') */
    size_t nl = 0;
    for (int i = 0; i < n; i++) {
        for (size_t j = i == 0 ? k : 0; j < v[i].len; j++) {
            char ch = v[i].p[j];
            if (quote) {
                if (ch == quote)
                    quote = 0;
            } else if (ch == '\'' || ch == '"') {
                quote = ch;
                in_name = named = 0;
            } else if (ch == '>') {
                return 0;
            } else if (ch == '=') {
                if (in_name ? same && nl == al : named)
                    return 1;
                in_name = named = 0;
            } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' ||
                       ch == '/') {
                if (in_name)
                    named = same && nl == al;
                in_name = 0;
            } else {
                if (!in_name) {
                    in_name = 1;
                    same = 1;
                    nl = 0;
                }
                if (nl >= al || attr[nl] != ch)
                    same = 0;
                nl++;
            }
        }
    }
    return 0;
}

const char *pl_stream_standalone_ns(const struct pl_str *v, int n, size_t *k)
{
    /* The name: v[0] from byte 1 to the first ' ', '/' or '>'. */
    size_t e = 1;
    while (e < v[0].len && v[0].p[e] != ' ' && v[0].p[e] != '/' &&
           v[0].p[e] != '>')
        e++;
    *k = e;
    struct pl_str name = {v[0].p + 1, e - 1};
    if (name.len > 7 && memcmp(name.p, "stream:", 7) == 0) {
        if (!declares(v, n, e, "xmlns:stream"))
            return " xmlns:stream='" PL_NS_STREAMS "'";
    } else if (pl_str_eq_c(name, "message") || pl_str_eq_c(name, "presence") ||
               pl_str_eq_c(name, "iq")) {
        if (!declares(v, n, e, "xmlns"))
            return " xmlns='" PL_NS_CLIENT "'";
    }
    return "";
}
