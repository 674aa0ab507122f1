#!/usr/bin/python3
"""test_im_offline.py - offline messages end to end (XEP-0160 with
XEP-0203 delay stamps, RFC 6121 §8.5.2.2 and §8.5.3.2).

500 chat/normal messages to an offline account are delivered at its next
login with non-negative priority: all of them, in order, each once, each
with exactly one <delay xmlns='urn:xmpp:delay'/> whose 'from' is the
server's domain and whose 'stamp' is a UTC time from when they were sent,
in jabber:client; headline and error messages are not stored, groupchat
bounces; a message to an offline full JID is stored like one to the bare
JID.  A login with negative priority gets nothing, and a later presence
with non-negative priority gets them (XEP-0160 §2).  A second parleyd
with offline: { quota = 5; } answers the 6th message with
<service-unavailable/>.  Finally parleyd is killed with SIGKILL after the
messages were stored and restarted: nothing is lost and nothing comes
twice.

Every wait is bounded (STEP, QUIET in im_common.py).  Run with
/usr/bin/python3; `scripts/run-tests im_offline`.
"""

import datetime
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note, tostr  # noqa: E402
from im_common import (NS_DELAY, QUIET, STEP, ImClient,  # noqa: E402
                       add_users, bare_of, check_namespaces, error_of)
from sm_common import SmClient  # noqa: E402

srv = None
C = "{jabber:client}"
STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]00:00)")


def u(prefix):
    return harness.unique(prefix)


def any_message(frm_bare):
    """A message from frm_bare, in jabber:client or (a server bug) in no
    namespace at all; see in_client_ns()."""
    def pred(el):
        return el.tag in (C + "message", "message") and \
            bare_of(el.get("from")) == frm_bare and \
            el.get("type") != "error"
    return pred


def body_of(el):
    b = el.findtext(C + "body")
    return b if b is not None else el.findtext("body")


def in_client_ns(els):
    """The elements not in jabber:client (RFC 6120 §4.8.3)."""
    return [e for e in els if not e.tag.startswith(C)]


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def parse_stamp(s):
    m = STAMP.fullmatch(s or "")
    if not m:
        return None
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S") \
        .replace(tzinfo=datetime.timezone.utc)


def sm_sender(srv, user, resource):
    """A logged-in, available client with stream management, for
    barrier()."""
    c = SmClient(srv, user, resource, auto_ack=True)
    c.roster_get()
    c.enable(resume=False)
    c.presence()
    return c


def barrier(c):
    """Waits until what c sent is durably handled: the server acknowledges
    it (XEP-0198) only once its offline stores are committed.  A bound,
    not a speed check: 1,500 messages committed to PostgreSQL while the
    rest of make test runs beside it took over 10 s once."""
    t = time.time()
    ok = c.durable(STEP * 12)
    # Where the time went (storage counters, src/core/storage.c), for a
    # slow run's report.
    st = srv.stats()
    why = ", ".join("%s %s" % (k, st.get(k)) for k in (
        "stanzas_in", "storage_jobs", "storage_commits", "storage_run_ms",
        "storage_commit_ms"))
    note("barrier after %d stanzas: %.1f s (%s)" % (c.stanzas_sent,
                                                    time.time() - t, why))
    if not ok:
        check("the server acknowledges the sender's stanzas (XEP-0198)",
              False, "no <a/> for %d stanzas (%s)" % (c.stanzas_sent, why))


def raw_message(c):
    """The first <message as the server wrote it, for reports."""
    i = c.raw.find(b"<message")
    return c.raw[i:i + 160] if i >= 0 else b"(none)"


