/*
 * account.h - a password becomes what an account stores: the SCRAM keys
 * (SHA-1 and SHA-256, scram.h) for XMPP and the digest keys (HA1 for
 * SHA-256 and, unless disabled, MD5, digest.h) for SIP, in one call, so
 * that no way of setting a password can forget a key.  Every place a
 * password is set calls pl_account_set_password(): in-band registration
 * and password change (mod_register), parleyctl adduser and passwd.
 *
 * Never stores the password.  Slow on purpose (PBKDF2): run it on a worker
 * (pl_server_cpu(), work.h), never on the loop.
 *
 * To extend: a new kind of key is derived here, stored by the drivers
 * (struct pl_account, storage.h).
 */
#ifndef PL_ACCOUNT_H
#define PL_ACCOUNT_H

#include "storage.h"
#include "str.h"

/*
 * Fills *a (zeroed first) for the account user@realm (user: the localpart
 * as stored; realm: the host's domain) from password: SCRAM keys with
 * iterations PBKDF2 rounds and a fresh salt (SASLprep applied), the
 * SHA-256 digest key, and the MD5 one when digest_md5.  PL_EINVAL when
 * SASLprep refuses the password, PL_EIO when OpenSSL fails; *a is zeroed
 * again on failure.  Blocking: call from a worker.
 */
int pl_account_set_password(struct pl_account *a, const char *user,
                            const char *realm, struct pl_str password,
                            unsigned iterations, int digest_md5);

#endif
