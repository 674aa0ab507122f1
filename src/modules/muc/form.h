/*
 * form.h - XEP-0004 data forms for rooms: the room configuration form
 * (muc#roomconfig, XEP-0045 §10.2 and §15.5.3), the room information
 * form (muc#roominfo, §15.5.4), and small helpers to build and read
 * forms.
 *
 * Extending: a configuration option is one row in form.c's table.
 */
#ifndef PL_MUC_FORM_H
#define PL_MUC_FORM_H

#include "room.h"

#define NS_DATA "jabber:x:data"

/* <x xmlns='jabber:x:data' type='type'> with a hidden FORM_TYPE. */
struct pl_node *pl__muc_form_new(struct pl_stanza *st, struct pl_node *parent,
                                 const char *type, const char *form_type);
/* A field with one value (value NULL: none). */
struct pl_node *pl__muc_form_field(struct pl_stanza *st, struct pl_node *form,
                                   const char *var, const char *type,
                                   const char *label, const char *value);
void pl__muc_form_option(struct pl_stanza *st, struct pl_node *field,
                         const char *label, const char *value);
void pl__muc_form_value(struct pl_stanza *st, struct pl_node *field,
                        const char *value);
/* The <field var='var'/> of form, or NULL. */
struct pl_node *pl__muc_form_get(const struct pl_node *form, const char *var);
/* First <value/> text of that field, or NULL if the field is absent. */
const char *pl__muc_form_text(struct pl_stanza *st, const struct pl_node *form,
                              const char *var);
/* The FORM_TYPE of form, or NULL. */
const char *pl__muc_form_type(struct pl_stanza *st, const struct pl_node *form);

/* Appends the muc#roomconfig form of r (type 'form') under parent. */
void pl__muc_config_form(struct pl_stanza *st, struct pl_node *parent,
                         const struct muc_room *r, long service_max_users);
/*
 * Applies a submitted muc#roomconfig form to r.  Fields left out keep
 * their value.  Returns PL_OK, or PL_ENOT_ACCEPTABLE with *why set for a
 * value out of range (a password-protected room without a password,
 * maxusers over the service cap, ...), without changing anything.
 * roomowners/roomadmins set affiliations (the last owner cannot be
 * removed that way: PL_ECONFLICT).
 */
int pl__muc_config_submit(struct muc_room *r, struct pl_stanza *st,
                          const struct pl_node *form, long service_max_users,
                          long service_max_history, const char **why);
/* Appends the muc#roominfo form (disco#info extension). */
void pl__muc_roominfo_form(struct pl_stanza *st, struct pl_node *parent,
                           const struct muc_room *r);

#endif
