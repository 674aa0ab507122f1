/*
 * test_s2s.c - pure parts of federation: the resolver address syntax
 * (s2s.resolver), the s2s configuration checks (auth methods, static
 * routes), and the stanza error a timed-out link bounces with.
 */
#include "alloc.h"
#include "config.h"
#include "dns.h"
#include "error.h"
#include "module.h"
#include "xmpp/s2s_int.h"
#include "unit.h"

void test_s2s_resolver_syntax(void)
{
    static const struct {
        const char *in;
        int ok;
    } t[] = {
        {"", 1},
        {"127.0.0.1", 1},
        {"127.0.0.1:5353", 1},
        {"[::1]:53", 1},
        {"[::1]", 1},
        {"10.0.0.2:65535", 1},
        {"localhost", 0},
        {"127.0.0.1:", 0},
        {"127.0.0.1:0", 0},
        {"127.0.0.1:70000", 0},
        {"::1:53", 0},
        {"[::1", 0},
        {"[1.2.3.4]:53", 0},
        {"127.0.0.1:53x", 0},
        {"1.2.3:53", 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int rc = pl_dns_check_server(t[i].in);
        if ((rc == PL_OK) != t[i].ok)
            fprintf(stderr, "  resolver '%s'\n", t[i].in);
        CHECK((rc == PL_OK) == t[i].ok);
    }
}

static int load(char **sets, int n, struct pl_config **out, char *err,
                size_t len)
{
    return pl_config_load(NULL, sets, n, out, err, len);
}

void test_s2s_config(void)
{
    char err[512];
    struct pl_config *c = NULL;
    char *ok[] = {
        "s2s.enable=true",
        "s2s.auth=[\"dialback\"]",
        "s2s.resolver=\"127.0.0.1:5353\"",
        "s2s.routes=({ domain = \"B.Example\"; host = \"10.0.0.2\"; "
        "port = 5270; tls = \"direct\"; }, { domain = \"c.example\"; "
        "host = \"c-host\"; })",
        "listeners=({ protocol = \"s2s\"; port = 5269; })",
    };
    CHECK_INT(load(ok, 5, &c, err, sizeof(err)), PL_OK);
    if (c) {
        const struct pl_s2s_settings *ss = c->frontend[PL_MODIDX_s2s];
        CHECK_INT(ss->enable, 1);
        CHECK_INT(ss->auth.n, 1);
        CHECK_STR(ss->resolver, "127.0.0.1:5353");
        CHECK_INT(ss->connect_timeout, 20);
        CHECK_INT(ss->nroutes, 2);
        if (ss->nroutes == 2) {
            CHECK_STR(ss->routes[0].domain, "b.example"); /* normalized */
            CHECK_STR(ss->routes[0].host, "10.0.0.2");
            CHECK_INT(ss->routes[0].port, 5270);
            CHECK_INT(ss->routes[0].tls, PL_TLS_DIRECT);
            CHECK_INT(ss->routes[1].port, 5269);
            CHECK_INT(ss->routes[1].tls, PL_TLS_STARTTLS);
        }
        CHECK_STR(c->listeners[0].protocol, "s2s");
        pl_config_free(c);
    }
    c = NULL;
    CHECK_INT(load(NULL, 0, &c, err, sizeof(err)), PL_OK);
    if (c) {
        const struct pl_s2s_settings *ss = c->frontend[PL_MODIDX_s2s];
        CHECK_INT(ss->enable, 0); /* off unless asked for */
        CHECK_INT(ss->nroutes, 0);
        CHECK_INT(ss->auth.n, 2);
        pl_config_free(c);
    }
    static const char *const bad[] = {
        "s2s.auth=[\"plain\"]",
        "s2s.resolver=\"dns.example\"",
        "s2s.routes=({ host = \"10.0.0.2\"; })",
        "s2s.routes=({ domain = \"b.example\"; })",
        "s2s.routes=({ domain = \"b.example\"; host = \"h\"; port = 0; })",
        /* parenthesized: one string, not a missing comma (clang's
         * -Wstring-concatenation) */
        ("s2s.routes=({ domain = \"b.example\"; host = \"h\"; "
         "tls = \"none\"; })"),
        "s2s.routes=({ domain = \"b.example\"; host = \"h\"; bogus = 1; })",
        "s2s.routes=\"b.example\"",
        "s2s.connect_timeout=0",
        "s2s.unknown=1",
        "listeners=({ protocol = \"xmpp\"; port = 5269; })",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *set = (char *)bad[i];
        c = NULL;
        int rc = load(&set, 1, &c, err, sizeof(err));
        if (rc == PL_OK)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK_INT(rc, PL_EINVAL);
        if (rc == PL_OK)
            pl_config_free(c);
    }
}

void test_s2s_error_conditions(void)
{
    const char *cond, *type;
    pl_error_condition(PL_EREMOTE_SERVER_TIMEOUT, &cond, &type);
    CHECK_STR(cond, "remote-server-timeout");
    CHECK_STR(type, "wait");
    pl_error_condition(PL_EREMOTE_SERVER_NOT_FOUND, &cond, &type);
    CHECK_STR(cond, "remote-server-not-found");
    CHECK_STR(type, "cancel");
}
