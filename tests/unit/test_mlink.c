/*
 * test_mlink.c - the downloader's Metalink reader (src/media/
 * metalink_parse.c, fetch.h):
 *
 *   mlink_roundtrip  what pl_media_metalink (the server's writer) says
 *                    comes back: name, size, SHA-256, piece size and
 *                    every piece hash, http(s) urls with their priorities
 *                    (an escaped token URL intact), other schemes, URLs
 *                    with spaces, quotes or angle brackets, and
 *                    unknown elements skipped; an empty file; a document
 *                    without pieces;
 *   mlink_refusals   each strictness rule refuses its document with
 *                    PL_MEDIA_EINVAL and a message, leaving the struct
 *                    empty: another root, two files, no size, no sha-256,
 *                    two sha-256, bad hex, pieces not covering the size
 *                    (one too few, one too many), piece length out of
 *                    bounds, a size past the bound or not a number, a
 *                    name with a directory, no http(s) url, a priority out
 *                    of range, a DOCTYPE (entity expansion), text too
 *                    long, malformed XML, a document too large.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "media/fetch.h"
#include "unit.h"

static const char *HEX0 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static struct pl_buf written(uint64_t size, uint32_t psize,
                             unsigned char *whole, unsigned char **pieces,
                             uint64_t *np)
{
    unsigned char *data = malloc(size ? size : 1);
    for (uint64_t i = 0; i < size; i++)
        data[i] = (unsigned char)(i * 7 % 251);
    struct pl_media_hasher h;
    pl_media_hasher_init(&h, size, psize);
    pl_media_hasher_update(&h, data, size);
    pl_media_hasher_final(&h, whole);
    *np = h.npieces;
    *pieces = pl_media_hasher_take(&h);
    pl_media_hasher_free(&h);
    free(data);
    const struct pl_media_source src[] = {
        {"https://files.example.org/upload/ID/fw.img", 1},
        {"http://10.0.0.7:8080/m/x?token=abc&x=y", 2},
        {"http://10.0.0.8:8080/m/y", 7},
        {"http://10.0.0.9:8080/m/<z>", 2}, /* not a URL: skipped */
    };
    struct pl_media_info m = {
        .name = "fw \"2\" <&>.img",
        .size = size,
        .sha256 = whole,
        .piece_size = psize,
        .npieces = *np,
        .pieces = *pieces,
        .origin = "https://files.example.org/upload/ID/fw.img.meta4",
        .published = 1796000000,
        .sources = src,
        .nsources = 4,
    };
    struct pl_buf b = {0};
    pl_media_metalink(&m, &b);
    return b;
}

