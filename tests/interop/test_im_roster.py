#!/usr/bin/python3
"""test_im_roster.py - rosters and presence subscriptions, end to end
(RFC 6121 §2 and §3).

Roster get/set/remove with names and groups, pushes to every interested
resource (a raw client, slixmpp, aioxmpp and the libstrophe client
tests/interop/strophe_client.c in its "roster" mode, all resources of one
account), roster versioning (§2.6), the roster set errors of §2.3.3 and
§2.5.3, adding an account that does not exist, a second parleyd with
roster: { max_items = 3; }.  Then every subscription flow of §3: request
and approval, denial, cancellation by the contact, unsubscribing, mutual
subscription (also with slixmpp's automatic approval), pre-approval
(§3.4), a request to an offline contact delivered at each later login
until answered, and removing an item (§2.5.2).  Roster states are
checked after each step, both in pushes and in roster gets.

Every wait is bounded (STEP, QUIET in im_common.py).  Run with
/usr/bin/python3; `scripts/run-tests im_roster`.
"""

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note, tostr  # noqa: E402
from im_common import (PW, QUIET, STEP, AioPeer, EventBox,  # noqa: E402
                       ImClient, LoopThread, add_users, check_namespaces,
                       error_of,
                       is_presence, is_push, login, roster_items,
                       roster_ver)

srv = None
R = "{jabber:iq:roster}"


def u(prefix):
    return harness.unique(prefix)


def item_state(c, jid):
    """The item for jid in c's roster (a fresh roster get), or None."""
    r = c.roster_get()
    return roster_items(r).get(jid) if r is not None else "no reply"


def push_item(el, jid):
    return roster_items(el).get(jid) if el is not None else None


def state_words(sub, ask, approved):
    return "subscription='%s'%s%s" % (
        sub, " ask='%s'" % ask if ask else "",
        " approved='%s'" % approved if approved else "")


def expect_push(name, c, jid, sub, ask=None, approved=None, why=""):
    """Waits for a push about jid; checks its subscription/ask/approved."""
    el = c.wait(lambda e: is_push(jid)(e) and
                roster_items(e)[jid][1:4] == (sub, ask, approved))
    if el is None:  # for the report: the latest push about jid, if any
        el = c.wait(is_push(jid), 0.1)
    it = push_item(el, jid)
    ok = it is not None and it.ask == ask and it.approved == approved
    check(("%s: push to the %s says %s %s" % (
        name, c.label, state_words(sub, ask, approved), why)).rstrip(),
        ok, "got %s; queued: %s" % (
            tostr(el), [tostr(x) for x in c.queue if is_push(jid)(x)]))
    return el


def expect_item(name, c, jid, sub, ask=None, approved=None, why=""):
    it = item_state(c, jid)
    want = (sub, ask, approved)
    got = (it.sub, it.ask, it.approved) if isinstance(it, tuple) else it
    check(("%s: the %s's roster get shows %s %s" % (
        name, c.label, state_words(sub, ask, approved), why)).rstrip(),
        got == want, "item %r, want %r" % (it, want))


def expect_no_item(name, c, jid, why=""):
    it = item_state(c, jid)
    check(("%s: the %s's roster has no item for the other %s" % (
        name, c.label, why)).rstrip(), it is None, "item %r" % (it,))


# ------------------------------------------------------------ roster basics

