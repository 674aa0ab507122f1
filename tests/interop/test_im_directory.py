#!/usr/bin/python3
"""test_im_directory.py - personal cards, the user directory and private
storage: mod_vcard (XEP-0054, XEP-0153 hashes in presence), mod_search
(XEP-0055 with XEP-0004 forms) and mod_private (XEP-0049), driven by
slixmpp (xep_0054, xep_0055 forms, xep_0153 avatars, raw IQs where the
exact bytes matter) and aioxmpp (VCardService, bookmarks over private XML).

Users are made with parleyctl adduser (slixmpp 1.8.3's pre-auth XEP-0077
is unreliable).  The server runs with small limits (search.max_results 3,
private.max_size 1024, private.max_entries 3), then is restarted on the
same data with e-mail searchable, which must find what the default
configuration hides.  Every step is bounded by STEP seconds.  Run with
/usr/bin/python3.
"""

import asyncio
import base64
import hashlib
import logging
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402

import slixmpp  # noqa: E402
from slixmpp.exceptions import IqError, IqTimeout  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

import aioxmpp  # noqa: E402
import aioxmpp.bookmarks  # noqa: E402
import aioxmpp.connector  # noqa: E402
import aioxmpp.vcard  # noqa: E402

STEP = 10        # seconds any one step may take

NS_VCARD = "vcard-temp"
NS_SEARCH = "jabber:iq:search"
NS_XDATA = "jabber:x:data"
NS_PRIVATE = "jabber:iq:private"
NS_UPDATE = "vcard-temp:x:update"

BASE_EXTRA = """
search: { max_results = 3; };
private: { max_size = 1024; max_entries = 3; };
"""
EMAIL_EXTRA = """
search: { max_results = 3; enabled_fields = ["nick", "first", "last", "jid", "email"]; };
private: { max_size = 1024; max_entries = 3; };
"""

srv = None


# ------------------------------------------------------------- slixmpp side

class Client(slixmpp.ClientXMPP):
    """A slixmpp client with the plugins under test and a presence inbox."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context = harness.no_verify_context()
        self.use_ipv6 = False
        for p in ("xep_0030", "xep_0004", "xep_0054", "xep_0049",
                  "xep_0153", "xep_0199"):
            self.register_plugin(p)
        self.register_plugin("xep_0055", {"provide_search": False})
        harness.slixmpp_without_channel_binding(self)
        self.loop_ = asyncio.get_event_loop()
        self.outcome = self.loop_.create_future()
        self.presences = asyncio.Queue()
        self.add_event_handler("session_start",
                               lambda _: self._done(("session", None)))
        self.add_event_handler("failed_all_auth",
                               lambda _: self._done(("failed_auth", None)))
        self.add_event_handler("disconnected",
                               lambda r: self._done(("disconnected", r)))
        self.register_handler(Callback(
            "every presence", MatchXPath("{jabber:client}presence"),
            self.presences.put_nowait))

    def _done(self, value):
        if not self.outcome.done():
            self.outcome.set_result(value)

    async def finish(self):
        fut = self.disconnected
        try:
            self.disconnect(wait=0.5)
            await asyncio.wait_for(fut, 5)
        except Exception:  # noqa: BLE001 - best effort
            self.abort()

    async def next_presence(self, pred, timeout=STEP):
        deadline = self.loop_.time() + timeout
        while True:
            left = deadline - self.loop_.time()
            if left <= 0:
                return None
            try:
                p = await asyncio.wait_for(self.presences.get(), left)
            except asyncio.TimeoutError:
                return None
            if pred(p):
                return p


def bare(user):
    return "%s@%s" % (user, srv.domain)


async def login(user, password, resource="r"):
    c = Client("%s/%s" % (bare(user), resource), password)
    c.connect((srv.host, srv.starttls_port), use_ssl=False,
              force_starttls=True)
    try:
        out = await asyncio.wait_for(asyncio.shield(c.outcome), STEP)
    except asyncio.TimeoutError:
        out = ("timeout", None)
    return c, out


async def iq_call(coro):
    """Awaits an IQ; returns (reply or None, error condition or None)."""
    try:
        r = await asyncio.wait_for(coro, STEP + 1)
        return r, None
    except IqError as e:
        return e.iq, e.iq["error"]["condition"] or "?"
    except (IqTimeout, asyncio.TimeoutError):
        return None, "timeout"


def raw_iq(c, itype, payload, to=None):
    """An IQ with a raw XML payload (a string)."""
    iq = c.make_iq(itype=itype, ito=to)
    iq.xml.append(ET.fromstring(payload))
    return iq


def vcard_xml(first, last, nick, email=None, extra=""):
    mail = ("<EMAIL><INTERNET/><PREF/><USERID>%s</USERID></EMAIL>" % email
            if email else "")
    return ("<vCard xmlns='vcard-temp'><FN>%s %s</FN><N><FAMILY>%s</FAMILY>"
            "<GIVEN>%s</GIVEN></N><NICKNAME>%s</NICKNAME>%s%s</vCard>"
            % (first, last, last, first, nick, mail, extra))


def vfind(reply, path):
    """Text at path (ElementTree, vcard-temp names) in a reply's vCard."""
    if reply is None:
        return None
    vc = reply.xml.find("{%s}vCard" % NS_VCARD)
    if vc is None:
        return None
    parts = "/".join("{%s}%s" % (NS_VCARD, p) for p in path.split("/"))
    return vc.findtext(parts)


