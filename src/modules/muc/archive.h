/*
 * archive.h - the room archive (XEP-0313 on the room JID).  Groupchat
 * messages a room broadcasts are appended, as broadcast (from
 * room@service/nick, with the room's <stanza-id/> whose id is the archive
 * id), to the archive (service domain, room localpart, PL_ARCHIVE_ROOM);
 * 'with' is the room's bare JID and the resource the nick, so a query's
 * 'with' of room@service/nick selects one occupant's messages.  Queries
 * reuse the parser of mam/mam.h; every storage access is a storage job.
 * mod_muc.c decides who may query (permissions) and when to archive.
 */
#ifndef PL_MUC_ARCHIVE_H
#define PL_MUC_ARCHIVE_H

#include "core/modapi.h"

/* Whether a broadcast groupchat message belongs in the archive:
 * a <body/> (or an encrypted payload, or a <store/> hint), and no
 * <no-store/> / <no-permanent-store/> hint (XEP-0313 §5.1.2, XEP-0334). */
int pl__muc_archivable(struct pl_stanza *m);

/* Queues m (the broadcast copy, 'from' room@service/nick) for the
 * archive of room@service with stanza-id sid; keeps at most limit items
 * (0: no limit). */
void pl__muc_archive_append(const char *service, const char *room,
                            const char *nick, const char *sid,
                            struct pl_stanza *m, long limit);

/* Answers the archive query ev (iq set, <query xmlns=urn:xmpp:mam:2/>)
 * on room@service: results to the requester, then the <fin/>. */
void pl__muc_archive_query(const char *service, const char *room,
                           struct pl_event *ev, long max_page, long count_cap);

/* Answers an iq get <query/>: the form of XEP-0313 §4.1.5. */
void pl__muc_archive_form(struct pl_event *ev);

/* Removes the whole archive of room@service (room destroyed). */
void pl__muc_archive_clear(const char *service, const char *room);

/* Removes up to max items older than `before` (µs since the epoch) from
 * the room archives of service; done(removed, ud) follows on the loop
 * (removed -1 on failure). */
void pl__muc_archive_expire(const char *service, long long before, long max,
                            void (*done)(long removed, void *ud), void *ud);

/* Archive time in µs, strictly increasing in this process. */
long long pl__muc_archive_now(void);

#endif