def roster_basics(alice, bob, carol, dave, ghost):
    a = ImClient(srv, alice, "crud")
    feats = a.features_after_auth
    check("stream features after auth advertise roster versioning "
          "<ver xmlns='urn:xmpp:features:rosterver'/> (RFC 6121 §2.6.1)",
          feats is not None and
          feats.find("{urn:xmpp:features:rosterver}ver") is not None,
          tostr(feats))
    check("stream features after auth advertise pre-approval "
          "<sub xmlns='urn:xmpp:features:pre-approval'/> (§3.4.1)",
          feats is not None and
          feats.find("{urn:xmpp:features:pre-approval}sub") is not None,
          tostr(feats))

    r = a.roster_get()
    check("roster get on a new account: a result with an empty <query/> "
          "(§2.1.3)", r is not None and r.get("type") == "result" and
          r.find(R + "query") is not None and roster_items(r) == {},
          tostr(r))
    r = a.roster_get(ver="")
    v0 = roster_ver(r)
    check("roster get with ver='' (no cache, §2.6.2): result carries a "
          "non-empty 'ver'", bool(v0), tostr(r))

    # A second resource that never asks for the roster is not interested
    # (§2.1.6): it must not get pushes.
    quiet_res = ImClient(srv, alice, "noroster")
    quiet_res.presence()

    jb, jc, jd = ["%s@%s" % (x, srv.domain) for x in (bob, carol, dave)]
    jghost = "%s@%s" % (ghost, srv.domain)

    # --- add with a name and two groups (§2.3)
    r = a.roster_set(jb, "Bob", ["Friends", "Work"])
    check("roster set adds bob with name and two groups: result (§2.3.2)",
          r is not None and r.get("type") == "result", tostr(r))
    p = a.wait(is_push(jb))
    it = push_item(p, jb)
    check("roster push for the new item: name, groups, "
          "subscription='none', no ask (§2.1.6)",
          it == ("Bob", "none", None, None, ("Friends", "Work")),
          tostr(p))
    if p is not None:
        check("roster push has no 'from' or the account's bare JID, and "
              "is addressed to the full JID (§2.1.6)",
              p.get("from") in (None, a.bare) and p.get("to") == a.jid,
              tostr(p))
        v1 = roster_ver(p)
        check("roster push carries a new 'ver' (§2.6.3)",
              bool(v1) and v1 != v0, "ver %r after %r" % (v1, v0))
    else:
        v1 = None
    r = a.roster_get()
    check("roster get lists bob with name and groups (§2.1.4)",
          roster_items(r).get(jb) == ("Bob", "none", None, None,
                                      ("Friends", "Work")), tostr(r))

    # --- update: new name, groups replaced
    r = a.roster_set(jb, "Robert", ["Family"])
    p = a.wait(is_push(jb))
    check("roster set updates the name and replaces the groups; pushed "
          "(§2.4)", r is not None and r.get("type") == "result" and
          push_item(p, jb) == ("Robert", "none", None, None, ("Family",)),
          "reply %s, push %s" % (tostr(r), tostr(p)))
    r = a.roster_get()
    check("roster get shows the update",
          roster_items(r).get(jb) == ("Robert", "none", None, None,
                                      ("Family",)), tostr(r))

    # --- client-supplied subscription/ask/approved are ignored (§2.1.2)
    odd = "Tab\there & <ä>"
    r = a.roster_set(jc, "C. \\ \"Carol\"", [odd, "Ω"],
                     extra_attrs=" subscription='both' ask='subscribe' "
                                 "approved='true'")
    p = a.wait(is_push(jc))
    check("roster set with subscription='both' ask approved: the server "
          "ignores them, item stays subscription='none' (§2.1.2.1, "
          "§2.1.2.2, §2.1.2.5)",
          r is not None and r.get("type") == "result" and
          push_item(p, jc) == ('C. \\ "Carol"', "none", None, None,
                               tuple(sorted([odd, "Ω"]))),
          "reply %s, push %s" % (tostr(r), tostr(p)))
    r = a.roster_get()
    vcur = roster_ver(r)
    check("names and groups with tab, backslash, quotes, markup and "
          "non-ASCII survive storage",
          roster_items(r).get(jc) == ('C. \\ "Carol"', "none", None, None,
                                      tuple(sorted([odd, "Ω"]))), tostr(r))

    # --- versioning (§2.6.3)
    r = a.roster_get(ver=vcur)
    check("roster get with the current ver: empty IQ result, no <query/> "
          "(§2.6.3)", r is not None and r.get("type") == "result" and
          len(list(r)) == 0, tostr(r))
    if v1:
        r = a.roster_get(ver=v1)
        check("roster get with a stale ver: the full roster with the "
              "current ver (§2.6.3)",
              r is not None and r.get("type") == "result" and
              roster_ver(r) == vcur and set(roster_items(r)) == {jb, jc},
              "want ver %s and 2 items: %s" % (vcur, tostr(r)))

    # --- errors (§2.3.3, §2.5.3); none may change the roster
    r = a.request("<query xmlns='jabber:iq:roster'><item jid='%s'/>"
                  "<item jid='%s'/></query>" % (jd, jb), "set")
    check("roster set with two <item/>: <bad-request/> (§2.3.3)",
          error_of(r) == "bad-request", tostr(r))
    r = a.roster_set(jd, "D", ["Same", "Same"])
    check("roster set with a duplicate <group/>: <bad-request/> (§2.3.3)",
          error_of(r) == "bad-request", tostr(r))
    r = a.roster_set(jd, "D", [""])
    check("roster set with an empty <group/>: <not-acceptable/> (§2.3.3)",
          error_of(r) == "not-acceptable", tostr(r))
    r = a.roster_set(jghost, "Nobody")
    check("roster set adding a local JID without an account: "
          "<item-not-found/>", error_of(r) == "item-not-found", tostr(r))
    r = a.roster_remove(jd)
    check("removing an item that is not in the roster: <item-not-found/> "
          "(§2.5.3)", error_of(r) == "item-not-found", tostr(r))
    r = a.roster_remove(jghost)
    check("removing a non-account JID that is not in the roster: "
          "<item-not-found/> (§2.5.3)", error_of(r) == "item-not-found",
          tostr(r))
    r = a.roster_get(to=jb)
    check("roster get addressed to another account: an error, not that "
          "account's roster", r is not None and r.get("type") == "error",
          tostr(r))
    r = a.roster_set(jc, "Intruder", to=jb)
    check("roster set addressed to another account: <forbidden/> "
          "(§2.3.3)", error_of(r) == "forbidden", tostr(r))
    stray = a.quiet(is_push(), QUIET)
    check("refused roster sets cause no push", not stray,
          [tostr(x) for x in stray])
    r = a.roster_get(ver=vcur)
    check("refused roster sets leave the version unchanged (empty result "
          "for the current ver)", r is not None and r.get("type") ==
          "result" and len(list(r)) == 0, tostr(r))
    b = ImClient(srv, bob, "peek")
    r = b.roster_get()
    check("bob's roster was not touched by alice's set addressed to him",
          r is not None and jc not in roster_items(r), tostr(r))
    b.logout()

    # --- remove (§2.5)
    r = a.roster_remove(jb)
    p = a.wait(is_push(jb))
    check("roster remove: result and a push with subscription='remove' "
          "(§2.5.2)", r is not None and r.get("type") == "result" and
          push_item(p, jb) is not None and
          push_item(p, jb).sub == "remove", "reply %s push %s" %
          (tostr(r), tostr(p)))
    r = a.roster_get()
    check("roster get no longer lists the removed item",
          r is not None and set(roster_items(r)) == {jc}, tostr(r))
    got = quiet_res.quiet(is_push(), 0.2)
    check("a resource that never fetched the roster gets no push "
          "(§2.1.6 'interested resource')", not got,
          [tostr(x) for x in got])
    quiet_res.logout()
    a.logout()

    # Persisted across sessions.
    a = ImClient(srv, alice, "again")
    r = a.roster_get()
    check("the roster persists across sessions",
          r is not None and set(roster_items(r)) == {jc}, tostr(r))
    a.logout()


