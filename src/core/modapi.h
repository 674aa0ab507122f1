/*
 * modapi.h - everything a module may use, and the only core header a
 * module includes.  See ../shared/STYLE.md "Module shape" and
 * src/modules/mod_ping.c for the smallest example.
 */
#ifndef PL_MODAPI_H
#define PL_MODAPI_H

#include "account.h"
#include "admin.h"
#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "digest.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "iq.h"
#include "listen.h"
#include "jid.h"
#include "log.h"
#include "loop.h"
#include "module.h"
#include "random.h"
#include "resources.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "service.h"
#include "stanza.h"
#include "stats.h"
#include "storage.h"
#include "str.h"
#include "work.h"
#include "xml.h"

/* Shorthand for the first child element of a stanza's root. */
static inline struct pl_node *pl_stanza_payload(struct pl_stanza *st)
{
    return pl_node_first_elem(pl_stanza_root(st));
}

#endif
