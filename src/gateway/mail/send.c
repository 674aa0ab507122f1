/*
 * send.c - outbound SMTP through libcurl; see send.h.
 *
 * libcurl keeps the relay's reply text to itself, so the debug callback
 * keeps the last reply line the relay sent (CURLINFO_HEADER_IN): that is
 * what the caller logs, stores in the message's history and, for a
 * permanent failure, quotes in the DSN.
 */
#include "gateway/mail/send.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct upload {
    struct pl_str msg; /* what is sent */
    size_t off;        /* bytes given to libcurl */
    struct pl_mail_send_result *res;
    int failed; /* res->text holds the failing reply */
};

static size_t on_read(char *dst, size_t size, size_t nmemb, void *data)
{
    struct upload *u = data;
    size_t room = size * nmemb, left = u->msg.len - u->off;
    size_t n = left < room ? left : room;
    if (n)
        memcpy(dst, u->msg.p + u->off, n);
    u->off += n;
    return n;
}

/* Keeps the reply that decided: the first 4xx/5xx line, else the last
 * line before QUIT's 221 (a multi-line reply's last line counts). */
static int on_debug(CURL *h, curl_infotype type, char *p, size_t n, void *data)
{
    struct upload *u = data;
    if (type != CURLINFO_HEADER_IN || n < 4 || u->failed)
        return 0;
    if (memcmp(p, "221", 3) == 0)
        return 0;
    while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
        n--;
    if (n >= sizeof(u->res->text))
        n = sizeof(u->res->text) - 1;
    memcpy(u->res->text, p, n);
    u->res->text[n] = '\0';
    if (p[0] == '4' || p[0] == '5')
        u->failed = 1;
    return 0;
}

/* "<addr>", or NULL if addr could break the command line. */
static char *bracket(const char *addr)
{
    if (!addr || strpbrk(addr, "<>\r\n"))
        return NULL;
    size_t n = strlen(addr);
    char *b = pl_malloc(n + 3);
    b[0] = '<';
    memcpy(b + 1, addr, n);
    b[n + 1] = '>';
    b[n + 2] = '\0';
    return b;
}

int pl_mail_send(const struct pl_mail_relay *relay, const char *from,
                 const char *const *to, size_t nto, struct pl_str message,
                 struct pl_mail_send_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!relay->host || !*relay->host || strpbrk(relay->host, "/@ \r\n") ||
        !nto || !to || !from) {
        snprintf(res->text, sizeof(res->text), "bad arguments");
        res->permanent = 1;
        return PL_EINVAL;
    }
    pthread_once(&curl_once, curl_init_once);
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(res->text, sizeof(res->text), "libcurl: no handle");
        res->temporary = 1;
        return PL_EAGAIN;
    }
    struct upload u = {message, 0, res, 0};
    struct curl_slist *rcpts = NULL;
    char *mfrom = bracket(from);
    int rc = PL_EINVAL;
    if (!mfrom) {
        snprintf(res->text, sizeof(res->text), "bad sender address");
        res->permanent = 1;
        goto done;
    }
    for (size_t i = 0; i < nto; i++) {
        char *b = bracket(to[i]);
        if (!b) {
            snprintf(res->text, sizeof(res->text), "bad recipient address");
            res->permanent = 1;
            goto done;
        }
        rcpts = curl_slist_append(rcpts, b);
        pl_free(b);
    }
    int direct = relay->tls == PL_MAIL_TLS_DIRECT;
    int port = relay->port ? relay->port : direct ? 465 : 25;
    char url[512];
    /* An IPv6 literal needs brackets in the URL. */
    int v6 = strchr(relay->host, ':') != NULL;
    snprintf(url, sizeof(url), "%s://%s%s%s:%d/%s", direct ? "smtps" : "smtp",
             v6 ? "[" : "", relay->host, v6 ? "]" : "", port,
             relay->helo ? relay->helo : "localhost");
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, mfrom);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &u);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)message.len);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, &u);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     relay->connect_timeout_ms ? relay->connect_timeout_ms
                                               : 30000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                     relay->timeout_ms ? relay->timeout_ms : 300000L);
    curl_easy_setopt(h, CURLOPT_USE_SSL,
                     relay->tls == PL_MAIL_TLS_TRY ? (long)CURLUSESSL_TRY
                     : relay->tls == PL_MAIL_TLS_REQUIRE
                         ? (long)CURLUSESSL_ALL
                         : (long)CURLUSESSL_NONE);
    if (relay->no_verify) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (relay->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, relay->ca_file);
    if (relay->user) {
        curl_easy_setopt(h, CURLOPT_USERNAME, relay->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD,
                         relay->password ? relay->password : "");
    }
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    res->code = (int)code;
    if (cc == CURLE_OK && code >= 200 && code < 300) {
        rc = PL_OK;
    } else if (code >= 500 && code < 600) {
        /* A 5xx at any step is final (RFC 5321 §4.2.1). */
        res->permanent = 1;
        rc = PL_EINVAL;
    } else {
        /* 4xx, or no usable answer: connection, timeout, TLS. */
        res->temporary = 1;
        rc = PL_EAGAIN;
        if (code < 400 || code >= 500)
            snprintf(res->text, sizeof(res->text), "%s",
                     errbuf[0] ? errbuf : curl_easy_strerror(cc));
    }
done:
    curl_slist_free_all(rcpts);
    pl_free(mfrom);
    curl_easy_cleanup(h);
    return rc;
}