# ----------------------------------------------------- roster versioning

def aioxmpp_versioning(lt, user, contact):
    """aioxmpp.RosterClient keeps its roster across sessions by ver."""
    jc = "%s@%s" % (contact, srv.domain)
    rec = []

    class Grab(logging.Handler):
        def emit(self, record):
            rec.append(record.getMessage())
    lg = logging.getLogger("aioxmpp.roster.service")
    lg.setLevel(logging.DEBUG)
    h = Grab()
    lg.addHandler(h)
    try:
        p = AioPeer(lt, srv, user, "aio-v1")
        err = p.start()
        if not check("aioxmpp: first session logs in", err is None,
                     repr(err)):
            return
        ev = p.events.wait(lambda e: e[0] == "initial-roster")
        check("aioxmpp: initial roster received with a version",
              ev is not None and ev[1], repr(ev))
        saved = p.export_roster()
        p.stop()
        check("aioxmpp: the exported roster holds the contact",
              jc in saved.get("items", {}), repr(saved))
        # Same version: the server answers with an empty result and
        # aioxmpp keeps its cache ("updated incrementally").
        rec.clear()
        p = AioPeer(lt, srv, user, "aio-v2", roster_json=saved)
        err = p.start()
        ev = p.events.wait(lambda e: e[0] == "initial-roster")
        check("aioxmpp with its cached ver: server answers with an empty "
              "result, cache kept (§2.6.3)",
              err is None and ev is not None and
              any("incrementally" in m for m in rec) and
              jc in p.export_roster()["items"],
              "error %r, event %r, log %r" % (err, ev, rec[-5:]))
        p.stop()
    finally:
        lg.removeHandler(h)


# ------------------------------------------- push to three libraries

class SlixPeer:
    """A slixmpp client on a LoopThread recording roster pushes and
    subscription presence."""

    def __init__(self, lt, user, resource, auto=False):
        self.lt = lt
        self.jid = "%s@%s/%s" % (user, srv.domain, resource)
        self.auto = auto
        self.events = EventBox()
        self.c = None

    def start(self, get_roster=True):
        try:
            return self.lt.run(self._start(get_roster))
        except Exception as e:  # noqa: BLE001 - reported
            return repr(e)

    async def _start(self, get_roster):
        import slixmpp
        c = slixmpp.ClientXMPP(self.jid, PW)
        self.c = c
        c.ssl_context = harness.no_verify_context()
        c.use_ipv6 = False
        harness.slixmpp_without_channel_binding(c)
        c.auto_authorize = self.auto
        c.auto_subscribe = self.auto
        started = asyncio.get_running_loop().create_future()
        ev = self.events

        def on_start(_):
            if not started.done():
                started.set_result(None)

        def on_roster(iq):
            if iq["type"] == "set":
                for jid, item in iq["roster"]["items"].items():
                    ev.put(("push", str(jid), item["name"],
                            item["subscription"], item["ask"],
                            tuple(sorted(item["groups"]))))

        def on_pres(kind):
            return lambda p: ev.put((kind, str(p["from"])))
        c.add_event_handler("session_start", on_start)
        c.add_event_handler("roster_update", on_roster)
        for kind in ("presence_subscribe", "presence_subscribed",
                     "presence_unsubscribe", "presence_unsubscribed"):
            c.add_event_handler(kind, on_pres(kind))
        c.add_event_handler("failed_all_auth",
                            lambda _: started.done() or
                            started.set_exception(RuntimeError("auth")))
        c.connect((srv.host, srv.direct_port), use_ssl=True,
                  force_starttls=False)
        await asyncio.wait_for(started, STEP)
        if get_roster:
            await c.get_roster(timeout=STEP)
        c.send_presence()
        return None

    def roster_entry(self, jid):
        async def go():
            r = self.c.client_roster
            if jid not in r:
                return None
            e = r[jid]
            return {"subscription": e["subscription"],
                    "pending_out": e["pending_out"]}
        return self.lt.run(go())

    def stop(self):
        if self.c is None:
            return

        async def go():
            fut = self.c.disconnected
            self.c.disconnect(wait=0.5)
            try:
                await asyncio.wait_for(fut, 5)
            except Exception:  # noqa: BLE001 - best effort
                self.c.abort()
        try:
            self.lt.run(go())
        except Exception:  # noqa: BLE001 - best effort
            pass


