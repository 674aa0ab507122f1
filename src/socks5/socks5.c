/*
 * socks5.c - the SOCKS5 Bytestreams proxy front end (XEP-0065 §6,
 * "proxy65"): `pl_mod_socks5`, serving the listener protocol "socks5"
 * (RFC 1928 over TCP), with its server-wide options (the `socks5` group),
 * its lifetime and its operation.  The connections are relay.c's; the
 * XMPP side (proxy.<host>) is pl_mod_proxy65 (proxy65.c).  Files and
 * their API: socks5_int.h.
 *
 * Configuration:
 *   listeners = ( ..., { protocol = "socks5"; address = "192.0.2.1"; } );
 *   socks5: { handshake_timeout = 10; unmatched_timeout = 60;
 *             idle_timeout = 300; max_transfer_size = 10737418240;
 *             bandwidth_per_user = 10485760; max_transfers_per_user = 5;
 *             max_transfers = 1000; max_pending = 1000;
 *             relay_buffer = 262144; };
 * Nothing listens for SOCKS5 unless an entry says so (port 7777 when it
 * names none): a proxy relays anyone's bytes once two parties and a
 * local user agree, so the operator chooses the address.  SOCKS5 has no
 * TLS of its own (XEP-0065 transfers are end-to-end matters): tls =
 * "direct" or "starttls" written in a socks5 entry is an error.
 *
 * Operation (admin socket): "socks5" (parleyctl socks5) lists the
 * listeners, open connections, transfers waiting for activation and
 * active ones (requester, bytes, time, whether throttled).  Counters in
 * `parleyctl stats`: socks5_connections, socks5_transfers,
 * socks5_transfers_active, socks5_bytes, socks5_refused.
 *
 * Extending: a new setting is a field of struct socks5_settings, a row
 * of options[] and, when it depends on others, a line in check().
 */
#include <stddef.h>
#include <string.h>

#include "admin.h"
#include "error.h"
#include "listen.h"
#include "log.h"
#include "module.h"
#include "socks5_int.h"

static const struct socks5_settings defaults = {
    .handshake_timeout = 10,
    .unmatched_timeout = 60,
    .idle_timeout = 300,
    .max_transfer_size = 10737418240L,
    .bandwidth_per_user = 10485760,
    .max_transfers_per_user = 5,
    .max_transfers = 1000,
    .max_pending = 1000,
    .relay_buffer = 262144,
};

static const struct socks5_settings *S = &defaults;
static int started;

const struct socks5_settings *pl__socks5_settings(void)
{
    return S;
}

static const struct pl_option options[] = {
    {"handshake_timeout", PL_OPT_INT, "10", 1, 3600, NULL,
     "Seconds from a SOCKS5 connection's accept to its complete CONNECT "
     "request (RFC 1928 §3-4); a slower client is disconnected.",
     offsetof(struct socks5_settings, handshake_timeout)},
    {"unmatched_timeout", PL_OPT_INT, "60", 1, 86400, NULL,
     "Seconds a connection that sent its CONNECT waits for the other party "
     "and the requester's <activate/> (XEP-0065 §6.3.5) before it is "
     "closed.",
     offsetof(struct socks5_settings, unmatched_timeout)},
    {"idle_timeout", PL_OPT_INT, "300", 1, 86400, NULL,
     "Seconds an activated transfer may carry no byte (read or written) "
     "before both connections are closed.",
     offsetof(struct socks5_settings, idle_timeout)},
    {"max_transfer_size", PL_OPT_INT, "10737418240L", 0, 0x7fffffffffffffffL,
     NULL,
     "Bytes one transfer may relay, both directions together; past it "
     "both connections are closed.  0: no limit.",
     offsetof(struct socks5_settings, max_transfer_size)},
    {"bandwidth_per_user", PL_OPT_INT, "10485760", 0, 1L << 40, NULL,
     "Bytes per second all transfers of one requester may relay together "
     "(a token bucket of one second); a transfer over it is paused, not "
     "closed.  0: no limit.",
     offsetof(struct socks5_settings, bandwidth_per_user)},
    {"max_transfers_per_user", PL_OPT_INT, "5", 1, 100000, NULL,
     "Active transfers one requester may have at once; one more is "
     "refused at activation with <resource-constraint/>.",
     offsetof(struct socks5_settings, max_transfers_per_user)},
    {"max_transfers", PL_OPT_INT, "1000", 1, 10000000, NULL,
     "Active transfers through the proxy at once; one more is refused at "
     "activation with <resource-constraint/>.",
     offsetof(struct socks5_settings, max_transfers)},
    {"max_pending", PL_OPT_INT, "1000", 1, 10000000, NULL,
     "Connections not yet relaying (in the SOCKS5 handshake or waiting for "
     "activation) at once; more are closed at accept.  The listeners "
     "entry's max_connections_per_ip applies too.",
     offsetof(struct socks5_settings, max_pending)},
    {"relay_buffer", PL_OPT_INT, "262144", 16384, 67108864, NULL,
     "Bytes queued toward one party before the other is no longer read "
     "(back-pressure): the memory one direction of a transfer may hold.",
     offsetof(struct socks5_settings, relay_buffer)},
    {0},
};

