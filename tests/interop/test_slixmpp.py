#!/usr/bin/python3
"""test_slixmpp.py - Parley against slixmpp (Debian python3-slixmpp).

Covers XEP-0077 registration (and its conflict, password change and
removal), SASL SCRAM-SHA-1 / SCRAM-SHA-256 on STARTTLS and XEP-0368 direct
TLS, wrong passwords, resources and RFC 6121 §8.5 routing, errors for
unknown users and IQs, and the server's XEP-0030/0092/0199/0202 answers.
Every way of setting a password (registration, XEP-0077 password change,
parleyctl adduser and passwd) must also store the SIP digest keys
H(user:realm:password) for MD5 and SHA-256 (src/core/account.h): read
from the SQLite file and compared with hashlib's.
Every step is bounded by STEP seconds.  Run with /usr/bin/python3.
"""

import asyncio
import datetime
import hashlib
import os
import re
import sqlite3
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402

import slixmpp  # noqa: E402
from slixmpp.exceptions import IqError, IqTimeout  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

STEP = 10        # seconds any one step may take
QUIET = 1.5      # seconds to wait to be sure something does NOT arrive

srv = None


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records how its session went."""

    def __init__(self, jid, password, mech=None, channel_binding=False):
        super().__init__(jid, password, sasl_mech=mech)
        self.auth_failures = []     # (mechanism, condition) per failure
        # The server's certificate is self-signed.
        self.ssl_context = harness.no_verify_context()
        self.use_ipv6 = False
        # COMPAT slixmpp 1.8.3: stanzas sent before session_start are
        # queued, which stalls XEP-0077 registration (its IQs are sent
        # before SASL).  Let them through until the session starts.
        self._always_send_everything = True
        for p in ("xep_0030", "xep_0077", "xep_0092", "xep_0199",
                  "xep_0202"):
            self.register_plugin(p)
        if not channel_binding:
            harness.slixmpp_without_channel_binding(self, mech)
        self.loop_ = asyncio.get_event_loop()
        self.outcome = self.loop_.create_future()
        self.reg_result = self.loop_.create_future()
        self.inbox = asyncio.Queue()
        self.closed = False
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("connection_failed", self._on_conn_failed)
        self.register_handler(Callback(
            "every message", MatchXPath("{jabber:client}message"),
            self.inbox.put_nowait))

    def _done(self, value):
        if not self.outcome.done():
            self.outcome.set_result(value)

    def _on_start(self, _):
        self._always_send_everything = False
        self._done(("session", None))

    def _on_failed_auth(self, failure):
        # slixmpp then tries its next mechanism; the outcome is decided by
        # session_start or failed_all_auth.
        mech = getattr(self["feature_mechanisms"].mech, "name", "?")
        self.auth_failures.append((mech, failure["condition"]))

    def _on_failed_all_auth(self, _):
        cond = self.auth_failures[0][1] if self.auth_failures else "?"
        self._done(("failed_auth", cond))

    def _on_disconnected(self, reason):
        self.closed = True
        self._done(("disconnected", reason))
        if not self.reg_result.done():
            self.reg_result.set_result(("disconnected", reason, None))

    def _on_conn_failed(self, err):
        self._done(("connection_failed", err))

    def enable_registration(self, username, password):
        """Registers through XEP-0077 before SASL."""
        self["xep_0077"].force_registration = True

        async def on_register(_form):
            iq = self.Iq()
            iq["type"] = "set"
            iq["register"]["username"] = username
            iq["register"]["password"] = password
            try:
                await iq.send(timeout=STEP)
                res = ("result", None, None)
            except IqError as e:
                res = ("error", e.iq["error"]["condition"], e.iq)
            except IqTimeout:
                res = ("timeout", None, None)
            if not self.reg_result.done():
                self.reg_result.set_result(res)
        self.add_event_handler("register", on_register)

    def start(self, direct=False):
        port = srv.direct_port if direct else srv.starttls_port
        if direct:
            self.connect((srv.host, port), use_ssl=True, force_starttls=False)
        else:
            self.connect((srv.host, port), use_ssl=False, force_starttls=True)

    async def finish(self):
        fut = self.disconnected
        try:
            self.disconnect(wait=0.5)
            await asyncio.wait_for(fut, 5)
        except Exception:  # noqa: BLE001 - best effort
            self.abort()

    async def next_message(self, pred=lambda m: True, timeout=STEP):
        """Next received message for which pred holds; None on timeout."""
        deadline = self.loop_.time() + timeout
        while True:
            left = deadline - self.loop_.time()
            if left <= 0:
                return None
            try:
                m = await asyncio.wait_for(self.inbox.get(), left)
            except asyncio.TimeoutError:
                return None
            if pred(m):
                return m


def bare(user):
    return "%s@%s" % (user, srv.domain)


async def login(user, password, resource="r", mech=None, direct=False,
                priority=None, channel_binding=False):
    """Connects and authenticates; returns (client, outcome).

    outcome is ("session", None) on success.  With priority set, sends
    available presence and waits until the server has seen it (an IQ
    round trip on the same stream is processed after it)."""
    c = Client("%s/%s" % (bare(user), resource), password, mech=mech,
               channel_binding=channel_binding)
    c.start(direct)
    try:
        out = await asyncio.wait_for(asyncio.shield(c.outcome), STEP)
    except asyncio.TimeoutError:
        out = ("timeout", None)
    if out[0] == "session" and priority is not None:
        c.send_presence(ppriority=priority)
        try:
            await c["xep_0199"].send_ping(srv.domain, timeout=STEP)
        except (IqError, IqTimeout):
            pass
    return c, out


async def register(user, password, direct=False):
    """XEP-0077 registration with slixmpp; returns (client, reg, outcome)."""
    c = Client("%s/reg" % bare(user), password)
    c.enable_registration(user, password)
    c.start(direct)
    try:
        reg = await asyncio.wait_for(asyncio.shield(c.reg_result), STEP)
    except asyncio.TimeoutError:
        reg = ("timeout", None, None)
    out = None
    if reg[0] == "result":
        try:
            out = await asyncio.wait_for(asyncio.shield(c.outcome), STEP)
        except asyncio.TimeoutError:
            out = ("timeout", None)
    return c, reg, out


def digest_keys(user):
    """The digest keys stored for user@srv.domain, {algorithm: hex HA1}
    (algorithm 0 MD5, 1 SHA-256: enum pl_digest_alg), read from parleyd's
    SQLite file (or its PostgreSQL database, PARLEY_STORAGE=postgresql);
    None in reference mode."""
    if srv.reference:
        return None
    if srv.storage == "postgresql":
        import pg_common
        db = re.search(r"dbname=(\S+)", srv.pg_conninfo).group(1)
        rc, out = pg_common.shared().psql(
            "SELECT alg || ':' || encode(ha1, 'hex') FROM digest_keys"
            " WHERE host = '%s' AND username = '%s'"
            % (srv.domain.replace("'", "''"), user.replace("'", "''")), db)
        if rc != 0:
            return {"error": out}
        return {int(a): h for a, h in (line.split(":") for line in
                                       out.split() if ":" in line)}
    con = sqlite3.connect(os.path.join(srv.dir, "var", "parley.db"),
                          timeout=10)
    try:
        rows = con.execute("SELECT alg, ha1 FROM digest_keys"
                           " WHERE host = ? AND user = ?",
                           (srv.domain, user)).fetchall()
    finally:
        con.close()
    return {alg: bytes(ha1).hex() for alg, ha1 in rows}


def want_keys(user, password, md5=True):
    """HA1 = H(user:realm:password), realm the host's domain (RFC 7616
    §3.4.2), as parleyd should have stored them."""
    a1 = ("%s:%s:%s" % (user, srv.domain, password)).encode()
    keys = {1: hashlib.sha256(a1).hexdigest()}
    if md5:
        keys[0] = hashlib.md5(a1).hexdigest()
    return keys


def check_keys(name, user, password, md5=True):
    if srv.reference:
        return
    got = digest_keys(user)
    check(name, got == want_keys(user, password, md5),
          "stored %r, expected %r" % (got, want_keys(user, password, md5)))


async def iq_call(coro):
    """Awaits an IQ; returns (reply or None, error condition or None)."""
    try:
        r = await asyncio.wait_for(coro, STEP + 1)
        return r, None
    except IqError as e:
        return e.iq, e.iq["error"]["condition"] or "?"
    except (IqTimeout, asyncio.TimeoutError):
        return None, "timeout"
    except asyncio.CancelledError:
        # slixmpp may cancel a pending IQ when the stream closes; only a
        # cancellation of this task itself must propagate.
        if asyncio.current_task().cancelling():
            raise
        return None, "cancelled (stream closed)"


async def send_chat(sender, to, body, mfrom=None):
    m = sender.make_message(mto=to, mbody=body, mtype="chat")
    if mfrom:
        m["from"] = mfrom
    m.send()


def body_is(text):
    return lambda m: m["body"] == text


async def main():
    alice, bob = harness.unique("alice"), harness.unique("bob")
    pw_a, pw_b = "Al1ce-pass", "b0b pass,=x"
    clients = []

    # --- XEP-0077 registration
    c, reg, out = await register(alice, pw_a)
    clients.append(c)
    check("xep0077: register alice (STARTTLS)", reg[0] == "result",
          "registration reply %r" % (reg[:2],))
    check("xep0077: new account can log in after registering",
          out and out[0] == "session", "outcome %r" % (out,))
    await c.finish()
    check_keys("xep0077: registration stores the digest keys", alice, pw_a)

    c, reg, out = await register(bob, pw_b, direct=True)
    clients.append(c)
    check("xep0077: register bob (direct TLS)", reg[0] == "result",
          "registration reply %r" % (reg[:2],))
    await c.finish()
    check_keys("xep0077: digest keys of a password with ',', '=' and a "
               "space", bob, pw_b)

    c, reg, out = await register(alice, "other-password")
    check("xep0077: registering an existing user gives <conflict/>",
          reg[0] == "error" and reg[1] == "conflict",
          "reply %r: %s" % (reg[:2], reg[2]))
    await c.finish()

    if not srv.reference:
        rc, text = srv.ctl("list", srv.domain)
        users = text.split()
        check("parleyctl list shows the registered users",
              rc == 0 and bare(alice) in users and bare(bob) in users,
              "exit %s, output %r" % (rc, text[-300:]))

    # --- SASL mechanisms, STARTTLS and direct TLS
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        for direct in (False, True):
            c, out = await login(alice, pw_a, "m", mech=mech, direct=direct)
            used = getattr(c["feature_mechanisms"].mech, "name", None)
            check("login with %s forced over %s" % (
                mech, "direct TLS" if direct else "STARTTLS"),
                out[0] == "session" and used == mech,
                "outcome %r, mechanism used %r" % (out, used))
            await c.finish()

    # slixmpp's own choice: slixmpp 1.8.3 binds -PLUS to tls-unique even
    # over TLS 1.3; parleyd accepts that binding (c2s.tls_unique, COMPAT),
    # so a default slixmpp logs in with SCRAM-SHA-256-PLUS at once.
    c, out = await login(bob, pw_b, "dflt", channel_binding=True)
    used = getattr(c["feature_mechanisms"].mech, "name", None)
    check("slixmpp with default settings logs in with SCRAM-SHA-256-PLUS",
          out[0] == "session" and used == "SCRAM-SHA-256-PLUS"
          and not c.auth_failures,
          "outcome %r, mechanism %r, refused %r" % (out, used,
                                                    c.auth_failures))
    await c.finish()

    c, out = await login(alice, "wrong-password", "w", mech="SCRAM-SHA-1")
    check("wrong password (SCRAM-SHA-1) fails with <not-authorized/>",
          out == ("failed_auth", "not-authorized"), "outcome %r" % (out,))
    await c.finish()
    c, out = await login(alice, "wrong-password", "w", mech="PLAIN")
    check("wrong password (PLAIN in TLS) fails with <not-authorized/>",
          out == ("failed_auth", "not-authorized"), "outcome %r" % (out,))
    await c.finish()
    c, out = await login(harness.unique("nobody"), "x", "w")
    check("login as an unknown user fails with <not-authorized/>",
          out == ("failed_auth", "not-authorized"), "outcome %r" % (out,))
    await c.finish()

    # --- two resources, chat both ways
    a1, o1 = await login(alice, pw_a, "one", priority=5)
    a2, o2 = await login(alice, pw_a, "two", direct=True, priority=1)
    b1, o3 = await login(bob, pw_b, "home", priority=0)
    clients += [a1, a2, b1]
    if not check("three sessions (alice/one, alice/two, bob/home) start",
                 o1[0] == o2[0] == o3[0] == "session",
                 "outcomes %r %r %r" % (o1, o2, o3)):
        return
    check("two resources of one user have distinct full JIDs",
          a1.boundjid.full != a2.boundjid.full
          and a1.boundjid.bare == a2.boundjid.bare == bare(alice),
          "%s / %s" % (a1.boundjid, a2.boundjid))
    check("bound resource is the one requested (or server-chosen)",
          a1.boundjid.resource != "", "%s" % a1.boundjid)

    await send_chat(b1, a1.boundjid.full, "hello alice/one")
    m = await a1.next_message(body_is("hello alice/one"))
    check("chat bob -> alice full JID arrives",
          m is not None and m["type"] == "chat", "nothing in %d s" % STEP)
    if m is not None:
        check("arrived message 'from' is bob's full JID",
              m["from"].full == b1.boundjid.full, "from=%s" % m["from"])
        check("arrived message 'to' is alice/one",
              m["to"].full == a1.boundjid.full, "to=%s" % m["to"])
    m = await a2.next_message(body_is("hello alice/one"), QUIET)
    check("message to alice/one is not copied to alice/two", m is None,
          "alice/two got %s" % m)

    await send_chat(a2, b1.boundjid.full, "hello bob")
    m = await b1.next_message(body_is("hello bob"))
    check("chat alice/two -> bob full JID arrives",
          m is not None and m["from"].full == a2.boundjid.full,
          "got %s" % m)

    # --- RFC 6121 §8.5.2.1.1: bare JID chat -> highest priority resource(s)
    await send_chat(b1, bare(alice), "to the bare jid")
    m1 = await a1.next_message(body_is("to the bare jid"))
    m2 = await a2.next_message(body_is("to the bare jid"), QUIET)
    check("chat to bare JID reaches the priority-5 resource",
          m1 is not None, "alice/one (priority 5) got nothing")
    check("chat to bare JID skips the priority-1 resource", m2 is None,
          "alice/two (priority 1) got %s" % m2)

    a2.send_presence(ppriority=5)
    await iq_call(a2["xep_0199"].send_ping(srv.domain, timeout=STEP))
    await send_chat(b1, bare(alice), "equal priorities")
    m1 = await a1.next_message(body_is("equal priorities"))
    m2 = await a2.next_message(body_is("equal priorities"))
    check("chat to bare JID reaches every resource of equal top priority",
          m1 is not None and m2 is not None,
          "alice/one got %s, alice/two got %s" % (m1 is not None,
                                                  m2 is not None))

    a1.send_presence(ppriority=-1)
    await iq_call(a1["xep_0199"].send_ping(srv.domain, timeout=STEP))
    await send_chat(b1, bare(alice), "negative priority")
    m2 = await a2.next_message(body_is("negative priority"))
    m1 = await a1.next_message(body_is("negative priority"), QUIET)
    check("chat to bare JID skips a negative-priority resource",
          m2 is not None and m1 is None,
          "alice/two got %s, alice/one (-1) got %s" % (m2 is not None,
                                                       m1 is not None))

    # --- the server stamps 'from' (RFC 6120 §8.1.2.1).  A session of its
    # own, so that a server closing it does not spoil the later steps.
    sp, out = await login(bob, pw_b, "spoofer")
    if check("spoofing session starts", out[0] == "session", repr(out)):
        await send_chat(sp, a2.boundjid.full, "spoofed",
                        mfrom="%s/evil" % bare(alice))
        m = await a2.next_message(body_is("spoofed"))
        check("spoofed 'from' is replaced by the sender's full JID",
              m is not None and m["from"].full == sp.boundjid.full,
              "got from=%s; spoofing session %s" % (
                  m["from"] if m is not None else "nothing",
                  "was closed by the server" if sp.closed else "is open"))
    await sp.finish()

    # --- unknown local user: RFC 6121 §8.5.2.2 / §8.5.3.2
    ghost = bare(harness.unique("ghost"))
    await send_chat(b1, ghost, "anyone there?")
    m = await b1.next_message(lambda x: x["type"] == "error")
    check("message to an unknown user bounces with <service-unavailable/>",
          m is not None and m["error"]["condition"] == "service-unavailable",
          "got %s" % m)
    if m is not None:
        check("the bounce comes from the unknown user's JID",
              m["from"].bare == ghost, "from=%s" % m["from"])
    # (A ping would do too, but some servers answer pings to any bare JID.)
    r, err = await iq_call(b1["xep_0092"].get_version(ghost, timeout=STEP))
    check("IQ (version) to an unknown user gives <service-unavailable/>",
          err == "service-unavailable", "reply %s / %s" % (err, r))

    # --- the server's own services
    r, err = await iq_call(b1["xep_0199"].send_ping(srv.domain,
                                                    timeout=STEP))
    check("xep0199: server answers ping with a result",
          err is None and r["type"] == "result", "error %s, reply %s"
          % (err, r))

    r, err = await iq_call(b1["xep_0092"].get_version(srv.domain,
                                                      timeout=STEP))
    name = r["software_version"]["name"] if err is None else None
    check("xep0092: server answers version with a name", err is None
          and bool(name), "error %s, reply %s" % (err, r))

    r, err = await iq_call(b1["xep_0030"].get_info(
        jid=srv.domain, local=False, cached=False, timeout=STEP))
    if check("xep0030: server answers disco#info", err is None,
             "error %s, reply %s" % (err, r)):
        feats = set(r["disco_info"]["features"])
        idents = set((i[0], i[1]) for i in r["disco_info"]["identities"])
        for f in ("http://jabber.org/protocol/disco#info", "urn:xmpp:ping",
                  "jabber:iq:version", "urn:xmpp:time", "jabber:iq:register"):
            check("xep0030: server advertises feature %s" % f, f in feats,
                  "features %s" % sorted(feats))
        check("xep0030: server identity is server/im",
              ("server", "im") in idents, "identities %s" % idents)
    r, err = await iq_call(b1["xep_0030"].get_items(
        jid=srv.domain, local=False, timeout=STEP))
    check("xep0030: server answers disco#items", err is None,
          "error %s, reply %s" % (err, r))

    r, err = await iq_call(b1["xep_0202"].get_entity_time(srv.domain,
                                                          timeout=STEP))
    if check("xep0202: server answers time", err is None,
             "error %s, reply %s" % (err, r)):
        # Parsed here: slixmpp 1.8.3 rejects the 'Z' suffix XEP-0082 uses.
        tnode = r.xml.find("{urn:xmpp:time}time")
        utc = tnode.findtext("{urn:xmpp:time}utc") if tnode is not None \
            else None
        tzo = tnode.findtext("{urn:xmpp:time}tzo") if tnode is not None \
            else None
        mt = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z",
                          utc or "")
        check("xep0202: <utc/> is an XEP-0082 DateTime in UTC ('Z')",
              mt is not None, "utc %r in %s" % (utc, r))
        check("xep0202: <tzo/> is Z or [+-]hh:mm",
              re.fullmatch(r"Z|[+-]\d\d:\d\d", tzo or "") is not None,
              "tzo %r" % tzo)
        if mt:
            when = datetime.datetime.strptime(mt.group(1), "%Y-%m-%dT%H:%M:%S")
            now = datetime.datetime.utcnow()
            skew = abs((now - when).total_seconds())
            check("xep0202: server time is within 60 s of ours", skew < 60,
                  "skew %.1f s, reply %s" % (skew, r))

    iq = b1.Iq()
    iq["type"] = "get"
    iq["to"] = srv.domain
    iq.append(ET.fromstring("<query xmlns='urn:example:parley:no-such'/>"))
    r, err = await iq_call(iq.send(timeout=STEP))
    check("unknown IQ to the server gives <service-unavailable/>",
          err == "service-unavailable", "reply %s / %s" % (err, r))

    for c in (a1, a2, b1):
        await c.finish()

    # --- XEP-0077 password change
    a1, out = await login(alice, pw_a, "pw")
    new_pw = "n3w-Pass!"
    if check("login before the password change", out[0] == "session",
             "outcome %r" % (out,)):
        r, err = await iq_call(a1["xep_0077"].change_password(
            new_pw, jid=srv.domain, timeout=STEP))
        check("xep0077: password change is accepted", err is None,
              "error %s, reply %s" % (err, r))
    await a1.finish()
    c, out = await login(alice, new_pw, "new")
    check("login with the new password works", out[0] == "session",
          "outcome %r" % (out,))
    await c.finish()
    check_keys("xep0077: the password change replaces the digest keys",
               alice, new_pw)
    c, out = await login(alice, pw_a, "old", mech="SCRAM-SHA-1")
    check("login with the old password fails (not-authorized)",
          out == ("failed_auth", "not-authorized"), "outcome %r" % (out,))
    await c.finish()

    # --- XEP-0077 account removal
    b1, out = await login(bob, pw_b, "rm")
    if check("login before the account removal", out[0] == "session",
             "outcome %r" % (out,)):
        # XEP-0077 §3.2: no 'to'; the server answers, then may close
        # the stream, so the result can race the close: either is success.
        r, err = await iq_call(b1["xep_0077"].cancel_registration(
            timeout=STEP))
        check("xep0077: account removal is accepted",
              err is None or (err in ("timeout", "cancelled (stream closed)")
                             and b1.closed),
              "error %s, reply %s" % (err, r))
    await b1.finish()
    c, out = await login(bob, pw_b, "gone")
    check("login after account removal fails (not-authorized)",
          out == ("failed_auth", "not-authorized"), "outcome %r" % (out,))
    await c.finish()
    if not srv.reference:
        rc, text = srv.ctl("list", srv.domain)
        check("parleyctl list no longer shows the removed user",
              rc == 0 and bare(bob) not in text.split()
              and bare(alice) in text.split(),
              "exit %s, output %r" % (rc, text[-300:]))
        check("the removed account's digest keys are gone",
              digest_keys(bob) == {}, "stored %r" % (digest_keys(bob),))
    c, out = await login(alice, new_pw, "after", priority=0)
    if out[0] == "session":
        await send_chat(c, bare(bob), "are you gone?")
        m = await c.next_message(lambda x: x["type"] == "error")
        check("message to a removed user bounces with <service-unavailable/>",
              m is not None
              and m["error"]["condition"] == "service-unavailable",
              "got %s" % m)
    await c.finish()

    # --- parleyctl adduser and passwd store the digest keys too
    if not srv.reference:
        carol, pw_c = harness.unique("carol"), "c4rol pass"
        rc, text = srv.ctl("adduser", bare(carol), pw_c)
        check("parleyctl adduser", rc == 0, "exit %s: %s" % (rc, text))
        check_keys("parleyctl adduser stores the digest keys", carol, pw_c)
        pw_c2 = "second:pass"
        rc, text = srv.ctl("passwd", bare(carol), pw_c2)
        check("parleyctl passwd", rc == 0, "exit %s: %s" % (rc, text))
        check_keys("parleyctl passwd replaces the digest keys", carol, pw_c2)
        c, out = await login(carol, pw_c2, "ctl", mech="SCRAM-SHA-256")
        check("login with the password parleyctl passwd set",
              out[0] == "session", "outcome %r" % (out,))
        await c.finish()
        # server.digest_md5 = false: SHA-256 only, the MD5 key removed.
        rc, text = srv.ctl("--set", "server.digest_md5=false", "passwd",
                           bare(carol), pw_c)
        check("parleyctl passwd with server.digest_md5 off", rc == 0,
              "exit %s: %s" % (rc, text))
        check_keys("server.digest_md5 = false stores no MD5 key", carol,
                   pw_c, md5=False)


def run():
    global srv
    srv = harness.Server()
    if srv.start():
        try:
            asyncio.run(asyncio.wait_for(main(), 150))
        except asyncio.TimeoutError:
            check("slixmpp suite finishes within 150 s", False, "timed out")
        except Exception as e:  # noqa: BLE001 - report, don't crash
            import traceback
            traceback.print_exc()
            check("slixmpp suite runs without exceptions", False, repr(e))
    harness.finish()


if __name__ == "__main__":
    run()