def vcard_of(reply):
    return None if reply is None else reply.xml.find("{%s}vCard" % NS_VCARD)


async def set_vcard(c, xml, to=None):
    return await iq_call(raw_iq(c, "set", xml, to).send(timeout=STEP))


async def get_vcard(c, to=None):
    return await iq_call(raw_iq(c, "get", "<vCard xmlns='vcard-temp'/>",
                                to).send(timeout=STEP))


# Search helpers: both return (list of result dicts, error condition).

def _form_items(reply):
    x = reply.xml.find("{%s}query/{%s}x" % (NS_SEARCH, NS_XDATA))
    if x is None:
        return None
    items = []
    for it in x.findall("{%s}item" % NS_XDATA):
        row = {}
        for f in it.findall("{%s}field" % NS_XDATA):
            row[f.get("var")] = f.findtext("{%s}value" % NS_XDATA) or ""
        items.append(row)
    return items


async def search_form(c, **fields):
    iq = c["xep_0055"].make_search_iq(ito=srv.domain)
    for var, value in fields.items():
        iq["search"]["form"].add_field(var, value=value)
    r, err = await iq_call(iq.send(timeout=STEP))
    if err:
        return None, err
    items = _form_items(r)
    return items, None if items is not None else "no form in the result"


async def search_legacy(c, **fields):
    body = "".join("<%s>%s</%s>" % (k, v, k) for k, v in fields.items())
    r, err = await iq_call(raw_iq(c, "set", "<query xmlns='%s'>%s</query>"
                                  % (NS_SEARCH, body),
                                  srv.domain).send(timeout=STEP))
    if err:
        return None, err
    items = []
    for it in r.xml.findall("{%s}query/{%s}item" % (NS_SEARCH, NS_SEARCH)):
        row = {"jid": it.get("jid")}
        for child in it:
            row[child.tag.split("}", 1)[1]] = child.text or ""
        items.append(row)
    return items, None


def jids(items):
    return sorted(i.get("jid") for i in (items or []))


async def private_get(c, payload, to=None):
    return await iq_call(raw_iq(c, "get", "<query xmlns='%s'>%s</query>"
                                % (NS_PRIVATE, payload),
                                to).send(timeout=STEP))


async def private_set(c, payload, to=None):
    return await iq_call(raw_iq(c, "set", "<query xmlns='%s'>%s</query>"
                                % (NS_PRIVATE, payload),
                                to).send(timeout=STEP))


def private_child(reply, tag):
    if reply is None:
        return None
    return reply.xml.find("{%s}query/%s" % (NS_PRIVATE, tag))


# ------------------------------------------------------------- aioxmpp side

