#!/usr/bin/python3
"""test_tls_idle.py - TLS sessions that went idle work as before (issue 18).

After SASL each session's TLS 1.3 records are sealed and opened by
Parley's record layer and OpenSSL's connection object is freed
(c2s.tls_handover: the counter tls_handovers says so).  An idle client
stream gives its memory back: after 2 s without a byte
its XML parser naps (parleyctl stats counts it: c2s_naps), its output
buffer is freed, and OpenSSL holds no record buffer between records
(SSL_MODE_RELEASE_BUFFERS, src/core/tls.c).  The next bytes need all of
them again.  Two slixmpp clients, one over STARTTLS and one over direct
TLS (XEP-0368), log in and exchange a message; once both streams napped
(the counter, not a sleep), they exchange 300 messages each way at once
(every one arrives, in order), then a message near max_stanza_size each
way (several TLS records: arrives whole); they nap again and the large
message goes first this time, then a round of small ones.  Both
sessions are still bound at the end, and the server's log is clean.

Run with /usr/bin/python3; `scripts/run-tests tls_idle`.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import PW, EventBox, LoopThread, add_users  # noqa: E402

BURST = 300          # messages each way after a nap
MAX_STANZA = 65536   # the harness's limits.max_stanza_size
NAP_WAIT = 30        # seconds for streams to nap (idle 2 s, 5 s timer)


def make_client(lt, jid, box):
    import slixmpp
    x = slixmpp.ClientXMPP(jid, PW)
    harness.slixmpp_without_channel_binding(x, None)
    x.ssl_context = harness.no_verify_context()
    x.use_ipv6 = False
    x.whitespace_keepalive = False  # idle means idle
    x.add_event_handler("message", lambda m: box.put(
        (str(m["from"]), m["body"])))
    x.add_event_handler("session_start", lambda *_: (
        x.send_presence(), box.put(("session", jid))))
    x.add_event_handler("disconnected", lambda *_: box.put(
        ("disconnected", jid)))
    return x


def send(lt, x, to, body):
    lt.loop.call_soon_threadsafe(
        lambda: x.send_message(mto=to, mbody=body, mtype="chat"))


def naps_after(srv, n0, more):
    """Waits (bounded) until `more` streams napped since the count n0."""
    return harness.wait_for(
        lambda: (srv.counter("c2s_naps") or 0) >= n0 + more, NAP_WAIT)


def burst(lt, a, ja, box_a, b, jb, box_b, label):
    """BURST messages each way at once; every one arrives, in order."""
    for i in range(BURST):
        send(lt, a, jb, "a%d" % i)
        send(lt, b, ja, "b%d" % i)
    for box, frm, prefix, name in ((box_b, ja, "a", "STARTTLS -> direct"),
                                   (box_a, jb, "b", "direct -> STARTTLS")):
        got = []
        for _ in range(BURST):
            ev = box.wait(lambda e: e[0] == frm, 15)
            if ev is None:
                break
            got.append(ev[1])
        want = ["%s%d" % (prefix, i) for i in range(BURST)]
        check("%s: %d messages %s, all, in order" % (label, BURST, name),
              got == want, "%d received, first wrong: %s" % (
                  len(got), next((g for g, w in zip(got, want) if g != w),
                                 None)))


def large(lt, a, ja, box_a, b, jb, box_b, label):
    """A message near max_stanza_size each way arrives whole."""
    # The stanza around the body (attributes, slixmpp's id) stays well
    # under 1 KiB; the body is letters and digits: nothing is escaped,
    # bytes = characters.
    n = MAX_STANZA - 1024
    abc = "abcdefghijklmnopqrstuvwxyz0123456789"
    body_a = "".join(abc[i % 36] for i in range(n))
    body_b = "".join(abc[(i * 7) % 36] for i in range(n))
    send(lt, a, jb, body_a)
    send(lt, b, ja, body_b)
    ev = box_b.wait(lambda e: e[0] == ja, 15)
    check("%s: a %d-byte body STARTTLS -> direct arrives whole" % (label, n),
          ev is not None and ev[1] == body_a,
          "none" if ev is None else "%d bytes" % len(ev[1]))
    ev = box_a.wait(lambda e: e[0] == jb, 15)
    check("%s: a %d-byte body direct -> STARTTLS arrives whole" % (label, n),
          ev is not None and ev[1] == body_b,
          "none" if ev is None else "%d bytes" % len(ev[1]))


def main():
    srv = harness.Server(label="tls_idle", max_stanza_size=MAX_STANZA)
    if not check("parleyd starts", srv.start()):
        return
    alice, bob = harness.unique("alice"), harness.unique("bob")
    aj, bj = add_users(srv, alice, bob)
    ja, jb = aj + "/slix", bj + "/slix"
    lt = LoopThread()
    box_a, box_b = EventBox(), EventBox()

    async def clients():  # made on the loop they run on
        return make_client(lt, ja, box_a), make_client(lt, jb, box_b)
    a, b = lt.run(clients())
    lt.loop.call_soon_threadsafe(
        lambda: a.connect((srv.host, srv.starttls_port)))
    lt.loop.call_soon_threadsafe(
        lambda: b.connect((srv.host, srv.direct_port), use_ssl=True,
                          disable_starttls=True))
    ok = box_a.wait(lambda e: e == ("session", ja), 20) is not None
    check("slixmpp logs in over STARTTLS", ok)
    ok2 = box_b.wait(lambda e: e == ("session", jb), 20) is not None
    check("slixmpp logs in over direct TLS", ok2)
    if not (ok and ok2):
        return
    # After SASL both sessions' TLS 1.3 records went to Parley's own
    # record layer and OpenSSL's connection objects were freed
    # (c2s.tls_handover, src/core/tls_rec.c): everything below runs on it.
    check("both sessions' TLS records were handed over from OpenSSL",
          harness.wait_for(lambda: (srv.counter("tls_handovers") or 0) >= 2,
                           10),
          "tls_handovers %s" % srv.counter("tls_handovers"))
    send(lt, a, jb, "hello")
    ev = box_b.wait(lambda e: e[0] == ja, 10)
    check("a first message arrives", ev is not None and ev[1] == "hello",
          repr(ev))
    send(lt, b, ja, "hi")
    ev = box_a.wait(lambda e: e[0] == jb, 10)
    check("and one back", ev is not None and ev[1] == "hi", repr(ev))

    n0 = srv.counter("c2s_naps") or 0
    check("both idle streams nap (parser freed, buffers released)",
          naps_after(srv, n0, 2), "c2s_naps %s, was %d" % (
              srv.counter("c2s_naps"), n0))
    burst(lt, a, ja, box_a, b, jb, box_b, "after a nap")
    large(lt, a, ja, box_a, b, jb, box_b, "after a nap")

    n1 = srv.counter("c2s_naps") or 0
    check("both streams nap again", naps_after(srv, n1, 2),
          "c2s_naps %s, was %d" % (srv.counter("c2s_naps"), n1))
    large(lt, a, ja, box_a, b, jb, box_b, "first after the second nap")
    burst(lt, a, ja, box_a, b, jb, box_b, "after the second nap")

    rc, out = srv.ctl("sessions", "--json")
    check("both sessions are still bound",
          rc == 0 and ja in out and jb in out, out[-400:])
    check("no client was disconnected",
          box_a.wait(lambda e: e[0] == "disconnected", 0) is None and
          box_b.wait(lambda e: e[0] == "disconnected", 0) is None)
    async def bye(x):
        await asyncio.wait_for(x.disconnect(), 10)
    for x in (a, b):
        try:
            lt.run(bye(x))
        except Exception as e:  # a slow close is not what is tested here
            harness.note("disconnect: %r" % (e,))
    lt.stop()


if __name__ == "__main__":
    harness.run_main(main)
