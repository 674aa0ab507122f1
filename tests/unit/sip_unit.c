/*
 * sip_unit.c - helpers the SIP unit tests share; see sip_unit.h.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "sip/sip_int.h"
#include "sip_unit.h"

osip_message_t *unit_sip_parse(const char *s)
{
    pl__sip_osip_init();
    size_t n = strlen(s);
    struct sip_scan scan;
    if (pl__sip_scan(s, n, &scan) != PL_OK)
        return NULL;
    char *copy = pl_strndup(s, n);
    osip_message_t *m = NULL;
    if (pl__sip_parse(copy, n, &scan, &m) != PL_OK) {
        osip_message_free(m);
        m = NULL;
    }
    pl_free(copy);
    return m;
}

void unit_sip_udp_flow(struct sip_flow *f, const char *ip, int port)
{
    memset(f, 0, sizeof(*f));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&f->addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        f->addrlen = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&f->addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, ip, &a->sin_addr);
        f->addrlen = sizeof(*a);
    }
    f->transport = SIP_UDP;
}