def aio_peer():
    return [(srv.host, srv.starttls_port,
             aioxmpp.connector.STARTTLSConnector())]


class AioSession:
    def __init__(self, user, password, resource):
        jid = aioxmpp.JID.fromstr("%s/%s" % (bare(user), resource))
        self.client = aioxmpp.Client(
            jid, aioxmpp.make_security_layer(password, no_verify=True),
            override_peer=aio_peer(),
            logger=logging.getLogger("aioxmpp.test"))
        self.cm = None

    async def __aenter__(self):
        self.cm = self.client.connected()
        await asyncio.wait_for(self.cm.__aenter__(), STEP)
        return self

    async def __aexit__(self, *exc):
        try:
            await asyncio.wait_for(self.cm.__aexit__(None, None, None), 5)
        except Exception:  # noqa: BLE001 - best effort
            self.client.stop()


# -------------------------------------------------------------------- steps

async def vcard_steps(users, pw):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    a, oa = await login(alice, pw, "card")
    b, ob = await login(bob, pw, "card")
    if not check("vcard: alice and bob log in",
                 oa[0] == ob[0] == "session", "%r %r" % (oa, ob)):
        return [a, b]

    r, err = await set_vcard(a, vcard_xml(
        "Alice", "Liddell", "Wonderland", "Alice.Liddell@Example.org"))
    check("vcard: set own vCard (no 'to') gives a result", err is None,
          "error %s: %s" % (err, r))
    if r is not None and err is None:
        check("vcard: the set result comes from no one or the account "
              "(RFC 6120 §8.1.2.1)",
              r["from"].full in ("", bare(alice)), "from=%s" % r["from"])

    r, err = await get_vcard(a)
    check("vcard: get own vCard without 'to' returns it",
          err is None and vfind(r, "NICKNAME") == "Wonderland"
          and vfind(r, "N/FAMILY") == "Liddell",
          "error %s, reply %s" % (err, r))
    r, err = await iq_call(a["xep_0054"].get_vcard(
        bare(alice), local=False, cached=False, timeout=STEP))
    check("vcard: slixmpp xep_0054 get_vcard(own bare JID) returns it",
          err is None and vfind(r, "NICKNAME") == "Wonderland",
          "error %s, reply %s" % (err, r))

    r, err = await get_vcard(b)
    vc = vcard_of(r)
    check("vcard: own vCard never set: an empty <vCard/> result",
          err is None and vc is not None and len(vc) == 0,
          "error %s, reply %s" % (err, r))

    r, err = await get_vcard(b, bare(alice))
    check("vcard: bob reads alice's vCard",
          err is None and vfind(r, "N/GIVEN") == "Alice"
          and vfind(r, "EMAIL/USERID") == "Alice.Liddell@Example.org",
          "error %s, reply %s" % (err, r))
    if err is None and r is not None:
        check("vcard: another user's vCard comes from their bare JID",
              r["from"].full == bare(alice), "from=%s" % r["from"])

    r, err = await get_vcard(a, bare(carol))
    check("vcard: a user without a vCard: <service-unavailable/> "
          "(XEP-0054 1.3 §3.3)",
          err == "service-unavailable", "error %s, reply %s" % (err, r))
    r2, err2 = await get_vcard(a, bare(harness.unique("ghost")))
    check("vcard: an unknown user gets the same error (no harvesting)",
          err2 == err, "no vCard: %s, no account: %s" % (err, err2))

    r, err = await set_vcard(b, vcard_xml("Mallory", "Evil", "m"),
                             bare(alice))
    check("vcard: setting another user's vCard is <forbidden/>",
          err == "forbidden", "error %s, reply %s" % (err, r))

    big = vcard_xml("Alice", "Liddell", "Wonderland", extra="<DESC>%s</DESC>"
                    % ("x" * 40000))
    r, err = await set_vcard(a, big)
    check("vcard: a vCard over max_size is <not-acceptable/>",
          err == "not-acceptable", "error %s" % err)
    if r is not None and err:
        check("vcard: the refusal says why (a <text/>)",
              "32768" in (r["error"]["text"] or ""),
              "text %r" % r["error"]["text"])
    r, err = await get_vcard(b, bare(alice))
    check("vcard: the refused vCard did not replace the stored one",
          err is None and vfind(r, "NICKNAME") == "Wonderland"
          and vfind(r, "DESC") is None, "error %s, reply %s" % (err, r))

    # The directory's other entries.
    c, oc = await login(carol, pw, "card")
    if check("vcard: carol logs in", oc[0] == "session", repr(oc)):
        r, err = await set_vcard(c, vcard_xml("Élodie", "Ørsted",
                                              "Sparrow"))
        check("vcard: carol sets a vCard with non-ASCII names", err is None,
              "error %s" % err)
    await c.finish()
    for z in users["zeds"]:
        zc, oz = await login(z, pw, "card")
        if oz[0] == "session":
            r, err = await set_vcard(zc, vcard_xml("Zed", "Zebra" + z[-2:],
                                                   "zebra-" + z))
            check("vcard: %s sets a vCard" % z, err is None, err)
        await zc.finish()

    # disco#info of the server names the three features.
    r, err = await iq_call(b["xep_0030"].get_info(
        jid=srv.domain, local=False, cached=False, timeout=STEP))
    feats = set(r["disco_info"]["features"]) if err is None else set()
    for f in (NS_VCARD, NS_SEARCH, NS_PRIVATE):
        check("disco: the server announces %s" % f, f in feats,
              "error %s, features %s" % (err, sorted(feats)))
    return [a, b]


