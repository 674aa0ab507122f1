/*
 * metrics.c - GET /metrics (service "metrics"): the server's state in the
 * Prometheus text exposition format 0.0.4, for a scraper on a loopback
 * or operator listener (http.h: the service is not served elsewhere
 * unless a listener's `services` names it).
 *
 * What it exposes, each with HELP and TYPE lines:
 *   - every core counter of stats.h: parley_<name>_total (counter), or
 *     parley_<name> for the gauges (open connections, SIP bindings and
 *     subscriptions);
 *   - parley_sessions{transport}: bound sessions by front end (c2s over
 *     TCP, websocket, bosh, sip), counted from the session table at
 *     scrape time (nothing on the hot path);
 *   - parley_frontend_connections{frontend}: open connections of each
 *     front end (c2s, s2s, component, sip, http);
 *   - parley_storage_queue_jobs, parley_cpu_queue_jobs: work queued;
 *   - parley_stream_errors_by_condition_total{condition} and
 *     parley_stanza_errors_by_condition_total{condition} (RFC 6120
 *     §4.9.3, §8.3.3);
 *   - memory (parley_heap_in_use_bytes, parley_heap_from_system_bytes,
 *     process_resident_memory_bytes), process_start_time_seconds,
 *     parley_uptime_seconds, parley_build_info{version};
 *   - parley_node_phase{phase}: a cluster node's phase, 1 for the
 *     current one (starting, ready, quiesced, draining);
 *   - parley_node_info{node,role}: this node in a cluster (role
 *     "cluster") or alone ("standalone"), and per other node known
 *     (doc/cluster.md) parley_cluster_node_up{peer},
 *     parley_cluster_sessions{peer}, parley_cluster_copies{peer},
 *     parley_cluster_link_connected{peer},
 *     bytes and stanzas each way, unacknowledged stanzas and bytes, the
 *     age of the oldest and the last acknowledgement round trip; all
 *     from the admin operation "cluster" (pl_admin_call, answered at
 *     once), so this file knows no cluster code.
 *
 * Extending: a counter added to stats.h appears by itself (with a generic
 * HELP); give it a row of help[] (and gauge = 1 when it goes down).
 * Another family is a few lines in render().
 */
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "http/http_int.h"
#include "module.h"
#include "resources.h"
#include "server.h"
#include "stats.h"
#include "storage.h"
#include "version.h"
#include "work.h"

struct help {
    const char *name; /* the stats.h field */
    int gauge;        /* goes down as well */
    const char *text; /* HELP */
};

