/*
 * history.h - a room's recent messages, replayed to new occupants
 * (XEP-0045 §7.2.13, limits of §7.2.14: maxstanzas, maxchars, seconds,
 * since).  A ring of at most `cap` stanzas, each stored once, already
 * carrying its XEP-0203 <delay/>, so a join costs one route per message
 * sent and no copy.
 */
#ifndef PL_MUC_HISTORY_H
#define PL_MUC_HISTORY_H

#include <time.h>

#include "core/modapi.h"

struct muc_history;

/* Appends st (takes a reference) stamped at t; the oldest falls out past
 * cap.  *h is created on first use; cap 0 keeps nothing. */
void pl__muc_history_add(struct muc_history **h, long cap, struct pl_stanza *st,
                         time_t t);
/* Drops everything beyond cap (configuration changed). */
void pl__muc_history_trim(struct muc_history *h, long cap);
void pl__muc_history_free(struct muc_history *h);
long pl__muc_history_count(const struct muc_history *h);

/*
 * Selects what a join asks for: at most maxstanzas (-1 no limit), at
 * most maxchars of serialized XML (-1 none), not older than `seconds`
 * (-1 none) nor than since (0 none), at most cap overall.  Calls fn for
 * each selected stanza, oldest first.
 */
void pl__muc_history_each(const struct muc_history *h, long maxstanzas,
                          long maxchars, long seconds, time_t since, long cap,
                          time_t now,
                          void (*fn)(struct pl_stanza *st, void *ud), void *ud);

#endif
