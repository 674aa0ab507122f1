/*
 * cache.c - the client's media cache directory (fetch.h, doc/media.md
 * "The client"): files named by the lowercase hex of their SHA-256.
 *
 *   <dir>/<hex>        a verified file (renamed there after the whole-file
 *                      hash matched; never written in place)
 *   <dir>/<hex>.part   a download in progress, at its full size (sparse)
 *   <dir>/<hex>.have   its bitmap of verified pieces (fetch.c)
 *
 * pl_cache_lookup answers "is it here"; the rest are path and directory
 * helpers fetch.c uses.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "media/fetch.h"

int pl_cache_path(const char *dir, const unsigned char *sha256,
                  const char *suffix, char *out, size_t cap)
{
    char hex[2 * PL_MEDIA_HASH_LEN + 1];
    pl_media_hex(sha256, PL_MEDIA_HASH_LEN, hex);
    int n = snprintf(out, cap, "%s/%s%s", dir, hex, suffix ? suffix : "");
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int pl_cache_lookup(const char *dir, const unsigned char *sha256, char *out,
                    size_t cap)
{
    struct stat st;
    if (pl_cache_path(dir, sha256, NULL, out, cap))
        return 0;
    return stat(out, &st) == 0 && S_ISREG(st.st_mode);
}

int pl_cache_mkdirs(const char *dir)
{
    char p[4096];
    size_t n = strlen(dir);
    if (!n || n >= sizeof(p))
        return -1;
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return -1;
        p[i] = c;
    }
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

int pl_cache_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}