async def avatar_steps(users, pw, a, b):
    """XEP-0153: the hash of alice's photo reaches bob in her presence."""
    alice = users["alice"]
    avatar = bytes(range(256)) * 2
    want = hashlib.sha1(avatar).hexdigest()
    try:
        await asyncio.wait_for(a["xep_0153"].set_avatar(
            avatar=avatar, mtype="image/png", timeout=STEP), STEP + 2)
        err = None
    except Exception as e:  # noqa: BLE001 - reported
        err = e
    check("xep0153: slixmpp set_avatar (vCard get + set) succeeds",
          err is None, repr(err))
    r, err = await get_vcard(b, bare(alice))
    binval = vfind(r, "PHOTO/BINVAL")
    check("xep0153: the photo is in alice's vCard as bob reads it",
          err is None and binval is not None
          and base64.b64decode(binval) == avatar,
          "error %s, BINVAL %r" % (err, (binval or "")[:60]))
    # Directed presence to bob's full JID: what the router delivers today.
    a.send_presence(pto=b.boundjid.full, pfrom=a.boundjid.full)
    p = await b.next_presence(lambda x: x["from"].bare == bare(alice))
    photo = None
    if p is not None:
        x = p.xml.find("{%s}x" % NS_UPDATE)
        photo = x.findtext("{%s}photo" % NS_UPDATE) if x is not None \
            else None
    check("xep0153: alice's presence reaches bob with "
          "<x xmlns='vcard-temp:x:update'><photo>sha1</photo></x>",
          photo == want, "presence %s; photo %r, want %s" % (p, photo, want))
    check("vcard: the avatar update kept the rest of the vCard",
          vfind(r, "NICKNAME") == "Wonderland", "reply %s" % r)


