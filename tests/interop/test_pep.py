#!/usr/bin/python3
"""test_pep.py - personal eventing (XEP-0163 over the XEP-0060 subset),
entity capabilities (XEP-0115), XEP-0223 private nodes, XEP-0402
bookmarks with XEP-0048 compatibility, XEP-0398 avatar conversion.

Users: alice and bob with a mutual presence subscription, carol with
none.  Raw clients announce caps (XEP-0115 §4) and answer the server's
disco#info query themselves, so the test controls the hash: a client
with a wrong hash must get no notification.  Exact errors are checked in
raw XML: <precondition-not-met/>, <presence-subscription-required/>,
<closed-node/>, <item-not-found/>, <forbidden/>, <unsupported
feature='subscribe'/>.  Items survive a restart; the last item comes at
login; OMEMO nodes published with access_model=open are readable by a
non-contact.  slixmpp (xep_0163 +notify via xep_0115) receives an event.

Run with /usr/bin/python3; `scripts/run-tests pep`.
"""

import base64
import hashlib
import os
import sys
from xml.sax.saxutils import escape, quoteattr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import (QUIET, STEP, ImClient, add_users,  # noqa: E402
                       make_both, named)

PS = "http://jabber.org/protocol/pubsub"
PSO = PS + "#owner"
PSE = PS + "#event"
PSERR = PS + "#errors"
DISCO = "http://jabber.org/protocol/disco#info"
CAPS = "http://jabber.org/protocol/caps"
STZ = "urn:ietf:params:xml:ns:xmpp-stanzas"
C = "{jabber:client}"
TUNE = "http://jabber.org/protocol/tune"
MOOD = "http://jabber.org/protocol/mood"
OMEMO_DL = "eu.siacs.conversations.axolotl.devicelist"
BM2 = "urn:xmpp:bookmarks:1"
AV_DATA = "urn:xmpp:avatar:data"
AV_META = "urn:xmpp:avatar:metadata"

srv = None


def caps_ver(features, ident=("client", "pc", "", "peptest")):
    s = "%s/%s/%s/%s<" % ident
    for f in sorted(features):
        s += f + "<"
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


class PepClient(ImClient):
    """A raw client that announces caps and answers disco#info."""

    def announce(self, notify=(), wrong_hash=False, answer=True):
        feats = [DISCO, CAPS] + [n + "+notify" for n in notify]
        ver = caps_ver(feats)
        if wrong_hash:
            ver = caps_ver(feats + ["urn:example:other"])
        self.presence(extra="<c xmlns='%s' hash='sha-1' node='urn:peptest' "
                            "ver='%s'/>" % (CAPS, ver))
        q = self.wait(lambda e: named(e, "iq") and e.get("type") == "get"
                      and e.find("{%s}query" % DISCO) is not None, STEP)
        if q is None:
            return None  # cached: no query
        node = q.find("{%s}query" % DISCO).get("node")
        if answer:
            body = "<identity category='client' type='pc' name='peptest'/>"
            body += "".join("<feature var=%s/>" % quoteattr(f)
                            for f in feats)
            self.send("<iq type='result' id=%s to=%s><query xmlns='%s' "
                      "node=%s>%s</query></iq>"
                      % (quoteattr(q.get("id")), quoteattr(q.get("from")),
                         DISCO, quoteattr(node), body))
        return q

    def pubsub(self, body, type_="set", to=None, ns=PS):
        return self.request("<pubsub xmlns='%s'>%s</pubsub>" % (ns, body),
                            type_, to=to)

    def publish(self, node, payload, item_id=None, opts=None):
        iid = " id=%s" % quoteattr(item_id) if item_id else ""
        po = ""
        if opts:
            po = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                  "<field var='FORM_TYPE' type='hidden'><value>%s"
                  "#publish-options</value></field>" % PS)
            po += "".join("<field var=%s><value>%s</value></field>"
                          % (quoteattr(k), escape(v)) for k, v in
                          opts.items())
            po += "</x></publish-options>"
        return self.pubsub("<publish node=%s><item%s>%s</item></publish>%s"
                           % (quoteattr(node), iid, payload, po))

    def items(self, node, to=None, max_items=None, ids=()):
        mi = " max_items='%d'" % max_items if max_items else ""
        body = "".join("<item id=%s/>" % quoteattr(i) for i in ids)
        return self.pubsub("<items node=%s%s>%s</items>"
                           % (quoteattr(node), mi, body), "get", to=to)


