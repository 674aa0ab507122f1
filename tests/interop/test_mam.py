#!/usr/bin/python3
"""test_mam.py - the message archive (XEP-0313 urn:xmpp:mam:2 with
#extended, XEP-0059 paging, XEP-0359 stanza ids, XEP-0334 hints).

Raw clients check every byte that matters: both directions archived, the
delivered <stanza-id/> equal to the archive id, a forged one removed,
queries by with/start/end/after-id/before-id/ids, 250 messages paged
forward and backward with max=100 (no gap, no duplicate, complete only on
the last page, RSM <count/>), the exact errors (item-not-found,
bad-request, feature-not-implemented, forbidden), preferences always/
never/roster, the no-store hint, metadata, the per-user limit, expiry
(mam.expire_after, a short mam.expire_interval), account removal, and the
archive after a restart.  slixmpp's xep_0313 plugin pages the same
archive as a client library does.

Run with /usr/bin/python3; `scripts/run-tests mam`.
"""

import asyncio
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note, tostr  # noqa: E402
from im_common import (PW, STEP, ImClient, LoopThread, add_users,  # noqa
                       error_of, is_message, login, make_both)

C = "{jabber:client}"
NS_MAM = "urn:xmpp:mam:2"
M = "{%s}" % NS_MAM
NS_RSM = "http://jabber.org/protocol/rsm"
RSM = "{%s}" % NS_RSM
NS_SID = "urn:xmpp:sid:0"
FWD = "{urn:xmpp:forward:0}"


def u(p):
    return harness.unique(p)


def form(**fields):
    """A MAM query form; a list value gives several <value/>s."""
    out = ["<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
           "type='hidden'><value>%s</value></field>" % NS_MAM]
    for k, v in fields.items():
        k = k.replace("_", "-")
        vals = v if isinstance(v, list) else [v]
        out.append("<field var='%s'>%s</field>" % (
            k, "".join("<value>%s</value>" % x for x in vals)))
    out.append("</x>")
    return "".join(out)


def rsm(max_=None, after=None, before=None):
    s = "<set xmlns='%s'>" % NS_RSM
    if max_ is not None:
        s += "<max>%d</max>" % max_
    if after is not None:
        s += "<after>%s</after>" % after
    if before is not None:
        s += "<before>%s</before>" % before if before else "<before/>"
    return s + "</set>"


QN = [0]


def query(c, xml="", to=None, timeout=STEP * 3):
    """Runs one query; returns (results, fin iq) where results are
    (archive id, forwarded message element, delay stamp) tuples."""
    QN[0] += 1
    qid = "q%d" % QN[0]
    iq_id = c._id("mamq")
    to_attr = " to='%s'" % to if to else ""
    c.send("<iq type='set' id='%s'%s><query xmlns='%s' queryid='%s'>%s"
           "</query></iq>" % (iq_id, to_attr, NS_MAM, qid, xml))
    res = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        el = c.wait(lambda e: (e.tag == C + "message" and
                               e.find(M + "result") is not None) or
                    (e.tag == C + "iq" and e.get("id") == iq_id),
                    deadline - time.monotonic())
        if el is None:
            return res, None
        if el.tag == C + "iq":
            return res, el
        r = el.find(M + "result")
        if r.get("queryid") != qid:
            continue
        f = r.find(FWD + "forwarded")
        msg = f.find(C + "message") if f is not None else None
        d = f.find("{urn:xmpp:delay}delay") if f is not None else None
        res.append((r.get("id"), msg, d.get("stamp") if d is not None
                    else None))
    return res, None


def fin_of(iq):
    f = iq.find(M + "fin") if iq is not None else None
    if f is None:
        return None
    s = f.find(RSM + "set")
    get = (lambda n: s.findtext(RSM + n)) if s is not None else \
        (lambda n: None)
    return {"complete": f.get("complete") == "true",
            "first": get("first"), "last": get("last"),
            "count": get("count")}


def bodies(res):
    return [m.findtext(C + "body") if m is not None else None
            for _, m, _ in res]


def barrier(c):
    """A storage round trip: archive writes queued before it are done."""
    c.request("<query xmlns='%s'/>" % NS_MAM, "get")


def sid_of(msg, by):
    for s in msg.findall("{%s}stanza-id" % NS_SID):
        if s.get("by") == by:
            return s.get("id")
    return None


def sids_of(msg, by):
    return [s.get("id") for s in msg.findall("{%s}stanza-id" % NS_SID)
            if s.get("by") == by]


