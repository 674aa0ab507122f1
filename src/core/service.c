/*
 * service.c - a service on a domain of its own: its claim and its
 * XEP-0030 answers; see service.h.
 */
#include "service.h"

#include <stdio.h>

#include "alloc.h"
#include "error.h"
#include "jid.h"
#include "log.h"
#include "router.h"

int pl_service_claim(struct pl_host *h, const struct pl_service *s,
                     const char *domain_opt, const char *name, char **domain)
{
    char buf[1100];
    if (domain_opt && *domain_opt)
        snprintf(buf, sizeof(buf), "%s", domain_opt);
    else
        snprintf(buf, sizeof(buf), "%s.%s", s->label, h->domain);
    char *norm = NULL;
    if (pl_jid_prep_domain(pl_str_c(buf), &norm) != PL_OK) {
        pl_log_error(s->prefix, "%s: '%s' is not a domain", h->domain, buf);
        return PL_EINVAL;
    }
    int rc = pl_host_add_service(h, norm, s->prefix, name);
    if (rc != PL_OK) {
        pl_log_error(s->prefix, "%s: cannot serve %s: %s", h->domain, norm,
                     pl_strerror(rc));
        pl_free(norm);
        return rc;
    }
    *domain = norm;
    return PL_OK;
}

static struct pl_stanza *result_query(struct pl_stanza *req, const char *ns,
                                      struct pl_node **query)
{
    struct pl_stanza *res = pl_iq_result(req);
    struct pl_node *q = pl_node_add_child(res, pl_stanza_root(res), "query",
                                          ns);
    if (query)
        *query = q;
    return res;
}

struct pl_stanza *pl_service_info(const struct pl_service *s, const char *name,
                                  struct pl_stanza *req, struct pl_node **query)
{
    struct pl_node *q;
    struct pl_stanza *res = result_query(req, PL_NS_DISCO_INFO, &q);
    struct pl_node *id = pl_node_add_child(res, q, "identity",
                                           PL_NS_DISCO_INFO);
    pl_node_set_attr(res, id, "category", s->category);
    pl_node_set_attr(res, id, "type", s->type);
    if (name)
        pl_node_set_attr(res, id, "name", name);
    for (size_t i = 0; s->features && s->features[i]; i++) {
        struct pl_node *f = pl_node_add_child(res, q, "feature",
                                              PL_NS_DISCO_INFO);
        pl_node_set_attr(res, f, "var", s->features[i]);
    }
    if (query)
        *query = q;
    return res;
}

struct pl_stanza *pl_service_items(struct pl_stanza *req,
                                   struct pl_node **query)
{
    return result_query(req, PL_NS_DISCO_ITEMS, query);
}