def is_event(node=None, frm=None):
    def pred(el):
        if not named(el, "message"):
            return False
        ev = el.find("{%s}event" % PSE)
        if ev is None:
            return False
        if frm and el.get("from") != frm:
            return False
        if node is None:
            return True
        return any(x.get("node") == node for x in ev)
    return pred


def event_items(msg):
    out = []
    for items in msg.find("{%s}event" % PSE):
        for it in items:
            out.append((it.tag.split("}")[1], it.get("id")))
    return out


def item_ids(iq):
    if iq is None or iq.get("type") != "result":
        return None
    its = iq.find("{%s}pubsub/{%s}items" % (PS, PS))
    return [i.get("id") for i in its] if its is not None else []


def err_parts(iq):
    """(type, condition, app condition, feature) of an error reply."""
    if iq is None or iq.get("type") != "error":
        return None
    e = iq.find(C + "error")
    if e is None:
        return None
    cond = app = feat = None
    for ch in e:
        ns, name = ch.tag[1:].split("}")
        if ns == STZ and name != "text":
            cond = name
        elif ns == PSERR:
            app, feat = name, ch.get("feature")
    return (e.get("type"), cond, app, feat)


def main():
    global srv
    srv = harness.Server(label="pep")
    srv.start()
    a, b, c = (harness.unique(x) for x in ("alice", "bob", "carol"))
    add_users(srv, a, b, c)
    check("alice and bob subscribe to each other", make_both(srv, a, b))
    ja, jb, jc = ("%s@%s" % (u, srv.domain) for u in (a, b, c))

    ca = PepClient(srv, a, "pa")
    ca.roster_get()
    q = ca.announce([TUNE, BM2, AV_META])
    check("caps: the server asks disco#info of an unknown ver from its "
          "domain, with node#ver (XEP-0115 §6.2)",
          q is not None and q.get("from") == srv.domain and
          "#" in (q.find("{%s}query" % DISCO).get("node") or ""), tostr(q))
    cb = PepClient(srv, b, "pb")
    cb.roster_get()
    cb.announce([TUNE, MOOD])
    cbw = PepClient(srv, b, "wrong")
    cbw.roster_get()
    cbw.announce([TUNE, MOOD, "urn:x"], wrong_hash=True)
    cc = PepClient(srv, c, "pc")
    cc.roster_get()
    cc.announce([TUNE])
    # Each answer is handled before the ping after it; the last items
    # its caps release come from storage jobs queued by then, whose
    # stanzas arrive before the storage barrier's answer.
    for cl in (ca, cb, cbw, cc):
        cl.ping()
        cl.storage_barrier(rounds=3)
        cl.queue.clear()

    # -- disco
    r = ca.request("<query xmlns='%s'/>" % DISCO, to=ja)
    q = r.find("{%s}query" % DISCO) if r is not None else None
    feats = {f.get("var") for f in q.findall("{%s}feature" % DISCO)} \
        if q is not None else set()
    ids = {(i.get("category"), i.get("type"))
           for i in q.findall("{%s}identity" % DISCO)} if q is not None \
        else set()
    check("disco#info on the account: identity pubsub/pep (XEP-0163 §6.1)",
          ("pubsub", "pep") in ids, tostr(r))
    want = [PS + "#publish", PS + "#publish-options", PS + "#auto-create",
            PS + "#persistent-items", PS + "#access-presence",
            PS + "#access-open", PS + "#access-whitelist",
            PS + "#config-node-max", PS + "#retract-items",
            PS + "#retrieve-items", BM2 + "#compat", BM2 + "#compat-pep",
            "urn:xmpp:pep-vcard-conversion:0"]
    check("disco#info on the account lists the XEP-0479 PEP features",
          all(f in feats for f in want),
          "missing %s" % [f for f in want if f not in feats])

    # -- publish and notifications
    r = ca.publish(TUNE, "<tune xmlns='%s'><title>One</title></tune>" % TUNE,
                   "t1")
    check("publish to a new node auto-creates it (XEP-0060 §7.1.4)",
          r is not None and r.get("type") == "result", tostr(r))
    m = cb.wait(is_event(TUNE, ja))
    check("contact with +notify gets the event as headline from the "
          "owner's bare JID", m is not None and m.get("type") == "headline"
          and event_items(m) == [("item", "t1")] and
          m.find(".//{%s}title" % TUNE) is not None, tostr(m))
    m = ca.wait(is_event(TUNE, ja))
    check("owner's own resource with +notify gets the event", m is not None,
          tostr(m))
    check("a resource whose caps hash does not verify gets nothing "
          "(XEP-0115 §5.4)", not cbw.quiet(is_event(TUNE)), "")
    check("a non-contact with +notify gets nothing (access presence)",
          not cc.quiet(is_event(TUNE), 0.2), "")
    r = ca.publish(MOOD, "<mood xmlns='%s'><happy/></mood>" % MOOD)
    pid = r.find("{%s}pubsub/{%s}publish/{%s}item" % (PS, PS, PS)) \
        if r is not None else None
    check("publish without item id: the result names the generated id",
          pid is not None and pid.get("id"), tostr(r))
    check("no notification to a resource without +notify for the node",
          not ca.quiet(is_event(MOOD), 0.5), "")
    m = cb.wait(is_event(MOOD, ja))
    check("bob (+notify mood) gets the mood event", m is not None, tostr(m))

    # -- access control
    r = cc.items(TUNE, to=ja)
    check("items of a presence node by a non-contact: not-authorized + "
          "presence-subscription-required (XEP-0060 §6.5.9.6)",
          err_parts(r) == ("auth", "not-authorized",
                           "presence-subscription-required", None),
          tostr(r))
    r = cb.items(TUNE, to=ja)
    check("items of a presence node by a contact", item_ids(r) == ["t1"],
          tostr(r))
    r = cc.items("urn:nothing", to=ja)
    check("items of a missing node: item-not-found",
          err_parts(r) == ("cancel", "item-not-found", None, None), tostr(r))
    r = cb.pubsub("<publish node='%s'><item id='x'><tune xmlns='%s'/>"
                  "</item></publish>" % (TUNE, TUNE), to=ja)
    check("publishing to someone else's PEP: forbidden",
          err_parts(r) is not None and err_parts(r)[1] == "forbidden",
          tostr(r))

    # -- publish-options
    r = ca.publish(TUNE, "<tune xmlns='%s'/>" % TUNE, "t2",
                   {"pubsub#access_model": "open"})
    check("publish-options that the node does not meet: conflict + "
          "precondition-not-met (XEP-0060 §7.1.5)",
          err_parts(r) == ("cancel", "conflict", "precondition-not-met",
                           None), tostr(r))
    r = ca.publish(TUNE, "<tune xmlns='%s'><title>Two</title></tune>" % TUNE,
                   "t2", {"pubsub#access_model": "presence"})
    check("publish-options that the node meets: published",
          r is not None and r.get("type") == "result", tostr(r))
    cb.drain(0.3)
    ca.drain(0.1)

    # -- OMEMO devicelist, open access
    dl = ("<list xmlns='eu.siacs.conversations.axolotl'>"
          "<device id='12345'/></list>")
    r = ca.publish(OMEMO_DL, dl, "current",
                   {"pubsub#access_model": "open",
                    "pubsub#persist_items": "true"})
    check("OMEMO devicelist published with access_model=open",
          r is not None and r.get("type") == "result", tostr(r))
    r = cc.items(OMEMO_DL, to=ja)
    check("a non-contact fetches the open devicelist",
          item_ids(r) == ["current"] and
          r.find(".//{eu.siacs.conversations.axolotl}device") is not None,
          tostr(r))
    bundle = ("<bundle xmlns='eu.siacs.conversations.axolotl'>"
              "<signedPreKeyPublic signedPreKeyId='1'>AAAA</signedPreKeyPublic>"
              "</bundle>")
    bnode = "eu.siacs.conversations.axolotl.bundles:12345"
    r = ca.publish(bnode, bundle, "current", {"pubsub#access_model": "open"})
    r2 = cc.items(bnode, to=ja)
    check("OMEMO bundle published open, fetched by a non-contact",
          r is not None and r.get("type") == "result" and
          item_ids(r2) == ["current"], tostr(r2))

    # -- max_items and configure
    node = "urn:example:multi"
    for i in range(3):
        r = ca.publish(node, "<x xmlns='urn:example'>%d</x>" % i, "m%d" % i,
                       {"pubsub#max_items": "2"})
    r = ca.items(node)
    check("max_items=2: the two newest items stay", item_ids(r) ==
          ["m1", "m2"], tostr(r))
    r = ca.items(node, max_items=1)
    check("items with max_items=1: the newest", item_ids(r) == ["m2"],
          tostr(r))
    r = ca.items(node, ids=["m1"])
    check("items by id", item_ids(r) == ["m1"], tostr(r))
    r = ca.pubsub("<configure node='%s'/>" % node, "get", ns=PSO)
    fields = {f.get("var"): f.findtext("{jabber:x:data}value")
              for f in r.iter("{jabber:x:data}field")} if r is not None \
        else {}
    check("configure get: the node configuration form (XEP-0060 §8.2)",
          fields.get("pubsub#max_items") == "2" and
          fields.get("pubsub#access_model") == "presence", tostr(r))
    r = ca.pubsub("<configure node='%s'><x xmlns='jabber:x:data' "
                  "type='submit'><field var='FORM_TYPE'><value>%s#node_config"
                  "</value></field><field var='pubsub#access_model'><value>"
                  "bogus</value></field></x></configure>" % (node, PS),
                  ns=PSO)
    check("configure with an invalid value: not-acceptable",
          err_parts(r) is not None and err_parts(r)[1] == "not-acceptable",
          tostr(r))
    r = ca.pubsub("<configure node='%s'><x xmlns='jabber:x:data' "
                  "type='submit'><field var='FORM_TYPE'><value>%s#node_config"
                  "</value></field><field var='pubsub#max_items'><value>max"
                  "</value></field><field var='pubsub#access_model'><value>"
                  "whitelist</value></field></x></configure>" % (node, PS),
                  ns=PSO)
    r2 = cb.items(node, to=ja)
    check("configure to whitelist: a contact gets not-allowed + closed-node",
          r is not None and r.get("type") == "result" and
          err_parts(r2) == ("cancel", "not-allowed", "closed-node", None),
          tostr(r2))

    # -- retract
    r = ca.items(TUNE, ids=["t1"])
    check("default max_items is 1: t1 was replaced by t2",
          item_ids(r) == [], tostr(r))
    mood_id = pid.get("id") if pid is not None else "none"
    r = ca.pubsub("<retract node='%s' notify='true'><item id=%s/>"
                  "</retract>" % (MOOD, quoteattr(mood_id)))
    m = cb.wait(is_event(MOOD, ja))
    check("retract with notify: contacts get <retract id/>",
          r is not None and r.get("type") == "result" and m is not None and
          event_items(m) == [("retract", mood_id)], tostr(m))
    r = ca.items(MOOD)
    check("retracted item is gone", item_ids(r) == [], tostr(r))
    r = ca.pubsub("<retract node='%s'><item id='nope'/></retract>" % TUNE)
    check("retract of a missing item: item-not-found",
          err_parts(r) is not None and err_parts(r)[1] == "item-not-found",
          tostr(r))
    r = ca.pubsub("<subscribe node='%s' jid=%s/>" % (TUNE, quoteattr(ja)),
                  to=jb)
    check("explicit subscribe: feature-not-implemented + unsupported "
          "feature='subscribe'",
          err_parts(r) == ("cancel", "feature-not-implemented",
                           "unsupported", "subscribe"), tostr(r))

    # -- XEP-0402 bookmarks with compat
    conf = ("<conference xmlns='%s' name='The Play' autojoin='true'>"
            "<nick>JC</nick></conference>" % BM2)
    r = ca.publish(BM2, conf, "play@conference.example.org",
                   {"pubsub#persist_items": "true",
                    "pubsub#access_model": "whitelist",
                    "pubsub#send_last_published_item": "never",
                    "pubsub#max_items": "max"})
    check("bookmarks 2: publish with the XEP-0402 publish-options",
          r is not None and r.get("type") == "result", tostr(r))
    m = ca.wait(is_event(BM2, ja))
    check("bookmarks 2: the owner's +notify resource gets the bookmark",
          m is not None, tostr(m))
    check("bookmarks 2 (whitelist): contacts get nothing",
          not cb.quiet(is_event(BM2), 0.3), "")
    r = ca.request("<query xmlns='jabber:iq:private'><storage "
                   "xmlns='storage:bookmarks'/></query>")
    cs = r.findall(".//{storage:bookmarks}conference") if r is not None \
        else []
    check("compat: the bookmark appears in XEP-0049 private XML "
          "(XEP-0402 §5.3.1)",
          len(cs) == 1 and cs[0].get("jid") == "play@conference.example.org"
          and cs[0].findtext("{storage:bookmarks}nick") == "JC", tostr(r))
    r = ca.items("storage:bookmarks")
    check("compat-pep: and in the storage:bookmarks PEP node",
          item_ids(r) == ["current"] and
          r.find(".//{storage:bookmarks}conference") is not None, tostr(r))
    r = ca.request("<query xmlns='jabber:iq:private'><storage "
                   "xmlns='storage:bookmarks'><conference jid='new@muc."
                   "example.org' autojoin='false' name='New'/></storage>"
                   "</query>", "set")
    ca.ping()
    m = ca.wait(is_event(BM2, ja))
    ca.storage_barrier(rounds=4)  # the conversion's removal is done too
    r2 = ca.items(BM2)
    check("compat: storing XEP-0048 bookmarks in private XML updates "
          "bookmarks 2 (added and removed, XEP-0402 §5.3.2)",
          r is not None and r.get("type") == "result" and
          item_ids(r2) == ["new@muc.example.org"], tostr(r2))
    ca.drain(0.3)

    # -- XEP-0398
    png = bytes(range(256)) * 4
    h = hashlib.sha1(png).hexdigest()
    b64 = base64.b64encode(png).decode()
    r = ca.publish(AV_DATA, "<data xmlns='%s'>%s</data>" % (AV_DATA, b64), h)
    r2 = ca.publish(AV_META, "<metadata xmlns='%s'><info id='%s' bytes='%d' "
                    "type='image/png'/></metadata>" % (AV_META, h, len(png)),
                    h)
    v = cc.request("<vCard xmlns='vcard-temp'/>", to=ja)
    bv = v.findtext(".//{vcard-temp}BINVAL") if v is not None else None
    check("XEP-0398 §3.1: a published avatar becomes the vCard PHOTO",
          r2 is not None and r2.get("type") == "result" and bv is not None
          and base64.b64decode(bv) == png and
          v.findtext(".//{vcard-temp}TYPE") == "image/png", tostr(v)[:300])
    ca.presence()
    p = cb.wait(lambda e: named(e, "presence") and
                e.get("from", "").startswith(ja))
    ph = p.findtext(".//{vcard-temp:x:update}photo") if p is not None \
        else None
    check("XEP-0398 §4: the server injects the avatar hash in presence",
          ph == h, tostr(p))
    png2 = b"\x89PNG" + bytes(100)
    h2 = hashlib.sha1(png2).hexdigest()
    cb.drain(0.2)
    r = cb.request("<vCard xmlns='vcard-temp'><FN>Bob</FN><PHOTO><TYPE>"
                   "image/png</TYPE><BINVAL>%s</BINVAL></PHOTO></vCard>"
                   % base64.b64encode(png2).decode(), "set")
    m = ca.wait(is_event(AV_META, jb))
    r2 = cb.items(AV_META)
    r3 = cb.items(AV_DATA, ids=[h2])
    info = r2.find(".//{%s}info" % AV_META) if r2 is not None else None
    check("XEP-0398 §3.2: a vCard photo is published as avatar data and "
          "metadata, contacts notified",
          r is not None and r.get("type") == "result" and
          info is not None and info.get("id") == h2 and
          info.get("bytes") == str(len(png2)) and
          item_ids(r3) == [h2] and m is not None, tostr(r2))

    # -- slixmpp: +notify through its own caps
    slix_check(ja, jb, a)

    aio_check(ja, jb, a, b)

    # -- persistence and last item at login
    for cl in (ca, cb, cbw, cc):
        cl.logout()
    srv.stop()
    srv.start()
    cb = PepClient(srv, b, "again")
    cb.roster_get()
    cb.announce([TUNE, MOOD])  # same ver: cached before, new process now
    m = cb.wait(is_event(TUNE, ja))
    check("after a restart, items persist and the last item of a "
          "+notify node comes at login (XEP-0163 §4.3.4)",
          m is not None and event_items(m) == [("item", "t2")], tostr(m))
    cc = PepClient(srv, c, "again")
    r = cc.items(OMEMO_DL, to=ja)
    check("after a restart the devicelist is still there",
          item_ids(r) == ["current"], tostr(r))
    # A second session with the same caps: cached, no disco query.
    cb2 = PepClient(srv, b, "cached")
    cb2.roster_get()
    q = cb2.announce([TUNE, MOOD])
    m = cb2.wait(is_event(TUNE, ja))
    check("a known ver is not queried again and still gets the last item",
          q is None and m is not None, tostr(q))
    for cl in (cb, cc, cb2):
        cl.logout()