async def search_steps(users, pw, b, email_enabled=False):
    alice, carol = users["alice"], users["carol"]
    tag = " (e-mail enabled)" if email_enabled else ""
    r, err = await iq_call(raw_iq(b, "get", "<query xmlns='%s'/>"
                                  % NS_SEARCH, srv.domain).send(timeout=STEP))
    if check("search: the server returns the search fields" + tag,
             err is None, "error %s, reply %s" % (err, r)):
        q = r.xml.find("{%s}query" % NS_SEARCH)
        legacy = [c.tag.split("}", 1)[1] for c in q
                  if c.tag.startswith("{%s}" % NS_SEARCH)]
        x = q.find("{%s}x" % NS_XDATA)
        fvars = [f.get("var") for f in x.findall("{%s}field" % NS_XDATA)] \
            if x is not None else []
        check("search: instructions and legacy first/last/nick" + tag,
              {"instructions", "first", "last", "nick"} <= set(legacy),
              legacy)
        check("search: e-mail is offered only when enabled" + tag,
              ("email" in legacy) == email_enabled
              and ("email" in fvars) == email_enabled,
              "legacy %s, form %s" % (legacy, fvars))
        check("search: an XEP-0004 form of type 'form' with FORM_TYPE "
              "and jid" + tag,
              x is not None and x.get("type") == "form"
              and "FORM_TYPE" in fvars and "jid" in fvars,
              "form vars %s" % fvars)

    items, err = await search_form(b, nick="WONDER")
    check("search: form, nick 'WONDER' finds alice (case, substring)" + tag,
          err is None and jids(items) == [bare(alice)],
          "error %s, items %s" % (err, items))
    if items:
        check("search: the form result shows her names" + tag,
              items[0].get("last") == "Liddell"
              and items[0].get("nick") == "Wonderland",
              items[0])
        check("search: the form result shows e-mail only when enabled" + tag,
              ("email" in items[0]) == email_enabled, items[0])

    items, err = await search_legacy(b, last="liddell")
    check("search: legacy, last 'liddell' finds alice" + tag,
          err is None and jids(items) == [bare(alice)],
          "error %s, items %s" % (err, items))
    if items:
        check("search: a legacy item has <first/>, <last/>, <nick/>, "
              "<email/>" + tag,
              items[0].get("first") == "Alice"
              and {"first", "last", "nick", "email"} <= set(items[0]),
              items[0])
        want = "Alice.Liddell@Example.org" if email_enabled else ""
        check("search: a legacy item's e-mail is %s" % (
            "shown" if email_enabled else "withheld") + tag,
            items[0].get("email") == want, items[0])

    items, err = await search_form(b, jid=alice[:-3])
    check("search: form, jid (part of the username) finds alice" + tag,
          err is None and bare(alice) in jids(items),
          "error %s, items %s" % (err, items))
    items, err = await search_form(b, jid=bare(carol))
    check("search: form, full bare JID finds carol" + tag,
          err is None and jids(items) == [bare(carol)],
          "error %s, items %s" % (err, items))
    items, err = await search_form(b, first="élodie", last="ØRSTED")
    check("search: first and last together, non-ASCII, any case, find "
          "carol" + tag, err is None and jids(items) == [bare(carol)],
          "error %s, items %s" % (err, items))
    items, err = await search_form(b, first="élodie", last="liddell")
    check("search: fields are ANDed (élodie + liddell: nobody)" + tag,
          err is None and items == [], "error %s, items %s" % (err, items))
    nov = users["novcard"]
    items, err = await search_form(b, jid=nov)
    check("search: jid finds a user who never set a vCard" + tag,
          err is None and jids(items) == [bare(nov)],
          "error %s, items %s" % (err, items))

    items, err = await search_legacy(b, email="alice.liddell@example")
    if email_enabled:
        check("search: legacy e-mail search finds alice when enabled",
              err is None and jids(items) == [bare(alice)],
              "error %s, items %s" % (err, items))
    else:
        check("search: legacy e-mail search finds nothing by default",
              err is None and items == [],
              "error %s, items %s" % (err, items))
    items, err = await search_form(b, email="ALICE.liddell")
    if email_enabled:
        check("search: form e-mail search finds alice when enabled",
              err is None and jids(items) == [bare(alice)],
              "error %s, items %s" % (err, items))
    else:
        check("search: form e-mail search finds nothing by default",
              err is None and items == [],
              "error %s, items %s" % (err, items))

    items, err = await search_form(b, last="zebra")
    check("search: max_results (3) caps 4 matches" + tag,
          err is None and len(items or []) == 3,
          "error %s, %d items: %s" % (err, len(items or []), jids(items)))
    items, err = await search_legacy(b, nick="zebra-")
    check("search: max_results caps legacy results too" + tag,
          err is None and len(items or []) == 3,
          "error %s, items %s" % (err, jids(items)))

    items, err = await search_legacy(b)
    check("search: a search with no field is <bad-request/>" + tag,
          err == "bad-request", "error %s, items %s" % (err, items))