class StropheRoster:
    """tests/interop/strophe_client.c in its roster mode, as a process
    whose output lines are collected by a thread."""

    def __init__(self, binary, user, contact):
        argv = [binary, "roster", srv.host, str(srv.direct_port),
                "%s@%s/strophe" % (user, srv.domain), PW, contact, "direct"]
        env = dict(os.environ, STROPHE_CLIENT_TIMEOUT=str(STEP * 3))
        self.proc = harness.spawn("strophe_client", argv,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env)
        self.lines = EventBox()
        self.all = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.all.append(line)
            self.lines.put(line)

    def finish(self, timeout=STEP):
        harness.untrack(self.proc)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            harness.stop_group(self.proc, 0)
            return None


def push_to_all_resources(lt, user, contact):
    """§2.1.6: a push reaches every resource that fetched the roster:
    raw, slixmpp, aioxmpp and libstrophe at once."""
    jcon = "%s@%s" % (contact, srv.domain)
    binary = os.environ.get("STROPHE_CLIENT", os.path.join(
        harness.BUILD, "tests", "strophe_client"))
    if not os.path.isabs(binary):
        binary = os.path.join(harness.ROOT, binary)
    have_strophe = check("strophe_client is built (%s)" % binary,
                         os.access(binary, os.X_OK),
                         "missing: make build/tests/strophe_client")

    raw = login(srv, user, "raw")
    nofetch = ImClient(srv, user, "nofetch")
    nofetch.presence()
    slix = SlixPeer(lt, user, "slix")
    err = slix.start()
    check("slixmpp resource logs in and fetches the roster", err is None,
          err)
    aio = AioPeer(lt, srv, user, "aio")
    err = aio.start()
    check("aioxmpp resource logs in and fetches the roster", err is None,
          repr(err))
    strophe = None
    if have_strophe:
        strophe = StropheRoster(binary, user, jcon)
        ready = strophe.lines.wait(lambda ln: ln == "READY", STEP)
        check("libstrophe resource logs in and fetches the roster",
              ready is not None, strophe.all[-5:])
    aio.events.wait(lambda e: e[0] == "initial-roster", STEP)

    r = raw.roster_set(jcon, "Pushed Name", ["Team", "Night shift"])
    check("roster set from the raw resource: result",
          r is not None and r.get("type") == "result", tostr(r))
    want_groups = ("Night shift", "Team")
    p = raw.wait(is_push(jcon))
    check("push reaches the resource that made the change (raw)",
          push_item(p, jcon) == ("Pushed Name", "none", None, None,
                                 want_groups), tostr(p))
    ev = slix.events.wait(lambda e: e[0] == "push" and e[1] == jcon)
    check("push reaches the slixmpp resource with name and groups",
          ev is not None and ev[2] == "Pushed Name" and ev[3] == "none"
          and ev[5] == want_groups, repr(ev))
    ev = aio.events.wait(lambda e: e[0] == "roster-added" and e[1] == jcon)
    check("push reaches the aioxmpp resource (RosterClient "
          "on_entry_added) with name and groups",
          ev is not None and ev[2] == "Pushed Name" and ev[3] == "none"
          and ev[4] == want_groups, repr(ev))
    if strophe:
        ln = strophe.lines.wait(lambda x: x.startswith("push: jid=%s "
                                                       % jcon))
        check("push reaches the libstrophe resource with name and groups",
              ln is not None and "name=Pushed Name " in ln and
              "subscription=none" in ln and
              "groups=Team,Night shift" in ln.replace(
                  "groups=Night shift,Team", "groups=Team,Night shift"),
              ln or strophe.all[-5:])

    r = raw.roster_remove(jcon)
    p = raw.wait(is_push(jcon))
    check("removal pushed to the raw resource",
          push_item(p, jcon) is not None and
          push_item(p, jcon).sub == "remove", tostr(p))
    ev = slix.events.wait(lambda e: e[0] == "push" and e[1] == jcon and
                          e[3] == "remove")
    check("removal pushed to the slixmpp resource", ev is not None,
          repr(ev))
    ev = aio.events.wait(lambda e: e[0] == "roster-removed" and
                         e[1] == jcon)
    check("removal pushed to the aioxmpp resource (on_entry_removed)",
          ev is not None, repr(ev))
    if strophe:
        rc = strophe.finish()
        for line in strophe.all:
            note("strophe_client: " + line)
        check("libstrophe resource got the push and then the removal, "
              "answered both, exited 0", rc == 0,
              "exit %s: %s" % (rc, strophe.all[-1:]))
    got = nofetch.quiet(is_push(), 0.3)
    check("the resource that never fetched the roster got no push",
          not got, [tostr(x) for x in got])
    slix.stop()
    aio.stop()
    nofetch.logout()
    raw.logout()


