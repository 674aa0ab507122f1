#!/usr/bin/python3
"""test_sip_presence.py - SIP presence (src/sip/publish.c, subscribe.c)
end to end: a SIP user of the tests' own UA (sipua.py, through
test_sip_im.SipUser) publishes its state and an XMPP friend (raw stream,
im_common.ImClient) sees it as presence; a SIP watcher subscribes to XMPP
users and gets NOTIFYs.

parleyd listens for SIP over UDP and TCP with short timers (T1 = 100
ms), min_expires = 10, max_expires = 3600.  Checked:
  - PUBLISH (RFC 3903): 407 without credentials over UDP; Event other
    than presence: 489 with Allow-Events; Expires below the minimum: 423
    with Min-Expires; no body and no SIP-If-Match: 400; a body that is not
    PIDF: 415 with Accept; a PUBLISH with a PIDF body: 200 with a SIP-ETag
    and Expires; the XMPP friend (mutual subscription made over XMPP) sees
    the SIP resource available, then away, then dnd with the status text
    (modify with SIP-If-Match and a body, each answer a new SIP-ETag); a
    refresh (SIP-If-Match, no body) gets a new tag and changes nothing;
    the old tag: 412; another user's From: 403; parleyctl sip lists the
    publication; Expires: 0 removes it and the resource is back to plain
    available; a publication expires on its own the same way; over TCP
    from the registration's connection no challenge is needed;
  - logout as phones do it: PUBLISH of closed presence (the friend sees
    unavailable) then REGISTER Expires: 0 (the registration is gone);
  - SUBSCRIBE/NOTIFY (RFC 6665): 489, 423; a watcher of an XMPP friend
    ('both' over XMPP): 200 and an active NOTIFY with PIDF, parleyctl sip
    lists it; away, dnd, online as NOTIFYs; 10 quick changes give fewer
    NOTIFYs, the last with the final state (counted, no timing); the other
    way (the friend sees the SIP user's PUBLISH); the friend logs out
    (closed NOTIFY), a MESSAGE meanwhile is stored (202) and delivered when
    it comes back (open NOTIFY); un-SUBSCRIBE: terminated NOTIFY, then 481;
    a non-contact: 202, pending NOTIFY without a body, the XMPP user gets
    the subscription request, approves it, active NOTIFY; the watcher's
    de-REGISTER ends its subscriptions;
  - with sip.presence_authorization = "open" (a second parleyd): a SIP
    watcher of a SIP user without a roster item: active at once, closed
    until the presentity registers, then open, its PUBLISH of busy as dnd,
    closed when it unregisters;
  - two clients of other projects end to end, friends through the
    roster: Debian's baresip with its presence module and slixmpp.
    baresip's PUBLISH (pubint) seen by slixmpp, presence_offline /
    presence_online as unavailable / available; its SUBSCRIBE to the
    slixmpp user (contact ;presence=p2p) active, slixmpp's dnd, away and
    return read by baresip from the NOTIFYs (Busy, Offline, Online in its
    log); MESSAGE / <message/> both ways; a message to each while the
    other is offline, delivered when it comes back (slixmpp logs in
    again; baresip registers again); its subscriptions end when it
    stops.

Run with /usr/bin/python3; `scripts/run-tests sip_presence`.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from baresip_ua import Baresip  # noqa: E402
from harness import check, tostr, wait_for  # noqa: E402
from im_common import (PW, STEP, ImClient, LoopThread,  # noqa: E402
                       add_users, friend_online, is_presence, make_both)
from sipua import digest_credentials, rand_token  # noqa: E402
from test_sip_im import (T1, SipUser, _slix_stop, code_of,  # noqa: E402
                         counter, pick, registrations, resource_of,
                         sip_server)

C = "{jabber:client}"

PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
 xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="%(entity)s">
 <tuple id="t1"><status><basic>%(basic)s</basic></status>%(note)s</tuple>
 <dm:person id="p1">%(act)s</dm:person>
</presence>
"""