static const struct help help[] = {
    {"connections_accepted", 0, "Connections accepted by any listener."},
    {"connections_refused", 0,
     "Connections refused at accept (limits per address or server-wide)."},
    {"connections_open", 1, "Connections open now, every listener."},
    {"sessions_bound", 0, "Sessions bound (XMPP resources, SIP bindings)."},
    {"stanzas_in", 0, "Stanzas received on any XMPP stream."},
    {"stanzas_out", 0, "Stanzas sent on any XMPP stream."},
    {"bytes_in", 0, "Bytes received on XMPP streams."},
    {"bytes_out", 0, "Bytes written to connections."},
    {"auth_success", 0, "Successful authentications (SASL, SIP digest)."},
    {"auth_failures", 0, "Failed SASL authentications."},
    {"stream_errors", 0, "Stream errors sent."},
    {"stanza_errors", 0, "Stanza errors generated."},
    {"registrations", 0, "Accounts created in-band or by the admin API."},
    {"sm_enabled", 0, "XEP-0198 stream management enabled."},
    {"sm_hibernated", 0, "XEP-0198 sessions kept after their connection."},
    {"sm_resumed", 0, "XEP-0198 sessions resumed."},
    {"sip_requests_in", 0, "SIP requests received."},
    {"sip_responses_in", 0, "SIP responses received."},
    {"sip_requests_handled", 0, "SIP requests passed to the SIP core."},
    {"sip_transactions", 0, "SIP server transactions created."},
    {"sip_retransmissions", 0, "SIP responses retransmitted."},
    {"sip_responses_out", 0, "SIP responses sent."},
    {"sip_rejected", 0, "SIP requests refused before the core."},
    {"sip_malformed", 0, "Malformed SIP messages."},
    {"sip_too_large", 0, "SIP messages over the size limit."},
    {"sip_dropped", 0, "SIP messages dropped."},
    {"sip_keepalives", 0, "SIP keepalives (CRLF) answered."},
    {"sip_client_requests", 0, "SIP client transactions started."},
    {"sip_client_retransmissions", 0, "SIP client requests retransmitted."},
    {"sip_client_timeouts", 0, "SIP client transactions timed out."},
    {"sip_registrations", 0, "SIP REGISTER requests accepted."},
    {"sip_bindings", 1, "SIP registrar bindings now."},
    {"sip_auth_failures", 0, "SIP digest authentication failures."},
    {"sip_auth_cache_hits", 0, "SIP digest keys found in the cache."},
    {"sip_messages_in", 0, "SIP MESSAGE requests received."},
    {"sip_publications", 0, "SIP PUBLISH requests accepted."},
    {"sip_subscriptions", 1, "SIP presence subscriptions now."},
    {"sip_notifies", 0, "SIP NOTIFY requests sent."},
    {"sip_messages_out", 0, "SIP MESSAGE requests sent."},
    {"ws_sessions", 0, "XMPP over WebSocket streams opened."},
    {"ws_messages_in", 0, "WebSocket messages received."},
    {"ws_messages_out", 0, "WebSocket messages sent."},
    {"bosh_sessions", 0, "BOSH sessions created."},
    {"bosh_requests", 0, "BOSH requests received."},
    {"http_requests", 0, "HTTP requests received."},
    {"http_responses_1xx", 0, "HTTP answers with a 1xx status."},
    {"http_responses_2xx", 0, "HTTP answers with a 2xx status."},
    {"http_responses_3xx", 0, "HTTP answers with a 3xx status."},
    {"http_responses_4xx", 0, "HTTP answers with a 4xx status."},
    {"http_responses_5xx", 0, "HTTP answers with a 5xx status."},
    {"http_bytes_in", 0, "HTTP bytes received."},
    {"http_bytes_out", 0, "HTTP bytes sent."},
    {"stanzas_routed", 0, "Stanzas handed to the router."},
    {"tls_handshakes", 0, "TLS handshakes completed (in and out)."},
    {"tls_handshake_failures", 0, "TLS handshakes that failed."},
    {"tls_handovers", 0,
     "TLS 1.3 sessions whose records Parley took over from OpenSSL after "
     "authentication (c2s.tls_handover)."},
    {"c2s_naps", 0,
     "Idle client streams that gave back their XML parser (2 s idle)."},
    {"admin_api_requests", 0, "Requests to the HTTP admin API."},
    {"media_metalinks", 0, "Metalink documents served (doc/media.md)."},
    {"media_queries", 0, "XMPP source queries answered (urn:parley:media:0)."},
    {"media_announces", 0, "Peer announcements accepted."},
    {"media_withdrawals", 0,
     "Peers withdrawn: by themselves, going offline or banned."},
    {"media_peers", 1, "Peers listed as sources now."},
    {"media_reports", 0, "Verification failures reported by clients."},
    {"media_peer_bans", 0, "Peers banned as a source of a file."},
    {"media_fetched", 0,
     "Verified downloads reported by clients (<fetched/>)."},
    {"media_server_bytes", 0,
     "Bytes of uploaded files the server answered GETs with."},
    {"storage_jobs", 0, "Storage jobs run (group commit: many a transaction)."},
    {"storage_commits", 0, "Storage transactions committed."},
    {"storage_run_ms", 0,
     "Milliseconds the storage thread spent running jobs (SQL)."},
    {"storage_commit_ms", 0,
     "Milliseconds the storage thread spent committing (disk sync)."},
};

static const struct help *help_of(const char *name)
{
    for (size_t i = 0; i < sizeof(help) / sizeof(help[0]); i++)
        if (strcmp(help[i].name, name) == 0)
            return &help[i];
    return NULL;
}

static void family(struct pl_buf *b, const char *name, const char *type,
                   const char *text)
{
    pl_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void counter(struct pl_buf *b, const char *field, unsigned long v)
{
    const struct help *h = help_of(field);
    char name[96];
    snprintf(name, sizeof(name), "parley_%s%s", field,
             h && h->gauge ? "" : "_total");
    family(b, name, h && h->gauge ? "gauge" : "counter",
           h ? h->text : "Server counter (src/core/stats.h).");
    pl_buf_printf(b, "%s %lu\n", name, v);
}

/* Sessions by transport, from the table. */
static const char *const transports[] = {"c2s",     "websocket", "bosh", "sip",
                                         "cluster", "other",     NULL};

static void count_session(struct pl_session *s, void *ud)
{
    unsigned long *n = ud;
    const char *t = pl_session_transport(s);
    int i = 0;
    while (transports[i + 1] && strcmp(transports[i], t) != 0)
        i++;
    n[i]++;
}

static const char *const frontends[] = {"c2s", "s2s",  "component",
                                        "sip", "http", NULL};

/* Resident set size from /proc/self/statm, 0 if unknown. */
static unsigned long long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long long size = 0, resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

static time_t started_at;

static void take_answer(void *arg, json_t *answer)
{
    *(json_t **)arg = json_incref(answer);
}

/* The label value v with \ " and line feeds escaped (format 0.0.4). */
static void label(struct pl_buf *b, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\' || *v == '"')
            pl_buf_printf(b, "\\%c", *v);
        else if (*v == '\n')
            pl_buf_append_str(b, "\\n");
        else
            pl_buf_append(b, v, 1);
    }
}