async def private_steps(users, pw, a, b):
    alice = users["alice"]
    prefs = ("<prefs xmlns='urn:example:prefs'><color>blue</color>"
             "<size n='3'/></prefs>")
    r, err = await private_set(a, prefs)
    check("private: alice stores an element", err is None,
          "error %s, reply %s" % (err, r))
    r, err = await private_get(a, "<prefs xmlns='urn:example:prefs'/>")
    el = private_child(r, "{urn:example:prefs}prefs")
    check("private: alice reads it back unchanged",
          err is None and el is not None
          and el.findtext("{urn:example:prefs}color") == "blue"
          and el.find("{urn:example:prefs}size") is not None
          and el.find("{urn:example:prefs}size").get("n") == "3",
          "error %s, reply %s" % (err, r))
    r, err = await private_get(a, "<other xmlns='urn:example:prefs'/>")
    el = private_child(r, "{urn:example:prefs}other")
    check("private: another name in the same namespace is separate (empty)",
          err is None and el is not None and len(el) == 0,
          "error %s, reply %s" % (err, r))

    r, err = await private_get(b, "<prefs xmlns='urn:example:prefs'/>")
    el = private_child(r, "{urn:example:prefs}prefs")
    check("private: bob's storage is his own (empty element back)",
          err is None and el is not None and len(el) == 0,
          "error %s, reply %s" % (err, r))
    r, err = await private_get(b, "<prefs xmlns='urn:example:prefs'/>",
                               bare(alice))
    check("private: reading alice's storage is <forbidden/>",
          err == "forbidden", "error %s, reply %s" % (err, r))
    r, err = await private_set(b, prefs.replace("blue", "red"), bare(alice))
    check("private: writing alice's storage is <forbidden/>",
          err == "forbidden", "error %s, reply %s" % (err, r))
    r, err = await private_get(a, "<prefs xmlns='urn:example:prefs'/>")
    check("private: alice's element survived bob's attempt",
          err is None and r.xml.findtext(
              ".//{urn:example:prefs}color") == "blue", "reply %s" % r)

    r, err = await private_get(a, "")
    check("private: a <query/> without a child is <not-acceptable/>",
          err == "not-acceptable", "error %s" % err)
    r, err = await private_set(a, "<x xmlns='jabber:client'><y/></x>")
    check("private: a reserved namespace (jabber:client) is "
          "<not-acceptable/>", err == "not-acceptable", "error %s" % err)
    r, err = await private_set(a, "<nons><y/></nons>")
    check("private: an element in jabber:iq:private itself is "
          "<not-acceptable/>", err == "not-acceptable", "error %s" % err)
    r, err = await private_set(a, "<big xmlns='urn:example:big'>%s</big>"
                               % ("y" * 2000))
    check("private: an element over max_size (1024) is <not-acceptable/>",
          err == "not-acceptable"
          and "1024" in (r["error"]["text"] or "" if r is not None else ""),
          "error %s, reply %s" % (err, r))

    # max_entries is 3: prefs + two more fit, a fourth does not.
    r, err = await private_set(a, "<e2 xmlns='urn:example:n'>2</e2>"
                               "<e3 xmlns='urn:example:n'>3</e3>")
    check("private: two elements in one set are stored", err is None,
          "error %s" % err)
    r, err = await private_set(a, "<e4 xmlns='urn:example:n'>4</e4>")
    check("private: a fourth element past max_entries is <not-acceptable/>",
          err == "not-acceptable", "error %s, reply %s" % (err, r))
    r, err = await private_set(a, "<e3 xmlns='urn:example:n'>3b</e3>")
    check("private: replacing a stored element is fine at the quota",
          err is None, "error %s" % err)
    r, err = await private_set(a, "<e2 xmlns='urn:example:n'/>")
    check("private: an empty element deletes", err is None, "error %s" % err)
    r, err = await private_set(a, "<e4 xmlns='urn:example:n'>4</e4>")
    check("private: after a delete there is room again", err is None,
          "error %s, reply %s" % (err, r))
    r, err = await private_get(a, "<e2 xmlns='urn:example:n'/>"
                               "<e3 xmlns='urn:example:n'/>")
    check("private: several elements in one get; the deleted one is empty",
          err is None
          and r.xml.findtext(".//{urn:example:n}e3") == "3b"
          and r.xml.find(".//{urn:example:n}e2") is not None
          and not r.xml.findtext(".//{urn:example:n}e2"),
          "error %s, reply %s" % (err, r))