def check_delivery(name, msgs, want_bodies, t_from, t_to, sender_jid,
                   raw=b""):
    """The checks every batch of delivered offline messages gets."""
    bodies = [body_of(m) for m in msgs]
    check("%s: all %d messages delivered" % (name, len(want_bodies)),
          len(msgs) == len(want_bodies),
          "got %d; first missing: %s" % (
              len(msgs), [b for b in want_bodies if b not in bodies][:5]))
    check("%s: delivered in the order sent" % name,
          bodies == want_bodies[:len(bodies)] and
          len(bodies) == len(want_bodies),
          "first difference at %s" % next(
              ((i, b, w) for i, (b, w) in enumerate(zip(bodies,
                                                        want_bodies))
               if b != w), "(a prefix)"))
    check("%s: none delivered twice" % name, len(set(bodies)) ==
          len(bodies), "duplicates: %s" % sorted(
              {b for b in bodies if bodies.count(b) > 1})[:5])
    bad_ns = in_client_ns(msgs)
    check("%s: delivered stanzas are jabber:client messages (RFC 6120 "
          "§4.8.3)" % name, not bad_ns,
          "%d of %d arrived in another namespace; as sent: %r" % (
              len(bad_ns), len(msgs), raw))
    bad_delay, bad_stamp, stamps = [], [], []
    for m in msgs:
        ds = m.findall("{%s}delay" % NS_DELAY)
        if len(ds) != 1 or ds[0].get("from") != srv.domain:
            bad_delay.append(m)
            continue
        when = parse_stamp(ds[0].get("stamp"))
        if when is None or not (t_from - datetime.timedelta(seconds=2)
                                <= when <= t_to +
                                datetime.timedelta(seconds=2)):
            bad_stamp.append(m)
        else:
            stamps.append(when)
    check("%s: each has exactly one <delay xmlns='urn:xmpp:delay'/> with "
          "from='%s' (XEP-0203, XEP-0160 §2)" % (name, srv.domain),
          msgs and not bad_delay, "%d bad, e.g. %s" % (
              len(bad_delay), tostr(bad_delay[0]) if bad_delay else
              "no messages"))
    check("%s: each stamp is an XEP-0082 UTC DateTime from when it was "
          "sent (XEP-0203, XEP-0082)" % name, msgs and not bad_stamp,
          "%d bad (window %s .. %s), e.g. %s" % (
              len(bad_stamp), t_from.isoformat(), t_to.isoformat(),
              tostr(bad_stamp[0]) if bad_stamp else "no messages"))
    check("%s: stamps do not go backwards" % name,
          all(a <= b for a, b in zip(stamps, stamps[1:])),
          "stamps %s" % [s.isoformat() for s in stamps[:5]])
    wrong_from = [m for m in msgs if m.get("from") != sender_jid]
    check("%s: 'from' is the sender's full JID" % name,
          msgs and not wrong_from, "e.g. %s" % (
              tostr(wrong_from[0]) if wrong_from else "no messages"))


# ---------------------------------------------------------- 500 messages

