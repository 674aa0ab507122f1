#!/usr/bin/python3
"""test_push.py - push notifications (XEP-0357).

The app server is a raw client (app@localhost/push) that records the
<iq type='set'><pubsub><publish/> it gets.  The device account advertises
urn:xmpp:push:0 on its own bare JID; <enable/> without jid or node gets
<bad-request/>, for another account <forbidden/>; after enabling, a
message to the offline account publishes a notification from its bare
JID to the registered node, with the summary form (message-count
counting up, no sender or body by default) and the publish-options given
at enable; a stream-managed session that hibernates gets notifications for
its messages too; a login resets the count; with include_sender and
include_body the summary carries them (body cut to body_chars);
<disable/> stops them; registrations survive a restart; an error from the
app server removes the registration.

Run with /usr/bin/python3; `scripts/run-tests test_push`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import STEP, ImClient, add_users, login  # noqa: E402

NS_PUSH = "urn:xmpp:push:0"
NS_PS = "http://jabber.org/protocol/pubsub"
NS_X = "jabber:x:data"
NS_SM = "urn:xmpp:sm:3"
C = "{jabber:client}"
FORM = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
        "<value>http://jabber.org/protocol/pubsub#publish-options</value>"
        "</field><field var='secret'><value>s3cr3t</value></field></x>")


def is_publish(el):
    return el.tag == C + "iq" and el.get("type") == "set" and \
        el.find("{%s}pubsub/{%s}publish" % (NS_PS, NS_PS)) is not None


def summary(el):
    """{var: value} of the notification's summary form, plus node, from,
    secret."""
    out = {"from": el.get("from")}
    pub = el.find("{%s}pubsub/{%s}publish" % (NS_PS, NS_PS))
    out["node"] = pub.get("node")
    x = pub.find("{%s}item/{%s}notification/{%s}x" % (NS_PS, NS_PUSH, NS_X))
    if x is not None:
        for f in x.findall("{%s}field" % NS_X):
            out[f.get("var")] = f.findtext("{%s}value" % NS_X)
    po = el.find("{%s}pubsub/{%s}publish-options/{%s}x" % (NS_PS, NS_PS,
                                                           NS_X))
    if po is not None:
        for f in po.findall("{%s}field" % NS_X):
            if f.get("var") == "secret":
                out["secret"] = f.findtext("{%s}value" % NS_X)
    return out


def answer(app, el):
    app.send("<iq type='result' id='%s' to='%s'/>" % (el.get("id"),
                                                     el.get("from")))


def enable(c, jid, node, form=FORM):
    return c.request("<enable xmlns='%s' jid='%s' node='%s'>%s</enable>"
                     % (NS_PUSH, jid, node, form), "set")


def run(srv, opts_label):
    d, app, b = (harness.unique("dev"), harness.unique("app"),
                 harness.unique("snd"))
    jd, japp, jb = add_users(srv, d, app, b)
    appc = login(srv, app, "push")
    appjid = japp + "/push"
    cb = login(srv, b, "desk")
    cd = login(srv, d, "phone")
    return cd, cb, appc, appjid, jd, jb


def gone(srv, c, how):
    """Ends c's connection (how: "logout" or "kill") and waits for the
    server's log to say so: the session closed, or hibernated."""
    mark = len(srv.log_text())
    if how == "logout":
        c.logout()
        line = "c2s: closed %s" % c.jid
    else:
        c.kill()
        line = "c2s: %s: connection lost, waiting" % c.jid
    check("push: the server notices %s's %s" % (c.label, how),
          harness.wait_for(lambda: line in srv.log_text(mark), STEP),
          "no '%s'" % line)