def slix_check(ja, jb, a):
    """slixmpp with xep_0163 registers tune+notify in its caps; alice
    (raw) publishes; slixmpp must receive the tune event."""
    import asyncio
    import logging
    import slixmpp
    from im_common import LoopThread, EventBox, PW
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    lt = LoopThread()
    box = EventBox()
    got = {}

    async def start():
        x = slixmpp.ClientXMPP(jb + "/slix", PW)
        harness.slixmpp_without_channel_binding(x)
        for p in ("xep_0030", "xep_0115", "xep_0060", "xep_0163",
                  "xep_0118"):
            x.register_plugin(p)
        x["xep_0118"]  # tune: registers its +notify through xep_0163
        x["xep_0163"].add_interest(TUNE)

        def on_tune(msg):
            box.put(("tune", msg["pubsub_event"]["items"]["item"]["id"]))
        x.add_event_handler("user_tune_publish", on_tune)
        x.enable_direct_tls = True
        x.ssl_context = harness.no_verify_context()
        x.connect((srv.host, srv.direct_port), use_ssl=True)
        fut = asyncio.get_event_loop().create_future()
        x.add_event_handler("session_start",
                            lambda _e: fut.set_result(True))
        await asyncio.wait_for(fut, STEP)
        x.send_presence()
        await x.get_roster()
        got["x"] = x
    try:
        lt.run(start(), STEP + 5)
    except Exception as e:  # noqa: BLE001 - reported as a check
        check("slixmpp logs in", False, repr(e))
        lt.stop()
        return
    # Its caps may still be being learned (disco#info round trip): then
    # the item comes as the last item once they are (XEP-0163 §6.1.2).
    pa = PepClient(srv, a, "slixpub")
    r = pa.publish(TUNE, "<tune xmlns='%s'><title>Slix</title></tune>"
                   % TUNE, "t2")
    ev = box.wait(lambda e: e == ("tune", "t2"), STEP)
    check("slixmpp (xep_0115 + xep_0163 +notify) receives the tune event",
          r is not None and ev is not None, tostr(r))
    pa.logout()

    async def stop():
        await asyncio.wait_for(got["x"].disconnect(), 5)
    try:
        lt.run(stop(), 10)
    except Exception:  # noqa: BLE001
        pass
    lt.stop()


