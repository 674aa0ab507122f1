#!/usr/bin/python3
"""test_metrics.py - GET /metrics (src/http/metrics.c).

Three HTTP listeners: one on loopback with no `services` (operator
services allowed there), one on loopback serving only "websocket", and
one on 0.0.0.0 with no `services` (a public address: no operator
services; the test still talks to it over loopback).  Checked:
  - the scrape parses line by line per the text exposition format 0.0.4
    (HELP and TYPE once per family and before its samples, names and
    labels well-formed, values numbers, Content-Type version=0.0.4);
  - after traffic (logins over TCP and WebSocket, a chat message, a
    stanza error, a stream error, TLS handshakes) the counters moved:
    stanzas routed, TLS handshakes, sessions by transport, errors by
    condition, HTTP requests;
  - /metrics on the public and the websocket-only listener is 404.
Run with /usr/bin/python3.
"""

import http.client
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import add_users, PW  # noqa: E402
from ws_common import WsClient  # noqa: E402

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*,?\})? ([^ ]+)( -?[0-9]+)?$"
                    % (NAME, LABEL, LABEL))
NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?"
                    r"|Nan|NaN|\+Inf|-Inf)$")


def get(port, path="/metrics"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode("utf-8")
    c.close()
    return r.status, r.getheader("Content-Type") or "", body


def parse(text):
    """Parses an exposition; returns ({(name, labels): value}, errors)."""
    errors = []
    samples = {}
    types, helps, seen_sample_of = {}, {}, set()
    if not text.endswith("\n"):
        errors.append("does not end with a line feed")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.match("^%s$" % NAME, name):
                    errors.append("%d: bad name %r" % (n, name))
                table = helps if parts[1] == "HELP" else types
                if name in table:
                    errors.append("%d: second %s for %s" % (n, parts[1],
                                                           name))
                if name in seen_sample_of:
                    errors.append("%d: %s after samples of %s"
                                  % (n, parts[1], name))
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in (
                            "counter", "gauge", "histogram", "summary",
                            "untyped"):
                        errors.append("%d: bad TYPE line" % n)
                    else:
                        types[name] = parts[3]
                else:
                    helps[name] = parts[3] if len(parts) == 4 else ""
            continue
        if not line.strip():
            continue
        m = SAMPLE.match(line)
        if not m:
            errors.append("%d: not a sample line: %r" % (n, line))
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        if not NUMBER.match(value):
            errors.append("%d: bad value %r" % (n, value))
            continue
        if name not in types:
            errors.append("%d: %s has no TYPE before it" % (n, name))
        if name not in helps:
            errors.append("%d: %s has no HELP" % (n, name))
        if types.get(name) == "counter" and not name.endswith("_total"):
            errors.append("%d: counter %s without _total" % (n, name))
        seen_sample_of.add(name)
        key = (name, labels)
        if key in samples:
            errors.append("%d: duplicate sample %s%s" % (n, name, labels))
        samples[key] = float(value)
    return samples, errors


def value(samples, name, labels=""):
    return samples.get((name, labels))


def main():
    ops_port, ws_port, public_port = harness.free_ports(3)
    srv = harness.Server(
        listeners_extra=(
            '{ protocol = "http"; address = "127.0.0.1"; port = %d; },\n  '
            '{ protocol = "http"; address = "127.0.0.1"; port = %d; '
            'secure = true; services = ["websocket"]; },\n  '
            '{ protocol = "http"; address = "0.0.0.0"; port = %d; }'
            % (ops_port, ws_port, public_port)))
    if not srv.start():
        harness.finish()
        return
    alice, bob = add_users(srv, harness.unique("ma"), harness.unique("mb"))

    status, ctype, text = get(ops_port)
    check("GET /metrics answers 200", status == 200, str(status))
    check("Content-Type says version 0.0.4",
          ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype)
    before, errors = parse(text)
    check("the exposition parses line by line", not errors,
          "; ".join(errors[:5]))
    check("build info and uptime are there",
          value(before, "parley_build_info",
                '{version="%s"}' % "0.1.0") == 1 and
          value(before, "parley_uptime_seconds") is not None)

    # Traffic: a TCP client (STARTTLS: a TLS handshake), a WebSocket one,
    # a message, a stanza error, a stream error.
    a = harness.RawClient(srv.host, srv.starttls_port, srv.domain)
    a.login(alice.split("@")[0], PW, "tcp")
    w = WsClient(srv.host, ws_port, srv.domain)
    w.connect_tls()
    el = w.auth_plain(bob.split("@")[0], PW)
    check("a WebSocket client logs in",
          el.tag.endswith("success"), el.tag)
    w.restart()
    w.bind("ws")
    a.send("<message to='%s/ws' type='chat'><body>hi</body></message>" % bob)
    w.next(lambda e: e.tag.endswith("message"), timeout=10)
    a.send("<iq type='get' id='e1' to='%s'><nope xmlns='urn:x:none'/></iq>"
           % srv.domain)
    a.next(lambda e: e.get("id") == "e1", timeout=10)
    s = socket.create_connection((srv.host, srv.starttls_port), timeout=5)
    s.sendall(b"<stream:stream xmlns='jabber:client' to='%s' "
              b"xmlns:stream='http://etherx.jabber.org/streams' "
              b"version='1.0'><bogus/>" % srv.domain.encode())
    data = b""
    try:
        while b"</stream:stream>" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()

    status, ctype, text = get(ops_port)
    after, errors = parse(text)
    check("the second scrape parses too", status == 200 and not errors,
          "; ".join(errors[:5]))

    def moved(name, labels="", by=1):
        b = value(before, name, labels) or 0
        x = value(after, name, labels)
        check("%s%s moved by at least %d" % (name, labels, by),
              x is not None and x - b >= by, "%s -> %s" % (b, x))

    moved("parley_stanzas_routed_total", by=2)
    moved("parley_stanzas_in_total", by=2)
    moved("parley_tls_handshakes_total")
    moved("parley_sessions_bound_total", by=2)
    moved("parley_http_requests_total", by=2)
    moved("parley_stanza_errors_by_condition_total",
          '{condition="service-unavailable"}')
    moved("parley_stream_errors_by_condition_total",
          '{condition="unsupported-stanza-type"}')
    moved("parley_connections_accepted_total", by=3)
    check("sessions by transport: one c2s, one websocket",
          value(after, "parley_sessions", '{transport="c2s"}') == 1 and
          value(after, "parley_sessions", '{transport="websocket"}') == 1,
          str([(k, v) for k, v in after.items()
               if k[0] == "parley_sessions"]))
    check("open HTTP connections are a gauge",
          value(after, "parley_frontend_connections",
                '{frontend="http"}') is not None)
    check("the storage queue depth is exposed",
          value(after, "parley_storage_queue_jobs") is not None)
    # The heap figure is glibc's (mallinfo2): 0 under AddressSanitizer,
    # whose allocator replaces it; it must still be there.
    check("process memory is exposed",
          (value(after, "process_resident_memory_bytes") or 0) > 0 and
          value(after, "parley_heap_in_use_bytes") is not None)
    check("connections_open is a gauge, not a _total",
          value(after, "parley_connections_open") is not None)

    for port, what in ((public_port, "a listener on 0.0.0.0"),
                       (ws_port, "a listener serving only websocket")):
        status, _, _ = get(port)
        check("/metrics on %s is 404" % what, status == 404, str(status))
    status, _, _ = get(ops_port, "/metrics/x")
    check("a path under /metrics is 404", status == 404, str(status))
    c = http.client.HTTPConnection("127.0.0.1", ops_port, timeout=10)
    c.request("POST", "/metrics", body=b"")
    r = c.getresponse()
    r.read()
    c.close()
    check("POST /metrics is 405", r.status == 405, str(r.status))
    a.close()
    harness.finish()


if __name__ == "__main__":
    main()
