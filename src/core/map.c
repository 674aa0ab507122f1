/*
 * map.c - string-keyed hash map; see map.h.  FNV-1a hashing; the table
 * doubles when the load factor passes 1.
 */
#include "map.h"

#include <string.h>

#include "alloc.h"

uint64_t pl_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static struct pl_map_entry **slot(const struct pl_map *m, const char *key,
                                  size_t klen, uint64_t h)
{
    struct pl_map_entry **e = &m->buckets[h & (m->nbuckets - 1)];
    while (*e && !((*e)->hash == h && (*e)->klen == klen &&
                   memcmp((*e)->key, key, klen) == 0))
        e = &(*e)->next;
    return e;
}

void *pl_map_getn(const struct pl_map *m, const char *key, size_t klen)
{
    if (!m->buckets)
        return NULL;
    struct pl_map_entry *e = *slot(m, key, klen, pl_hash(key, klen));
    return e ? e->value : NULL;
}

void *pl_map_get(const struct pl_map *m, const char *key)
{
    return pl_map_getn(m, key, strlen(key));
}

static void grow(struct pl_map *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    struct pl_map_entry **b = pl_calloc(n, sizeof(*b));
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct pl_map_entry *e = m->buckets[i];
        while (e) {
            struct pl_map_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    pl_free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

void *pl_map_put(struct pl_map *m, const char *key, void *value)
{
    size_t klen = strlen(key);
    uint64_t h = pl_hash(key, klen);
    if (!m->buckets || m->count >= m->nbuckets)
        grow(m);
    struct pl_map_entry **e = slot(m, key, klen, h);
    if (*e) {
        void *old = (*e)->value;
        (*e)->value = value;
        return old;
    }
    struct pl_map_entry *n = pl_malloc(sizeof(*n) + klen + 1);
    n->next = NULL;
    n->hash = h;
    n->value = value;
    n->klen = klen;
    memcpy(n->key, key, klen + 1);
    *e = n;
    m->count++;
    return NULL;
}

void *pl_map_del(struct pl_map *m, const char *key)
{
    if (!m->buckets)
        return NULL;
    size_t klen = strlen(key);
    struct pl_map_entry **e = slot(m, key, klen, pl_hash(key, klen));
    if (!*e)
        return NULL;
    struct pl_map_entry *dead = *e;
    void *v = dead->value;
    *e = dead->next;
    pl_free(dead);
    m->count--;
    return v;
}

void pl_map_clear(struct pl_map *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct pl_map_entry *e = m->buckets[i];
        while (e) {
            struct pl_map_entry *next = e->next;
            pl_free(e);
            e = next;
        }
    }
    pl_free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->count = 0;
}

void pl_map_each(const struct pl_map *m,
                 void (*fn)(const char *key, void *value, void *ud), void *ud)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct pl_map_entry *e = m->buckets[i]; e; e = e->next)
            fn(e->key, e->value, ud);
}