# ----------------------------------------------------------- max_items

def max_items():
    s2 = harness.Server(extra="roster: { max_items = 3; };",
                        label="max_items=3")
    global srv
    main_srv, srv = srv, s2
    try:
        if not s2.start():
            return
        owner, c1, c2, c3, c4, c5 = [u("mx") for _ in range(6)]
        j = add_users(s2, owner, c1, c2, c3, c4, c5)
        a = ImClient(s2, owner, "r")
        a.roster_get()
        for k, jid in enumerate(j[1:4]):
            r = a.roster_set(jid, "n%d" % k)
            check("max_items=3: item %d of 3 is accepted" % (k + 1),
                  r is not None and r.get("type") == "result", tostr(r))
        r = a.roster_set(j[4], "fourth")
        check("max_items=3: the 4th item is refused with <not-allowed/>",
              error_of(r) == "not-allowed", tostr(r))
        r = a.roster_set(j[1], "renamed")
        check("max_items=3: changing an existing item of a full roster is "
              "still allowed", r is not None and r.get("type") == "result",
              tostr(r))
        r = a.roster_get()
        check("max_items=3: the roster holds exactly the 3 accepted items",
              set(roster_items(r)) == set(j[1:4]), tostr(r))
        r = a.roster_remove(j[2])
        r2 = a.roster_set(j[4], "fourth")
        check("max_items=3: after a removal the new item fits",
              r is not None and r.get("type") == "result" and
              r2 is not None and r2.get("type") == "result",
              "%s / %s" % (tostr(r), tostr(r2)))
        # A subscription request also creates an item (§3.1.2); the limit
        # should hold for it too.
        a.presence("subscribe", to=j[5])
        a.storage_barrier()  # the subscribe's roster change is done
        r = a.roster_get()
        err = a.quiet(lambda e: e.get("type") == "error", 0.1)
        check("max_items=3: a subscribe to a 4th contact does not grow the "
              "roster beyond 3 items (or is refused)",
              len(roster_items(r)) <= 3 or err,
              "after <presence type='subscribe' to='%s'/> the roster has "
              "%d items: %s" % (j[5], len(roster_items(r)), tostr(r)))
        a.logout()
    finally:
        srv = main_srv
        s2.stop()


# ------------------------------------------------------- subscriptions