async def aioxmpp_steps(users, pw):
    alice, bob = users["alice"], users["bob"]
    try:
        async with AioSession(bob, pw, "aio1") as s1:
            vc = s1.client.summon(aioxmpp.vcard.VCardService)
            card = await asyncio.wait_for(
                vc.get_vcard(aioxmpp.JID.fromstr(bare(alice))), STEP)
            nick = card.elements.xpath(
                "/ns0:vCard/ns0:NICKNAME/text()",
                namespaces={"ns0": NS_VCARD}) if card is not None else []
            check("aioxmpp: VCardService reads alice's vCard",
                  nick == ["Wonderland"], "NICKNAME %r" % nick)
            check("aioxmpp: her photo reads back as the bytes set",
                  card.get_photo_data() == bytes(range(256)) * 2,
                  "photo %r" % (card.get_photo_data() or b"")[:20])
            own = await asyncio.wait_for(vc.get_vcard(), STEP)
            check("aioxmpp: VCardService reads one's own vCard (no 'to')",
                  own is not None, repr(own))

            bm = s1.client.summon(aioxmpp.bookmarks.BookmarkClient)
            room = aioxmpp.bookmarks.Conference(
                "Tea party", aioxmpp.JID.fromstr("tea@rooms.example"),
                autojoin=True, nick="bob")
            await asyncio.wait_for(bm.set_bookmarks([room]), STEP)
            check("aioxmpp: bookmarks (XEP-0048 over XEP-0049) are stored",
                  True)
        async with AioSession(bob, pw, "aio2") as s2:
            bm = s2.client.summon(aioxmpp.bookmarks.BookmarkClient)
            got = await asyncio.wait_for(bm.get_bookmarks(), STEP)
            check("aioxmpp: another session reads the same bookmarks",
                  len(got) == 1 and got[0].name == "Tea party"
                  and str(got[0].jid) == "tea@rooms.example"
                  and got[0].autojoin, "got %r" % got)
        async with AioSession(alice, pw, "aio3") as s3:
            bm = s3.client.summon(aioxmpp.bookmarks.BookmarkClient)
            got = await asyncio.wait_for(bm.get_bookmarks(), STEP)
            check("aioxmpp: alice does not see bob's bookmarks", got == [],
                  "got %r" % got)
    except Exception as e:  # noqa: BLE001 - reported
        check("aioxmpp: vCard and bookmark sessions run without errors",
              False, repr(e))


async def main_first(users, pw):
    clients = await vcard_steps(users, pw)
    a, b = clients[0], clients[1]
    try:
        if a.outcome.result()[0] == "session" and \
                b.outcome.result()[0] == "session":
            await avatar_steps(users, pw, a, b)
            await search_steps(users, pw, b)
            await private_steps(users, pw, a, b)
    finally:
        for c in clients:
            await c.finish()
    await aioxmpp_steps(users, pw)


async def main_second(users, pw):
    b, ob = await login(users["carol"], pw, "again")
    if check("restart: carol logs in to the restarted server",
             ob[0] == "session", repr(ob)):
        await search_steps(users, pw, b, email_enabled=True)
        # Account removal (XEP-0077 post-auth) and user/deleted.
        await b.finish()
        await removal_steps(users, pw)
    else:
        await b.finish()


