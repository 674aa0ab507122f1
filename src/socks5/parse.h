/*
 * parse.h - the SOCKS5 handshake (RFC 1928) as XEP-0065 proxies speak it,
 * as pure functions: no sockets, no loop.
 *
 * API: pl_socks5_greeting() on the bytes of the method selection message
 * (§3), then pl_socks5_request() on those of the request (§4); each
 * returns PL_SOCKS5_MORE until the message is whole, then a verdict, and
 * says how many bytes the message had (bytes after it are the caller's).
 * pl_socks5_reply() writes a reply (§6), echoing the request's address as
 * XEP-0065 §6.3.2 requires; pl_socks5_hash() computes the DST.ADDR both
 * parties send, hex SHA-1 of SID + requester JID + target JID (§5.3.2).
 *
 * What is accepted: version 5; the "no authentication" method (X'00')
 * among the offered ones; CONNECT (X'01') to a domain name (ATYP X'03')
 * that is 40 hexadecimal digits (returned lower-cased).  Everything else
 * is a verdict saying which reply it gets.
 *
 * Extending: a new command or address type is a case in
 * pl_socks5_request and a verdict here.
 */
#ifndef PL_SOCKS5_PARSE_H
#define PL_SOCKS5_PARSE_H

#include <stddef.h>
#include <stdint.h>

enum pl_socks5_verdict {
    PL_SOCKS5_MORE = 0,    /* incomplete: feed more bytes */
    PL_SOCKS5_OK,          /* acceptable */
    PL_SOCKS5_BAD_VERSION, /* not SOCKS5: close without a reply */
    PL_SOCKS5_NO_METHOD,   /* no X'00' offered: reply X'FF', close */
    PL_SOCKS5_BAD_REQUEST, /* reserved byte not 0: general failure */
    PL_SOCKS5_BAD_COMMAND, /* not CONNECT: X'07' */
    PL_SOCKS5_BAD_ATYP,    /* not a domain name: X'08' */
    PL_SOCKS5_BAD_ADDRESS, /* not a 40-digit hash: X'04' */
};

/* RFC 1928 §6 reply codes used. */
enum pl_socks5_rep {
    PL_SOCKS5_REP_OK = 0x00,
    PL_SOCKS5_REP_FAILURE = 0x01,     /* general SOCKS server failure */
    PL_SOCKS5_REP_NOT_ALLOWED = 0x02, /* connection not allowed by ruleset */
    PL_SOCKS5_REP_HOST = 0x04,        /* host unreachable */
    PL_SOCKS5_REP_COMMAND = 0x07,     /* command not supported */
    PL_SOCKS5_REP_ATYP = 0x08,        /* address type not supported */
};

#define PL_SOCKS5_HASH_LEN 40      /* hex SHA-1 */
#define PL_SOCKS5_MAX_GREETING 257 /* VER NMETHODS METHODS[255] */
#define PL_SOCKS5_MAX_REQUEST 262  /* 4 + 1 + 255 + 2 */
#define PL_SOCKS5_MAX_REPLY 262

struct pl_socks5_request {
    int cmd;                           /* CMD */
    int atyp;                          /* ATYP */
    char addr[PL_SOCKS5_HASH_LEN + 1]; /* the hash, lower case */
    unsigned port;                     /* DST.PORT (0 per XEP) */
};

/* The method selection message in p[0..n): MORE, OK, BAD_VERSION or
 * NO_METHOD; *used is its length once it is whole. */
int pl_socks5_greeting(const uint8_t *p, size_t n, size_t *used);

/* The request in p[0..n): MORE, OK (r filled), or the verdict of its
 * first fault; *used is its length once it is whole (also for faults
 * found earlier: 0 then). */
int pl_socks5_request(const uint8_t *p, size_t n, struct pl_socks5_request *r,
                      size_t *used);

/* The reply code for a verdict of pl_socks5_request (not OK or MORE). */
int pl_socks5_verdict_rep(int verdict);

/* Writes a reply with code rep into out (PL_SOCKS5_MAX_REPLY bytes):
 * BND.ADDR and BND.PORT echo r's when r is a domain request, else
 * 0.0.0.0:0.  Returns its length. */
size_t pl_socks5_reply(uint8_t *out, int rep,
                       const struct pl_socks5_request *r);

/* out = hex SHA-1 of sid + requester + target (NUL-terminated). */
void pl_socks5_hash(const char *sid, const char *requester, const char *target,
                    char out[PL_SOCKS5_HASH_LEN + 1]);

#endif