def set_prefs(c, default, always=(), never=()):
    x = "<prefs xmlns='%s' default='%s'><always>%s</always><never>%s" \
        "</never></prefs>" % (
            NS_MAM, default, "".join("<jid>%s</jid>" % j for j in always),
            "".join("<jid>%s</jid>" % j for j in never))
    return c.request(x, "set")


def test_basic(srv):
    a, b = u("ma"), u("mb")
    ja, jb = add_users(srv, a, b)
    ca, cb = login(srv, a), login(srv, b)
    # Discovery on the account (XEP-0313 §8).
    d = ca.request("<query xmlns='http://jabber.org/protocol/disco#info'/>",
                   to=ja)
    feats = {f.get("var") for f in d.iter(
        "{http://jabber.org/protocol/disco#info}feature")} if d is not None \
        else set()
    check("account disco advertises urn:xmpp:mam:2 and #extended",
          NS_MAM in feats and NS_MAM + "#extended" in feats, tostr(d))

    # A forged stanza-id by the recipient's JID is removed; another kept.
    ca.message(jb, "hello b", msg_id="m1",
               extra="<stanza-id xmlns='%s' by='%s' id='forged'/>"
                     "<stanza-id xmlns='%s' by='other@x.test' id='keep'/>"
                     % (NS_SID, jb, NS_SID))
    m = cb.wait(is_message(body="hello b"))
    ids = sids_of(m, jb) if m is not None else []
    check("delivered message carries one stanza-id by the recipient",
          len(ids) == 1 and ids[0] != "forged", tostr(m))
    check("a stanza-id by another entity is kept",
          m is not None and "keep" in sids_of(m, "other@x.test"), tostr(m))
    cb.message(ja, "hello a", msg_id="m2")
    ma = ca.wait(is_message(body="hello a"))
    barrier(ca)
    barrier(cb)
    res, iq = query(cb)
    f = fin_of(iq)
    check("recipient's archive has both directions",
          bodies(res) == ["hello b", "hello a"] and f and f["complete"],
          "%s %s" % (bodies(res), tostr(iq)))
    check("archive id equals the delivered stanza-id",
          res and ids and res[0][0] == ids[0], "%s %s" % (res, ids))
    check("the archived copy has no forged stanza-id",
          res and not sids_of(res[0][1], jb) and
          sids_of(res[0][1], "other@x.test") == ["keep"],
          tostr(res[0][1]) if res else "")
    check("RSM first/last/count on a complete page",
          f and f["first"] == res[0][0] and f["last"] == res[-1][0] and
          f["count"] == "2", f)
    check("forwarded <delay/> stamps are XEP-0082",
          all(s and s.endswith("Z") and "T" in s for _, _, s in res), res)
    check("archived message keeps its original attributes",
          res and res[0][1].get("id") == "m1" and
          res[0][1].get("from", "").startswith(ja + "/"),
          tostr(res[0][1]) if res else "")
    resa, iqa = query(ca, to=ja)
    check("sender's archive (query addressed to the bare JID)",
          bodies(resa) == ["hello b", "hello a"], bodies(resa))
    check("outgoing messages get no stanza-id for the contact "
          "(XEP-0313 §3.5)",
          ma is not None and sids_of(ma, jb) == [] and
          len(sids_of(ma, ja)) == 1, tostr(ma))
    # Metadata.
    md = cb.request("<metadata xmlns='%s'/>" % NS_MAM)
    mel = md.find(M + "metadata") if md is not None else None
    check("metadata start/end are the oldest and newest ids",
          mel is not None and mel.find(M + "start") is not None and
          mel.find(M + "start").get("id") == res[0][0] and
          mel.find(M + "end").get("id") == res[-1][0], tostr(md))
    # Someone else's archive.
    r = ca.request("<query xmlns='%s'/>" % NS_MAM, "set", to=jb)
    check("querying another account's archive is forbidden",
          error_of(r) == "forbidden", tostr(r))
    # no-store hint and chat states are not archived.
    ca.message(jb, "secret", extra="<no-store xmlns='urn:xmpp:hints'/>")
    ms = cb.wait(is_message(body="secret"))
    ca.send("<message to='%s' type='chat'><active xmlns='http://jabber.org/"
            "protocol/chatstates'/></message>" % jb)
    ca.send("<message to='%s' type='headline'><body>news</body></message>"
            % jb)
    barrier(ca)
    res2, _ = query(cb)
    check("no-store, chat states and headlines are not archived",
          bodies(res2) == ["hello b", "hello a"] and ms is not None and
          not sids_of(ms, jb), bodies(res2))
    # store hint archives a body-less message.
    ca.send("<message to='%s' type='chat'><store xmlns='urn:xmpp:hints'/>"
            "<x xmlns='urn:example'/></message>" % jb)
    barrier(ca)
    res3, _ = query(cb)
    check("a <store/> hint archives a message without body",
          len(res3) == 3, bodies(res3))
    ca.logout()
    cb.logout()
    return a, b, ja, jb