async def removal_steps(users, pw):
    """In-band account removal fires user/deleted; an account made again
    with the same name starts without a vCard or private XML."""
    bob = users["bob"]
    c = Client("%s/rm" % bare(bob), pw)
    c.register_plugin("xep_0077")
    c.connect((srv.host, srv.starttls_port), use_ssl=False,
              force_starttls=True)
    try:
        out = await asyncio.wait_for(asyncio.shield(c.outcome), STEP)
    except asyncio.TimeoutError:
        out = ("timeout", None)
    if check("removal: bob logs in", out[0] == "session", repr(out)):
        r, err = await iq_call(c["xep_0077"].cancel_registration(
            timeout=STEP))
        # The server may close the stream right after the result.
        check("removal: bob removes his account in-band (XEP-0077)",
              err in (None, "timeout"), "error %s, reply %s" % (err, r))
    await c.finish()
    b2, o2 = await login(users["carol"], pw, "look")
    if o2[0] == "session":
        r, err = await get_vcard(b2, bare(bob))
        check("removal: the removed user's vCard is gone",
              err == "service-unavailable", "error %s, reply %s" % (err, r))
        items, err = await search_form(b2, last="zebra")
        items2, err2 = await search_form(b2, nick="tea")
        check("removal: search still works after a removal",
              err is None and err2 is None, "%s %s" % (err, err2))
    await b2.finish()
    rc, text = srv.ctl("adduser", bare(bob), pw)
    check("removal: parleyctl re-creates the account", rc == 0,
          "exit %s: %s" % (rc, text))
    c, out = await login(bob, pw, "new")
    if check("removal: the new bob logs in", out[0] == "session", repr(out)):
        r, err = await get_vcard(c)
        vc = vcard_of(r)
        check("removal: the new bob's vCard is empty",
              err is None and vc is not None and len(vc) == 0,
              "error %s, reply %s" % (err, r))
        r, err = await private_get(
            c, "<storage xmlns='storage:bookmarks'/>")
        el = private_child(r, "{storage:bookmarks}storage")
        check("removal: the new bob's private storage (bookmarks) is empty",
              err is None and el is not None and len(el) == 0,
              "error %s, reply %s" % (err, r))
    await c.finish()


def make_users(pw):
    users = {n: harness.unique(n) for n in ("alice", "bob", "carol",
                                            "novcard")}
    users["zeds"] = [harness.unique("zed") for _ in range(4)]
    for u in [users[n] for n in ("alice", "bob", "carol", "novcard")] + \
            users["zeds"]:
        rc, text = srv.ctl("adduser", bare(u), pw)
        if not check("parleyctl adduser %s" % u, rc == 0,
                     "exit %s: %s" % (rc, text)):
            return None
    return users


def run():
    global srv
    pw = "Dir-pass-1"
    srv = harness.Server(extra=BASE_EXTRA)
    if srv.reference:
        note("reference mode is not supported by this script (its limits "
             "are Parley settings)")
        harness.finish()
    if srv.start():
        users = make_users(pw)
        if users:
            try:
                asyncio.run(asyncio.wait_for(main_first(users, pw), 150))
            except asyncio.TimeoutError:
                check("directory suite (first run) finishes within 150 s",
                      False, "timed out")
            except Exception as e:  # noqa: BLE001 - report, don't crash
                import traceback
                traceback.print_exc()
                check("directory suite (first run) runs without exceptions",
                      False, repr(e))
            # Same data, e-mail now searchable: a configuration change
            # needs a restart (module options are read at start).
            srv.stop()
            srv.exit_checked = False
            srv.extra = EMAIL_EXTRA
            srv.label = "server[email]"
            if srv.start():
                try:
                    asyncio.run(asyncio.wait_for(main_second(users, pw),
                                                 120))
                except asyncio.TimeoutError:
                    check("directory suite (second run) finishes within "
                          "120 s", False, "timed out")
                except Exception as e:  # noqa: BLE001 - report
                    import traceback
                    traceback.print_exc()
                    check("directory suite (second run) runs without "
                          "exceptions", False, repr(e))
    harness.finish()


if __name__ == "__main__":
    run()
