#!/usr/bin/python3
"""test_muc_mam.py - the room archive (XEP-0313 on a MUC room JID) end to
end: raw clients for exact stanzas and errors, slixmpp's xep_0313 as a
client library querying the room JID.

Covers: with muc#roomconfig_enablelogging on, groupchat messages are
archived with the room's XEP-0359 stanza-id as archive id and come back
from room@service/nick as type groupchat with a delay; subject changes
without a body are not archived; the whole archive, RSM pages forwards
and backwards, 'with' one occupant; the query form; a non-member of a
members-only room gets <forbidden/>, a member who is not present may
query; with logging off nothing is archived, urn:xmpp:mam:2 is not in
the room's disco#info and a query gets <service-unavailable/>; the
archive of a persistent room survives a SIGKILL and restart; a destroyed
room's archive is gone when a room of that name is made again.

Run with /usr/bin/python3; `scripts/run-tests muc_mam`.
"""

import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note, tostr  # noqa: E402
from im_common import PW, STEP, LoopThread, add_users, error_of  # noqa
from test_mam import M, NS_MAM, fin_of, query, rsm  # noqa: E402
from test_muc import (C, CONF, SID, Occ, admin, codes, configure,  # noqa
                      instant, is_msg, ok, u)

DI = "{http://jabber.org/protocol/disco#info}"


def features(c, room):
    r = c.iq_to(room, "<query xmlns='http://jabber.org/protocol/"
                "disco#info'/>")
    return [x.get("var") for x in r.iter(DI + "feature")] \
        if r is not None else []


def bodies(res):
    return [m.findtext(C + "body") if m is not None else None
            for _, m, _ in res]


def slix_query(srv, user, room):
    """slixmpp's xep_0313 pages the room archive (max 2 a page)."""
    import slixmpp
    lt = LoopThread()
    out = {}

    async def run():
        x = slixmpp.ClientXMPP("%s@%s/slix" % (user, srv.domain), PW)
        harness.slixmpp_without_channel_binding(x)
        x.register_plugin("xep_0313")
        x.register_plugin("xep_0059")
        x.ssl_context = harness.no_verify_context()
        fut = asyncio.get_running_loop().create_future()
        x.add_event_handler("session_start",
                            lambda _: fut.done() or fut.set_result(True))
        x.connect((srv.host, srv.direct_port), use_ssl=True,
                  force_starttls=False)
        await asyncio.wait_for(fut, STEP * 2)
        out["msgs"] = []
        async for msg in x["xep_0313"].iterate(jid=room, rsm={"max": 2}):
            fwd = msg["mam_result"]["forwarded"]["stanza"]
            out["msgs"].append((str(fwd["from"]), fwd["body"],
                                msg["mam_result"]["id"]))
            if len(out["msgs"]) > 50:
                break
        x.disconnect()
    try:
        lt.run(run(), timeout=STEP * 6)
    except Exception as e:  # noqa: BLE001
        out["error"] = repr(e)
    lt.stop()
    return out