def test_paging(srv):
    a, b = u("pa"), u("pb")
    ja, jb = add_users(srv, a, b)
    ca, cb = login(srv, a), login(srv, b)
    t0 = datetime.datetime.now(datetime.timezone.utc)
    n = 250
    for i in range(n):
        ca.message(jb, "m%03d" % i)
    got = cb.collect(is_message(frm_bare=ja), n, timeout=STEP * 4)
    barrier(ca)
    barrier(cb)
    check("250 messages delivered", len(got) == n, len(got))
    delivered_ids = [sid_of(m, jb) for m in got]
    want = ["m%03d" % i for i in range(n)]

    # Forward.
    seen, after, pages, completes = [], None, 0, []
    while pages < 10:
        res, iq = query(cb, rsm(100, after=after))
        f = fin_of(iq)
        if f is None:
            break
        pages += 1
        seen += res
        completes.append(f["complete"])
        if f["complete"] or not res:
            break
        after = f["last"]
    check("forward paging: 3 pages, no gap, no duplicate, in order",
          pages == 3 and bodies(seen) == want, "%d pages %s" % (
              pages, bodies(seen)[:5]))
    check("complete only on the last forward page",
          completes == [False, False, True], completes)
    check("archive ids are the delivered stanza-ids",
          [r[0] for r in seen] == delivered_ids, "")
    _, iq = query(cb, rsm(10))
    check("RSM <count/> is the archive size", fin_of(iq)["count"] == "250",
          tostr(iq))

    # Backward from the last page.
    seen_b, before, pages, completes = [], "", 0, []
    while pages < 10:
        res, iq = query(cb, rsm(100, before=before))
        f = fin_of(iq)
        if f is None:
            break
        pages += 1
        seen_b = res + seen_b
        completes.append(f["complete"])
        if f["complete"] or not res:
            break
        before = f["first"]
    check("backward paging: 3 pages, chronological within pages, "
          "no gap, no duplicate",
          pages == 3 and bodies(seen_b) == want, bodies(seen_b)[:5])
    check("complete only on the first (oldest) backward page",
          completes == [False, False, True], completes)
    res, iq = query(cb, rsm(5, before=""))
    check("empty <before/> gives the last page",
          bodies(res) == want[-5:], bodies(res))
    # Flipped page.
    res, iq = query(cb, rsm(5, before="") + "<flip-page/>")
    check("flip-page reverses the page",
          bodies(res) == list(reversed(want[-5:])), bodies(res))

    ids = [r[0] for r in seen]
    # after-id / before-id.
    res, iq = query(cb, form(after_id=ids[9], before_id=ids[15]))
    check("after-id and before-id bound the result (exclusive)",
          bodies(res) == want[10:15] and fin_of(iq)["complete"],
          bodies(res))
    res, iq = query(cb, form(ids=[ids[3], ids[200], ids[7]]))
    check("ids returns exactly those, in archive order",
          bodies(res) == [want[3], want[7], want[200]], bodies(res))
    # Time range: stamps of items 50 and 60.
    st50, st60 = seen[50][2], seen[60][2]
    res, iq = query(cb, form(start=st50, end=st60))
    check("start/end select by archive time (inclusive)",
          bodies(res) == want[50:61], bodies(res))
    res, iq = query(cb, form(start=t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             **{"with": ja}) + rsm(20))
    check("with + start paged", bodies(res) == want[:20] and
          fin_of(iq)["count"] == "250", "%s %s" % (bodies(res)[:3],
                                                   fin_of(iq)))
    res, iq = query(cb, form(**{"with": jb}))
    check("with = own JID: only messages to oneself", res == [], bodies(res))
    res, iq = query(cb, form(end="2000-01-01T00:00:00Z"))
    check("an empty time range", res == [] and fin_of(iq)["complete"] and
          fin_of(iq)["count"] == "0", tostr(iq))
    res, iq = query(cb, rsm(0))
    check("max=0 returns only the count",
          res == [] and fin_of(iq)["count"] == "250", tostr(iq))

    # Errors.
    _, iq = query(cb, rsm(10, after="no-such-id"))
    check("unknown RSM <after/> is item-not-found",
          error_of(iq) == "item-not-found", tostr(iq))
    _, iq = query(cb, rsm(10, before="no-such-id"))
    check("unknown RSM <before/> is item-not-found",
          error_of(iq) == "item-not-found", tostr(iq))
    _, iq = query(cb, form(after_id="nope"))
    check("unknown after-id is item-not-found",
          error_of(iq) == "item-not-found", tostr(iq))
    _, iq = query(cb, form(ids=[ids[0], "nope"]))
    check("an unknown id in ids is item-not-found",
          error_of(iq) == "item-not-found", tostr(iq))
    _, iq = query(cb, form(start="yesterday"))
    check("a malformed start is bad-request",
          error_of(iq) == "bad-request", tostr(iq))
    _, iq = query(cb, form(**{"with": "a@b@c"}))
    check("a malformed with is bad-request",
          error_of(iq) == "bad-request", tostr(iq))
    _, iq = query(cb, form(**{"urn:example:free-text": "x"}))
    check("an unknown field is feature-not-implemented (§4.1.5)",
          error_of(iq) == "feature-not-implemented", tostr(iq))
    _, iq = query(cb, "<set xmlns='%s'><max>x</max></set>" % NS_RSM)
    check("a non-numeric <max/> is bad-request",
          error_of(iq) == "bad-request", tostr(iq))
    fq = cb.request("<query xmlns='%s'/>" % NS_MAM)
    vars_ = {f.get("var") for f in fq.iter("{jabber:x:data}field")} \
        if fq is not None else set()
    check("the query form lists the supported fields",
          {"FORM_TYPE", "with", "start", "end", "before-id", "after-id",
           "ids"} <= vars_, vars_)
    ca.logout()
    cb.logout()
    return jb, b, want, ids