def five_hundred():
    n = 500
    sender, rcpt = u("os"), u("or")
    js, jr = add_users(srv, sender, rcpt)
    s = sm_sender(srv, sender, "s")
    t_from = utc_now()
    want, types = [], {}
    for i in range(n):
        body = "offline %03d <&>" % i
        want.append(body)
        # chat, normal, and no type (normal by default, RFC 6121 §5.2.2)
        t = "chat" if i % 3 else ("normal" if i % 2 else None)
        types[body] = t
        to = jr if i != 250 else jr + "/gone"  # §8.5.3.2.1: as bare JID
        s.message(to, body, type_=t, msg_id="m%03d" % i)
        if i == 100:
            s.message(jr, "headline news", type_="headline")
            s.message(jr, "an error", type_="error")
            s.message(jr, "group chat", type_="groupchat", msg_id="gc1")
    barrier(s)
    t_to = utc_now()
    err = s.wait(lambda e: e.get("id") == "gc1")
    check("groupchat message to an offline account: <service-unavailable/> "
          "(RFC 6121 §8.5.2.2.1)", error_of(err) == "service-unavailable",
          tostr(err))
    errs = s.quiet(lambda e: e.tag == C + "message" and
                   e.get("type") == "error", 0.5)
    check("storing 500 chat/normal messages returns no error to the "
          "sender", not errs, [tostr(x) for x in errs[:3]])

    idle = ImClient(srv, rcpt, "idle")   # connected, never available
    t0 = time.monotonic()
    r = ImClient(srv, rcpt, "r")
    r.presence(priority=0)
    msgs = r.collect(any_message(js), n, STEP * 3)
    took = time.monotonic() - t0
    extra = r.quiet(any_message(js), QUIET)
    note("500 offline messages: login to last message in %.2f s" % took)
    check_delivery("500 offline messages", msgs + extra, want, t_from,
                   t_to, s.jid, raw_message(r))
    wrong_type = [m for m in msgs if m.get("type") != types[body_of(m)]]
    check("500 offline messages: each keeps its type (chat, normal, or "
          "none)", msgs and not wrong_type,
          "e.g. %s" % (tostr(wrong_type[0]) if wrong_type else "none"))
    hl = [m for m in msgs + extra if body_of(m) in ("headline news",
                                                    "an error",
                                                    "group chat")]
    check("headline, error and groupchat messages were not stored "
          "(RFC 6121 §8.5.2.2.1)", not hl, [tostr(x) for x in hl])
    got = idle.quiet(any_message(js), 0.1)
    check("a resource that never sent available presence gets none of "
          "them (XEP-0160 §2: to the resource that sent the presence)",
          not got, "%d messages" % len(got))
    r.logout()
    idle.logout()
    r = ImClient(srv, rcpt, "again")
    r.presence(priority=1)
    again = r.quiet(any_message(js), QUIET)
    check("500 offline messages: removed after delivery (the next login "
          "gets none)", not again, "%d again, e.g. %s" % (
              len(again), tostr(again[0]) if again else ""))
    r.logout()
    s.logout()


# ---------------------------------------------------- negative priority

def negative_priority():
    name = "negative priority"
    sender, rcpt = u("ns"), u("nr")
    js, jr = add_users(srv, sender, rcpt)
    s = sm_sender(srv, sender, "s")
    t_from = utc_now()
    want = ["neg %d" % i for i in range(4)]
    for b in want[:3]:
        s.message(jr, b)
    barrier(s)
    r = ImClient(srv, rcpt, "r")
    r.presence(priority=-1)
    got = r.quiet(any_message(js), QUIET)
    check("%s: a login with priority -1 gets no offline messages "
          "(XEP-0160 §2)" % name, not got, "%d delivered" % len(got))
    s.message(jr, want[3])
    barrier(s)
    errs = s.quiet(lambda e: e.tag == C + "message" and
                   e.get("type") == "error", 0.2)
    got = r.quiet(any_message(js), 0.3)
    check("%s: a message sent while the only resource has priority -1 is "
          "stored, not delivered (RFC 6121 §8.5.2.1.1)" % name,
          not errs and not got, "errors %s, delivered %d" % (
              [tostr(x) for x in errs], len(got)))
    r.presence(priority=1)
    msgs = r.collect(any_message(js), len(want), STEP)
    t_to = utc_now()
    check("%s: presence with priority 1 afterwards delivers them "
          "(XEP-0160 §2: 'When the recipient next sends non-negative "
          "available presence')" % name, len(msgs) == len(want),
          "sent <presence><priority>-1</priority></presence> at login, "
          "then <presence><priority>1</priority></presence>: %d of %d "
          "delivered" % (len(msgs), len(want)))
    if len(msgs) == len(want):
        check_delivery(name, msgs, want, t_from, t_to, s.jid,
                       raw_message(r))
    r.logout()
    r = ImClient(srv, rcpt, "later")
    r.presence(priority=0)
    later = r.quiet(any_message(js), QUIET)
    if len(msgs) != len(want):
        check("%s: the messages are kept for the next login with "
              "priority 0" % name, len(later) + len(msgs) == len(want),
              "%d at the next login" % len(later))
    else:
        check("%s: nothing comes again at the next login" % name,
              not later, "%d again" % len(later))
    r.logout()
    s.logout()


