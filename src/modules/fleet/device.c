/*
 * device.c - device ids for the fleet module: what a target names.
 *
 * A device id is 12 lower-case hex digits, the MAC address without
 * separators, as parley-agent builds its localpart.  Operators may write a
 * MAC in any usual spelling; any other account may be named by its
 * localpart in the restricted set [a-z0-9._-] (no escaping needed, no
 * nodeprep surprises).  Pure functions: tests/unit/test_fleet_device.c.
 */
#include "modules/fleet/fleet.h"

int pl__fleet_device_norm(const char *in, char *out, size_t len)
{
    char hex[13];
    int n = 0, mac = 1;
    for (const char *p = in; *p && mac; p++) {
        if (*p == ':' || *p == '-' || *p == '.')
            continue;
        if (n >= 12 || !((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                         (*p >= 'A' && *p <= 'F')))
            mac = 0;
        else
            hex[n++] = (char)(*p | 0x20);
    }
    if (mac && n == 12 && len > 12) {
        memcpy(out, hex, 12);
        out[12] = '\0';
        return 1;
    }
    size_t l = strlen(in);
    if (!l || l >= len || l > 64)
        return 0;
    for (size_t i = 0; i < l; i++) {
        char c = in[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    memcpy(out, in, l + 1);
    return 1;
}

int pl__fleet_is_device_id(const char *user)
{
    if (strlen(user) != 12)
        return 0;
    for (const char *p = user; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}