void test_mlink_roundtrip(void)
{
    unsigned char whole[32], *pieces;
    uint64_t np;
    struct pl_buf b = written(1000000, 262144, whole, &pieces, &np);
    struct pl_mlink m;
    char err[128];
    CHECK_INT(pl_mlink_parse(pl_buf_cstr(&b), b.len, &m, err, sizeof(err)),
              PL_MEDIA_OK);
    CHECK_STR(m.name, "fw \"2\" <&>.img");
    CHECK_INT(m.size, 1000000);
    CHECK(!memcmp(m.sha256, whole, 32));
    CHECK_INT(m.piece_size, 262144);
    CHECK_INT(m.npieces, 4);
    CHECK_INT(np, 4);
    CHECK(m.pieces && !memcmp(m.pieces, pieces, 4 * 32));
    CHECK_INT(m.wait, 0);
    CHECK_INT(m.nurls, 3);
    if (m.nurls == 3) {
        CHECK_STR(m.urls[0].url, "https://files.example.org/upload/ID/fw.img");
        CHECK_INT(m.urls[0].priority, 1);
        CHECK_STR(m.urls[1].url, "http://10.0.0.7:8080/m/x?token=abc&x=y");
        CHECK_INT(m.urls[1].priority, 2);
        CHECK_INT(m.urls[2].priority, 7);
    }
    pl_mlink_free(&m);
    CHECK(m.name == NULL && m.pieces == NULL && m.nurls == 0);
    free(pieces);
    pl_buf_reset(&b);

    /* An empty file: no pieces. */
    b = written(0, 262144, whole, &pieces, &np);
    CHECK_INT(pl_mlink_parse(pl_buf_cstr(&b), b.len, &m, err, sizeof(err)),
              PL_MEDIA_OK);
    CHECK_INT(m.size, 0);
    CHECK_INT(m.piece_size, 0);
    CHECK_INT(m.npieces, 0);
    CHECK(!memcmp(m.sha256, whole, 32));
    pl_mlink_free(&m);
    free(pieces);
    pl_buf_reset(&b);

    /* By hand: no pieces, a priority missing, other schemes and unknown
     * elements (with children, in other namespaces) skipped, another
     * algorithm's hash and pieces skipped. */
    char doc[4096];
    snprintf(doc, sizeof(doc),
             "<?xml version='1.0'?>\n"
             "<metalink xmlns='urn:ietf:params:xml:ns:metalink' "
             "xmlns:x='urn:example'>"
             "<x:ext><x:deep>t</x:deep></x:ext>"
             "<file name='a.bin'><description>d</description>"
             "<hash type='md5'>00</hash>"
             "<pieces length='1' type='sha-1'><hash>zz</hash></pieces>"
             "<size> 5 </size><hash type='sha-256'>\n %s\n</hash>"
             "<url>ftp://example.org/a.bin</url>"
             "<url priority='3'>magnet:?xt=1</url>"
             "<url>HTTP://Example.org/a.bin</url>"
             "<metaurl mediatype='torrent'>http://x/t</metaurl>"
             "</file></metalink>",
             HEX0);
    CHECK_INT(pl_mlink_parse(doc, strlen(doc), &m, err, sizeof(err)),
              PL_MEDIA_OK);
    CHECK_INT(m.size, 5);
    CHECK_INT(m.piece_size, 0);
    CHECK_INT(m.nurls, 1);
    if (m.nurls == 1) {
        CHECK_STR(m.urls[0].url, "HTTP://Example.org/a.bin");
        CHECK_INT(m.urls[0].priority, 999999);
    }
    CHECK_INT(m.wait, 0);
    pl_mlink_free(&m);

    /* Parley's <wait/> (a seat told to wait for peers), written and read
     * back; in another namespace, or outside <file>, it means nothing. */
    struct pl_media_source src = {"https://files.example.org/a.bin", 1};
    unsigned char sha[32] = {1};
    struct pl_media_info wi = {.name = "a.bin",
                               .size = 5,
                               .sha256 = sha,
                               .sources = &src,
                               .nsources = 1,
                               .wait = 1};
    pl_buf_reset(&b);
    pl_media_metalink(&wi, &b);
    CHECK_INT(pl_mlink_parse(pl_buf_cstr(&b), b.len, &m, err, sizeof(err)),
              PL_MEDIA_OK);
    CHECK_INT(m.wait, 1);
    CHECK_INT(m.nurls, 1);
    pl_mlink_free(&m);
    pl_buf_reset(&b);
    snprintf(doc, sizeof(doc),
             "<metalink xmlns='urn:ietf:params:xml:ns:metalink'>"
             "<wait xmlns='urn:parley:media:0'/>"
             "<file name='a.bin'><size>5</size><hash type='sha-256'>%s"
             "</hash><wait xmlns='urn:example'/><wait/>"
             "<url>http://example.org/a.bin</url></file></metalink>",
             HEX0);
    CHECK_INT(pl_mlink_parse(doc, strlen(doc), &m, err, sizeof(err)),
              PL_MEDIA_OK);
    CHECK_INT(m.wait, 0);
    pl_mlink_free(&m);
}

/* A document from its parts: the file element's inside given. */
static int parse_file(const char *name_attr, const char *inner)
{
    char doc[8192];
    snprintf(doc, sizeof(doc),
             "<metalink xmlns='urn:ietf:params:xml:ns:metalink'>"
             "<file %s>%s</file></metalink>",
             name_attr, inner);
    struct pl_mlink m;
    char err[128] = "";
    int rc = pl_mlink_parse(doc, strlen(doc), &m, err, sizeof(err));
    if (rc != PL_MEDIA_OK)
        CHECK(err[0] != '\0' && m.name == NULL && m.urls == NULL &&
              m.pieces == NULL);
    else
        pl_mlink_free(&m);
    return rc;
}

