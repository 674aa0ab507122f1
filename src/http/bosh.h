/*
 * bosh.h - XMPP over BOSH (XEP-0124, XEP-0206) on the HTTP front end: the
 * route POST /http-bind (service "bosh") carries an ordinary client
 * stream (c2s.h, struct pl_c2s_transport) over a series of HTTP
 * requests.  See bosh.c.
 *
 * The front end registers the route at its start (with its settings)
 * and removes it, ending every session, at its stop.
 */
#ifndef PL_HTTP_BOSH_H
#define PL_HTTP_BOSH_H

/* The path the route answers on (XEP-0156 names it). */
#define PL_BOSH_PATH "/http-bind"

struct pl_bosh_settings {
    long max_wait;            /* seconds a request may be held at most */
    long max_inactivity;      /* seconds without a request held */
    long max_hold;            /* requests held at once at most */
    long max_sessions_per_ip; /* open sessions from one address */
    long max_pause;           /* seconds a client may pause (maxpause),
                               * 0: no pausing */
};

/* s NULL: the defaults (60, 60, 1, 100, 120). */
int pl__bosh_start(const struct pl_bosh_settings *s);
void pl__bosh_stop(void);
/* Open sessions (for stats). */
unsigned long pl__bosh_sessions(void);

#endif