def flow_request_approve_cancel():
    """§3.1 request + approval, then §3.2 cancellation by the contact."""
    name = "subscribe/approve"
    user, contact = u("su"), u("sc")
    ju, jc = add_users(srv, user, contact)
    a = login(srv, user, "a", label="user", status="user here")
    b = login(srv, contact, "b", label="contact", show="dnd",
              status="contact busy")
    a.drain()
    b.drain()

    a.presence("subscribe", to=jc)
    expect_push(name, a, jc, "none", ask="subscribe",
                why="(§3.1.2)")
    req = b.wait(is_presence(frm=ju, type_="subscribe"))
    check("%s: the contact gets the request from the user's bare JID "
          "(§3.1.2, §3.1.3)" % name,
          req is not None and req.get("from") == ju, tostr(req))
    expect_no_item(name, b, ju, "before answering (pending in is not an "
                   "item, §3.1.3)")
    expect_item(name, a, jc, "none", ask="subscribe")

    b.presence("subscribed", to=ju)
    expect_push(name, b, ju, "from", why="(§3.1.5)")
    # The three things the user gets, in arrival order.
    seen = []
    for _ in range(3):
        el = a.wait(lambda e: is_presence(frm=jc, type_="subscribed")(e)
                    or is_presence(frm=b.jid)(e) or is_push(jc)(e))
        if el is None:
            break
        seen.append(el)
    a.queue[0:0] = seen  # back in the queue, in order, for what follows
    kinds = ["subscribed" if e.get("type") == "subscribed" else
             "presence" if is_presence()(e) else "push" for e in seen]
    check("%s: the contact's presence reaches the user after the "
          "'subscribed' and the push (§3.1.5: the contact's server 'MUST "
          "then also send current presence'; §3.1.6 order)" % name,
          kinds == ["push", "subscribed", "presence"] or
          kinds == ["subscribed", "push", "presence"],
          "arrival order %s: %s" % (kinds, [tostr(e) for e in seen]))
    p = a.wait(is_presence(frm=jc, type_="subscribed"))
    check("%s: the user gets 'subscribed' from the contact's bare JID "
          "(§3.1.6)" % name, p is not None, tostr(p))
    expect_push(name, a, jc, "to", why="(§3.1.6)")
    p = a.wait(is_presence(frm=b.jid))
    check("%s: the user then gets the contact's current presence with "
          "show and status (§3.1.5)" % name,
          p is not None and p.findtext("{jabber:client}show") == "dnd"
          and p.findtext("{jabber:client}status") == "contact busy",
          tostr(p))
    expect_item(name, a, jc, "to")
    expect_item(name, b, ju, "from")

    # Presence now flows contact -> user only.
    b.presence(status="contact free")
    p = a.wait(lambda e: is_presence(frm=b.jid)(e) and
               e.findtext("{jabber:client}status") == "contact free")
    check("%s: a presence change of the contact reaches the user "
          "('to', §4.4.2)" % name, p is not None, tostr(p))
    a.presence(status="user changed")
    got = b.quiet(lambda e: is_presence(frm=a.jid)(e) and
                  e.findtext("{jabber:client}status") == "user changed")
    check("%s: the user's presence change does not reach the contact "
          "(the contact has no subscription)" % name, not got,
          [tostr(x) for x in got])

    # §3.2: the contact cancels.
    name = "cancel by contact"
    b.presence("unsubscribed", to=ju)
    expect_push(name, b, ju, "none", why="(§3.2.2)")
    p = a.wait(is_presence(frm=jc, type_="unsubscribed"))
    check("%s: the user gets 'unsubscribed' from the contact's bare JID "
          "(§3.2.3)" % name, p is not None, tostr(p))
    expect_push(name, a, jc, "none", why="(§3.2.3)")
    p = a.wait(is_presence(frm=b.jid, type_="unavailable"))
    check("%s: the user gets unavailable presence from the contact's "
          "resource (§3.2.2)" % name, p is not None, tostr(p))
    expect_item(name, a, jc, "none")
    expect_item(name, b, ju, "none")
    b.presence(status="after cancel")
    got = a.quiet(lambda e: is_presence(frm=b.jid)(e) and
                  e.findtext("{jabber:client}status") == "after cancel")
    check("%s: the contact's presence no longer reaches the user" % name,
          not got, [tostr(x) for x in got])
    a.logout()
    b.logout()


def flow_deny():
    name = "deny"
    user, contact = u("du"), u("dc")
    ju, jc = add_users(srv, user, contact)
    a = login(srv, user, "a", label="user")
    b = login(srv, contact, "b", label="contact")
    a.drain()
    b.drain()
    a.presence("subscribe", to=jc)
    expect_push(name, a, jc, "none", ask="subscribe")
    req = b.wait(is_presence(frm=ju, type_="subscribe"))
    check("%s: the contact gets the request" % name, req is not None,
          "nothing")
    b.presence("unsubscribed", to=ju)
    p = a.wait(is_presence(frm=jc, type_="unsubscribed"))
    check("%s: the user gets 'unsubscribed' (§3.2.1, §3.2.3)" % name,
          p is not None, tostr(p))
    expect_push(name, a, jc, "none", why="without ask (§3.2.3)")
    expect_item(name, a, jc, "none")
    expect_no_item(name, b, ju, "(§3.2.2: the contact's server 'MUST "
                   "simply remove any record of the inbound presence "
                   "subscription request')")
    got = b.quiet(is_push(ju), 0.2)
    check("%s: the contact, who never had an item, gets no push" % name,
          not got, [tostr(x) for x in got])
    b.logout()
    b = login(srv, contact, "again", label="contact")
    got = b.quiet(is_presence(frm=ju, type_="subscribe"))
    check("%s: the denied request is not delivered again at the next "
          "login" % name, not got, [tostr(x) for x in got])
    a.logout()
    b.logout()


def flow_unsubscribe():
    """§3.3: the subscriber cancels its own subscription."""
    name = "unsubscribe"
    user, contact = u("uu"), u("uc")
    ju, jc = add_users(srv, user, contact)
    a = login(srv, user, "a", label="user")
    b = login(srv, contact, "b", label="contact", status="here")
    a.drain()
    b.drain()
    a.presence("subscribe", to=jc)
    b.wait(is_presence(frm=ju, type_="subscribe"))
    b.presence("subscribed", to=ju)
    ok = a.wait(lambda e: is_push(jc)(e) and
                roster_items(e)[jc].sub == "to") is not None
    check("%s: setup: user subscribed to contact ('to')" % name, ok,
          "no push with subscription='to'")
    a.wait(is_presence(frm=b.jid), 2)
    a.queue.clear()
    b.wait(lambda e: is_push(ju)(e) and roster_items(e)[ju].sub == "from",
           2)
    b.queue.clear()

    a.presence("unsubscribe", to=jc)
    expect_push(name, a, jc, "none", why="(§3.3.2)")
    p = b.wait(is_presence(frm=ju, type_="unsubscribe"))
    check("%s: the contact gets 'unsubscribe' from the user's bare JID "
          "(§3.3.2, §3.3.3)" % name, p is not None, tostr(p))
    expect_push(name, b, ju, "none", why="(§3.3.3)")
    p = a.wait(is_presence(frm=b.jid, type_="unavailable"))
    check("%s: the user gets unavailable presence from the contact's "
          "resource (§3.3.3)" % name, p is not None, tostr(p))
    expect_item(name, a, jc, "none")
    expect_item(name, b, ju, "none")
    a.logout()
    b.logout()


