/*
 * server.c - the process-wide services; see server.h.
 */
#include "server.h"

#include <string.h>

static struct pl_loop *loop;
static struct pl_config *config;
static struct pl_workq *cpu;
static unsigned char secret[32];

struct pl_loop *pl_server_loop(void)
{
    return loop;
}
struct pl_config *pl_server_config(void)
{
    return config;
}
struct pl_workq *pl_server_cpu(void)
{
    return cpu;
}

struct pl_str pl_server_secret(void)
{
    return (struct pl_str){(const char *)secret, sizeof(secret)};
}

void pl__server_set(struct pl_loop *l, struct pl_config *c, struct pl_workq *q,
                    const unsigned char *s)
{
    loop = l;
    config = c;
    cpu = q;
    if (s)
        memcpy(secret, s, sizeof(secret));
}

void pl__server_set_config(struct pl_config *c)
{
    config = c;
}

static long scram_iterations = 10000;

void pl_server_set_scram_iterations(long n)
{
    scram_iterations = n;
}

long pl_server_scram_iterations(void)
{
    return scram_iterations;
}