static int check(struct pl_config *c, void *settings, char *err, size_t errlen)
{
    (void)settings;
    for (int i = 0; i < c->nlisteners; i++) {
        struct pl_listener_conf *lc = &c->listeners[i];
        if (!lc->protocol || strcmp(lc->protocol, "socks5") != 0 ||
            lc->tls == PL_TLS_NONE)
            continue;
        /* An entry's tls is "starttls" when absent: only a written one is
         * an error; an absent one means plain. */
        if (lc->group && config_setting_get_member(lc->group, "tls"))
            return pl_config_where(err, errlen, lc->group,
                                   "%s: SOCKS5 has no TLS: leave tls out or "
                                   "write tls = \"none\"",
                                   "listener socks5");
        lc->tls = PL_TLS_NONE;
    }
    return PL_OK;
}

/* ---- operation ---- */

static json_t *admin_socks5(json_t *req)
{
    (void)req;
    json_t *ls = json_array();
    for (int i = 0; pl_listen_at(i); i++) {
        struct pl_listen *l = pl_listen_at(i);
        if (l->proto != &pl__socks5_protocol)
            continue;
        json_array_append_new(ls, json_pack("{s:s, s:i, s:I, s:I}", "address",
                                            l->conf->address, "port",
                                            pl_listen_port(l), "accepted",
                                            (json_int_t)l->accepted, "refused",
                                            (json_int_t)l->refused));
    }
    json_t *a = json_pack("{s:b, s:o}", "ok", 1, "listeners", ls);
    pl__socks5_admin(a);
    return a;
}

/* ---- lifetime ---- */

static int socks5_start(struct pl_config *c, void *settings)
{
    (void)c;
    S = settings;
    started = 1;
    pl_admin_add_op("socks5", admin_socks5);
    return PL_OK;
}

static void socks5_stop(void)
{
    pl__socks5_close_all();
}

static void socks5_reload(struct pl_config *c, void *settings)
{
    (void)c;
    S = settings;
}

static unsigned long socks5_count(void)
{
    return pl__socks5_count();
}

static void socks5_free(void)
{
    if (!started)
        return;
    started = 0;
    pl__socks5_free();
    S = &defaults;
}

const struct pl_protocol pl__socks5_protocol = {
    .name = "socks5",
    .summary = "SOCKS5 Bytestreams proxy (XEP-0065), relaying file transfers",
    .transports = PL_TRANSPORT_TCP,
    .default_port = 7777,
    .accept = pl__socks5_accept,
};

static const struct pl_protocol *const protocols[] = {&pl__socks5_protocol,
                                                      NULL};

static const struct pl_frontend frontend = {
    .protocols = protocols,
    .options = options,
    .settings_size = sizeof(struct socks5_settings),
    .check = check,
    .start = socks5_start,
    .stop = socks5_stop,
    .reload = socks5_reload,
    .count = socks5_count,
    .free = socks5_free,
};

const struct pl_module pl_mod_socks5 = {
    .abi = PL_MODULE_ABI,
    .name = "socks5",
    .summary = "SOCKS5 Bytestreams proxy: the relay (XEP-0065 §6)",
    .xeps = "XEP-0065, RFC 1928",
    .frontend = &frontend,
};