def pidf(entity, basic="open", activity=None, note=None):
    act = ("<rpid:activities><rpid:%s/></rpid:activities>" % activity
           if activity else "")
    n = "<note>%s</note>" % note if note else ""
    return (PIDF % {"entity": entity, "basic": basic, "note": n,
                    "act": act}).encode()


class Publisher(SipUser):
    """A SipUser that publishes (answering a 407 once per request)."""

    def publish(self, body=None, etag=None, expires=None, event="presence",
                ctype="application/pidf+xml", from_=None, auth=True):
        uri = self.aor
        extra = "Event: %s\r\n" % event if event else ""
        if body is not None and ctype:
            extra += "Content-Type: %s\r\n" % ctype
        if etag:
            extra += "SIP-If-Match: %s\r\n" % etag
        if expires is not None:
            extra += "Expires: %d\r\n" % expires
        cid = rand_token()
        self.cseq += 1
        r = self.call(self.request("PUBLISH", uri, extra=extra,
                                   body=body or b"", cseq=self.cseq,
                                   call_id=cid, to="<%s>" % uri,
                                   from_=from_))
        if auth and r is not None and r.code == 407:
            chal = pick(r, "SHA-256", "proxy-authenticate")
            a = digest_credentials(chal, "PUBLISH", uri, self.user,
                                   self.password)
            self.cseq += 1
            r = self.call(self.request(
                "PUBLISH", uri, extra=extra + "Proxy-Authorization: %s\r\n" % a,
                body=body or b"", cseq=self.cseq, call_id=cid,
                to="<%s>" % uri, from_=from_))
        return r


class Watcher(Publisher):
    """A Publisher that also subscribes (one dialog per presentity)."""

    def subscribe(self, user, expires=None, dialog=None, event="presence",
                  auth=True, accept="application/pidf+xml", target=None,
                  route_set=()):
        """SUBSCRIBE to user (a new dialog, or in dialog = (call_id,
        to_tag)); returns (final response, dialog).  In a dialog as RFC
        3261 §12.2.1.1 wants it: target (the remote target) for the
        Request-URI, route_set as Route fields."""
        uri = "sip:%s@%s" % (user, self.domain)
        ruri = target or uri
        extra = "Event: %s\r\n" % event
        if accept is not None:
            extra += "Accept: %s\r\n" % accept
        extra += "Contact: <%s>\r\n" % self.contact_uri
        if expires is not None:
            extra += "Expires: %d\r\n" % expires
        extra += "".join("Route: %s\r\n" % r for r in route_set)
        cid = dialog[0] if dialog else rand_token()
        to = "<%s>" % uri + (";tag=%s" % dialog[1] if dialog else "")
        self.cseq += 1
        r = self.call(self.request("SUBSCRIBE", ruri, extra=extra,
                                   cseq=self.cseq, call_id=cid, to=to))
        if auth and r is not None and r.code == 407:
            chal = pick(r, "SHA-256", "proxy-authenticate")
            a = digest_credentials(chal, "SUBSCRIBE", ruri, self.user,
                                   self.password)
            self.cseq += 1
            r = self.call(self.request(
                "SUBSCRIBE", ruri,
                extra=extra + "Proxy-Authorization: %s\r\n" % a,
                cseq=self.cseq, call_id=cid, to=to))
        tag = None
        if r is not None and r.get("to") and ";tag=" in r.get("to"):
            tag = r.get("to").split(";tag=", 1)[1].split(";")[0]
        return r, (cid, tag)

    def notify(self, cid, timeout=STEP):
        return self.wait_request(lambda m: m.method == "NOTIFY" and
                                 m.get("call-id") == cid, timeout)


def sub_state(n):
    return (n.get("subscription-state") or "") if n is not None else ""


def subscriptions(srv):
    rc, out = srv.ctl("sip", "--json")
    try:
        return json.loads(out).get("subscriptions", [])
    except ValueError:
        return []


