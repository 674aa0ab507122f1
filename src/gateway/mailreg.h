/*
 * mailreg.h - XEP-0100 registration of an e-mail address on the mail
 * domain (mailreg.c): the address is linked once the code sent to it by
 * e-mail comes back.
 */
#ifndef PL_GW_MAILREG_H
#define PL_GW_MAILREG_H

struct pl_stanza;
struct pl_node;

/* A jabber:iq:register get (set = 0) or set from the user bare, whose
 * <query/> is q; answers st itself.  Loop thread. */
void pl_gw_mail_register(struct pl_stanza *st, struct pl_node *q,
                         const char *bare, int set);

#endif
