/*
 * wsframe.h - RFC 6455 frames, server side: a reader for what a client
 * sends, and the headers of what a server sends.  websocket.c carries
 * XMPP over it (RFC 7395); see wsframe.c for how the reader keeps no
 * memory between frames.
 *
 * Reading: struct pl_ws_in, zeroed, is one connection's reader; each
 * read goes to pl_ws_in_feed(), which calls back for each whole text
 * message (unmasked, reassembled, valid UTF-8), each ping and the
 * client's close frame, and answers with the close code to fail the
 * connection with when the client broke the protocol.  Between frames
 * (outside a fragmented message) it holds no heap memory; a frame split
 * across reads is kept, unmasked, in r->part until it is whole.
 * pl_ws_in_free() gives back what it holds (the connection is gone).
 *
 * Writing: pl_ws_header() makes the header of a final, unmasked frame.
 *
 * Extending: an extension (RSV bits, RFC 6455 §9) would be negotiated
 * at the handshake and let through in frame_begin().
 */
#ifndef PL_HTTP_WSFRAME_H
#define PL_HTTP_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

/* Opcodes (RFC 6455 §5.2). */
enum {
    PL_WS_CONT = 0x0,
    PL_WS_TEXT = 0x1,
    PL_WS_BINARY = 0x2,
    PL_WS_CLOSE = 0x8,
    PL_WS_PING = 0x9,
    PL_WS_PONG = 0xa,
};

/* Close codes (RFC 6455 §7.4.1). */
enum {
    PL_WS_NORMAL = 1000,      /* closing handshake */
    PL_WS_GOING_AWAY = 1001,  /* server going down */
    PL_WS_PROTOCOL = 1002,    /* protocol error */
    PL_WS_UNSUPPORTED = 1003, /* binary message (RFC 7395: text only) */
    PL_WS_NOT_UTF8 = 1007,    /* text that is not UTF-8 */
    PL_WS_TOO_BIG = 1009,     /* message longer than allowed */
};

/* One connection's reader; zero it to start. */
struct pl_ws_in {
    char *part;            /* payload split across reads, unmasked:
                            * the message so far, then a control
                            * frame's; NULL between frames */
    size_t plen;           /* bytes in part */
    size_t pcap;           /* its size */
    size_t mlen;           /* of plen, the data message's */
    uint64_t left;         /* payload bytes of this frame still to come */
    unsigned char hdr[14]; /* the frame header being read */
    unsigned char hlen;    /* its bytes so far (0 inside a payload) */
    unsigned char op;      /* the frame's opcode */
    unsigned char mask[4]; /* its masking key */
    unsigned char moff;    /* the key's byte for the next payload byte */
    unsigned fin : 1;      /* the frame is final */
    unsigned frag : 1;     /* inside a fragmented message */
    unsigned done : 1;     /* close frame or failure: nothing more read */
};

struct pl_ws_in_ops {
    /* A whole text message of n bytes, valid UTF-8, borrowed for the
     * call.  Nonzero: read nothing more (the connection is closing). */
    int (*text)(void *ud, const char *p, size_t n);
    /* A ping's payload (at most 125 bytes): a pong is due. */
    void (*ping)(void *ud, const char *p, size_t n);
    /* The client's close frame, valid, with its status code (0: none);
     * nothing more is read. */
    void (*close)(void *ud, unsigned code);
};

/*
 * Reads the n bytes at p (borrowed), calling ops with ud.  Returns 0, or
 * the close code to fail the connection with (RFC 6455 §7.1.7), after
 * which nothing more is read: PL_WS_PROTOCOL (a frame the RFC forbids
 * from a client: unmasked, RSV bits, unknown opcode, a control frame
 * fragmented or over 125 bytes, a length not in its shortest form,
 * fragments out of order, a close frame with a bad code),
 * PL_WS_UNSUPPORTED (a binary frame), PL_WS_NOT_UTF8 (a text message or
 * close reason that is not UTF-8), PL_WS_TOO_BIG (a message over max
 * bytes, told at its frame header).
 */
int pl_ws_in_feed(struct pl_ws_in *r, const char *p, size_t n, uint64_t max,
                  const struct pl_ws_in_ops *ops, void *ud);

/* Frees what r holds; r may be fed again (as a new connection). */
void pl_ws_in_free(struct pl_ws_in *r);

/* Writes to h the header of a final unmasked frame of opcode with len
 * bytes of payload; returns its length (2, 4 or 10). */
size_t pl_ws_header(unsigned char h[10], unsigned opcode, uint64_t len);

/* Whether p[0..n) is UTF-8 (RFC 3629: shortest forms, no surrogates,
 * nothing above U+10FFFF). */
int pl_ws_utf8_valid(const char *p, size_t n);

#endif
