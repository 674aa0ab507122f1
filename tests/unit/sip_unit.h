/*
 * sip_unit.h - helpers the SIP unit tests share (sip_unit.c).
 *
 * unit_sip_parse: a whole message as a test writes it (a C string, with
 * its header section), scanned and parsed as a received one is: a new
 * message (osip_message_free), or NULL if it does not parse fully.  The
 * parser changes the bytes it is given (pl__sip_parse), so the string is
 * parsed from a copy and may be a literal.
 *
 * unit_sip_udp_flow: *f set to a UDP flow from ip (IPv4 or IPv6 text)
 * and port, as the transport makes one for a received datagram (no
 * listener).
 */
#ifndef PL_SIP_UNIT_H
#define PL_SIP_UNIT_H

#include <osipparser2/osip_parser.h>

struct sip_flow;

osip_message_t *unit_sip_parse(const char *s);
void unit_sip_udp_flow(struct sip_flow *f, const char *ip, int port);

#endif
