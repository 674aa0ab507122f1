/*
 * gsm.h - SMS text encoding (3GPP TS 23.038, formerly GSM 03.38) and
 * concatenation (3GPP TS 23.040 §9.2.3.24.1).
 *
 * A text goes out in the GSM 7-bit default alphabet (with its extension
 * table, whose characters cost two septets: ESC + code) when every
 * character has a place there, otherwise in UCS-2 (UTF-16 code units;
 * characters beyond the BMP take two).  One SMS carries 160 septets or 70
 * UCS-2 units; a longer text is split into parts of 153 septets or 67
 * units, each with a 6-octet User Data Header (05 00 03 ref total seq),
 * never splitting an escape pair or a surrogate pair.
 *
 * API: pl_gsm_plan() splits a UTF-8 text into parts (byte ranges of the
 * text, so the transport can hand each part to Kannel as UTF-8 with the
 * coding and UDH it needs); pl_gsm_septets()/pl_gsm_pack() give the
 * 7-bit encoding itself (unit tests, and a transport that speaks SMPP
 * directly); pl_gsm_udh() writes a part's header.
 */
#ifndef PL_GW_GSM_H
#define PL_GW_GSM_H

#include <stddef.h>
#include <stdint.h>

enum pl_gsm_coding {
    PL_GSM_7BIT = 0, /* default alphabet (Kannel coding=0) */
    PL_GSM_UCS2 = 2, /* UCS-2 (Kannel coding=2) */
};

#define PL_GSM_MAX_PARTS 255 /* the UDH's one-octet count */

struct pl_gsm_part {
    size_t off, len; /* the part's bytes in the UTF-8 text */
    unsigned units;  /* septets or UCS-2 units it takes */
};

struct pl_gsm_plan {
    enum pl_gsm_coding coding; /* for every part */
    unsigned units;            /* septets or UCS-2 units in all */
    unsigned nparts;           /* 1 when no UDH is needed */
    struct pl_gsm_part *parts; /* nparts entries, owned (pl_gsm_plan_free) */
};

/*
 * Plans text (len bytes of UTF-8): the coding and the parts.  PL_EINVAL
 * for invalid UTF-8 or an empty text; PL_ELIMIT when it needs more than
 * max_parts parts (max_parts <= PL_GSM_MAX_PARTS).  *plan untouched on
 * failure.
 */
int pl_gsm_plan(const char *text, size_t len, unsigned max_parts,
                struct pl_gsm_plan *plan);
void pl_gsm_plan_free(struct pl_gsm_plan *plan);

/*
 * The septets (one per byte, unpacked) of text in the default alphabet
 * with its extension table; PL_EINVAL if a character has no place there
 * or the UTF-8 is invalid.  out holds up to cap septets; *n gets how many
 * are needed (PL_ELIMIT when more than cap).
 */
int pl_gsm_septets(const char *text, size_t len, uint8_t *out, size_t cap,
                   size_t *n);
/* Packs n septets into octets (TS 23.038 §6.1.2.1.1), LSB first; out
 * needs (7 * n + 7) / 8 bytes; returns how many were written. */
size_t pl_gsm_pack(const uint8_t *septets, size_t n, uint8_t *out);
/* The Unicode code point of septet s (ext: after ESC), or -1. */
long pl_gsm_char(uint8_t s, int ext);

/* The 6-octet concatenation UDH (IEI 0x00, 8-bit reference). */
void pl_gsm_udh(uint8_t out[6], uint8_t ref, uint8_t total, uint8_t seq);

#endif
