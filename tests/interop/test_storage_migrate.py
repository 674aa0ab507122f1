#!/usr/bin/python3
"""test_storage_migrate.py - parleyctl migrate --from sqlite --to
postgresql (issue 18).

parleyd runs on SQLite; clients leave data of every kind (accounts, a
roster, an offline message, archived messages, private XML, a vCard);
parleyd stops; parleyctl migrate copies the store into a throwaway
PostgreSQL database (pg_common.py) and verifies the counts; a second
migrate into the same database is refused (not empty); parleyd then
starts on PostgreSQL and everything is there: the accounts log in with
their passwords (the SCRAM keys were copied), roster, offline message,
archive, private XML and vCard answer as before.

Run with /usr/bin/python3; `scripts/run-tests storage_migrate`.
"""

import os
import sys
import time

os.environ["PARLEY_STORAGE"] = "sqlite"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import pg_common  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users, roster_items  # noqa: E402

C = "{jabber:client}"
MAM = "urn:xmpp:mam:2"


def mam_bodies(c, timeout=10):
    """Bodies of the user's whole archive, in order (XEP-0313 query)."""
    c.send("<iq type='set' id='mamq'><query xmlns='%s' queryid='q1'/></iq>"
           % MAM)
    fin = c.wait(lambda e: e.tag == C + "iq" and e.get("id") == "mamq",
                 timeout)
    bodies = []
    for el in c.queue:
        res = el.find("{%s}result" % MAM)
        if el.tag == C + "message" and res is not None:
            for m in res.iter(C + "message"):
                bodies.append(m.findtext(C + "body"))
    return fin, bodies


def main():
    srv = harness.Server()
    if not srv.start():
        harness.finish()
    alice, bob, carol = add_users(srv, harness.unique("ma"),
                                  harness.unique("mb"), harness.unique("mc"))
    a_user, b_user = alice.split("@")[0], bob.split("@")[0]

    a = ImClient(srv, a_user, "r")
    r = a.roster_set(bob, name="Bob", groups=["friends"])
    check("roster set", r is not None and r.get("type") == "result",
          tostr(r) if r is not None else "no answer")
    r = a.request("<query xmlns='jabber:iq:private'><note xmlns='urn:test:"
                  "migrate'>kept</note></query>", "set")
    check("private XML set", r is not None and r.get("type") == "result",
          tostr(r) if r is not None else "no answer")
    r = a.request("<vCard xmlns='vcard-temp'><FN>Alice Migrated</FN>"
                  "</vCard>", "set")
    check("vCard set", r is not None and r.get("type") == "result",
          tostr(r) if r is not None else "no answer")
    bodies = ["migrate-%d" % i for i in range(3)]
    for body in bodies:
        a.message(bob, body)
    check("storage settles", a.storage_barrier(rounds=3))
    fin, archived = mam_bodies(a)
    check("the archive holds the messages before the migration",
          fin is not None and archived == bodies, archived)
    a.close()
    srv.stop()

    pg = pg_common.shared()
    if not pg:
        harness.finish()
    rc, out = pg.psql("CREATE DATABASE parley_m OWNER parley")
    check("PostgreSQL database for the migration", rc == 0, out)
    conninfo = pg.conninfo("parley", "parley_m")
    t0 = time.monotonic()
    rc, out = srv.ctl("--set", "storage.postgresql=" + conninfo, "migrate",
                      "--from", "sqlite", "--to", "postgresql", timeout=120)
    harness.note(out.strip())
    check("parleyctl migrate --from sqlite --to postgresql succeeds and "
          "verifies the counts", rc == 0 and "verified" in out,
          "exit %s: %s" % (rc, out))
    harness.note("migration took %.1f s" % (time.monotonic() - t0))
    rc, out = srv.ctl("--set", "storage.postgresql=" + conninfo, "migrate",
                      "--from", "sqlite", "--to", "postgresql", timeout=60)
    check("a second migration into the same database is refused",
          rc not in (0, None) and "not empty" in out, "exit %s: %s"
          % (rc, out))
    rc, out = srv.ctl("migrate", "--from", "sqlite", "--to", "sqlite")
    check("migrate refuses the same driver on both sides", rc == 2, out)

    # parleyd on PostgreSQL now.
    srv.storage = "postgresql"
    srv.pg_conninfo = conninfo
    if not srv.start():
        harness.finish()
    rc, out = srv.ctl("list", srv.domain)
    check("the accounts are listed on PostgreSQL",
          rc == 0 and all(u.split("@")[0] in out
                          for u in (alice, bob, carol)), out)
    try:
        a = ImClient(srv, a_user, "r2")
    except (OSError, RuntimeError, harness.StreamClosed, TimeoutError) as e:
        check("alice logs in with her password after the migration", False,
              repr(e))
        harness.finish()
    check("alice logs in with her password after the migration", True)
    items = roster_items(a.roster_get())
    check("the roster survived the migration",
          bob in items and items[bob].name == "Bob"
          and list(items[bob].groups) == ["friends"], items)
    r = a.request("<query xmlns='jabber:iq:private'><note xmlns='urn:test:"
                  "migrate'/></query>")
    check("private XML survived the migration",
          r is not None and "kept" in tostr(r), tostr(r) if r is not None
          else "no answer")
    r = a.request("<vCard xmlns='vcard-temp'/>")
    check("the vCard survived the migration",
          r is not None and "Alice Migrated" in tostr(r),
          tostr(r) if r is not None else "no answer")
    fin, archived = mam_bodies(a)
    check("the archive survived the migration, in order",
          fin is not None and archived == bodies, archived)
    a.close()
    b = ImClient(srv, b_user, "r")
    b.presence()
    got = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(got) < len(bodies):
        el = b.wait(lambda e: e.tag == C + "message"
                    and e.findtext(C + "body") is not None, 1)
        if el is not None:
            got.append(el.findtext(C + "body"))
    check("the offline messages survived the migration", got == bodies, got)
    b.close()
    harness.finish()


if __name__ == "__main__":
    main()
