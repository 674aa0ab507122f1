/*
 * stats.h - the server's counters, kept in one place so that a metrics
 * endpoint (or a log line) only has to expose them.  Updated on the loop
 * thread; read anywhere (relaxed atomics).
 *
 * Most are monotonic counters; a few are gauges that go down as well
 * (connections_open, sip_bindings, sip_subscriptions, media_peers): src/http/metrics.c
 * says which, with a HELP text for each.  A new counter is a line of
 * PL_STATS_FIELDS and a row of metrics.c's table.
 */
#ifndef PL_STATS_H
#define PL_STATS_H

#include <stdatomic.h>
#include <stdio.h>

#define PL_STATS_FIELDS(X)                                                     \
    X(connections_accepted)                                                    \
    X(connections_refused)                                                     \
    X(connections_open)                                                        \
    X(sessions_bound)                                                          \
    X(stanzas_in)                                                              \
    X(stanzas_out)                                                             \
    X(bytes_in)                                                                \
    X(bytes_out)                                                               \
    X(auth_success)                                                            \
    X(auth_failures)                                                           \
    X(stream_errors)                                                           \
    X(stanza_errors)                                                           \
    X(registrations)                                                           \
    X(sm_enabled)                                                              \
    X(sm_hibernated)                                                           \
    X(sm_resumed)                                                              \
    X(sip_requests_in)                                                         \
    X(sip_responses_in)                                                        \
    X(sip_requests_handled)                                                    \
    X(sip_transactions)                                                        \
    X(sip_retransmissions)                                                     \
    X(sip_responses_out)                                                       \
    X(sip_rejected)                                                            \
    X(sip_malformed)                                                           \
    X(sip_too_large)                                                           \
    X(sip_dropped)                                                             \
    X(sip_keepalives)                                                          \
    X(sip_client_requests)                                                     \
    X(sip_client_retransmissions)                                              \
    X(sip_client_timeouts)                                                     \
    X(sip_registrations)                                                       \
    X(sip_bindings)                                                            \
    X(sip_auth_failures)                                                       \
    X(sip_auth_cache_hits)                                                     \
    X(sip_messages_in)                                                         \
    X(sip_publications)                                                        \
    X(sip_subscriptions)                                                       \
    X(sip_notifies)                                                            \
    X(sip_messages_out)                                                        \
    X(ws_sessions)                                                             \
    X(ws_messages_in)                                                          \
    X(ws_messages_out)                                                         \
    X(bosh_sessions)                                                           \
    X(bosh_requests)                                                           \
    X(http_requests)                                                           \
    X(http_responses_1xx)                                                      \
    X(http_responses_2xx)                                                      \
    X(http_responses_3xx)                                                      \
    X(http_responses_4xx)                                                      \
    X(http_responses_5xx)                                                      \
    X(http_bytes_in)                                                           \
    X(http_bytes_out)                                                          \
    X(socks5_connections)                                                      \
    X(socks5_transfers)                                                        \
    X(socks5_transfers_active)                                                 \
    X(socks5_bytes)                                                            \
    X(socks5_refused)                                                          \
    X(stanzas_routed)                                                          \
    X(tls_handshakes)                                                          \
    X(tls_handshake_failures)                                                  \
    X(tls_handovers)                                                           \
    X(c2s_naps)                                                                \
    X(admin_api_requests)                                                      \
    X(media_metalinks)                                                         \
    X(media_queries)                                                           \
    X(media_announces)                                                         \
    X(media_withdrawals)                                                       \
    X(media_peers)                                                             \
    X(media_reports)                                                           \
    X(media_peer_bans)                                                         \
    X(media_fetched)                                                           \
    X(media_server_bytes)                                                      \
    X(storage_jobs)                                                            \
    X(storage_commits)                                                         \
    X(storage_run_ms)                                                          \
    X(storage_commit_ms)

struct pl_stats {
#define X(name) atomic_ulong name;
    PL_STATS_FIELDS(X)
#undef X
};

extern struct pl_stats pl_stats;

#define pl_stat_add(name, n)                                                   \
    atomic_fetch_add_explicit(&pl_stats.name, (n), memory_order_relaxed)
#define pl_stat_inc(name) pl_stat_add(name, 1)
#define pl_stat_dec(name)                                                      \
    atomic_fetch_sub_explicit(&pl_stats.name, 1, memory_order_relaxed)

/* Writes "name value" lines. */
void pl_stats_print(FILE *f);

/*
 * Errors by RFC 6120 condition: stream errors (§4.9.3) and stanza errors
 * (§8.3.3) sent, one counter per condition, indexed like the NULL-ended
 * name tables.  pl_stats_stream_error / pl_stats_stanza_error count one
 * (a name not in the table counts as undefined-condition): a few string
 * compares on the error path, no allocation.  metrics.c exposes them.
 */
#define PL_STATS_NSTREAM_CONDS 25
#define PL_STATS_NSTANZA_CONDS 22
extern const char *const pl_stream_conditions[PL_STATS_NSTREAM_CONDS + 1];
extern const char *const pl_stanza_conditions[PL_STATS_NSTANZA_CONDS + 1];
extern atomic_ulong pl_stats_stream_by_cond[PL_STATS_NSTREAM_CONDS];
extern atomic_ulong pl_stats_stanza_by_cond[PL_STATS_NSTANZA_CONDS];
void pl_stats_stream_error(const char *cond);
void pl_stats_stanza_error(const char *cond);

#endif