def test_slixmpp(srv, user, want):
    """slixmpp pages the archive with its xep_0313 plugin."""
    import slixmpp
    lt = LoopThread()
    out = {}

    async def run():
        x = slixmpp.ClientXMPP("%s@%s/slix" % (user, srv.domain), PW)
        harness.slixmpp_without_channel_binding(x)
        x.register_plugin("xep_0313")
        x.register_plugin("xep_0059")
        x.ssl_context = harness.no_verify_context()
        ok = asyncio.get_running_loop().create_future()
        x.add_event_handler("session_start",
                            lambda _: ok.done() or ok.set_result(True))
        x.connect((srv.host, srv.direct_port), use_ssl=True,
                  force_starttls=False)
        await asyncio.wait_for(ok, STEP * 2)
        out["bodies"] = []
        async for msg in x["xep_0313"].iterate(rsm={"max": 100}):
            out["bodies"].append(
                msg["mam_result"]["forwarded"]["stanza"]["body"])
            if len(out["bodies"]) > 400:
                break
        x.disconnect()
    try:
        lt.run(run(), timeout=STEP * 6)
    except Exception as e:  # noqa: BLE001
        out["error"] = repr(e)
    lt.stop()
    return out


def test_prefs(srv):
    a, b, c = u("fa"), u("fb"), u("fc")
    ja, jb, jc = add_users(srv, a, b, c)
    make_both(srv, a, b)   # b is in a's roster, c is not
    ca, cb, cc = login(srv, a), login(srv, b), login(srv, c)
    r = ca.request("<prefs xmlns='%s'/>" % NS_MAM)
    p = r.find(M + "prefs") if r is not None else None
    check("default prefs are 'always'",
          p is not None and p.get("default") == "always", tostr(r))
    r = set_prefs(ca, "never", always=[jc])
    p = r.find(M + "prefs") if r is not None else None
    check("prefs set answers with the new prefs",
          p is not None and p.get("default") == "never" and
          [j.text for j in p.iter(M + "jid")] == [jc], tostr(r))
    cb.message(ja, "from b (never)")
    cc.message(ja, "from c (always)")
    mb = ca.wait(is_message(body="from b (never)"))
    mc = ca.wait(is_message(body="from c (always)"))
    check("never: no stanza-id; an always JID: stanza-id",
          mb is not None and not sids_of(mb, ja) and mc is not None and
          len(sids_of(mc, ja)) == 1, "%s %s" % (tostr(mb), tostr(mc)))
    r = set_prefs(ca, "roster")
    cb.message(ja, "from b (roster)")
    cc.message(ja, "from c (roster)")
    ca.message(jc, "to c (roster)")
    ca.message(jb, "to b (roster)")
    ca.wait(is_message(body="from b (roster)"))
    ca.wait(is_message(body="from c (roster)"))
    barrier(ca)
    res, _ = query(ca)
    check("prefs never/always/roster respected both ways",
          bodies(res)[:1] == ["from c (always)"] and
          sorted(bodies(res)[1:]) == ["from b (roster)", "to b (roster)"],
          bodies(res))
    r = ca.request("<prefs xmlns='%s' default='sometimes'/>" % NS_MAM,
                   "set")
    check("a bad default is bad-request", error_of(r) == "bad-request",
          tostr(r))
    # Preferences apply to an offline recipient too (loaded on demand),
    # and the offline copy carries the stanza-id.
    set_prefs(ca, "always", never=[jc])
    ca.logout()
    cb.message(ja, "offline from b")
    cc.message(ja, "offline from c")
    # Stored before alice is back (account lookup, prefs, archive, offline
    # store: a chain of storage jobs, one round each).
    for x in (cb, cc):
        x.storage_barrier(rounds=6)
    ca = login(srv, a, "again")
    offl = ca.collect(is_message(), 2, timeout=STEP)
    byb = [m for m in offl if m.findtext(C + "body") == "offline from b"]
    byc = [m for m in offl if m.findtext(C + "body") == "offline from c"]
    check("offline messages carry the archive's stanza-id when archived",
          byb and len(sids_of(byb[0], ja)) == 1 and byc and
          not sids_of(byc[0], ja), [tostr(m) for m in offl])
    res, _ = query(ca, rsm(2, before=""))
    check("the offline message is in the archive under that id",
          byb and res and res[-1][0] == sids_of(byb[0], ja)[0], res)
    for x in (ca, cb, cc):
        x.logout()


