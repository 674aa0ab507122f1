#!/usr/bin/python3
"""test_storage_pg.py - the PostgreSQL storage driver through an outage
and a restart (issue 18).

parleyd runs on a throwaway PostgreSQL cluster (pg_common.py).  A
stream-managed sender (XEP-0198) sends chat messages to an offline
account at a steady pace while PostgreSQL is stopped for OUTAGE seconds
(fast shutdown, then started again on the same data).  What must hold:
  - parleyd stays up and logs the outage;
  - while the database is away, new messages and requests are refused
    at once with <resource-constraint/> (type wait): back-pressure, not
    silence;
  - every message not refused is acknowledged once the database is back
    (the writes waited and completed), and is delivered exactly once;
    no refused message is delivered;
then parleyd's connection is cut over and over (pg_terminate_backend)
while messages flow: every one is acknowledged and delivered once, none
twice (the driver replays the batch, and settles a commit whose outcome
it could not see);
then parleyd is stopped and started again on the same database: the
accounts log in with their passwords, the roster and the offline
messages are still there.

Run with /usr/bin/python3; `scripts/run-tests storage_pg`.
Environment: PG_OUTAGE (seconds, default 10).
"""

import os
import re
import sys
import threading
import time

os.environ["PARLEY_STORAGE"] = "postgresql"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import pg_common  # noqa: E402
from harness import check, note  # noqa: E402
from im_common import ImClient, add_users, error_of, roster_items  # noqa
from sm_common import NS_SM, SM, SmClient  # noqa: E402

C = "{jabber:client}"
OUTAGE = float(os.environ.get("PG_OUTAGE", "10"))
CUT_SECONDS = 4.0


def err_info(el):
    """(type, condition) of an error stanza."""
    err = el.find(C + "error")
    return (err.get("type") if err is not None else None, error_of(el))