struct link_gauge {
    const char *name, *type, *help;
    const char *key; /* in the node's "link" object, NULL: the node's */
    double scale;    /* the JSON value times this */
};

static const struct link_gauge link_gauges[] = {
    {"parley_cluster_node_up", "gauge",
     "1 while the node is alive (in Redis), 0 once it died.", NULL, 1},
    {"parley_cluster_sessions", "gauge",
     "The node's sessions, as it announces them in Redis.", "sessions", 1},
    {"parley_cluster_copies", "gauge",
     "Copies of the node's sessions held here (of the accounts this node "
     "watches).",
     "copies", 1},
    {"parley_cluster_link_connected", "gauge",
     "1 while both directions of the link with the node are up.", "connected",
     1},
    {"parley_cluster_link_sent_bytes", "gauge",
     "Bytes written on the link to the node (this connection).", "bytes_sent",
     1},
    {"parley_cluster_link_received_bytes", "gauge",
     "Bytes read on the node's link to this one (this connection).",
     "bytes_received", 1},
    {"parley_cluster_link_sent_stanzas_total", "counter",
     "Stanzas sent to the node's sessions.", "stanzas_sent", 1},
    {"parley_cluster_link_received_stanzas_total", "counter",
     "Stanzas received from the node for sessions here.", "stanzas_received",
     1},
    {"parley_cluster_link_unacked_stanzas", "gauge",
     "Stanzas sent to the node and not yet acknowledged.", "unacked", 1},
    {"parley_cluster_link_unacked_bytes", "gauge",
     "Bytes of the stanzas not yet acknowledged.", "unacked_bytes", 1},
    {"parley_cluster_link_oldest_unacked_seconds", "gauge",
     "Age of the oldest unacknowledged stanza (0: none).", "oldest_unacked_ms",
     0.001},
    {"parley_cluster_link_ack_rtt_seconds", "gauge",
     "Last time from writing a stanza to its acknowledgement.", "ack_rtt_us",
     0.000001},
};

/* This node and its view of the others (the admin operation "cluster"). */
static void render_cluster(struct pl_buf *b)
{
    json_t *req = json_pack("{s:s}", "op", "cluster");
    json_t *a = NULL;
    uint64_t id = pl_admin_call(req, take_answer, &a);
    json_decref(req);
    if (!a)
        pl_admin_cancel(id); /* not answered at once: none */
    int on = a && json_is_true(json_object_get(a, "enabled"));
    family(b, "parley_node_info", "gauge",
           "Always 1; this node's name and role (cluster or standalone) as "
           "labels.");
    pl_buf_append_str(b, "parley_node_info{node=\"");
    label(b, on ? json_string_value(json_object_get(a, "node")) : "");
    pl_buf_printf(b, "\",role=\"%s\"} 1\n", on ? "cluster" : "standalone");
    const char *phase = on ? json_string_value(json_object_get(a, "phase"))
                           : NULL;
    if (phase) {
        static const char *const phases[] = {"starting", "ready", "quiesced",
                                             "draining"};
        family(b, "parley_node_phase", "gauge",
               "1 for this cluster node's phase: starting (listeners held "
               "until linked), ready, quiesced (accepts no connection), "
               "draining (ending its sessions).");
        for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++)
            pl_buf_printf(b, "parley_node_phase{phase=\"%s\"} %d\n", phases[i],
                          strcmp(phase, phases[i]) == 0);
    }
    json_t *v = on ? json_object_get(a, "nodes") : NULL;
    if (json_array_size(v)) {
        for (size_t g = 0; g < sizeof(link_gauges) / sizeof(link_gauges[0]);
             g++) {
            const struct link_gauge *lg = &link_gauges[g];
            family(b, lg->name, lg->type, lg->help);
            size_t i;
            json_t *o;
            json_array_foreach(v, i, o)
            {
                json_t *l = json_object_get(o, "link");
                int alive = l != NULL;
                double x;
                if (!lg->key) {
                    x = alive;
                } else if (!alive) {
                    continue; /* a dead node: only its node_up */
                } else {
                    json_t *f = json_object_get(o, lg->key);
                    if (!f)
                        f = json_object_get(l, lg->key);
                    x = json_is_true(f)      ? 1
                        : json_is_integer(f) ? (double)json_integer_value(f)
                                             : 0;
                }
                pl_buf_printf(b, "%s{peer=\"", lg->name);
                label(b, json_string_value(json_object_get(o, "name")));
                pl_buf_printf(b, "\"} %.9g\n", x * lg->scale);
            }
        }
    }
    json_decref(a);
}