# -------------------------------------------------------- SIGKILL

def sigkill():
    name = "SIGKILL between store and delivery"
    n = 100
    sender, rcpt = u("ks"), u("kr")
    js, jr = add_users(srv, sender, rcpt)
    s = sm_sender(srv, sender, "s")
    t_from = utc_now()
    want = ["kill %03d" % i for i in range(n)]
    for i, b in enumerate(want):
        s.message(jr, b, msg_id="k%d" % i)
    barrier(s)      # stored and committed before the kill
    rc = srv.kill(signal.SIGKILL)
    check("%s: parleyd died of SIGKILL" % name, rc == -signal.SIGKILL,
          "exit status %s" % rc)
    s.close()
    if not srv.start():
        return
    s = sm_sender(srv, sender, "s2")
    s.message(jr, "after restart")
    want.append("after restart")
    barrier(s)
    t_to = utc_now()
    r = ImClient(srv, rcpt, "r")
    r.presence()
    msgs = r.collect(any_message(js), len(want), STEP * 2)
    msgs += r.quiet(any_message(js), QUIET)
    # The sender's full JID differs for the last one (a new session).
    last = msgs.pop() if msgs and body_of(msgs[-1]) == "after restart" \
        else None
    check_delivery(name, msgs, want[:-1], t_from, t_to,
                   "%s/s" % js, raw_message(r))
    check("%s: a message stored after the restart comes after the older "
          "ones" % name, last is not None and last.get("from") == s.jid,
          "last delivered: %s" % tostr(last))
    r.logout()
    r = ImClient(srv, rcpt, "again")
    r.presence()
    again = r.quiet(any_message(js), QUIET)
    check("%s: nothing comes again at the next login" % name, not again,
          "%d again" % len(again))
    r.logout()
    s.logout()


# -------------------------------------------------------------- quota

def quota():
    global srv
    s2 = harness.Server(extra="offline: { quota = 5; };", label="quota=5")
    main_srv, srv = srv, s2
    try:
        if not s2.start():
            return
        name = "quota=5"
        sender, rcpt = u("qs"), u("qr")
        js, jr = add_users(s2, sender, rcpt)
        s = sm_sender(s2, sender, "s")
        for i in range(5):
            s.message(jr, "q%d" % i, msg_id="q%d" % i)
        barrier(s)
        errs = s.quiet(lambda e: e.get("type") == "error", 0.3)
        check("%s: 5 messages are stored without error" % name, not errs,
              [tostr(x) for x in errs])
        s.message(jr, "q5 over quota", msg_id="q5")
        e = s.wait(lambda x: x.get("id") == "q5")
        check("%s: the 6th message gets <service-unavailable/> (XEP-0160 "
              "§2, RFC 6121 §8.5.2.2.1)" % name,
              e is not None and e.tag == C + "message" and
              e.get("type") == "error" and
              error_of(e) == "service-unavailable", tostr(e))
        if e is not None:
            check("%s: the error comes from the recipient's JID and goes "
                  "to the sender" % name, bare_of(e.get("from")) == jr and
                  e.get("to") == s.jid, tostr(e))
        s.message(jr, "q6 over quota", msg_id="q6", type_="normal")
        e = s.wait(lambda x: x.get("id") == "q6")
        check("%s: a normal message over quota gets it too" % name,
              error_of(e) == "service-unavailable", tostr(e))
        r = ImClient(s2, rcpt, "r")
        r.presence()
        msgs = r.collect(any_message(js), 6, STEP)
        msgs += r.quiet(any_message(js), 0.5)
        check("%s: the login gets exactly the 5 stored messages" % name,
              [body_of(m) for m in msgs] == ["q%d" % i for i in range(5)],
              [body_of(m) for m in msgs])
        r.logout()
        s.message(jr, "q7 after delivery", msg_id="q7")
        barrier(s)
        e = s.quiet(lambda x: x.get("id") == "q7", 0.3)
        r = ImClient(s2, rcpt, "r2")
        r.presence()
        m = r.wait(any_message(js))
        check("%s: after delivery the quota is free again" % name,
              not e and m is not None and
              body_of(m) == "q7 after delivery",
              "errors %s, delivered %s" % ([tostr(x) for x in e],
                                           tostr(m)))
        r.logout()
        s.logout()
    finally:
        srv = main_srv
        s2.stop()


