/*
 * mime.h - e-mail messages to and from plain structs, with GMime 3.
 *
 * Incoming (pl_mail_parse): the raw RFC 5322 message becomes a struct
 * pl_mail_msg: From, To/Cc, Subject (RFC 2047 words decoded), Message-ID,
 * In-Reply-To, the text (text/plain preferred, else text/html turned into
 * readable text by pl_mail_html_to_text), every string in UTF-8 (a part's
 * charset is converted; undecodable bytes become U+FFFD), and the
 * attachments (name, type, decoded bytes).  Limits (struct
 * pl_mail_limits) bound the attachment count and total bytes, the
 * nesting depth of multiparts and attached messages, and the text
 * length; what lies beyond is dropped and counted in ->dropped, except a
 * message nested more than PL_MAIL_MAX_CONTAINERS deep in its headers,
 * which is refused whole (PL_ELIMIT) before GMime's recursive parser sees
 * it.
 *
 * Outgoing (pl_mail_build): From, To, Subject (RFC 2047-encoded when not
 * ASCII), Date, Message-ID, MIME-Version, In-Reply-To/References, and one
 * text/plain part in UTF-8 whose transfer encoding GMime picks (7bit,
 * quoted-printable or base64, RFC 2045 §6), with the links to uploaded
 * files listed after the text; with attachments (files fetched from the
 * upload service, media.c), a multipart/mixed of that text part and one
 * base64 part per file (Content-Disposition: attachment, RFC 2183).
 * Lines end in CRLF, ready for SMTP.
 *
 * GMime is initialized once per process by the first call (thread-safe).
 */
#ifndef PL_GW_MIME_H
#define PL_GW_MIME_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "str.h"

/* Containers (multiparts, attached messages) allowed in one message's
 * headers before parsing; more is refused (PL_ELIMIT). */
#define PL_MAIL_MAX_CONTAINERS 256

struct pl_mail_limits {
    size_t max_attachments;      /* kept per message (20) */
    size_t max_attachment_bytes; /* total decoded bytes kept (25 MiB) */
    unsigned max_depth;          /* nesting levels walked (8) */
    size_t max_text;             /* bytes of text kept (256 KiB) */
};

void pl_mail_limits_default(struct pl_mail_limits *lim);

struct pl_mail_attachment {
    char *name;          /* filename (UTF-8), or a made-up "part-N" */
    char *type;          /* "image/png" */
    unsigned char *data; /* decoded bytes */
    size_t len;          /* their count */
};

struct pl_mail_msg {
    char *from;         /* addr-spec of the first From mailbox, or NULL */
    char *from_name;    /* its display name (UTF-8), or NULL */
    char **to;          /* To and Cc addr-specs */
    size_t nto;         /* how many */
    char *subject;      /* UTF-8, or NULL */
    char *message_id;   /* without angle brackets, or NULL */
    char *in_reply_to;  /* without angle brackets, or NULL */
    char *text;         /* the body text in UTF-8 (never NULL) */
    int text_from_html; /* text came from text/html */
    struct pl_mail_attachment *att; /* attachments */
    size_t natt;                    /* how many */
    unsigned dropped;               /* parts or bytes left out by the limits */
    unsigned bad_charset; /* parts whose charset was unknown or broken */
};

/*
 * Parses raw (borrowed) into a new struct (*out, free with
 * pl_mail_msg_free).  lim may be NULL for the defaults.  PL_EINVAL if
 * GMime finds no message at all, PL_ELIMIT if it nests too deep (above).
 * Malformed MIME (a missing boundary, a bad encoding) is not an error:
 * whatever GMime recovers is used.
 */
int pl_mail_parse(struct pl_str raw, const struct pl_mail_limits *lim,
                  struct pl_mail_msg **out);
void pl_mail_msg_free(struct pl_mail_msg *m);

/*
 * HTML to readable UTF-8 text (no dependency): tags dropped, script,
 * style and head skipped, block elements and <br> as line breaks, list
 * items as "- ", links as "text <url>", entities decoded, whitespace
 * collapsed outside <pre>.  Appends to out.
 */
void pl_mail_html_to_text(struct pl_str html, struct pl_buf *out);

/* A link to an uploaded file, listed after the text. */
struct pl_mail_link {
    const char *url;  /* https://upload.example/... */
    const char *name; /* file name shown, or NULL */
    const char *type; /* media type, or NULL */
    size_t size;      /* bytes, 0 if unknown */
};

struct pl_mail_out {
    const char *from;                 /* addr-spec */
    const char *from_name;            /* display name (UTF-8) or NULL */
    const char *const *to;            /* addr-specs */
    size_t nto;                       /* how many (>= 1) */
    const char *subject;              /* UTF-8 or NULL */
    const char *text;                 /* UTF-8 body */
    const struct pl_mail_link *links; /* uploaded files */
    size_t nlinks;                    /* how many */
    const char *in_reply_to;          /* Message-ID replied to (no brackets) */
    const char *id_domain;            /* right side of the new Message-ID */
    const char *message_id;           /* or this one (no brackets), or NULL */
    time_t date;                      /* 0: now */
    /* Files to attach (media.c fetched them), or NULL; natt: how many. */
    const struct pl_mail_attachment *att;
    size_t natt;
};

/*
 * Builds the message into out (appended, CRLF line ends).  *message_id,
 * if not NULL, receives the new Message-ID (without brackets; free with
 * pl_free).  PL_EINVAL for a missing from/to/text or an address GMime
 * cannot parse.
 */
int pl_mail_build(const struct pl_mail_out *o, struct pl_buf *out,
                  char **message_id);

/* Once per process, before any GMime call (pl_mail_* call it). */
void pl__mail_gmime_init(void);

#endif