def main():
    srv = harness.Server(extra='modules = ["disco", "ping", "register", '
                         '"session", "roster", "presence", "muc"];')
    if not srv.start():
        harness.finish()
    names = [u(n) for n in ("alice", "bob", "carol", "dave")]
    add_users(srv, *names)
    a, b, c, d = [Occ(srv, n, "r") for n in names]
    for x in (a, b, c, d):
        x.presence()
        x.drain(0.2)
    room = "%s@%s" % (u("logged"), CONF)

    # -- a room with logging on
    a.joined(room, "Alice")
    r = configure(a, room, enablelogging="1")
    check("owner turns logging on", ok(r), tostr(r))
    a.drain(0.3)
    feats = features(b, room)
    check("logging on: disco#info advertises urn:xmpp:mam:2",
          NS_MAM in feats, feats)
    b.joined(room, "Bob")
    a.drain(0.3)
    b.drain(0.3)
    live = []
    for i in range(5):
        (a if i % 2 == 0 else b).say(room, "m%d" % i)
        m = b.wait(is_msg(type_="groupchat", body="m%d" % i))
        sid = m.find(SID + "stanza-id") if m is not None else None
        live.append(sid.get("id") if sid is not None else None)
    check("broadcast messages carry the room's stanza-id",
          all(live) and m.find(SID + "stanza-id").get("by") == room, live)
    # A subject change without a body is not archived.
    a.send("<message to='%s' type='groupchat'><subject>topic</subject>"
           "</message>" % room)
    a.drain(0.3)
    b.drain(0.3)

    res, fin = query(b, to=room)
    check("occupant queries the whole archive: five results in order",
          bodies(res) == ["m0", "m1", "m2", "m3", "m4"], bodies(res))
    check("archive ids equal the broadcast stanza-ids",
          [x[0] for x in res] == live, ([x[0] for x in res], live))
    check("results come from room@service/nick as groupchat with a delay",
          res and res[0][1].get("from") == room + "/Alice" and
          res[1][1].get("from") == room + "/Bob" and
          all(x[1].get("type") == "groupchat" and x[2] for x in res),
          [tostr(x[1])[:200] for x in res[:2]])
    f = fin_of(fin)
    check("fin complete with first/last/count", f is not None and
          f["complete"] and f["first"] == live[0] and
          f["last"] == live[4] and f["count"] == "5", tostr(fin))

    # -- RSM paging both ways
    res, fin = query(b, rsm(max_=2), to=room)
    f = fin_of(fin)
    check("page 1 forwards: m0 m1, not complete",
          bodies(res) == ["m0", "m1"] and f and not f["complete"],
          (bodies(res), tostr(fin)))
    res, fin = query(b, rsm(max_=2, after=f["last"]), to=room)
    f = fin_of(fin)
    check("page 2 forwards (after): m2 m3", bodies(res) == ["m2", "m3"],
          bodies(res))
    res, fin = query(b, rsm(max_=2, after=f["last"]), to=room)
    f = fin_of(fin)
    check("last page forwards: m4, complete",
          bodies(res) == ["m4"] and f and f["complete"], tostr(fin))
    res, fin = query(b, rsm(max_=2, before=""), to=room)
    f = fin_of(fin)
    check("last page backwards (<before/>): m3 m4 in order",
          bodies(res) == ["m3", "m4"] and f and not f["complete"],
          bodies(res))
    res, fin = query(b, rsm(max_=2, before=f["first"]), to=room)
    check("previous page backwards: m1 m2", bodies(res) == ["m1", "m2"],
          bodies(res))
    res, fin = query(b, rsm(max_=2, after="nosuchid"), to=room)
    check("unknown RSM id: item-not-found",
          fin is not None and error_of(fin) == "item-not-found", tostr(fin))

    # -- 'with' one occupant
    form = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
            "type='hidden'><value>%s</value></field><field var='with'>"
            "<value>%s/Bob</value></field></x>" % (NS_MAM, room))
    res, fin = query(b, form, to=room)
    check("with=room/Bob: only Bob's messages", bodies(res) == ["m1", "m3"],
          bodies(res))

    # -- the query form
    r = b.iq_to(room, "<query xmlns='%s'/>" % NS_MAM)
    check("query form (iq get) lists the fields", r is not None and
          r.get("type") == "result" and "before-id" in tostr(r), tostr(r))

    # -- an open room: anyone may read; members-only: members only
    res, fin = query(c, to=room)
    check("open room: a non-occupant may query", fin is not None and
          fin.get("type") == "result" and len(res) == 5, tostr(fin))
    r = admin(a, room, "<item affiliation='member' jid='%s@%s'/>"
              % (names[3], srv.domain))
    check("dave made a member", ok(r), tostr(r))
    r = configure(a, room, membersonly="1", persistentroom="1")
    check("room made members-only and persistent", ok(r), tostr(r))
    a.drain(0.3)
    res, fin = query(c, to=room)
    check("members-only: a non-member non-occupant gets forbidden",
          fin is not None and error_of(fin) == "forbidden" and not res,
          tostr(fin))
    res, fin = query(d, to=room)
    check("members-only: a member who is not present may query",
          fin is not None and fin.get("type") == "result" and len(res) == 5,
          tostr(fin))

    # -- slixmpp xep_0313 on the room JID
    try:
        out = slix_query(srv, names[3], room)
        msgs = out.get("msgs", [])
        check("slixmpp xep_0313 pages the room archive",
              [m[1] for m in msgs] == ["m0", "m1", "m2", "m3", "m4"] and
              msgs[0][0] == room + "/Alice" and
              [m[2] for m in msgs] == live, out)
    except ImportError as e:
        check("slixmpp importable", False, repr(e))

    # -- logging off: nothing archived, not advertised
    room2 = "%s@%s" % (u("unlogged"), CONF)
    a.joined(room2, "Alice")
    instant(a, room2)
    a.drain(0.3)
    a.say(room2, "not kept")
    a.drain(0.3)
    feats = features(a, room2)
    check("logging off: urn:xmpp:mam:2 not advertised",
          NS_MAM not in feats and feats, feats)
    res, fin = query(a, to=room2)
    check("logging off: query gets service-unavailable",
          fin is not None and error_of(fin) == "service-unavailable" and
          not res, tostr(fin))
    r = configure(a, room2, enablelogging="1")
    a.drain(0.3)
    res, fin = query(a, to=room2)
    check("logging turned on later: the earlier message was not archived",
          fin is not None and fin.get("type") == "result" and not res,
          (bodies(res), tostr(fin)))

    # -- restart: the persistent room's archive survives
    for x in (a, b, c, d):
        x.close()
    srv.kill(signal.SIGKILL)
    check("restart after SIGKILL", srv.start())
    a, d = Occ(srv, names[0], "r2"), Occ(srv, names[3], "r2")
    for x in (a, d):
        x.presence()
        x.drain(0.2)
    res, fin = query(d, to=room)
    check("after restart: the archive is intact",
          bodies(res) == ["m0", "m1", "m2", "m3", "m4"] and
          [x[0] for x in res] == live, bodies(res))
    p = a.joined(room, "Alice")
    a.drain(0.3)
    a.say(room, "after")
    m = a.wait(is_msg(type_="groupchat", body="after"))
    sid = m.find(SID + "stanza-id").get("id") if m is not None else None
    res, fin = query(d, to=room)
    check("after restart: new messages append with fresh stanza-ids",
          bodies(res)[-1:] == ["after"] and res[-1][0] == sid and
          sid not in live, (bodies(res), sid))

    # -- destroy clears the archive
    r = a.iq_to(room, "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                "<destroy/></query>", "set")
    check("owner destroys the room", ok(r), tostr(r))
    a.drain(0.3)
    p = a.joined(room, "Alice")
    check("room made again under the same name", p is not None and
          "201" in codes(p), tostr(p))
    configure(a, room, enablelogging="1")
    a.drain(0.3)
    res, fin = query(a, to=room)
    check("destroyed room's archive is gone",
          fin is not None and fin.get("type") == "result" and not res,
          (bodies(res), tostr(fin)))
    for x in (a, d):
        x.close()
    srv.stop()
    harness.finish()


if __name__ == "__main__":
    main()
