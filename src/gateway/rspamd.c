/*
 * rspamd.c - the rspamd client of parley-gateway (rspamd.h): a POST to
 * /checkv2 with libcurl, and the JSON answer parsed with jansson.
 *
 * The request fields (rspamd's HTTP protocol) carry what rspamd cannot
 * read from the message: From and Rcpt (the envelope), Helo, IP,
 * Queue-Id.  "Pass: all" is not sent: rspamd's own settings decide which
 * rules run.  The timeout covers the whole request; a reply that is not
 * 200 with a parseable object is an error (the caller's policy decides
 * what an unreachable checker means, check.c).
 */
#include "gateway/rspamd.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"

static const char *const action_names[] = {
    "no action",       "greylist",    "add header",
    "rewrite subject", "soft reject", "reject",
};

const char *pl_rspamd_action_name(int action)
{
    if (action < 0 ||
        (size_t)action >= sizeof(action_names) / sizeof(action_names[0]))
        return NULL;
    return action_names[action];
}

struct sym {
    const char *name;
    double score;
};

static int by_score(const void *a, const void *b)
{
    const struct sym *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return strcmp(x->name, y->name);
}

int pl_rspamd_parse(const char *json, size_t len, struct pl_rspamd_result *out)
{
    memset(out, 0, sizeof(*out));
    json_error_t e;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &e);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return PL_EINVAL;
    }
    json_t *act = json_object_get(root, "action");
    json_t *score = json_object_get(root, "score");
    int a = -1;
    for (size_t i = 0; json_is_string(act) &&
                       i < sizeof(action_names) / sizeof(action_names[0]);
         i++)
        if (strcmp(json_string_value(act), action_names[i]) == 0)
            a = (int)i;
    if (a < 0 || !json_is_number(score)) {
        json_decref(root);
        return PL_EINVAL;
    }
    out->action = a;
    out->score = json_number_value(score);
    json_t *req = json_object_get(root, "required_score");
    out->required = json_is_number(req) ? json_number_value(req) : 0;
    out->skipped = json_is_true(json_object_get(root, "is_skipped"));
    json_t *msgs = json_object_get(root, "messages");
    json_t *smtp = json_is_object(msgs) ? json_object_get(msgs, "smtp_message")
                                        : NULL;
    if (json_is_string(smtp))
        snprintf(out->message, sizeof(out->message), "%s",
                 json_string_value(smtp));
    json_t *subj = json_object_get(root, "subject");
    if (a == PL_RSPAMD_REWRITE_SUBJECT && json_is_string(subj))
        out->subject = pl_strdup(json_string_value(subj));
    json_t *syms = json_object_get(root, "symbols");
    size_t n = json_is_object(syms) ? json_object_size(syms) : 0;
    if (n) {
        struct sym *v = pl_calloc(n, sizeof(*v));
        size_t k = 0;
        const char *key;
        json_t *val;
        json_object_foreach(syms, key, val)
        {
            json_t *s = json_is_object(val) ? json_object_get(val, "score")
                                            : NULL;
            v[k].name = key;
            v[k++].score = json_is_number(s) ? json_number_value(s) : 0;
        }
        qsort(v, k, sizeof(*v), by_score);
        size_t off = 0;
        for (size_t i = 0; i < k && off < sizeof(out->symbols); i++) {
            int w = snprintf(out->symbols + off, sizeof(out->symbols) - off,
                             "%s%s", i ? "," : "", v[i].name);
            if (w < 0 || (size_t)w >= sizeof(out->symbols) - off) {
                out->symbols[off] = '\0'; /* whole names only */
                break;
            }
            off += (size_t)w;
        }
        pl_free(v);
    }
    json_decref(root);
    return PL_OK;
}

void pl_rspamd_result_free(struct pl_rspamd_result *r)
{
    pl_free(r->subject);
    r->subject = NULL;
}

/* ---- the request ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

#define MAX_ANSWER (1 << 20)

static size_t on_write(char *p, size_t size, size_t nmemb, void *data)
{
    struct pl_buf *b = data;
    size_t n = size * nmemb;
    if (b->len + n > MAX_ANSWER)
        return 0; /* libcurl fails the transfer */
    pl_buf_append(b, p, n);
    return n;
}

/* Adds "name: value" to the list when value is set and one line. */
static struct curl_slist *field(struct curl_slist *h, const char *name,
                                const char *value)
{
    if (!value || !value[0] || strpbrk(value, "\r\n"))
        return h;
    char line[1100];
    snprintf(line, sizeof(line), "%s: %s", name, value);
    return curl_slist_append(h, line);
}

int pl_rspamd_check(const struct pl_rspamd_request *rq,
                    struct pl_rspamd_result *out, char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init_once);
    memset(out, 0, sizeof(*out));
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "rspamd: no curl handle");
        return PL_EIO;
    }
    char url[1100];
    size_t ul = strlen(rq->url);
    snprintf(url, sizeof(url), "%.*s/checkv2",
             (int)(ul && rq->url[ul - 1] == '/' ? ul - 1 : ul), rq->url);
    struct curl_slist *h = NULL;
    h = field(h, "From", rq->from);
    h = field(h, "Rcpt", rq->rcpt);
    h = field(h, "Helo", rq->helo);
    h = field(h, "IP", rq->ip);
    h = field(h, "Queue-Id", rq->id);
    h = curl_slist_append(h, "Content-Type: message/rfc822");
    h = curl_slist_append(h, "Expect:");
    struct pl_buf body = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->msg);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, rq->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    int rc = PL_EIO;
    if (cc != CURLE_OK)
        snprintf(err, errlen, "rspamd at %s: %s", rq->url,
                 curl_easy_strerror(cc));
    else if (status != 200)
        snprintf(err, errlen, "rspamd at %s answered HTTP %ld", rq->url,
                 status);
    else if (pl_rspamd_parse(body.data ? body.data + body.off : "", body.len,
                             out) != PL_OK)
        snprintf(err, errlen,
                 "rspamd at %s: an answer without action "
                 "and score",
                 rq->url);
    else
        rc = PL_OK;
    pl_buf_reset(&body);
    return rc;
}
