/*
 * parse.c - the SOCKS5 handshake of an XEP-0065 proxy; see parse.h.
 * RFC 1928 §3 (method selection), §4 (requests), §6 (replies).
 */
#include "parse.h"

#include <openssl/evp.h>
#include <string.h>

#include "buf.h"
#include "log.h"

int pl_socks5_greeting(const uint8_t *p, size_t n, size_t *used)
{
    *used = 0;
    if (n < 1)
        return PL_SOCKS5_MORE;
    if (p[0] != 5)
        return PL_SOCKS5_BAD_VERSION;
    if (n < 2 || n < 2 + (size_t)p[1])
        return PL_SOCKS5_MORE;
    *used = 2 + (size_t)p[1];
    /* §3: the server picks one of the offered methods; we have only
     * X'00' (XEP-0065 leaves authentication out of its scope). */
    for (size_t i = 0; i < p[1]; i++)
        if (p[2 + i] == 0x00)
            return PL_SOCKS5_OK;
    return PL_SOCKS5_NO_METHOD;
}

static int hexdigit(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

int pl_socks5_request(const uint8_t *p, size_t n, struct pl_socks5_request *r,
                      size_t *used)
{
    *used = 0;
    memset(r, 0, sizeof(*r));
    if (n < 1)
        return PL_SOCKS5_MORE;
    if (p[0] != 5)
        return PL_SOCKS5_BAD_VERSION;
    if (n < 4)
        return PL_SOCKS5_MORE;
    r->cmd = p[1];
    r->atyp = p[3];
    if (p[2] != 0)
        return PL_SOCKS5_BAD_REQUEST;
    /* XEP-0065 §5.3.2/§6.3.2: CONNECT (UDP ASSOCIATE is optional, §8,
     * and not offered: no bytestreams#udp feature). */
    if (p[1] != 0x01)
        return PL_SOCKS5_BAD_COMMAND;
    if (p[3] != 0x03)
        return PL_SOCKS5_BAD_ATYP;
    if (n < 5)
        return PL_SOCKS5_MORE;
    size_t len = p[4];
    if (n < 5 + len + 2)
        return PL_SOCKS5_MORE;
    *used = 5 + len + 2;
    r->port = (unsigned)p[5 + len] << 8 | p[5 + len + 1];
    if (len != PL_SOCKS5_HASH_LEN)
        return PL_SOCKS5_BAD_ADDRESS;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[5 + i];
        if (!hexdigit(c))
            return PL_SOCKS5_BAD_ADDRESS;
        r->addr[i] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
    }
    r->addr[len] = 0;
    return PL_SOCKS5_OK;
}

int pl_socks5_verdict_rep(int verdict)
{
    switch (verdict) {
    case PL_SOCKS5_BAD_COMMAND: return PL_SOCKS5_REP_COMMAND;
    case PL_SOCKS5_BAD_ATYP: return PL_SOCKS5_REP_ATYP;
    case PL_SOCKS5_BAD_ADDRESS: return PL_SOCKS5_REP_HOST;
    default: return PL_SOCKS5_REP_FAILURE;
    }
}

size_t pl_socks5_reply(uint8_t *out, int rep, const struct pl_socks5_request *r)
{
    size_t n = 0;
    out[n++] = 5;
    out[n++] = (uint8_t)rep;
    out[n++] = 0;
    if (r && r->atyp == 0x03 && r->addr[0]) {
        /* XEP-0065 §6.3.2: BND.ADDR and BND.PORT are the request's. */
        size_t len = strlen(r->addr);
        out[n++] = 0x03;
        out[n++] = (uint8_t)len;
        memcpy(out + n, r->addr, len);
        n += len;
        out[n++] = (uint8_t)(r->port >> 8);
        out[n++] = (uint8_t)(r->port & 0xff);
        return n;
    }
    out[n++] = 0x01;
    memset(out + n, 0, 6);
    return n + 6;
}

void pl_socks5_hash(const char *sid, const char *requester, const char *target,
                    char out[PL_SOCKS5_HASH_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct pl_buf b = {0};
    pl_buf_append_str(&b, sid);
    pl_buf_append_str(&b, requester);
    pl_buf_append_str(&b, target);
    struct pl_str in = pl_buf_str(&b);
    int ok = EVP_Digest(in.p, in.len, md, &mdlen, EVP_sha1(), NULL);
    pl_buf_reset(&b);
    pl_assert(ok == 1 && mdlen == 20);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[PL_SOCKS5_HASH_LEN] = 0;
}
