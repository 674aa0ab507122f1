/*
 * token.h - the bearer tokens of the HTTP admin API (admin_api.c):
 * created, listed and revoked by parleyctl (`parleyctl token ...`),
 * checked by parleyd.  They live in the file <data_dir>/api_tokens (mode
 * 0600), one line each: "NAME SCOPE CREATED SHA256HEX", where SCOPE is
 * "admin" (every call) or "read" (GET only), CREATED the Unix time, and
 * SHA256HEX the SHA-256 of the token: the token itself is printed once,
 * at creation, and stored nowhere.  The file is replaced whole (a
 * temporary file renamed over it), so a reader sees the old list or the
 * new one; parleyd reads it again when it changed, so a revocation counts
 * from the next request.
 *
 * Extending: a new scope is a value of enum pl_token_scope and its name
 * in token.c's table.
 */
#ifndef PL_TOKEN_H
#define PL_TOKEN_H

#include <stddef.h>

#include "str.h"

#define PL_TOKEN_FILE "api_tokens"
#define PL_TOKEN_NAME_MAX 64 /* bytes of a name: [A-Za-z0-9._-] */
#define PL_TOKEN_LEN 68      /* "plt_" and 64 hex digits */

enum pl_token_scope {
    PL_TOKEN_ADMIN = 0, /* every operation */
    PL_TOKEN_READ = 1,  /* GET only */
};

/* The file of data_dir into out (PL_EINVAL if it does not fit). */
int pl_token_path(const char *data_dir, char *out, size_t len);

/*
 * Creates token name with scope: writes the token (PL_TOKEN_LEN + 1
 * bytes, NUL-terminated) to out.  PL_EINVAL for a bad name, PL_ECONFLICT
 * if the name exists, PL_EIO if the file cannot be read or written.
 */
int pl_token_create(const char *path, const char *name, int scope,
                    char out[PL_TOKEN_LEN + 1]);
/* Removes token name: PL_OK, PL_ENOT_FOUND, PL_EIO. */
int pl_token_revoke(const char *path, const char *name);
/* Calls fn for each token, in file order.  A missing file is no token. */
int pl_token_list(const char *path,
                  void (*fn)(const char *name, int scope, long long created,
                             void *ud),
                  void *ud);
/*
 * Whether token names one in the file: PL_OK with its name (copied into
 * name, PL_TOKEN_NAME_MAX + 1 bytes) and scope, else PL_ENOT_FOUND (or
 * PL_EIO).  The hash is compared with every entry in constant time.  The
 * file is read again only when it changed (inode, size, mtime).
 */
int pl_token_check(const char *path, struct pl_str token,
                   char name[PL_TOKEN_NAME_MAX + 1], int *scope);
/* Frees what pl_token_check keeps. */
void pl_token_forget(void);

const char *pl_token_scope_name(int scope);

#endif