def backlog():
    """A backlog larger than limits.max_outbuf (64 KiB here) comes
    whole: the store is read a page at a time, the next page once the
    session's output queue has drained, so the recipient is not dropped
    as a slow reader (it was, and each login then failed the same way)."""
    global srv
    s3 = harness.Server(extra="offline: { quota = 5000; };",
                        limits_extra="max_outbuf = 65536;",
                        c2s_extra="sm_max_queue = 64;",
                        label="outbuf=64k")
    main_srv, srv = srv, s3
    try:
        if not s3.start():
            return
        # Three times max_outbuf, in four pages of the store (PAGE_MSGS
        # 200), and within the sender's read burst (256 KiB): the cost is
        # the store's, not the read pacing's.
        n = 800
        sender, rcpt = u("bs"), u("br")
        js, jr = add_users(s3, sender, rcpt)
        s = sm_sender(s3, sender, "s")
        pad = "x" * 200
        for i in range(n):
            s.message(jr, "backlog %04d %s" % (i, pad))
        barrier(s)
        errs = s.quiet(lambda e: e.get("type") == "error", 0.3)
        check("backlog: %d messages of 250 bytes stored (about %d times "
              "max_outbuf)" % (n, n * 250 // 65536), not errs, [tostr(x) for x in errs[:3]])
        r = ImClient(s3, rcpt, "r")
        r.presence()
        msgs = r.collect(any_message(js), n, STEP * 4)
        got = [body_of(m)[:12] for m in msgs]
        check("backlog: all of them come, in order, and the session stays",
              got == ["backlog %04d" % i for i in range(n)] and
              not r.closed, "%d of %d, closed %s" % (len(got), n, r.closed))
        r.logout()
        # Under stream management: no more than half of sm_max_queue (64)
        # unacknowledged at a time; a client that acks when asked gets
        # all of them and is not ended for an overflow.
        for i in range(n):
            s.message(jr, "again %04d %s" % (i, pad))
        barrier(s)
        r = SmClient(s3, rcpt, "sm", auto_ack=True)
        r.enable()
        r.presence()
        msgs = r.collect(any_message(js), n, STEP * 4)
        got = [body_of(m)[:10] for m in msgs]
        check("backlog: a stream-managed session (sm_max_queue 64) gets "
              "them all, in order, and stays",
              got == ["again %04d" % i for i in range(n)] and
              not r.closed, "%d of %d, closed %s" % (len(got), n, r.closed))
        r.logout()
        s.logout()
    finally:
        srv = main_srv
        s3.stop()


def run():
    global srv
    srv = harness.Server()
    t0 = time.monotonic()
    if srv.start():
        for part in (five_hundred, negative_priority, quota, backlog,
                     sigkill):
            try:
                part()
            except Exception as e:  # noqa: BLE001 - report, don't crash
                import traceback
                traceback.print_exc()
                check("%s runs without exceptions" % part.__name__, False,
                      repr(e))
        check_namespaces()
    note("offline suite took %.1f s" % (time.monotonic() - t0))
    harness.finish()


if __name__ == "__main__":
    run()
