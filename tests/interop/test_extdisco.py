#!/usr/bin/python3
"""test_extdisco.py - XEP-0215 External Service Discovery with a real
coturn, and XEP-0157 contact addresses.

A coturn (Debian package coturn) runs on a loopback port with
use-auth-secret and the secret Parley is configured with.  Checked: the
services list (all, and filtered by type) with host, port, transport and
restricted; credentials inline and from a <credentials/> request, their
username "<expiry>:<bare JID>" and XEP-0082 'expires' about ttl ahead;
<item-not-found/> and <bad-request/>; a TURN Allocate (RFC 5766, long-term
credentials, written here in a few lines of STUN) with those credentials
succeeds at coturn, and one with a wrong password or an expired username
is refused with 401.  Then the XEP-0157 form in the server's disco#info.

Run with /usr/bin/python3; `scripts/run-tests extdisco`.
"""

import base64
import calendar
import hashlib
import hmac
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import add_users, error_of, login  # noqa: E402

NS = "urn:xmpp:extdisco:2"
E = "{%s}" % NS
SECRET = "s3cret-" + os.urandom(4).hex()
TTL = 600


# ------------------------------------------------------------ STUN / TURN

def attr(t, v):
    pad = (4 - len(v) % 4) % 4
    return struct.pack("!HH", t, len(v)) + v + b"\0" * pad


def parse(data):
    mtype, mlen, _cookie, tid = struct.unpack("!HHI12s", data[:20])
    attrs, i = {}, 20
    while i < 20 + mlen:
        t, n = struct.unpack("!HH", data[i:i + 4])
        attrs[t] = data[i + 4:i + 4 + n]
        i += 4 + n + (4 - n % 4) % 4
    return mtype, attrs


# Sockets whose allocation succeeded stay open to the end: coturn keeps an
# allocation for its lifetime, and a later socket that happened to get the
# same port would be answered 437 (Allocation Mismatch, RFC 8656 §7.2).
_allocated = []


def allocate(port, username, password):
    """TURN Allocate over UDP with long-term credentials; returns the
    response class ('success' or the error code) of the second try."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        req_tr = attr(0x0019, bytes([17, 0, 0, 0]))  # REQUESTED-TRANSPORT

        def send(body):
            tid = os.urandom(12)
            msg = struct.pack("!HHI12s", 0x0003, len(body), 0x2112A442,
                              tid) + body
            s.sendto(msg, ("127.0.0.1", port))
            return parse(s.recv(2048))
        mtype, a = send(req_tr)
        if mtype != 0x0113 or 0x0014 not in a or 0x0015 not in a:
            return "no 401 challenge (type %#x)" % mtype
        realm, nonce = a[0x0014], a[0x0015]
        body = req_tr + attr(0x0006, username.encode()) + \
            attr(0x0014, realm) + attr(0x0015, nonce)
        key = hashlib.md5(b"%s:%s:%s" % (username.encode(), realm,
                                         password.encode())).digest()
        tid = os.urandom(12)
        # MESSAGE-INTEGRITY over the message with its length counted in.
        head = struct.pack("!HHI12s", 0x0003, len(body) + 24, 0x2112A442,
                           tid)
        mac = hmac.new(key, head + body, hashlib.sha1).digest()
        msg = head + body + attr(0x0008, mac)
        s.sendto(msg, ("127.0.0.1", port))
        mtype, a = parse(s.recv(2048))
        if mtype == 0x0103:
            _allocated.append(s)
            s = None
            return "success"
        code = a.get(0x0009, b"\0\0\0\0")
        return str(code[2] * 100 + code[3])
    except OSError as e:
        return "socket: %r" % e
    finally:
        if s is not None:
            s.close()




def main():
    global srv
    turn_port = harness.free_ports(1)[0]
    srv = harness.Server(label="extdisco", extra="""
