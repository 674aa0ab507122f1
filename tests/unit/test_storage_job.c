/* test_storage_job.c - the head shared by the modules' storage jobs
 * (struct pl_job, pl_job_new, pl_job_free in src/core/storage.h). */
#include <string.h>

#include "../../src/core/stanza.h"
#include "../../src/core/storage.h"
#include "unit.h"

struct job {
    struct pl_job base; /* first member */
    long extra;         /* a module's own field */
};

void test_storage_job(void)
{
    struct pl_stanza *st = pl_stanza_new("iq", "jabber:client");
    char host[] = "example.org", user[] = "alice";
    struct job *j = pl_job_new(sizeof(*j), st, 42, host, user);
    /* The job holds its own reference and its own copies. */
    pl_stanza_unref(st);
    memset(host, 'x', sizeof(host) - 1);
    memset(user, 'y', sizeof(user) - 1);
    CHECK(j->base.st == st);
    CHECK_STR(pl_stanza_name(j->base.st), "iq");
    CHECK_INT(j->base.sid, 42);
    CHECK_STR(j->base.host, "example.org");
    CHECK_STR(j->base.user, "alice");
    CHECK_STR(j->base.bare, "alice@example.org");
    CHECK_INT(j->extra, 0); /* the rest is zeroed */
    pl_job_free(j);

    /* A job about a whole domain: no user, no bare JID, no request. */
    struct pl_job *h = pl_job_new(sizeof(*h), NULL, 0, "muc.example.org", NULL);
    CHECK(h->st == NULL);
    CHECK_INT(h->sid, 0);
    CHECK_STR(h->host, "muc.example.org");
    CHECK(h->user == NULL);
    CHECK(h->bare == NULL);
    pl_job_free(h);
    pl_job_free(NULL);
}