def subscribe_flow(srv, port, users):
    s, x, y = users["sue"], users["xia"], users["yul"]
    xc = friend_online(srv, s, x, "sue and xia")
    if xc is None:
        return
    sue = Watcher(srv, port, s)
    _, final = sue.register(expires=300)
    full = resource_of(srv, s)
    xc.wait(is_presence(frm=full), STEP)

    r, _ = sue.subscribe(x, event="dialog")
    check("SUBSCRIBE to another event package: 489 with Allow-Events",
          code_of(r) == 489 and r.get("allow-events") == "presence", r)
    r, _ = sue.subscribe(x, accept="application/xpidf+xml, "
                                   "application/pidf+xml;q=0")
    check("SUBSCRIBE whose Accept excludes PIDF: 406", code_of(r) == 406, r)
    r, dlg = sue.subscribe(x, accept="application/*;q=0.5", expires=0)
    check("SUBSCRIBE accepting application/* (a fetch, Expires: 0): 200",
          code_of(r) == 200, r)
    r, _ = sue.subscribe(x, expires=5)
    check("SUBSCRIBE with Expires below min_expires: 423",
          code_of(r) == 423 and r.get("min-expires") == "10", r)
    r, dlg = sue.subscribe(x, expires=120)
    n = sue.notify(dlg[0])
    check("SIP watcher of an XMPP friend ('both'): 200 with Expires and a "
          "To tag", code_of(r) == 200 and r.get("expires") == "120" and
          dlg[1], r)
    check("first NOTIFY: Subscription-State active, PIDF open",
          n is not None and sub_state(n).startswith("active") and
          n.get("event") == "presence" and
          n.get("content-type") == "application/pidf+xml" and
          b"<basic>open</basic>" in n.body, n)
    subs = [q for q in subscriptions(srv) if q.get("watcher") ==
            "%s@%s" % (s, srv.domain)]
    check("parleyctl sip lists the subscription (watcher, presentity, "
          "state)", len(subs) == 1 and subs[0].get("presentity") ==
          "%s@%s" % (x, srv.domain) and subs[0].get("state") == "active",
          subs)

    xc.presence(show="away", status="lunch")
    n = sue.notify(dlg[0])
    check("the XMPP user goes away: NOTIFY with away and the status",
          n is not None and b"away" in n.body and b"lunch" in n.body, n)
    xc.presence(show="dnd", status="busy now")
    n = sue.notify(dlg[0])
    check("the XMPP user goes dnd: NOTIFY with busy/dnd and the status",
          n is not None and b"dnd" in n.body and b"busy now" in n.body, n)
    xc.presence()
    n = sue.notify(dlg[0])
    check("back online: NOTIFY open without away/busy",
          n is not None and b"<basic>open</basic>" in n.body and
          b"away" not in n.body and b"busy" not in n.body, n)

    # Churn: coalesced, the last state wins.
    for i in range(10):
        xc.presence(show="away", status="churn %d" % i)
    got = []
    while True:
        n = sue.notify(dlg[0], 2.5)
        if n is None:
            break
        got.append(n)
    check("10 quick changes: fewer NOTIFYs (coalesced), at least one",
          1 <= len(got) < 10, len(got))
    check("the last NOTIFY carries the final state",
          got and b"churn 9" in got[-1].body, got[-1] if got else None)

    # The other way: the SIP user's state as the XMPP friend sees it.
    entity = "pres:%s@%s" % (s, srv.domain)
    r = sue.publish(pidf(entity, activity="busy", note="on a call"),
                    expires=60)
    p = xc.wait(is_presence(frm=full), STEP)
    check("both ways: the XMPP friend sees the SIP user dnd",
          code_of(r) == 200 and show_of(p) == "dnd" and
          status_of(p) == "on a call", (r, tostr(p)))

    # Offline and back, with a message in between.
    xc.logout()
    n = sue.notify(dlg[0])
    check("the XMPP user logs out: NOTIFY with closed presence",
          n is not None and b"<basic>closed</basic>" in n.body, n)
    r, _ = sue.message(x, "while you were out")
    check("MESSAGE to the offline XMPP user: 202", code_of(r) == 202, r)
    xc = ImClient(srv, x, "desk2")
    xc.presence()
    m = xc.wait(lambda e: e.tag == C + "message" and
                (e.findtext(C + "body") or "") == "while you were out", STEP)
    n = sue.notify(dlg[0])
    check("back online: the message is delivered and a NOTIFY says open",
          m is not None and n is not None and
          b"<basic>open</basic>" in n.body, (tostr(m), n))

    # Un-SUBSCRIBE.
    r, _ = sue.subscribe(x, expires=0, dialog=dlg)
    n = sue.notify(dlg[0])
    check("un-SUBSCRIBE (Expires: 0 in the dialog): 200 and a last NOTIFY "
          "with Subscription-State: terminated",
          code_of(r) == 200 and n is not None and
          sub_state(n).startswith("terminated"), (r, n))
    r, _ = sue.subscribe(x, expires=60, dialog=dlg)
    check("the ended dialog: 481", code_of(r) == 481, r)

    # Pending: a presentity that is not in the watcher's roster.
    yc = ImClient(srv, y, "home")
    yc.roster_get()
    yc.presence(status="here")
    yc.drain(0.5)
    r, dlg2 = sue.subscribe(y, expires=120)
    n = sue.notify(dlg2[0])
    req = yc.wait(is_presence(frm_bare="%s@%s" % (s, srv.domain),
                              type_="subscribe"), STEP)
    check("SUBSCRIBE to a non-contact: 202, NOTIFY pending without a body",
          code_of(r) == 202 and n is not None and
          sub_state(n).startswith("pending") and not n.body, (r, n))
    check("... and the XMPP user gets a subscription request from the SIP "
          "user's account", req is not None, tostr(req))
    yc.presence("subscribed", to="%s@%s" % (s, srv.domain))
    n = sue.notify(dlg2[0])
    check("approved: NOTIFY active with the PIDF (status 'here')",
          n is not None and sub_state(n).startswith("active") and
          b"here" in n.body, n)
    c0 = counter(srv, "sip_notifies")
    check("sip_notifies counts NOTIFYs", c0 > 5, c0)
    sue.unregister()
    check("the watcher's registration going away ends its subscriptions",
          harness.wait_for(lambda: not [
              q for q in subscriptions(srv)
              if q.get("watcher") == "%s@%s" % (s, srv.domain)], 5),
          subscriptions(srv))
    sue.close()
    xc.logout()
    yc.logout()