def main():
    srv = harness.Server(c2s_extra="sm_resume_timeout = 30;")
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    cd, cb, appc, appjid, jd, jb = run(srv, "default")
    r = cd.request("<query xmlns='http://jabber.org/protocol/disco#info'/>",
                   to=jd)
    feats = [f.get("var") for f in
             r.iter("{http://jabber.org/protocol/disco#info}feature")] \
        if r is not None else []
    check("push: urn:xmpp:push:0 on the account's disco#info",
          NS_PUSH in feats, str(feats))
    r = cd.request("<enable xmlns='%s' node='n'/>" % NS_PUSH, "set")
    check("push: <enable/> without jid gets <bad-request/>",
          r is not None and harness.stanza_error(r) == "bad-request",
          tostr(r))
    r = cd.request("<enable xmlns='%s' jid='%s'/>" % (NS_PUSH, appjid), "set")
    check("push: <enable/> without node gets <bad-request/>",
          r is not None and harness.stanza_error(r) == "bad-request",
          tostr(r))
    r = cd.request("<enable xmlns='%s' jid='%s' node='x'/>" % (NS_PUSH,
                                                              appjid),
                   "set", to=jb)
    check("push: <enable/> for another account gets <forbidden/>",
          r is not None and harness.stanza_error(r) == "forbidden", tostr(r))
    r = enable(cd, appjid, "dev1")
    check("push: <enable/> with jid, node and publish-options",
          r is not None and r.get("type") == "result", tostr(r))
    gone(srv, cd, "logout")

    cb.message(jd, "hello there")
    el = appc.wait(is_publish)
    s = summary(el) if el is not None else {}
    check("push: a message to the offline account publishes a "
          "notification from its bare JID to the node",
          s.get("from") == jd and s.get("node") == "dev1", str(s))
    check("push: summary has message-count, and no sender or body by "
          "default", s.get("FORM_TYPE") == "urn:xmpp:push:summary" and
          s.get("message-count") == "1" and
          "last-message-sender" not in s and "last-message-body" not in s,
          str(s))
    check("push: the publish-options of <enable/> go along",
          s.get("secret") == "s3cr3t", str(s))
    if el is not None:
        answer(appc, el)
    cb.message(jd, "second")
    el = appc.wait(is_publish)
    s = summary(el) if el is not None else {}
    check("push: message-count counts up", s.get("message-count") == "2",
          str(s))
    cb.send("<message to='%s' type='chat'><composing xmlns='http://jabber"
            ".org/protocol/chatstates'/></message>" % jd)
    extra = appc.quiet(is_publish)
    check("push: a chat state alone wakes nobody", extra == [],
          str([tostr(e) for e in extra]))

    # Hibernated stream-managed session.
    cd = login(srv, jd.split("@")[0], "phone")
    cd.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    en = cd.wait(lambda e: e.tag == "{%s}enabled" % NS_SM)
    check("push: the device enables stream management", en is not None, "")
    cd.drain(0.3)
    gone(srv, cd, "kill")
    cb.message(jd + "/phone", "while asleep")
    el = appc.wait(is_publish)
    s = summary(el) if el is not None else {}
    check("push: a message queued for a hibernated session publishes a "
          "notification; a login reset the count",
          s.get("node") == "dev1" and s.get("message-count") == "1", str(s))

    # Disable, then nothing.
    cd = login(srv, jd.split("@")[0], "phone")  # ends the hibernated one
    # Its unacknowledged message went offline: one more notification.
    appc.wait(is_publish)
    r = cd.request("<disable xmlns='%s' jid='%s' node='dev1'/>"
                   % (NS_PUSH, appjid), "set")
    check("push: <disable/> is acknowledged",
          r is not None and r.get("type") == "result", tostr(r))
    enable(cd, appjid, "dev2")
    gone(srv, cd, "logout")
    cb.message(jd, "after disable")
    got = appc.collect(is_publish, 2, 2)
    nodes = [summary(e).get("node") for e in got]
    check("push: a disabled node gets nothing, the other one does",
          nodes == ["dev2"], str(nodes))

    # Survives a restart.
    appc.close()
    cb.close()
    srv.stop()
    check("push: parleyd restarts", srv.start(), "")
    appc = ImClient(srv, appjid.split("@")[0], "push")
    appc.presence()
    cb = ImClient(srv, jb.split("@")[0], "desk2")
    cb.message(jd, "after restart")
    el = appc.wait(is_publish)
    check("push: registrations survive a restart",
          el is not None and summary(el).get("node") == "dev2", tostr(el))
    if el is not None:
        appc.send("<iq type='error' id='%s' to='%s'><error type='cancel'>"
                  "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-"
                  "stanzas'/></error></iq>" % (el.get("id"), el.get("from")))
    appc.ping()
    cb.message(jd, "after the error")
    extra = appc.quiet(is_publish, 1.5)
    check("push: an app server's error removes the registration "
          "(XEP-0357 §7.1)", extra == [], str([tostr(e) for e in extra]))
    appc.logout()
    cb.logout()
    srv.stop()

    # Sender and body, when the operator allows them.
    srv2 = harness.Server(label="summary", extra="push: { include_sender = "
                          "true; include_body = true; body_chars = 8; };")
    if not srv2.start():
        check("parleyd starts", False, srv2.dump_log())
        harness.finish()
    cd, cb, appc, appjid, jd, jb = run(srv2, "summary")
    enable(cd, appjid, "dev9")
    gone(srv2, cd, "logout")
    cb.message(jd, "héllo wörld, a long one")
    el = appc.wait(is_publish)
    s = summary(el) if el is not None else {}
    check("push: include_sender and include_body put them in the summary, "
          "the body cut at body_chars on a character boundary",
          (s.get("last-message-sender") or "").startswith(jb) and
          s.get("last-message-body") in ("héllo w", "héllo wö"), str(s))

    # slixmpp 1.8.3, aioxmpp 0.13 and nbxmpp 4 in Debian 12 have no
    # XEP-0357 client support: the raw client above is the peer.
    harness.finish()


if __name__ == "__main__":
    main()
