/*
 * sip_unit.c - helpers the SIP unit tests share; see sip_unit.h.
 */
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