def open_mode():
    """sip.presence_authorization = "open", SIP watcher of a SIP user with
    no roster between them."""
    port, = harness.free_ports(1)
    srv = harness.Server(
        label="open",
        listeners_extra='{ protocol = "sip"; address = "127.0.0.1"; '
                        'port = %d; transport = "udp"; }' % port,
        extra='sip: { t1 = %d; min_expires = 10; '
              'presence_authorization = "open"; '
              'presence_notify_interval = 200; };' % int(T1 * 1000))
    if not srv.start():
        return
    a, b = harness.unique("opa"), harness.unique("opb")
    add_users(srv, a, b)
    wa = Watcher(srv, port, a)
    wa.register(expires=120)
    r, dlg = wa.subscribe(b, expires=120)
    n = wa.notify(dlg[0])
    check('presence_authorization = "open": a SIP watcher of a SIP user '
          'with no roster item: 200, active NOTIFY, closed (not '
          'registered)', code_of(r) == 200 and n is not None and
          sub_state(n).startswith("active") and
          b"<basic>closed</basic>" in n.body, (r, n))
    pb = Publisher(srv, port, b)
    _, final = pb.register(expires=120)
    n = wa.notify(dlg[0])
    check("SIP -> SIP: the presentity registers, NOTIFY open",
          code_of(final) == 200 and n is not None and
          b"<basic>open</basic>" in n.body, n)
    r = pb.publish(pidf("pres:%s@%s" % (b, srv.domain), activity="busy",
                        note="call"), expires=60)
    n = wa.notify(dlg[0])
    check("SIP -> SIP: the presentity publishes busy, NOTIFY with dnd "
          "and its note", code_of(r) == 200 and n is not None and
          b"dnd" in n.body and b"call" in n.body, n)
    pb.unregister()
    n = wa.notify(dlg[0])
    check("SIP -> SIP: the presentity unregisters, NOTIFY closed",
          n is not None and b"<basic>closed</basic>" in n.body, n)
    r, _ = wa.subscribe(b, expires=0, dialog=dlg)
    n = wa.notify(dlg[0])
    check("un-SUBSCRIBE: terminated", code_of(r) == 200 and
          sub_state(n).startswith("terminated"), (r, n))
    wa.unregister()
    wa.close()
    pb.close()
    srv.stop()