def flow_mutual_raw():
    """Both ways: 'both' on each side, each sees the other's presence."""
    name = "mutual"
    user, contact = u("mu"), u("mc")
    ju, jc = add_users(srv, user, contact)
    a = login(srv, user, "a", label="user", status="A")
    b = login(srv, contact, "b", label="contact", status="B")
    a.drain()
    b.drain()
    a.presence("subscribe", to=jc)
    b.wait(is_presence(frm=ju, type_="subscribe"))
    b.presence("subscribed", to=ju)
    b.presence("subscribe", to=ju)
    expect_push(name, b, ju, "from", ask="subscribe",
                why="(contact approved and asked back)")
    p = a.wait(is_presence(frm=jc, type_="subscribe"))
    check("%s: the user gets the contact's request" % name, p is not None,
          "nothing")
    a.presence("subscribed", to=jc)
    expect_push(name, a, jc, "both")
    expect_push(name, b, ju, "both")
    expect_item(name, a, jc, "both")
    expect_item(name, b, ju, "both")
    p = b.wait(lambda e: is_presence(frm=a.jid)(e) and
               e.findtext("{jabber:client}status") == "A")
    check("%s: the contact gets the user's presence after approving "
          "(§3.1.5)" % name, p is not None, tostr(p))
    a.presence(status="A2")
    b.presence(status="B2")
    pa = a.wait(lambda e: is_presence(frm=b.jid)(e) and
                e.findtext("{jabber:client}status") == "B2")
    pb = b.wait(lambda e: is_presence(frm=a.jid)(e) and
                e.findtext("{jabber:client}status") == "A2")
    check("%s: presence changes reach both sides" % name,
          pa is not None and pb is not None,
          "user got %s, contact got %s" % (tostr(pa), tostr(pb)))

    # §2.5.2: removing the item cancels both directions.
    name = "remove item"
    r = a.roster_remove(jc)
    p = a.wait(lambda e: is_push(jc)(e) and
               roster_items(e)[jc].sub == "remove")
    check("%s: result and push subscription='remove'" % name,
          r is not None and r.get("type") == "result" and p is not None,
          "%s / %s" % (tostr(r), tostr(p)))
    p1 = b.wait(is_presence(frm=ju, type_="unsubscribe"))
    p2 = b.wait(is_presence(frm=ju, type_="unsubscribed"))
    check("%s: the contact gets 'unsubscribe' and 'unsubscribed' from the "
          "user's bare JID (§2.5.2)" % name,
          p1 is not None and p2 is not None,
          "unsubscribe %s, unsubscribed %s" % (tostr(p1), tostr(p2)))
    expect_push(name, b, ju, "none")
    p = b.wait(is_presence(frm=a.jid, type_="unavailable"))
    check("%s: the contact gets unavailable from the user's resource "
          "(§3.2.2)" % name, p is not None, tostr(p))
    p = a.wait(is_presence(frm=b.jid, type_="unavailable"))
    check("%s: the user gets unavailable from the contact's resource "
          "(§3.3.3)" % name, p is not None, tostr(p))
    expect_no_item(name, a, jc)
    expect_item(name, b, ju, "none")
    a.logout()
    b.logout()


def flow_mutual_slixmpp(lt):
    """slixmpp with auto_authorize/auto_subscribe as the contact: it
    approves and asks back by itself; the raw user approves."""
    name = "mutual with slixmpp"
    user, contact = u("xu"), u("xc")
    ju, jc = add_users(srv, user, contact)
    a = login(srv, user, "a", label="user")
    s = SlixPeer(lt, contact, "slix", auto=True)
    err = s.start()
    if not check("%s: slixmpp contact logs in" % name, err is None, err):
        return
    a.drain()
    a.presence("subscribe", to=jc)
    p = a.wait(is_presence(frm=jc, type_="subscribed"))
    check("%s: slixmpp approves the request automatically" % name,
          p is not None, "no subscribed")
    p = a.wait(is_presence(frm=jc, type_="subscribe"))
    check("%s: slixmpp asks back automatically" % name, p is not None,
          "no subscribe")
    a.presence("subscribed", to=jc)
    expect_push(name, a, jc, "both")
    ev = harness.wait_for(lambda: (s.roster_entry(ju) or {}).get(
        "subscription") == "both" and s.roster_entry(ju), STEP, 0.1)
    check("%s: slixmpp's roster shows subscription 'both' from the "
          "server's pushes" % name, ev and ev["subscription"] == "both",
          repr(ev))
    s.stop()
    a.logout()


