/*
 * error.h - the error codes every fallible Parley function returns.
 *
 * Functions return PL_OK (0) or a negative PL_E* code; results travel through
 * out-parameters.  On failure a function has no side effects and fires no
 * callback.  Stanza-level conditions (RFC 6120 §8.3.3) have codes of their own
 * so that a hook handler can return one and let the core build the error
 * stanza; see pl_error_condition().
 *
 * To add a code: append it to the enum and to the table in error.c.
 */
#ifndef PL_ERROR_H
#define PL_ERROR_H

enum pl_error {
    PL_OK = 0,
    PL_ENOMEM = -1,   /* allocation failed (normally aborts instead) */
    PL_EINVAL = -2,   /* malformed input or bad argument */
    PL_EAGAIN = -3,   /* try again later (would block) */
    PL_EIO = -4,      /* system or network I/O failure */
    PL_ECLOSED = -5,  /* peer or object already closed */
    PL_ELIMIT = -6,   /* a configured limit was hit */
    PL_ESTORAGE = -7, /* storage backend failed */
    PL_ETLS = -8,     /* TLS failure */
    /* Stanza error conditions (RFC 6120 §8.3.3), usable as handler results. */
    PL_EBAD_REQUEST = -20,
    PL_ECONFLICT = -21,
    PL_EFEATURE_NOT_IMPLEMENTED = -22,
    PL_EFORBIDDEN = -23,
    PL_EITEM_NOT_FOUND = -24,
    PL_EJID_MALFORMED = -25,
    PL_ENOT_ACCEPTABLE = -26,
    PL_ENOT_ALLOWED = -27,
    PL_ENOT_AUTHORIZED = -28,
    PL_EPOLICY_VIOLATION = -29,
    PL_ERECIPIENT_UNAVAILABLE = -30,
    PL_ERESOURCE_CONSTRAINT = -31,
    PL_ESERVICE_UNAVAILABLE = -32,
    PL_EUNDEFINED_CONDITION = -33,
    PL_EINTERNAL_SERVER_ERROR = -34,
    PL_ENOT_FOUND = -35, /* lookup found nothing (not an XMPP condition) */
    PL_EREMOTE_SERVER_NOT_FOUND = -36,
    PL_EUNEXPECTED_REQUEST = -37,
    PL_EREMOTE_SERVER_TIMEOUT = -38,
};

/* Returns a short English description of code; never NULL. */
const char *pl_strerror(int code);

/*
 * Maps code to an RFC 6120 §8.3.3 stanza error: *condition receives the
 * element name (e.g. "item-not-found") and *type the error type ("cancel",
 * "modify", "auth", "wait").  Codes without a stanza meaning map to
 * internal-server-error/cancel.
 */
void pl_error_condition(int code, const char **condition, const char **type);

#endif
