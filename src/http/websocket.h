/*
 * websocket.h - XMPP over WebSocket (RFC 7395) on the HTTP front end:
 * the route GET /xmpp-websocket (service "websocket") upgrades the
 * connection (RFC 6455 §4.2) and carries an ordinary client stream
 * (c2s.h, struct pl_c2s_transport).  See websocket.c.
 *
 * The front end registers the route at its start and removes it at its
 * stop.
 */
#ifndef PL_HTTP_WEBSOCKET_H
#define PL_HTTP_WEBSOCKET_H

/* The path the route answers on (XEP-0156 names it). */
#define PL_WEBSOCKET_PATH "/xmpp-websocket"

int pl__websocket_start(void);
void pl__websocket_stop(void);

#endif
