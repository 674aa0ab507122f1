/*
 * clamd.h - virus scanning through clamd's INSTREAM command (clamd(8)),
 * blocking, for worker threads: parleyd's upload service scans files
 * (src/http/upload.c), parley-gateway scans messages
 * (src/gateway/check.c).
 *
 * addr is the path of clamd's Unix socket ("/run/clamav/clamd.ctl") or
 * "host:port" ("[::1]:3310" for IPv6).  Each call opens one connection,
 * sends the data in chunks and reads clamd's one-line answer; every
 * socket operation gives up after timeout_s seconds.
 *
 * Results: PL_OK when clean; PL_EFORBIDDEN when infected, the
 * signature's name in virus (len bytes); PL_EIO when clamd cannot be
 * reached, times out or answers anything else (for example when the
 * data exceeds its StreamMaxLength), a description in virus.
 */
#ifndef PL_CLAMD_H
#define PL_CLAMD_H

#include <stddef.h>

/* Scans the file fd from offset 0 to its end (pread: the offset of fd
 * does not move). */
int pl_clamd_scan_fd(const char *addr, int fd, int timeout_s, char *virus,
                     size_t len);
/* Scans n bytes at p. */
int pl_clamd_scan_mem(const char *addr, const void *p, size_t n, int timeout_s,
                      char *virus, size_t len);

#endif
