#!/usr/bin/python3
"""test_sm_cuts.py - TCP connections cut at random points under load,
every message arrives exactly once (XEP-0198 resumption).

Two senders and two receivers, all with stream management and
resumption.  The senders send a steady stream of numbered chat messages to
both receivers; at random moments (seeded) one of the four clients has its
TCP connection reset (no </stream>, no TLS close) and resumes at once on a
new connection with <resume previd h/>: a receiver with the count of
stanzas it got, a sender re-sending what the server's <resumed h/> says it
did not handle.  At the end each receiver must have every message of each
sender exactly once, in the order sent.

Run with /usr/bin/python3; `scripts/run-tests sm_cuts`.
Environment: CUTS_MESSAGES (per sender and receiver, default 150),
CUTS_SEED (default: time).
"""

import os
import random
import sys
import time
from xml.sax.saxutils import escape, quoteattr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from im_common import add_users  # noqa: E402
from sm_common import NS_SM, SM, SmClient  # noqa: E402

C = "{jabber:client}"
N = int(os.environ.get("CUTS_MESSAGES", "150"))
SEED = int(os.environ.get("CUTS_SEED", str(int(time.time()))))


class Peer:
    """One user across its connections."""

    def __init__(self, srv, user):
        self.srv, self.user = srv, user
        self.c = SmClient(srv, user, "r", auto_ack=True)
        el = self.c.enable(resume=True)
        self.smid = el.get("id") if el is not None else None
        self.got = []       # bodies received, in order
        self.cuts = 0

    def pump(self):
        c = self.c
        try:
            c._recv_some(time.monotonic() + 0.003)
        except TimeoutError:
            pass
        except (harness.StreamClosed, OSError):
            pass
        keep = []
        for el in c.queue:
            if el.tag == C + "message" and el.get("type") == "chat":
                self.got.append(el.findtext(C + "body"))
            elif el.tag in (SM + "a", SM + "r", C + "presence"):
                pass
            else:
                keep.append(el)
        c.queue = keep

    def cut_and_resume(self):
        old = self.c
        old.kill()  # RST: whatever was in flight either way is lost
        self.cuts += 1
        c = SmClient(self.srv, self.user, login=False, auto_ack=True)
        c.outq, c.out_count = old.outq, old.out_count
        c.authenticate()
        el = c.resume(self.smid, old.h_in)
        if el is None or el.tag != SM + "resumed":
            raise RuntimeError("resume failed: %s" % harness.tostr(el))
        self.c = c


def main():
    rnd = random.Random(SEED)
    note("seed %d, %d messages per pair" % (SEED, N))
    srv = harness.Server()
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    s_names = [harness.unique("cuts") for _ in range(2)]
    r_names = [harness.unique("cutr") for _ in range(2)]
    add_users(srv, *(s_names + r_names))
    try:
        senders = [Peer(srv, u) for u in s_names]
        receivers = [Peer(srv, u) for u in r_names]
    except (OSError, RuntimeError, harness.StreamClosed, TimeoutError) as e:
        check("clients log in and enable stream management", False, repr(e))
        harness.finish()
    for r in receivers:
        r.c.presence()
    everyone = senders + receivers
    rjids = ["%s@%s" % (u, srv.domain) for u in r_names]
    n = 0
    ok = True
    deadline = time.monotonic() + 120
    try:
        while n < N and time.monotonic() < deadline:
            for si, s in enumerate(senders):
                for rj in rjids:
                    body = "s%d-%s-%d" % (si, rj.split("@")[0][-6:], n)
                    s.c.send_stanza("<message to=%s type='chat'><body>%s"
                                    "</body></message>"
                                    % (quoteattr(rj), escape(body)))
                if n % 4 == 3:
                    s.c.send("<r xmlns='%s'/>" % NS_SM)
            n += 1
            for p in everyone:
                p.pump()
            if rnd.random() < 0.15:
                rnd.choice(everyone).cut_and_resume()
        # Let the acks and the last messages settle.
        end = time.monotonic() + 10
        want = 2 * N
        while time.monotonic() < end:
            for s in senders:
                if s.c.outq:
                    s.c.send("<r xmlns='%s'/>" % NS_SM)
            for p in everyone:
                p.pump()
            if all(len(r.got) >= want for r in receivers) and \
                    not any(s.c.outq for s in senders):
                break
            time.sleep(0.02)
    except (OSError, RuntimeError, harness.StreamClosed, TimeoutError) as e:
        ok = False
        check("load with cuts ran to the end", False, repr(e))
    cuts = sum(p.cuts for p in everyone)
    check("connections were cut and resumed under load (%d cuts)" % cuts,
          ok and cuts > 0, "")
    check("every sender's messages were all acknowledged",
          not any(s.c.outq for s in senders),
          str([len(s.c.outq) for s in senders]))
    for ri, r in enumerate(receivers):
        tag = r_names[ri][-6:]
        for si in range(len(senders)):
            expected = ["s%d-%s-%d" % (si, tag, i) for i in range(N)]
            got = [b for b in r.got if b.startswith("s%d-%s-" % (si, tag))]
            check("receiver %d got sender %d's %d messages exactly once, in "
                  "order" % (ri, si, N), got == expected,
                  "%d received, %d distinct, first difference at %s" % (
                      len(got), len(set(got)),
                      next((i for i, (a, b) in enumerate(zip(got, expected))
                            if a != b), min(len(got), len(expected)))))
    note("cuts per client: %s" % [p.cuts for p in everyone])
    for p in everyone:
        try:
            p.c.logout()
        except OSError:
            pass
    harness.finish()


if __name__ == "__main__":
    main()