def publications(srv):
    rc, out = srv.ctl("sip", "--json")
    try:
        return json.loads(out).get("publications", [])
    except ValueError:
        return []


def show_of(p):
    s = p.find(C + "show") if p is not None else None
    return s.text if s is not None else None


def status_of(p):
    s = p.find(C + "status") if p is not None else None
    return s.text if s is not None else None


def publish_flow(srv, port, users):
    s, x = users["sam"], users["xena"]
    xc = friend_online(srv, s, x, "sam and xena")
    if xc is None:
        return
    sam = Publisher(srv, port, s)
    _, final = sam.register(expires=120)
    full = resource_of(srv, s)
    p = xc.wait(is_presence(frm=full), STEP)
    check("the friend sees the SIP user available on REGISTER",
          code_of(final) == 200 and p is not None, tostr(p))
    entity = "pres:%s@%s" % (s, srv.domain)

    r = sam.publish(pidf(entity), auth=False)
    check("PUBLISH over UDP without credentials: 407", code_of(r) == 407, r)
    r = sam.publish(pidf(entity), event="dialog")
    check("PUBLISH of another event package: 489 with Allow-Events: "
          "presence", code_of(r) == 489 and
          r.get("allow-events") == "presence", r)
    r = sam.publish(pidf(entity), expires=5)
    check("PUBLISH with Expires below min_expires: 423 with Min-Expires: 10",
          code_of(r) == 423 and r.get("min-expires") == "10", r)
    r = sam.publish(None)
    check("initial PUBLISH without a body: 400", code_of(r) == 400, r)
    r = sam.publish(b"hello", ctype="text/plain")
    check("PUBLISH of text/plain: 415 with Accept: application/pidf+xml",
          code_of(r) == 415 and r.get("accept") == "application/pidf+xml", r)
    r = sam.publish(b"<presence xmlns='urn:x'/>")
    check("PUBLISH of a document that is not PIDF: 400", code_of(r) == 400, r)
    other = users["xena"]
    r = sam.publish(pidf(entity),
                    from_="<sip:%s@%s>;tag=x1" % (other, srv.domain))
    check("PUBLISH with a From of another user: 403", code_of(r) == 403, r)

    p0 = counter(srv, "sip_publications")
    r = sam.publish(pidf(entity, note="at my desk"), expires=60)
    tag1 = r.get("sip-etag") if r else None
    p = xc.wait(is_presence(frm=full), STEP)
    check("PUBLISH open: 200 with SIP-ETag and Expires: 60",
          code_of(r) == 200 and tag1 and r.get("expires") == "60", r)
    check("the friend sees available with the status text",
          p is not None and show_of(p) is None and
          status_of(p) == "at my desk", tostr(p))
    check("sip_publications counts it", counter(srv, "sip_publications") > p0,
          counter(srv, "sip_publications"))

    r = sam.publish(pidf(entity, activity="away", note="coffee"), etag=tag1,
                    expires=60)
    tag2 = r.get("sip-etag") if r else None
    p = xc.wait(is_presence(frm=full), STEP)
    check("modify (SIP-If-Match and a body): 200 with a new SIP-ETag",
          code_of(r) == 200 and tag2 and tag2 != tag1, r)
    check("the friend sees away with its status", show_of(p) == "away" and
          status_of(p) == "coffee", tostr(p))

    r = sam.publish(pidf(entity, activity="busy", note="in a meeting"),
                    etag=tag2, expires=60)
    tag3 = r.get("sip-etag") if r else None
    p = xc.wait(is_presence(frm=full), STEP)
    check("the friend sees dnd with the status text (RPID busy)",
          code_of(r) == 200 and show_of(p) == "dnd" and
          status_of(p) == "in a meeting", (r, tostr(p)))

    r = sam.publish(None, etag=tag3, expires=60)
    tag4 = r.get("sip-etag") if r else None
    check("refresh (SIP-If-Match, no body): 200 with a new SIP-ETag",
          code_of(r) == 200 and tag4 and tag4 != tag3, r)
    p = xc.wait(is_presence(frm=full), 1.0)
    check("a refresh sends no presence", p is None, tostr(p))
    r = sam.publish(None, etag=tag3, expires=60)
    check("the replaced entity tag: 412", code_of(r) == 412, r)
    r = sam.publish(None, etag="nosuchtag", expires=60)
    check("an unknown entity tag: 412", code_of(r) == 412, r)

    pubs = [q for q in publications(srv)
            if q.get("presentity") == "%s@%s" % (s, srv.domain)]
    check("parleyctl sip lists the publication (etag, basic, show)",
          len(pubs) == 1 and pubs[0].get("etag") == tag4 and
          pubs[0].get("basic") == "open" and pubs[0].get("show") == "dnd",
          pubs)

    r = sam.publish(None, etag=tag4, expires=0)
    p = xc.wait(is_presence(frm=full), STEP)
    check("removal (Expires: 0): 200, the resource is back to plain "
          "available", code_of(r) == 200 and p is not None and
          show_of(p) is None and status_of(p) is None, (r, tostr(p)))
    check("the removed publication is no longer listed",
          not [q for q in publications(srv)
               if q.get("presentity") == "%s@%s" % (s, srv.domain)],
          publications(srv))

    # Expiry on its own: min_expires is 10 s.
    r = sam.publish(pidf(entity, activity="away"), expires=10)
    p = xc.wait(is_presence(frm=full), STEP)
    check("a short publication: away", code_of(r) == 200 and
          show_of(p) == "away", (r, tostr(p)))
    p = xc.wait(is_presence(frm=full), 15)
    check("when it expires the resource is back to available",
          p is not None and show_of(p) is None and p.get("type") is None,
          tostr(p))

    # Logout: closed, then de-REGISTER.
    r = sam.publish(pidf(entity, activity="busy"), expires=60)
    xc.wait(is_presence(frm=full), STEP)
    tag = r.get("sip-etag") if r else None
    r = sam.publish(pidf(entity, basic="closed"), etag=tag, expires=60)
    p = xc.wait(is_presence(frm=full, type_="unavailable"), STEP)
    check("logout: a PUBLISH of closed presence, the friend sees "
          "unavailable", code_of(r) == 200 and p is not None, (r, tostr(p)))
    _, final = sam.unregister()
    check("logout: REGISTER Expires: 0 ends the registration",
          code_of(final) == 200 and
          not [q for q in registrations(srv)
               if q.get("aor") == "%s@%s" % (s, srv.domain)],
          registrations(srv))
    p = xc.wait(is_presence(frm=full, any_type=True), 1.0)
    check("no second presence after the de-REGISTER (already offline)",
          p is None or p.get("type") == "unavailable", tostr(p))
    sam.close()

    # TCP: trusted on the registration's connection.
    tcp = Publisher(srv, port, s, "tcp")
    _, final = tcp.register(expires=120)
    full = resource_of(srv, s)
    xc.wait(is_presence(frm=full), STEP)
    r = tcp.publish(pidf(entity, activity="away", note="tcp"), auth=False,
                    expires=60)
    p = xc.wait(is_presence(frm=full), STEP)
    check("PUBLISH over TCP on the registration's connection: 200 without "
          "a challenge, the friend sees away",
          code_of(final) == 200 and code_of(r) == 200 and
          show_of(p) == "away" and status_of(p) == "tcp", (r, tostr(p)))
    tcp.close()
    p = xc.wait(is_presence(frm=full, type_="unavailable"), STEP)
    check("the connection closes: unavailable", p is not None, tostr(p))
    xc.logout()


