#!/usr/bin/python3
"""test_http.py - the HTTP front end (src/http/) of a real parleyd, with
curl (Debian's) and raw sockets.

XEP-0156 host-meta in both forms with CORS (allowed origin, other origin,
preflights); static files with ETag, 304, Range, 416 and HEAD; HTTPS
with SNI picking each host's certificate (curl --resolve and --cacert);
a slowloris client (bytes trickled) answered 408 and closed while another
client is served meanwhile; oversized headers 431; the per-address
connection limit answered 503; path traversal attempts (../, %2e%2e,
encoded slashes, symbolic links) all refused; the counters of
`parleyctl stats`.

Run with /usr/bin/python3; `scripts/run-tests test_http`.
"""

import json
import os
import select
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
ORIGIN = "https://web.example"


def curl(*args, timeout=20):
    """curl's exit status, and the answer's head and body (-i)."""
    p = subprocess.run(["curl", "-s", "-i", "--max-time", "10"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    out = p.stdout
    head, _, body = out.partition(b"\r\n\r\n")
    # A 100 Continue or the like first: the final answer's head.
    while head.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in body:
        head, _, body = body.partition(b"\r\n\r\n")
    return p.returncode, head.decode("latin-1"), body


def status(head):
    parts = head.split(" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def field(head, name):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def raw(port, data, timeout=10):
    """Sends data, returns everything until the server closes (bounded)."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(data)
    got = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], end - time.monotonic())
        if not r:
            break
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        got += b
    s.close()
    return got


def main():
    plain, tls, limited = harness.free_ports(3)
    srv = harness.Server(
        hosts=["localhost", "example.test"],
        host_extra='http = { cors_origins = ["%s"]; };' % ORIGIN,
        listeners_extra=(
            '{ protocol = "http"; address = "127.0.0.1"; port = %d; },\n'
            '  { protocol = "http"; address = "127.0.0.1"; port = %d; '
            'tls = "direct"; },\n'
            '  { protocol = "http"; address = "127.0.0.1"; port = %d; '
            'max_connections_per_ip = 2; }' % (plain, tls, limited)))
    www = os.path.join(srv.dir, "www")
    os.makedirs(os.path.join(www, "sub"))
    with open(os.path.join(www, "a.txt"), "wb") as f:
        f.write(bytes(range(256)) * 40)  # 10240 bytes
    with open(os.path.join(www, "sub", "index.html"), "w") as f:
        f.write("<p>index</p>")
    with open(os.path.join(srv.dir, "secret.txt"), "w") as f:
        f.write("SECRET-CONTENT")
    os.symlink(os.path.join(srv.dir, "secret.txt"),
               os.path.join(www, "link.txt"))
    os.symlink(srv.dir, os.path.join(www, "up"))
    srv.extra = ('http: { request_timeout = 2; static = ( { path = "/files/";'
                 ' root = "%s"; } ); };' % www)
    if not srv.start():
        harness.finish()
    base = "http://127.0.0.1:%d" % plain

    # -- XEP-0156
    rc, head, body = curl(base + "/.well-known/host-meta")
    check("http: host-meta answers 200 with an XRD document",
          status(head) == 200 and
          field(head, "Content-Type").startswith("application/xrd+xml"),
          head)
    try:
        root = ET.fromstring(body)
        links = root.findall(XRD + "Link")
        good = root.tag == XRD + "XRD" and all(
            (ln.get("rel") == "urn:xmpp:alt-connections:websocket" and
             ln.get("href") == "ws://127.0.0.1:%d/xmpp-websocket" % plain) or
            (ln.get("rel") == "urn:xmpp:alt-connections:xbosh" and
             ln.get("href") == "http://127.0.0.1:%d/http-bind" % plain)
            for ln in links)
    except ET.ParseError as e:
        good, links = False, str(e)
    check("http: host-meta links (if any) name this server's endpoints",
          good, body.decode("latin-1"))
    rc, head, body = curl("--resolve", "example.test:%d:127.0.0.1" % tls,
                          "--cacert",
                          os.path.join(srv.dir, "var/certs/example.test.crt"),
                          "https://example.test:%d/.well-known/host-meta.json"
                          % tls)
    try:
        doc = json.loads(body)
        good = isinstance(doc.get("links"), list) and all(
            ln["href"].startswith(("wss://example.test:%d/" % tls,
                                   "https://example.test:%d/" % tls))
            for ln in doc["links"])
    except (ValueError, KeyError, TypeError) as e:
        good = False
        body = repr(e).encode() + body
    check("http: host-meta.json over HTTPS (SNI example.test, its own "
          "certificate verified), wss/https links",
          rc == 0 and status(head) == 200 and good and
          field(head, "Content-Type") == "application/json",
          "curl %d: %s %r" % (rc, head, body))
    rc, head, _ = curl("-H", "Origin: " + ORIGIN,
                       base + "/.well-known/host-meta",
                       "-H", "Host: localhost")
    check("http: CORS: an allowed origin gets Access-Control-Allow-Origin",
          field(head, "Access-Control-Allow-Origin") == ORIGIN, head)
    rc, head, _ = curl("-H", "Origin: https://evil.example",
                       "-H", "Host: localhost",
                       base + "/.well-known/host-meta")
    check("http: CORS: another origin gets no Access-Control-Allow-Origin",
          status(head) == 200 and
          field(head, "Access-Control-Allow-Origin") is None, head)
    rc, head, _ = curl("-X", "OPTIONS", "-H", "Origin: " + ORIGIN,
                       "-H", "Host: localhost",
                       "-H", "Access-Control-Request-Method: GET",
                       base + "/.well-known/host-meta")
    check("http: CORS preflight of an allowed origin: 204 with the methods",
          status(head) == 204 and
          "GET" in (field(head, "Access-Control-Allow-Methods") or "") and
          field(head, "Access-Control-Max-Age") is not None, head)
    rc, head, _ = curl("-X", "OPTIONS", "-H", "Origin: https://evil.example",
                       "-H", "Host: localhost",
                       "-H", "Access-Control-Request-Method: GET",
                       base + "/.well-known/host-meta")
    check("http: CORS preflight of another origin: 403", status(head) == 403,
          head)

    # -- static files
    url = base + "/files/a.txt"
    rc, head, body = curl(url)
    etag = field(head, "ETag") or ""
    check("http: a static file: 200, its bytes, a strong ETag",
          status(head) == 200 and body == bytes(range(256)) * 40 and
          etag.startswith('"') and field(head, "Content-Type") ==
          "text/plain; charset=utf-8", head)
    rc, head, body = curl("-H", "If-None-Match: " + etag, url)
    check("http: If-None-Match with its ETag: 304, no body",
          status(head) == 304 and body == b"", head)
    rc, head, body = curl("-H", "If-Modified-Since: " +
                          field(curl(url)[1], "Last-Modified"), url)
    check("http: If-Modified-Since its Last-Modified: 304",
          status(head) == 304, head)
    rc, head, body = curl("-r", "256-511", url)
    check("http: Range: 206 with the bytes and Content-Range",
          status(head) == 206 and body == bytes(range(256)) and
          field(head, "Content-Range") == "bytes 256-511/10240", head)
    rc, head, body = curl("-r", "-10", url)
    check("http: a suffix Range: the last bytes",
          status(head) == 206 and body == bytes(range(246, 256)), head)
    rc, head, body = curl("-r", "20000-", url)
    check("http: an unsatisfiable Range: 416 with Content-Range bytes */len",
          status(head) == 416 and
          field(head, "Content-Range") == "bytes */10240", head)
    rc, head, body = curl("-r", "0-1,5-6", url)
    check("http: several ranges: 200 with the whole file",
          status(head) == 200 and len(body) == 10240, head)
    rc, head, body = curl("-I", url)
    check("http: HEAD: the length, no body",
          status(head) == 200 and field(head, "Content-Length") == "10240" and
          body == b"", head)
    rc, head, body = curl(base + "/files/sub/")
    check("http: a directory is served as its index.html",
          status(head) == 200 and body == b"<p>index</p>" and
          field(head, "Content-Type").startswith("text/html"), head)
    rc, head, body = curl("--resolve", "localhost:%d:127.0.0.1" % tls,
                          "--cacert",
                          os.path.join(srv.dir, "var/certs/localhost.crt"),
                          "https://localhost:%d/files/a.txt" % tls)
    check("http: HTTPS (SNI localhost, its certificate verified): the file "
          "in pieces under TLS",
          rc == 0 and status(head) == 200 and
          body == bytes(range(256)) * 40, "curl %d: %s" % (rc, head))

    # -- traversal
    for path in ["/files/../secret.txt", "/files/%2e%2e/secret.txt",
                 "/files/%2E%2E/secret.txt", "/files/..%2fsecret.txt",
                 "/files/sub/..%2F..%2Fsecret.txt", "/files/%2fetc/passwd",
                 "/files/./a.txt", "/files/a.txt%00.html",
                 "/files/sub/../../secret.txt"]:
        rc, head, body = curl("--path-as-is", base + path)
        check("http: traversal %s refused with 400" % path,
              status(head) == 400 and b"SECRET" not in body, head)
    for path in ["/files/link.txt", "/files/up/secret.txt",
                 "/files/.hidden", "/files//a.txt"]:
        rc, head, body = curl("--path-as-is", base + path)
        check("http: %s (link, hidden or empty name) is 404" % path,
              status(head) == 404 and b"SECRET" not in body, head)
    got = raw(plain, b"GET /files/../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    check("http: a raw ../ request: 400 and closed",
          got.startswith(b"HTTP/1.1 400 ") and b"SECRET" not in got,
          got[:200])

    # -- limits
    big = b"GET /files/a.txt HTTP/1.1\r\nHost: localhost\r\n" + \
        b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70)) + \
        b"\r\n"
    got = raw(plain, big)
    check("http: oversized headers: 431 and closed",
          got.startswith(b"HTTP/1.1 431 "), got[:200])

    # Slowloris: a head trickled a line at a time never completes in
    # request_timeout (2 s): 408, closed; another client is served
    # meanwhile.
    s = socket.create_connection(("127.0.0.1", plain), 5)
    s.sendall(b"GET /files/a.txt HTTP/1.1\r\nHost: localhost\r\n")
    got = b""
    served = False
    end = time.monotonic() + 15
    i = 0
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], 0.3)
        if r:
            b = s.recv(4096)
            if not b:
                break
            got += b
            continue
        try:
            s.sendall(b"X-Slow-%d: x\r\n" % i)
        except OSError:
            break
        i += 1
        if not served:
            rc, head, _ = curl(base + "/files/a.txt")
            served = status(head) == 200
    s.close()
    check("http: slowloris: 408 Request Timeout, then closed",
          got.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in got,
          got[:200])
    check("http: another client is served while slowloris trickles", served)

    # Per-address limit 2 on the third listener: the third is 503.
    a = socket.create_connection(("127.0.0.1", limited), 5)
    b = socket.create_connection(("127.0.0.1", limited), 5)
    a.sendall(b"GET /files/a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
    a.settimeout(10)
    first = a.recv(100)  # both accepted by now (in order)
    got = raw(limited, b"")
    check("http: over max_connections_per_ip: 503 and closed",
          first.startswith(b"HTTP/1.1 200") and
          got.startswith(b"HTTP/1.1 503 "), "%r %r" % (first, got[:100]))
    a.close()
    b.close()

    # --check-config: what an http entry or the http group may not say.
    for what, conf, expect in [
        ("tls = starttls", '{ protocol = "http"; port = 1; tls = "starttls";'
         ' }', "no STARTTLS"),
        ("an unknown service", '{ protocol = "http"; port = 1; services = '
         '["websocket", "gopher"]; }', "unknown service 'gopher'"),
        ("a static path without its final /", '{ protocol = "http"; port = 1;'
         ' }', "path must start and end with '/'")]:
        path = os.path.join(srv.dir, "check.conf")
        with open(path, "w") as f:
            f.write('server: { data_dir = "%s"; };\nlisteners = ( %s );\n'
                    'hosts = ( { domain = "localhost"; } );\n'
                    % (os.path.join(srv.dir, "var"), conf))
            if "static" in what:
                f.write('http: { static = ( { path = "/x"; root = "/tmp"; }'
                        ' ); };\n')
        p = subprocess.run([srv.bin, "--config", path, "--check-config"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        out = p.stdout.decode("utf-8", "replace")
        check("http: --check-config refuses %s, naming the line" % what,
              p.returncode != 0 and expect in out and "check.conf:" in out,
              out)

    st = srv.stats()
    check("http: parleyctl stats counts requests and answers by class",
          st.get("http_requests", 0) > 20 and
          st.get("http_responses_2xx", 0) > 5 and
          st.get("http_responses_4xx", 0) > 5 and
          st.get("http_responses_5xx", 0) >= 1 and
          st.get("http_bytes_out", 0) > 10240,
          json.dumps({k: v for k, v in st.items() if k.startswith("http")}))
    harness.finish()


if __name__ == "__main__":
    main()