static void render(struct pl_buf *b)
{
#define X(name)                                                                \
    counter(b, #name,                                                          \
            atomic_load_explicit(&pl_stats.name, memory_order_relaxed));
    PL_STATS_FIELDS(X)
#undef X

    unsigned long by_tr[sizeof(transports) / sizeof(transports[0])] = {0};
    pl_session_each(count_session, by_tr);
    family(b, "parley_sessions", "gauge",
           "Bound sessions now, by transport (front end).");
    for (int i = 0; transports[i]; i++)
        pl_buf_printf(b, "parley_sessions{transport=\"%s\"} %lu\n",
                      transports[i], by_tr[i]);

    family(b, "parley_frontend_connections", "gauge",
           "Open connections of each front end.");
    for (int i = 0; frontends[i]; i++) {
        const struct pl_module *m = pl_module_find(frontends[i]);
        unsigned long n = m && m->frontend && m->frontend->count
                              ? m->frontend->count()
                              : 0;
        pl_buf_printf(b, "parley_frontend_connections{frontend=\"%s\"} %lu\n",
                      frontends[i], n);
    }

    family(b, "parley_storage_queue_jobs", "gauge",
           "Jobs waiting for or running on the storage thread.");
    pl_buf_printf(b, "parley_storage_queue_jobs %zu\n", pl_storage_pending());
    family(b, "parley_cpu_queue_jobs", "gauge",
           "Jobs waiting for or running on the CPU workers (PBKDF2).");
    pl_buf_printf(b, "parley_cpu_queue_jobs %zu\n",
                  pl_server_cpu() ? pl_workq_pending(pl_server_cpu()) : 0);

    family(b, "parley_stream_errors_by_condition_total", "counter",
           "Stream errors sent, by RFC 6120 condition.");
    for (int i = 0; i < PL_STATS_NSTREAM_CONDS; i++)
        pl_buf_printf(b,
                      "parley_stream_errors_by_condition_total"
                      "{condition=\"%s\"} %lu\n",
                      pl_stream_conditions[i],
                      atomic_load_explicit(&pl_stats_stream_by_cond[i],
                                           memory_order_relaxed));
    family(b, "parley_stanza_errors_by_condition_total", "counter",
           "Stanza errors generated, by RFC 6120 condition.");
    for (int i = 0; i < PL_STATS_NSTANZA_CONDS; i++)
        pl_buf_printf(b,
                      "parley_stanza_errors_by_condition_total"
                      "{condition=\"%s\"} %lu\n",
                      pl_stanza_conditions[i],
                      atomic_load_explicit(&pl_stats_stanza_by_cond[i],
                                           memory_order_relaxed));

    struct mallinfo2 mi = mallinfo2();
    family(b, "parley_heap_in_use_bytes", "gauge",
           "Bytes the allocator hands out to live objects (every arena).");
    pl_buf_printf(b, "parley_heap_in_use_bytes %zu\n", mi.uordblks + mi.hblkhd);
    family(b, "parley_heap_from_system_bytes", "gauge",
           "Bytes the allocator took from the system, free space included.");
    pl_buf_printf(b, "parley_heap_from_system_bytes %zu\n",
                  mi.arena + mi.hblkhd);
    family(b, "process_resident_memory_bytes", "gauge",
           "Resident memory size in bytes.");
    pl_buf_printf(b, "process_resident_memory_bytes %llu\n", rss_bytes());
    family(b, "process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch in seconds.");
    pl_buf_printf(b, "process_start_time_seconds %lld\n",
                  (long long)started_at);
    family(b, "parley_uptime_seconds", "gauge",
           "Seconds since parleyd started.");
    pl_buf_printf(b, "parley_uptime_seconds %lld\n",
                  (long long)(time(NULL) - started_at));
    family(b, "parley_build_info", "gauge",
           "Always 1; the version of parleyd as a label.");
    pl_buf_printf(b, "parley_build_info{version=\"%s\"} 1\n", PL_VERSION);
    render_cluster(b);
}

static void on_request(struct pl_http_req *r)
{
    struct pl_buf b = {0};
    render(&b);
    pl_http_add_header(r, "Cache-Control", "no-store");
    pl_http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8",
                    b.data + b.off, b.len);
    pl_buf_reset(&b);
}

static const struct pl_http_route route = {
    .path = "/metrics",
    .service = "metrics",
    .methods = "GET",
    .on_request = on_request,
};

int pl__metrics_start(void)
{
    if (!started_at)
        started_at = time(NULL);
    return pl_http_route_add(&route);
}

void pl__metrics_stop(void)
{
    pl_http_route_remove(&route);
}
