/*
 * error.c - descriptions and XMPP stanza conditions for PL_E* codes.
 */
#include <stddef.h>

#include "error.h"

struct entry {
    int code;
    const char *text;      /* human description */
    const char *condition; /* RFC 6120 §8.3.3 element, NULL if none */
    const char *type;      /* RFC 6120 §8.3.2 error type */
};

static const struct entry table[] = {
    {PL_OK, "success", NULL, NULL},
    {PL_ENOMEM, "out of memory", "resource-constraint", "wait"},
    {PL_EINVAL, "invalid input", "bad-request", "modify"},
    {PL_EAGAIN, "try again", "resource-constraint", "wait"},
    {PL_EIO, "I/O error", "internal-server-error", "cancel"},
    {PL_ECLOSED, "closed", "recipient-unavailable", "wait"},
    {PL_ELIMIT, "limit exceeded", "policy-violation", "modify"},
    {PL_ESTORAGE, "storage failure", "internal-server-error", "wait"},
    {PL_ETLS, "TLS failure", "internal-server-error", "cancel"},
    {PL_EBAD_REQUEST, "bad request", "bad-request", "modify"},
    {PL_ECONFLICT, "conflict", "conflict", "cancel"},
    {PL_EFEATURE_NOT_IMPLEMENTED, "feature not implemented",
     "feature-not-implemented", "cancel"},
    {PL_EFORBIDDEN, "forbidden", "forbidden", "auth"},
    {PL_EITEM_NOT_FOUND, "item not found", "item-not-found", "cancel"},
    {PL_EJID_MALFORMED, "malformed JID", "jid-malformed", "modify"},
    {PL_ENOT_ACCEPTABLE, "not acceptable", "not-acceptable", "modify"},
    {PL_ENOT_ALLOWED, "not allowed", "not-allowed", "cancel"},
    {PL_ENOT_AUTHORIZED, "not authorized", "not-authorized", "auth"},
    {PL_EPOLICY_VIOLATION, "policy violation", "policy-violation", "modify"},
    {PL_ERECIPIENT_UNAVAILABLE, "recipient unavailable",
     "recipient-unavailable", "wait"},
    {PL_ERESOURCE_CONSTRAINT, "resource constraint", "resource-constraint",
     "wait"},
    {PL_ESERVICE_UNAVAILABLE, "service unavailable", "service-unavailable",
     "cancel"},
    {PL_EUNDEFINED_CONDITION, "undefined condition", "undefined-condition",
     "cancel"},
    {PL_EINTERNAL_SERVER_ERROR, "internal server error",
     "internal-server-error", "cancel"},
    {PL_ENOT_FOUND, "not found", "item-not-found", "cancel"},
    {PL_EREMOTE_SERVER_NOT_FOUND, "remote server not found",
     "remote-server-not-found", "cancel"},
    {PL_EUNEXPECTED_REQUEST, "unexpected request", "unexpected-request",
     "wait"},
    {PL_EREMOTE_SERVER_TIMEOUT, "remote server timeout",
     "remote-server-timeout", "wait"},
};

static const struct entry *find(int code)
{
    for (unsigned i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].code == code)
            return &table[i];
    return NULL;
}

const char *pl_strerror(int code)
{
    const struct entry *e = find(code);
    return e ? e->text : "unknown error";
}

void pl_error_condition(int code, const char **condition, const char **type)
{
    const struct entry *e = find(code);
    if (!e || !e->condition) {
        *condition = "internal-server-error";
        *type = "cancel";
        return;
    }
    *condition = e->condition;
    *type = e->type;
}