def subscriptions_of(srv, watcher):
    return [x for x in subscriptions(srv)
            if x.get("watcher") == "%s@%s" % (watcher, srv.domain)]


async def _slix_friend(srv, jid, events):
    """slixmpp logged in as jid, available; messages and presence go to
    events as ("message", from, body) / ("presence", from, type, show)."""
    import asyncio
    import slixmpp
    x = slixmpp.ClientXMPP(jid + "/slix", PW)
    harness.slixmpp_without_channel_binding(x)
    x.ssl_context = harness.no_verify_context()
    x.enable_direct_tls = True
    fut = asyncio.get_event_loop().create_future()

    async def start(_):
        x.send_presence()
        await x.get_roster()
        fut.set_result(x)
    x.add_event_handler("session_start", start)
    x.add_event_handler("message", lambda m: m["body"] and events.append(
        ("message", str(m["from"]), m["body"])))
    x.add_event_handler("presence", lambda p: events.append(
        ("presence", str(p["from"]), p["type"], p["show"])))
    x.connect((srv.host, srv.direct_port), use_ssl=True)
    return await asyncio.wait_for(fut, STEP * 2)


def baresip_flow(srv, port, users):
    """Two clients of other projects end to end: Debian's baresip with its
    presence module (PUBLISH through account pubint, SUBSCRIBE to a
    contact marked ;presence=p2p) and slixmpp, friends through the roster.
    Presence both ways (baresip's presence_offline/online as unavailable/
    available; slixmpp's dnd, away and return read by baresip from the
    NOTIFYs: its log says "changed status"), messages both ways, and to
    each while the other is offline."""
    if not Baresip.installed():
        check("baresip (baresip-core) is installed", False,
              "run scripts/bootstrap --test")
        return
    b, x = users["bea"], users["xeno"]
    if not make_both(srv, b, x):
        check("bea and xeno are subscribed to each other", False)
        return
    xjid = "%s@%s" % (x, srv.domain)

    def new_ua():
        return Baresip(b, srv.domain, PW, port,
                       contacts=['"X" <sip:%s>;presence=p2p' % xjid],
                       modules=["presence.so"], account_params=";pubint=60")
    events = []
    lt = LoopThread()
    client = None
    ua = new_ua()
    try:
        client = lt.run(_slix_friend(srv, xjid, events), STEP * 3)

        def pres(frm_prefix, type_, after=0):
            return wait_for(lambda: [e for e in events[after:]
                                     if e[0] == "presence" and
                                     e[1].startswith(frm_prefix) and
                                     e[2] == type_], STEP)

        def send(**kw):
            lt.loop.call_soon_threadsafe(lambda: client.send_presence(**kw))
        pubs = lambda: [p for p in publications(srv)  # noqa: E731
                        if p.get("presentity") == ua.aor]
        up = ua.start() and wait_for(pubs, STEP)
        check("baresip registers and PUBLISHes its presence (200, listed "
              "by parleyctl sip)", up, publications(srv))
        full = resource_of(srv, b)
        check("slixmpp sees baresip available", pres(full, "available"),
              events[-5:])
        mark = len(events)
        ua.command("presence_offline")
        check("baresip's presence_offline (PUBLISH closed): slixmpp sees "
              "unavailable", pres(full, "unavailable", mark), events[-5:])
        mark = len(events)
        ua.command("presence_online")
        check("presence_online (PUBLISH open): available again",
              pres(full, "available", mark), events[-5:])
        subs = wait_for(lambda: [s for s in subscriptions_of(srv, b)
                                 if s.get("state") == "active"], STEP)
        check("baresip SUBSCRIBEs to slixmpp's user: active (roster "
              "'both')", subs, subscriptions(srv))
        ua.wait_log("NOTIFY", STEP)
        for show, seen in (("dnd", "Busy"), ("away", "Offline"),
                           (None, "Online")):
            mark = len(ua.log())
            send(pshow=show) if show else send()
            check("slixmpp goes %s: baresip reads the NOTIFY as %s"
                  % (show or "available", seen),
                  ua.wait_log("to \x1b[%sm%s" % ("32" if seen == "Online"
                                                 else "31", seen),
                              STEP, after=mark), ua.log()[mark:][-600:])
        # Messages both ways.
        ua.command("contact_next")
        time.sleep(0.3)
        ua.command("message", "hello slixmpp, from baresip")
        check("baresip -> slixmpp: MESSAGE delivered as a <message/>",
              wait_for(lambda: [e for e in events if e[0] == "message" and
                                e[2] == "hello slixmpp, from baresip" and
                                e[1].startswith(full)], STEP), events[-5:])
        lt.loop.call_soon_threadsafe(lambda: client.send_message(
            mto=ua.aor, mbody="hello baresip, from slixmpp", mtype="chat"))
        check("slixmpp -> baresip: the <message/> arrives as a MESSAGE",
              ua.wait_log("hello baresip, from slixmpp", STEP),
              ua.log()[-600:])
        # slixmpp offline: baresip's MESSAGE waits in the offline store.
        lt.run(_slix_stop(client))
        client = None
        mark = len(ua.log())
        ua.command("message", "while you were away")
        ua.wait_log("202 Accepted", STEP, after=mark)
        events.clear()
        client = lt.run(_slix_friend(srv, xjid, events), STEP * 3)
        check("slixmpp back online gets baresip's MESSAGE sent while it "
              "was offline", wait_for(lambda: [
                  e for e in events if e[0] == "message" and
                  e[2] == "while you were away"], STEP), events[-5:])
        # baresip offline: slixmpp's message waits; the next registration
        # gets it.
        ua.stop()
        wait_for(lambda: not [r for r in registrations(srv)
                              if r.get("aor") == ua.aor], STEP * 2)
        lt.loop.call_soon_threadsafe(lambda: client.send_message(
            mto=ua.aor, mbody="for when you are back", mtype="chat"))
        time.sleep(0.5)
        ua = new_ua()
        check("baresip registering again gets the message sent while it "
              "was offline", ua.start() and
              ua.wait_log("for when you are back", STEP * 2),
              ua.log()[-800:])
    finally:
        if client:
            try:
                lt.run(_slix_stop(client))
            except Exception:  # noqa: BLE001
                pass
        lt.stop()
        ua.stop()
    check("baresip gone: its subscriptions end with its registration",
          wait_for(lambda: not subscriptions_of(srv, b), STEP * 3),
          subscriptions(srv))


def main():
    srv, port = sip_server(nonce_lifetime=60)
    names = {k: harness.unique(k) for k in ("sam", "xena", "sue", "xia",
                                             "yul", "bea", "xeno")}
    add_users(srv, *names.values())
    publish_flow(srv, port, names)
    subscribe_flow(srv, port, names)
    baresip_flow(srv, port, names)
    open_mode()
    harness.finish()


if __name__ == "__main__":
    main()