def test_limits(srv2):
    a, b = u("la"), u("lb")
    ja, jb = add_users(srv2, a, b)
    ca, cb = login(srv2, a), login(srv2, b)
    for i in range(8):
        ca.message(jb, "l%d" % i)
    cb.collect(is_message(frm_bare=ja), 8)
    barrier(ca)
    barrier(cb)
    res, iq = query(cb)
    check("per-user limit keeps the newest 5",
          bodies(res) == ["l3", "l4", "l5", "l6", "l7"] and
          fin_of(iq)["count"] == "5", "%s %s" % (bodies(res), tostr(iq)))
    # Expiry: expire_after = 3 s, interval 1 s.
    res = []

    def expired():
        res[:] = query(cb)[0]
        return res == []
    check("expiry removes messages older than expire_after",
          harness.wait_for(expired, 30, 0.5), bodies(res))
    ca.message(jb, "fresh")
    cb.wait(is_message(body="fresh"))
    barrier(cb)
    res, _ = query(cb)
    check("new messages are archived after expiry", bodies(res) == ["fresh"],
          bodies(res))
    ca.logout()
    cb.logout()


def main():
    srv = harness.Server()
    if not srv.start():
        harness.finish()
    try:
        a, b, ja, jb = test_basic(srv)
        jb2, b2, want, ids = test_paging(srv)
        out = test_slixmpp(srv, b2, want)
        check("slixmpp xep_0313 pages the whole archive in order",
              out.get("bodies") == want, out.get("error") or
              (out.get("bodies") or [])[:5])
        test_prefs(srv)
        # Restart: the archive survives.
        srv.stop()
        srv.start()
        cb = ImClient(srv, b2)
        res, iq = query(cb, form(ids=[ids[0], ids[249]]))
        check("the archive survives a restart",
              bodies(res) == [want[0], want[249]], bodies(res))
        # Account removal clears the archive.
        cb.logout()
        rc, out = srv.ctl("deluser", jb2)
        rc2, _ = srv.ctl("adduser", jb2, PW)
        cb = ImClient(srv, b2)
        res, iq = query(cb)
        check("removing the account removes its archive",
              rc == 0 and rc2 == 0 and res == [] and
              fin_of(iq)["count"] == "0", "%s %s %s" % (rc, out, tostr(iq)))
        cb.logout()
        srv2 = harness.Server(
            label="limits",
            extra="mam: { max_items = 5; expire_after = 3; "
                  "expire_interval = 1; };")
        if srv2.start():
            test_limits(srv2)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        check("no exception", False, repr(e))
    harness.finish()


if __name__ == "__main__":
    main()