void test_mlink_refusals(void)
{
    char ok[1024], buf[8192], h[80];
    snprintf(h, sizeof(h), "<hash>%s</hash>", HEX0);
    snprintf(ok, sizeof(ok),
             "<size>3000</size><hash type='sha-256'>%s</hash>"
             "<url priority='1'>http://a/b</url>",
             HEX0);
    /* The base is accepted. */
    CHECK_INT(parse_file("name='f'", ok), PL_MEDIA_OK);
    /* Pieces: exactly ceil(3000 / 1024) = 3 hashes. */
    snprintf(buf, sizeof(buf),
             "%s<pieces length='1024' type='sha-256'>%s%s%s"
             "</pieces>",
             ok, h, h, h);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_OK);
    snprintf(buf, sizeof(buf),
             "%s<pieces length='1024' type='sha-256'>%s%s"
             "</pieces>",
             ok, h, h);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf),
             "%s<pieces length='1024' type='sha-256'>%s%s%s"
             "%s</pieces>",
             ok, h, h, h, h);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf),
             "%s<pieces length='0' type='sha-256'>%s"
             "</pieces>",
             ok, h);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf),
             "%s<pieces length='2147483648' "
             "type='sha-256'>%s</pieces>",
             ok, h);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf),
             "%s<pieces length='1024' type='sha-256'>"
             "<hash>%.63s</hash>%s%s</pieces>",
             ok, HEX0, h, h);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf),
             "%s<pieces length='1024' type='sha-256'>%s%s%s"
             "</pieces><pieces length='1024' type='sha-256'>%s%s%s</pieces>",
             ok, h, h, h, h, h, h);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    /* Names. */
    CHECK_INT(parse_file("", ok), PL_MEDIA_EINVAL);
    CHECK_INT(parse_file("name=''", ok), PL_MEDIA_EINVAL);
    CHECK_INT(parse_file("name='../etc/passwd'", ok), PL_MEDIA_EINVAL);
    CHECK_INT(parse_file("name='a/b'", ok), PL_MEDIA_EINVAL);
    CHECK_INT(parse_file("name='..'", ok), PL_MEDIA_EINVAL);
    CHECK_INT(parse_file("name='a&#10;b'", ok), PL_MEDIA_EINVAL);
    /* Sizes and hashes. */
    snprintf(buf, sizeof(buf),
             "<hash type='sha-256'>%s</hash>"
             "<url>http://a/b</url>",
             HEX0);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL); /* no size */
    CHECK_INT(parse_file("name='f'", "<size>3</size><url>http://a/b</url>"),
              PL_MEDIA_EINVAL); /* no hash */
    snprintf(buf, sizeof(buf),
             "<size>3</size><hash type='sha-1'>%.40s</hash>"
             "<url>http://a/b</url>",
             HEX0);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL); /* no sha-256 */
    snprintf(buf, sizeof(buf), "%s<hash type='sha-256'>%s</hash>", ok, HEX0);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL); /* two */
    snprintf(buf, sizeof(buf),
             "<size>3</size><hash type='sha-256'>%.62sxx"
             "</hash><url>http://a/b</url>",
             HEX0);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    const char *sizes[] =
        {"-1", "1e3", "", "17592186044417", "99999999999999999999999", "0x10"};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        snprintf(buf, sizeof(buf),
                 "<size>%s</size><hash type='sha-256'>%s"
                 "</hash><url>http://a/b</url>",
                 sizes[i], HEX0);
        CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    }
    snprintf(buf, sizeof(buf), "%s<size>3</size>", ok);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL); /* two sizes */
    /* URLs. */
    snprintf(buf, sizeof(buf),
             "<size>3</size><hash type='sha-256'>%s</hash>"
             "<url>ftp://a/b</url><url>file:///etc/passwd</url>",
             HEX0);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf), "%s<url priority='0'>http://a/c</url>", ok);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf), "%s<url priority='1000000'>http://a/c</url>",
             ok);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    snprintf(buf, sizeof(buf), "%s<url priority='x'>http://a/c</url>", ok);
    CHECK_INT(parse_file("name='f'", buf), PL_MEDIA_EINVAL);
    /* Text too long. */
    char *big = malloc(PL_MLINK_MAX_TEXT + 200);
    int n = snprintf(big, 100, "<url>http://a/");
    memset(big + n, 'a', PL_MLINK_MAX_TEXT);
    strcpy(big + n + PL_MLINK_MAX_TEXT, "</url>");
    char *doc = malloc(PL_MLINK_MAX_TEXT + 2048);
    snprintf(doc, PL_MLINK_MAX_TEXT + 2048,
             "<metalink xmlns='urn:ietf:params:xml:ns:metalink'><file "
             "name='f'>%s%s</file></metalink>",
             ok, big);
    struct pl_mlink m;
    char err[128];
    CHECK_INT(pl_mlink_parse(doc, strlen(doc), &m, err, sizeof(err)),
              PL_MEDIA_EINVAL);
    free(big);
    free(doc);

    /* Whole documents. */
    const char *docs[] = {
        "<metalink xmlns='urn:ietf:params:xml:ns:metalink'/>",
        "<metalink xmlns='urn:example'><file name='f'/></metalink>",
        "<metalink><file name='f'/></metalink>",
        "<metalink xmlns='urn:ietf:params:xml:ns:metalink'><file name='f'>"
        "<size>3</size></file>",
        "<!DOCTYPE m [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]>"
        "<metalink xmlns='urn:ietf:params:xml:ns:metalink'><file name='f'>"
        "<size>3</size></file></metalink>",
        "",
        "not xml at all",
        "<metalink xmlns='urn:ietf:params:xml:ns:metalink'>stray text"
        "</metalink>",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        err[0] = '\0';
        CHECK_INT(pl_mlink_parse(docs[i], strlen(docs[i]), &m, err,
                                 sizeof(err)),
                  PL_MEDIA_EINVAL);
        CHECK(err[0] != '\0');
    }
    snprintf(buf, sizeof(buf),
             "<metalink xmlns='urn:ietf:params:xml:ns:metalink'>"
             "<file name='a'>%s</file><file name='b'>%s</file></metalink>",
             ok, ok);
    CHECK_INT(pl_mlink_parse(buf, strlen(buf), &m, err, sizeof(err)),
              PL_MEDIA_EINVAL);
    CHECK_INT(pl_mlink_parse(buf, (size_t)PL_MLINK_MAX_DOC + 1, &m, err,
                             sizeof(err)),
              PL_MEDIA_EINVAL);
}