def pump(c, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            c._recv_some(min(end, time.monotonic() + 0.05))
        except TimeoutError:
            pass


def main():
    srv = harness.Server()
    if not srv.start():
        harness.finish()
    pg = pg_common.shared()
    alice, bob, carol = add_users(srv, harness.unique("pa"),
                                  harness.unique("pb"), harness.unique("pc"))
    a_user, b_user = alice.split("@")[0], bob.split("@")[0]

    # Before the outage: a roster item and two offline messages.
    a = SmClient(srv, a_user, "send")
    r = a.roster_set(carol, name="Carol", groups=["pg"])
    check("roster set before the outage", r is not None and
          r.get("type") == "result", harness.tostr(r) if r is not None
          else "no answer")
    a.enable(resume=False)
    before = ["before-%d" % i for i in range(2)]
    for body in before:
        a.message(bob, body)
    check("messages before the outage are acknowledged", a.durable(15))

    # The outage: PostgreSQL stops; alice keeps sending.
    log_at = srv.log_size()
    stopped = pg.stop()
    check("PostgreSQL stops (fast shutdown)", stopped)
    t_stop = time.monotonic()
    sent = []       # (body, time sent)
    n = 0
    iq_errors = []
    while time.monotonic() - t_stop < OUTAGE:
        body = "during-%d" % n
        n += 1
        a.message(bob, body, msg_id=body)
        sent.append((body, time.monotonic()))
        if n % 10 == 5:
            a.send("<iq type='get' id='rq%d'><query xmlns='jabber:iq:roster'"
                   "/></iq>" % n)
        pump(a, 0.25)
    check("parleyd stays up while PostgreSQL is away", srv.alive())
    check("parleyd logs the lost connection",
          srv.wait_log(r"postgresql: connection lost", log_at, 5))
    refused = {}
    for el in a.queue:
        if el.tag == C + "message" and el.get("type") == "error":
            refused[el.get("id")] = err_info(el)
        elif el.tag == C + "iq" and el.get("type") == "error":
            iq_errors.append(err_info(el))
    note("%d messages sent during the outage, %d refused"
         % (len(sent), len(refused)))
    check("messages sent during the outage are refused with "
          "<resource-constraint/> type wait (back-pressure)",
          refused and all(e and e[1] == "resource-constraint"
                          and e[0] == "wait" for e in refused.values()),
          refused)
    late = [b for b, t in sent if t - t_stop > 2.0 and t - t_stop <
            OUTAGE - 1.0]
    check("every message sent 2 s into the outage got its refusal "
          "during the outage (not silence)",
          late and all(b in refused for b in late),
          [b for b in late if b not in refused])
    check("roster requests during the outage get <resource-constraint/>",
          iq_errors and all(e and e[1] == "resource-constraint"
                            for e in iq_errors), iq_errors)

    # PostgreSQL returns on the same data: what waited completes.
    check("PostgreSQL starts again on the same data", pg.start())
    t_back = time.monotonic()
    ok = a.durable(30)
    check("every stanza sent during the outage is acknowledged once "
          "PostgreSQL is back", ok)
    note("acknowledged %.1f s after PostgreSQL came back"
         % (time.monotonic() - t_back))
    check("parleyd logs the reconnection",
          srv.wait_log(r"postgresql: connected again", log_at, 5))
    accepted = [b for b, _ in sent if b not in refused]

    # Connections cut under load: the server ends parleyd's backend
    # again and again while messages flow, so that batches are replayed
    # and commits land with their outcome unknown.
    stop = threading.Event()
    cuts = [0]

    def cutter():
        while not stop.wait(0.15):
            rc, out = pg.psql("SELECT count(pg_terminate_backend(pid)) FROM"
                              " pg_stat_activity WHERE application_name ="
                              " 'parleyd'")
            if rc == 0 and out.strip().isdigit():
                cuts[0] += int(out.strip())
    t = threading.Thread(target=cutter, daemon=True)
    t.start()
    cut_sent = []
    t_cut = time.monotonic()
    while time.monotonic() - t_cut < CUT_SECONDS:
        for _ in range(5):
            body = "cut-%d" % len(cut_sent)
            a.message(bob, body, msg_id=body)
            cut_sent.append(body)
        pump(a, 0.02)
    pump(a, 0.5)
    stop.set()
    t.join(10)
    note("%d backends terminated while %d messages were sent"
         % (cuts[0], len(cut_sent)))
    check("parleyd's connection was cut several times under load",
          cuts[0] >= 3, cuts[0])
    text = srv.log_text(log_at)
    note("the driver replayed %d batches with writes in them, and found "
         "%d commits with an unknown outcome"
         % (len(re.findall(r"replaying [1-9][0-9]* writes", text)),
            len(re.findall(r"lost during COMMIT", text))))
    check("every stanza sent while connections were cut is acknowledged",
          a.durable(30))
    for el in a.queue:
        if el.tag == C + "message" and el.get("type") == "error":
            refused[el.get("id")] = err_info(el)
    accepted += [b for b in cut_sent if b not in refused]
    a.close()

    # parleyd restarts on the same database.
    srv.stop()
    if not srv.start():
        harness.finish()
    try:
        a = ImClient(srv, a_user, "again")
        logged = True
    except (OSError, RuntimeError, harness.StreamClosed, TimeoutError) as e:
        logged = False
        check("the account logs in after the restart", False, repr(e))
    if logged:
        check("the account logs in after the restart", True)
        items = roster_items(a.roster_get())
        check("the roster item is still there after the restart",
              carol in items and items[carol].name == "Carol",
              items)
        a.close()
    b = ImClient(srv, b_user, "r")
    b.presence()
    want = set(before) | set(accepted)
    got = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not want.issubset(got):
        el = b.wait(lambda e: e.tag == C + "message", 1)
        if el is not None:
            got.append(el.findtext(C + "body"))
    pump(b, 1.0)
    for el in b.queue:
        if el.tag == C + "message":
            got.append(el.findtext(C + "body"))
    missing = sorted(want - set(got))
    check("every acknowledged message (before and during the outage) is "
          "delivered after the restart", not missing, missing)
    dup = sorted({x for x in got if got.count(x) > 1})
    check("no message is delivered twice", not dup, dup)
    leaked = sorted(set(got) & set(refused))
    check("no refused message is delivered", not leaked, leaked)
    b.close()
    harness.finish()


if __name__ == "__main__":
    main()
