/*
 * map.h - string-keyed hash map (separate chaining, power-of-two buckets).
 *
 * Keys are copied into the map; values are borrowed pointers the caller
 * owns.  Used for the session table, hook tables and host lookup.
 * Not thread-safe: each map belongs to one loop.
 */
#ifndef PL_MAP_H
#define PL_MAP_H

#include <stddef.h>
#include <stdint.h>

struct pl_map_entry {
    struct pl_map_entry *next; /* chain */
    uint64_t hash;             /* full hash of key */
    void *value;               /* borrowed */
    size_t klen;               /* key length */
    char key[];                /* NUL-terminated copy */
};

struct pl_map {
    struct pl_map_entry **buckets; /* NULL until the first insert */
    size_t nbuckets;               /* power of two */
    size_t count;                  /* entries */
};

uint64_t pl_hash(const void *p, size_t n);
void *pl_map_get(const struct pl_map *m, const char *key);
void *pl_map_getn(const struct pl_map *m, const char *key, size_t klen);
/* Inserts or replaces; returns the previous value or NULL. */
void *pl_map_put(struct pl_map *m, const char *key, void *value);
/* Removes; returns the value or NULL if absent. */
void *pl_map_del(struct pl_map *m, const char *key);
/* Frees the map's own memory (not the values). */
void pl_map_clear(struct pl_map *m);
/* Calls fn for each entry; fn must not modify the map. */
void pl_map_each(const struct pl_map *m,
                 void (*fn)(const char *key, void *value, void *ud), void *ud);

#endif