def aio_check(ja, jb, a, b):
    """aioxmpp's PEPClient claims the avatar metadata node with
    notify=True (its EntityCapsService announces +notify); alice
    publishes; the claimed node's on_item_published must fire.  (aioxmpp
    ignores notifications whose payload has no registered XSO, such as
    mood: hence avatar metadata, which aioxmpp.avatar registers.)"""
    import asyncio
    import logging
    import aioxmpp
    import aioxmpp.connector
    import aioxmpp.pep
    import aioxmpp.avatar  # noqa: F401 - registers the metadata XSO
    from im_common import LoopThread, EventBox, PW
    META = "urn:xmpp:avatar:metadata"
    logging.getLogger("aioxmpp").setLevel(logging.CRITICAL)
    lt = LoopThread()
    box = EventBox()
    held = {}

    async def start():
        cl = aioxmpp.Client(
            aioxmpp.JID.fromstr(jb + "/aio"),
            aioxmpp.make_security_layer(PW, no_verify=True),
            override_peer=[(srv.host, srv.direct_port,
                            aioxmpp.connector.XMPPOverTLSConnector())])
        cl.summon(aioxmpp.EntityCapsService)
        pep = cl.summon(aioxmpp.PEPClient)
        claim = pep.claim_pep_node(META, notify=True)
        claim.on_item_publish.connect(
            lambda jid, node, item, **kw: box.put(("meta", str(jid),
                                                   item.id_)))
        held["claim"] = claim
        cm = cl.connected(presence=aioxmpp.PresenceState(True))
        await asyncio.wait_for(cm.__aenter__(), STEP)
        held["cm"] = cm
    try:
        lt.run(start(), STEP + 5)
    except Exception as e:  # noqa: BLE001 - reported as a check
        check("aioxmpp logs in with PEPClient", False, repr(e))
        lt.stop()
        return
    # Caps learned now or later: a notification or the last item.
    pa = PepClient(srv, a, "aiopub")
    r = pa.publish(META, "<metadata xmlns='%s'/>" % META, "aio1")
    ev = box.wait(lambda e: e == ("meta", ja, "aio1"), STEP)
    check("aioxmpp (PEPClient, caps +notify) receives the avatar metadata "
          "event",
          r is not None and ev is not None, "%s %s" % (tostr(r),
                                                       box.items))
    pa.logout()

    async def stop():
        await asyncio.wait_for(held["cm"].__aexit__(None, None, None), 5)
    try:
        lt.run(stop(), 8)
    except Exception:  # noqa: BLE001
        pass
    lt.stop()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - a crash is a failed check
        import traceback
        check("test_pep ran to the end", False,
              "%r\n%s" % (e, traceback.format_exc()))
    harness.finish()