extdisco: {
  services = ["stun:127.0.0.1:%(p)d", "turn:127.0.0.1:%(p)d?transport=udp",
              "turns:turn.parley.test:5349"];
  secret = "%(s)s"; ttl = %(t)d;
};
contact_info: {
  abuse = ["mailto:abuse@parley.test", "xmpp:abuse@parley.test"];
  admin = ["xmpp:admin@parley.test"];
  security = ["https://parley.test/security"];
};
modules = ["disco", "ping", "roster", "presence", "extdisco",
           "contact_info"];
""" % {"p": turn_port, "s": SECRET, "t": TTL})
    if not check("parleyd starts", srv.start()):
        return
    user = harness.unique("turnuser")
    uj, = add_users(srv, user)
    c = login(srv, user, "r")
    c.drain(0.3)

    info = c.request("<query xmlns='http://jabber.org/protocol/disco#info'/>",
                     to=srv.domain)
    feats = [f.get("var") for f in info.iter(
        "{http://jabber.org/protocol/disco#info}feature")]
    check("disco#info has urn:xmpp:extdisco:2", NS in feats, feats)
    contact_check(info)

    r = c.request("<services xmlns='%s'/>" % NS, to=srv.domain)
    sv = list(r.iter(E + "service")) if r is not None else []
    check("services: three", len(sv) == 3, tostr(r))
    stun = [s for s in sv if s.get("type") == "stun"]
    turn = [s for s in sv if s.get("type") == "turn"]
    turns = [s for s in sv if s.get("type") == "turns"]
    check("stun service: host, port, udp, not restricted, no credentials",
          stun and stun[0].get("host") == "127.0.0.1" and
          stun[0].get("port") == str(turn_port) and
          stun[0].get("transport") == "udp" and
          stun[0].get("restricted") is None and
          stun[0].get("password") is None, [tostr(x) for x in stun])
    check("turns service: default port 5349, tcp, restricted",
          turns and turns[0].get("port") == "5349" and
          turns[0].get("transport") == "tcp" and
          turns[0].get("restricted") == "true", [tostr(x) for x in turns])
    ok = bool(turn) and turn[0].get("restricted") == "true"
    check("turn service is restricted with inline credentials",
          ok and turn[0].get("username") and turn[0].get("password"),
          [tostr(x) for x in turn])
    r = c.request("<services xmlns='%s' type='turn'/>" % NS, to=srv.domain)
    types = [s.get("type") for s in r.iter(E + "service")] if r is not None \
        else None
    check("services type='turn' filter", types == ["turn"], tostr(r))

    r = c.request("<credentials xmlns='%s'><service host='127.0.0.1' "
                  "type='turn'/></credentials>" % NS, to=srv.domain)
    cr = list(r.iter(E + "service")) if r is not None else []
    check("credentials request answered", len(cr) == 1, tostr(r))
    if cr:
        u, pw, exp = cr[0].get("username"), cr[0].get("password"), \
            cr[0].get("expires")
        t, _, who = (u or "").partition(":")
        now = time.time()
        check("username is '<expiry>:<bare JID>' about ttl ahead",
              who == uj and t.isdigit() and abs(int(t) - now - TTL) < 30, u)
        want = base64.b64encode(hmac.new(SECRET.encode(), u.encode(),
                                         hashlib.sha1).digest()).decode()
        check("password is base64(HMAC-SHA1(secret, username))",
              pw == want, (pw, want))
        ok = False
        try:
            ok = calendar.timegm(time.strptime(exp, "%Y-%m-%dT%H:%M:%SZ")) \
                == int(t)
        except (TypeError, ValueError):
            pass
        check("expires is the same instant in XEP-0082 UTC form", ok, exp)
    r = c.request("<credentials xmlns='%s'><service host='nowhere.example' "
                  "type='turn'/></credentials>" % NS, to=srv.domain)
    check("credentials for an unknown service: <item-not-found/>",
          error_of(r) == "item-not-found", tostr(r))
    r = c.request("<credentials xmlns='%s'><service type='turn'/>"
                  "</credentials>" % NS, to=srv.domain)
    check("credentials without host: <bad-request/>",
          error_of(r) == "bad-request", tostr(r))

    # coturn.
    if not shutil.which("turnserver"):
        check("coturn is installed (scripts/bootstrap --test)", False)
        return
    tdir = srv.dir
    proc, _ = None, None
    proc, port = start_coturn_on(tdir, turn_port)
    try:
        res = []

        def answers():  # coturn takes a moment to listen
            res[:] = [allocate(turn_port, "x", "y")]
            return not res[0].startswith("socket")
        harness.wait_for(answers, 10, 0.3)
        check("coturn answers on its loopback port", res == ["401"], res)
        if cr:
            res = allocate(turn_port, u, pw)
            check("coturn accepts the credentials Parley handed out "
                  "(TURN Allocate succeeds)", res == "success", res)
            res = allocate(turn_port, u, pw[:-2] + ("A=" if pw[-2] != "A"
                                                     else "B="))
            check("coturn refuses a wrong password (401)", res == "401", res)
            old = "%d:%s" % (int(time.time()) - 10, uj)
            opw = base64.b64encode(hmac.new(SECRET.encode(), old.encode(),
                                            hashlib.sha1).digest()).decode()
            res = allocate(turn_port, old, opw)
            check("coturn refuses an expired username (401)", res == "401",
                  res)
        if turn and turn[0].get("username"):
            res = allocate(turn_port, turn[0].get("username"),
                           turn[0].get("password"))
            check("inline credentials work at coturn too", res == "success",
                  res)
    finally:
        harness.untrack(proc)
        harness.stop_group(proc, 5)
    c.logout()


def start_coturn_on(dirpath, port):
    log = open(os.path.join(dirpath, "turnserver.log"), "w")
    p = harness.spawn("turnserver", [
        "turnserver", "-n", "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1", "--listening-port=%d" % port,
        "--use-auth-secret", "--static-auth-secret=" + SECRET,
        "--realm=parley.test", "--no-tls", "--no-dtls", "--no-cli",
        "--allow-loopback-peers", "--min-port=49152", "--max-port=49352",
        "--pidfile=" + os.path.join(dirpath, "turnserver.pid"),
        "--log-file=stdout", "--simple-log"],
        stdout=log, stderr=subprocess.STDOUT)
    return p, port


def contact_check(info):
    """XEP-0157: the serverinfo form with the configured addresses."""
    X = "{jabber:x:data}"
    forms = [x for x in info.iter(X + "x")]
    form = None
    for x in forms:
        for f in x.iter(X + "field"):
            if f.get("var") == "FORM_TYPE" and f.findtext(X + "value") == \
                    "http://jabber.org/network/serverinfo":
                form = x
    check("XEP-0157: serverinfo form in disco#info", form is not None,
          tostr(info))
    if form is None:
        return
    fields = {f.get("var"): [v.text for v in f.findall(X + "value")]
              for f in form.findall(X + "field")}
    check("form is type result, FORM_TYPE hidden",
          form.get("type") == "result" and any(
              f.get("type") == "hidden" for f in form.findall(X + "field")
              if f.get("var") == "FORM_TYPE"), tostr(form))
    check("abuse, admin and security addresses as configured, others absent",
          fields.get("abuse-addresses") == ["mailto:abuse@parley.test",
                                            "xmpp:abuse@parley.test"] and
          fields.get("admin-addresses") == ["xmpp:admin@parley.test"] and
          fields.get("security-addresses") ==
          ["https://parley.test/security"] and
          "sales-addresses" not in fields and
          "support-addresses" not in fields, fields)


srv = None
try:
    main()
except Exception:  # noqa: BLE001
    import traceback
    check("test ran to the end", False, traceback.format_exc()[-1500:])
harness.finish()
