/*
 * account.c - keys from a password: pl_account_set_password(); see
 * account.h.
 */
#include "account.h"

#include <string.h>

#include <openssl/crypto.h>

#include "error.h"

int pl_account_set_password(struct pl_account *a, const char *user,
                            const char *realm, struct pl_str password,
                            unsigned iterations, int digest_md5)
{
    int rc;

    memset(a, 0, sizeof(*a));
    rc = pl_scram_derive(PL_SCRAM_SHA1, password, NULL, 0, iterations,
                         &a->keys[PL_SCRAM_SHA1]);
    if (rc == PL_OK)
        rc = pl_scram_derive(PL_SCRAM_SHA256, password, NULL, 0, iterations,
                             &a->keys[PL_SCRAM_SHA256]);
    for (int alg = 0; alg < PL_DIGEST_NALG && rc == PL_OK; alg++) {
        if (alg == PL_DIGEST_MD5 && !digest_md5)
            continue;
        rc = pl_digest_ha1((enum pl_digest_alg)alg, pl_str_c(user),
                           pl_str_c(realm), password, a->digest[alg].ha1);
        a->digest[alg].set = rc == PL_OK;
    }
    if (rc != PL_OK)
        OPENSSL_cleanse(a, sizeof(*a));
    return rc;
}