def flow_preapproval():
    """§3.4: the contact approves before being asked."""
    name = "pre-approval"
    user, contact = u("pu"), u("pc")
    ju, jc = add_users(srv, user, contact)
    a = login(srv, user, "a", label="user")
    b = login(srv, contact, "b", label="contact", status="contact online")
    a.drain()
    b.drain()
    b.presence("subscribed", to=ju)
    expect_push(name, b, ju, "none", approved="true", why="(§3.4)")
    got = a.quiet(is_presence(frm=jc, type_="subscribed"))
    check("%s: the pre-approval is not routed to the user (§3.4)" % name,
          not got, [tostr(x) for x in got])
    expect_item(name, b, ju, "none", approved="true")

    a.presence("subscribe", to=jc)
    p = a.wait(is_presence(frm=jc, type_="subscribed"))
    check("%s: the later request is approved at once by the contact's "
          "server (§3.4)" % name, p is not None, "no subscribed")
    expect_push(name, a, jc, "to")
    expect_push(name, b, ju, "from", why="without approved (§3.4)")
    p = a.wait(lambda e: is_presence(frm=b.jid)(e) and
               e.findtext("{jabber:client}status") == "contact online")
    check("%s: the user gets the contact's presence (§3.1.5)" % name,
          p is not None, tostr(p))
    got = b.quiet(is_presence(frm=ju, type_="subscribe"))
    check("%s: the request is not shown to the contact (§3.4)" % name,
          not got, [tostr(x) for x in got])
    expect_item(name, a, jc, "to")
    expect_item(name, b, ju, "from")
    a.logout()
    b.logout()


def flow_offline_contact():
    """§3.1.3: a request to an offline contact is kept and delivered at
    every later login until answered."""
    name = "request to an offline contact"
    user, contact = u("ou"), u("oc")
    ju, jc = add_users(srv, user, contact)
    a = login(srv, user, "a", label="user")
    a.drain()
    a.presence("subscribe", to=jc)
    expect_push(name, a, jc, "none", ask="subscribe")

    b = login(srv, contact, "first", label="contact")
    p = b.wait(is_presence(frm=ju, type_="subscribe"))
    check("%s: delivered at the contact's first login, from the user's "
          "bare JID (§3.1.3)" % name,
          p is not None and p.get("from") == ju,
          "%s; the contact received: %s" % (
              tostr(p), [tostr(x) for x in b.queue]))
    i = b.raw.find(b"type='subscribe'")
    check("%s: the stored request comes back as a jabber:client "
          "<presence/> (RFC 6120 §4.8.3)" % name,
          p is not None and p.tag == "{jabber:client}presence",
          "as written by the server: %r" % b.raw[max(0, i - 40):i + 80])
    b.logout()
    b = login(srv, contact, "second", label="contact")
    p = b.wait(is_presence(frm=ju, type_="subscribe"))
    check("%s: delivered again at the next login while unanswered "
          "(§3.1.3)" % name, p is not None, tostr(p))
    extra = b.quiet(is_presence(frm=ju, type_="subscribe"), 0.3)
    check("%s: delivered once per login" % name, not extra,
          [tostr(x) for x in extra])
    b.presence("subscribed", to=ju)
    expect_push(name, a, jc, "to")
    expect_item(name, b, ju, "from")
    b.logout()
    b = login(srv, contact, "third", label="contact")
    got = b.quiet(is_presence(frm=ju, type_="subscribe"))
    check("%s: not delivered after it was approved" % name, not got,
          [tostr(x) for x in got])
    b.logout()
    a.logout()


def main(lt):
    alice, bob, carol, dave, pusher, target = [u(p) for p in (
        "ra", "rb", "rc", "rd", "rp", "rt")]
    add_users(srv, alice, bob, carol, dave, pusher, target)
    roster_basics(alice, bob, carol, dave, u("ghost"))
    aioxmpp_versioning(lt, alice, carol)
    push_to_all_resources(lt, pusher, target)
    flow_request_approve_cancel()
    flow_deny()
    flow_unsubscribe()
    flow_mutual_raw()
    flow_mutual_slixmpp(lt)
    flow_preapproval()
    flow_offline_contact()
    max_items()
    check_namespaces()


def run():
    global srv
    srv = harness.Server()
    t0 = time.monotonic()
    if srv.start():
        lt = LoopThread()
        try:
            main(lt)
        except Exception as e:  # noqa: BLE001 - report, don't crash
            import traceback
            traceback.print_exc()
            check("roster suite runs without exceptions", False, repr(e))
        lt.stop()
    note("roster suite took %.1f s" % (time.monotonic() - t0))
    harness.finish()


if __name__ == "__main__":
    run()
