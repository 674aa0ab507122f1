#!/usr/bin/python3
"""test_admin_api.py - the HTTP admin API under /api/ (admin_api.c).

Tokens come from parleyctl (token create, list, revoke); the calls go
over http.client to an HTTP listener on loopback (the "admin" service is
served there by default), and one to a listener on 0.0.0.0 (not served).
Checked: every endpoint against what really happened (an account created
logs in, a kicked client's stream ends, an announcement arrives, a
deleted account cannot log in any more), the status codes (201, 202, 400
with a JSON body, 401 with WWW-Authenticate: Bearer for no, a wrong and
a revoked token, 403 for a read-only token writing, 404, 405, 409), and
one info log line per call naming the token.
Run with /usr/bin/python3.
"""

import http.client
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from im_common import add_users, PW  # noqa: E402

C = "{jabber:client}"
# The default modules, plus fleet (push) and admin (sessions, kick,
# announce): a host listing modules must list admin for those.
MODS = ('modules = ["disco", "ping", "version", "time", "register", '
        '"admin", "session", "roster", "presence", "offline", "vcard", '
        '"private", "fleet"];')


class Api:
    def __init__(self, port, token=None):
        self.port = port
        self.token = token

    def call(self, method, path, body=None, raw=None, token=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        headers = {}
        tok = token if token is not None else self.token
        if tok:
            headers["Authorization"] = "Bearer " + tok
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        c.close()
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = None
        return r.status, r, doc


def login(srv, jid, resource):
    c = harness.RawClient(srv.host, srv.starttls_port, srv.domain)
    c.login(jid.split("@")[0], PW, resource)
    c.send("<presence/>")
    return c


def can_login(srv, user, password):
    c = harness.RawClient(srv.host, srv.starttls_port, srv.domain)
    try:
        c.connect_tls()
        el = c.auth_plain(user, password)
        return el.tag.endswith("success")
    except Exception:
        return False
    finally:
        c.close()


def main():
    port, public_port = harness.free_ports(2)
    srv = harness.Server(extra=MODS, listeners_extra=(
        '{ protocol = "http"; address = "127.0.0.1"; port = %d; },\n  '
        '{ protocol = "http"; address = "0.0.0.0"; port = %d; }'
        % (port, public_port)))
    if not srv.start():
        harness.finish()
        return
    alice, bob = add_users(srv, harness.unique("aa"), harness.unique("ab"))

    # -- tokens
    rc, out = srv.ctl("token", "create", "ops")
    token = out.strip()
    check("parleyctl token create prints a token", rc == 0 and
          re.match(r"^plt_[0-9a-f]{64}$", token), out)
    rc, out = srv.ctl("token", "create", "--read-only", "viewer")
    viewer = out.strip()
    check("a read-only token too", rc == 0 and viewer.startswith("plt_"))
    rc, out = srv.ctl("token", "create", "ops")
    check("a second token named ops is refused", rc == 1, out)
    rc, out = srv.ctl("token", "list")
    check("token list names both, with their scope",
          rc == 0 and re.search(r"^ops admin ", out, re.M) and
          re.search(r"^viewer read ", out, re.M), out)
    stored = open(os.path.join(srv.dir, "var", "api_tokens")).read()
    check("the token itself is not stored", token not in stored and
          token[4:] not in stored)
    st = os.stat(os.path.join(srv.dir, "var", "api_tokens"))
    check("the token file is 0600", st.st_mode & 0o777 == 0o600,
          oct(st.st_mode))

    api = Api(port, token)
    log0 = srv.log_size()

    # -- authentication
    s, r, doc = api.call("GET", "/api/stats", token="")
    check("no token: 401 with WWW-Authenticate: Bearer",
          s == 401 and (r.getheader("WWW-Authenticate") or "")
          .startswith("Bearer"), "%s %s" % (s, r.getheader(
              "WWW-Authenticate")))
    check("the 401 has a JSON body", isinstance(doc, dict) and
          doc.get("error") == "not-authorized", str(doc))
    s, r, doc = api.call("GET", "/api/stats", token="plt_" + "0" * 64)
    check("a wrong token: 401 invalid_token", s == 401 and "invalid_token"
          in (r.getheader("WWW-Authenticate") or ""), str(s))
    s, r, doc = api.call("GET", "/api/stats", token=token[:-1])
    check("a truncated token: 401", s == 401, str(s))

    # -- stats
    s, r, doc = api.call("GET", "/api/stats")
    check("GET /api/stats: 200 JSON with counters and memory",
          s == 200 and r.getheader("Content-Type") == "application/json"
          and "stanzas_in" in doc.get("counters", {}) and
          # glibc's heap figure; 0 under AddressSanitizer's allocator
          "heap_in_use" in doc.get("memory", {}), str(s))

    # -- users
    carol = harness.unique("ac") + "@" + srv.domain
    s, r, doc = api.call("POST", "/api/users",
                         {"jid": carol, "password": "s3cret-pw"})
    check("POST /api/users creates: 201", s == 201, "%s %s" % (s, doc))
    check("the new account logs in", can_login(srv, carol.split("@")[0],
                                                "s3cret-pw"))
    s, r, doc = api.call("POST", "/api/users",
                         {"jid": carol, "password": "other"})
    check("creating it again: 409", s == 409 and doc.get("error") ==
          "conflict", "%s %s" % (s, doc))
    s, r, doc = api.call("GET", "/api/users")
    check("GET /api/users lists the accounts", s == 200 and
          {alice, bob, carol} <= set(doc.get("users", [])), str(doc))
    s, r, doc = api.call("GET", "/api/users?host=nowhere.example")
    check("an unknown host: 404", s == 404, str(s))
    s, r, doc = api.call("POST", "/api/users", raw=b"{not json")
    check("a body that is not JSON: 400 with a JSON error",
          s == 400 and doc and doc.get("error") == "bad-request", str(doc))
    s, r, doc = api.call("POST", "/api/users", {"jid": carol})
    check("a missing field: 400", s == 400, str(s))
    s, r, doc = api.call("POST", "/api/users",
                         {"jid": "no-at-sign", "password": "x"})
    check("a bad JID: 400", s == 400, "%s %s" % (s, doc))
    s, r, doc = api.call("DELETE", "/api/users/" + carol)
    check("DELETE /api/users/JID: 200", s == 200, "%s %s" % (s, doc))
    check("the deleted account cannot log in",
          not can_login(srv, carol.split("@")[0], "s3cret-pw"))
    s, r, doc = api.call("DELETE", "/api/users/" + carol)
    check("deleting it again: 404", s == 404, str(s))
    s, r, doc = api.call("PUT", "/api/users", {})
    check("PUT /api/users: 405", s == 405, str(s))
    s, r, doc = api.call("DELETE", "/api/sessions")
    check("DELETE /api/sessions: 405 with Allow", s == 405 and
          "GET" in (r.getheader("Allow") or ""), "%s %s" % (
              s, r.getheader("Allow")))
    s, r, doc = api.call("GET", "/api/nothing-here")
    check("an unknown endpoint: 404", s == 404, str(s))

    # -- sessions, announce, kick
    ca = login(srv, alice, "desk")
    cb = login(srv, bob, "phone")
    s, r, doc = api.call("GET", "/api/sessions")
    jids = {x.get("jid"): x for x in (doc or {}).get("sessions", [])}
    check("GET /api/sessions lists both sessions with their transport",
          s == 200 and jids.get(alice + "/desk", {}).get("transport") ==
          "c2s" and bob + "/phone" in jids, str(doc))
    s, r, doc = api.call("POST", "/api/announce",
                         {"host": srv.domain, "subject": "Maintenance",
                          "body": "down at noon"})
    check("POST /api/announce reaches both", s == 200 and
          doc.get("delivered") == 2, "%s %s" % (s, doc))
    for c, who in ((ca, "alice"), (cb, "bob")):
        m = c.next(lambda e: e.tag == C + "message" and
                   e.findtext(C + "body") == "down at noon", timeout=10)
        check("%s got the announcement from the host" % who,
              m is not None and m.get("from") == srv.domain and
              m.findtext(C + "subject") == "Maintenance")
    s, r, doc = api.call("POST", "/api/announce", {"host": srv.domain})
    check("an announcement without body: 400", s == 400, str(s))
    s, r, doc = api.call("POST", "/api/sessions/%s/phone/kick" % bob,
                         {"text": "bye"})
    check("POST /api/sessions/FULLJID/kick: 200, one session", s == 200 and
          doc.get("kicked") == 1, "%s %s" % (s, doc))
    try:
        cb.read_until_closed(timeout=10)
        closed = True
    except Exception:
        closed = False
    check("the kicked client's stream ended", closed)
    s, r, doc = api.call("POST", "/api/sessions/%s/kick" % bob)
    check("kicking a user with no session: 404", s == 404, str(s))
    s, r, doc = api.call("GET", "/api/sessions")
    check("the kicked session is gone from the list", s == 200 and
          bob + "/phone" not in [x["jid"] for x in doc["sessions"]])

    # -- fleet push
    s, r, doc = api.call("POST", "/api/fleet/push",
                         {"all": True, "payload": {"cmd": "noop"}})
    check("POST /api/fleet/push: 202 with an id", s == 202 and
          doc and doc.get("id"), "%s %s" % (s, doc))
    if s == 202 and doc.get("id"):
        s, r, doc2 = api.call("GET", "/api/fleet/push/" + doc["id"])
        check("GET /api/fleet/push/ID: its counts", s == 200 and
              "delivered" in doc2, "%s %s" % (s, doc2))
    s, r, doc = api.call("POST", "/api/fleet/push", {"all": True})
    check("a push without payload: 400", s == 400, str(s))

    # -- scopes and revocation
    ro = Api(port, viewer)
    s, r, doc = ro.call("GET", "/api/sessions")
    check("a read-only token may read", s == 200, str(s))
    s, r, doc = ro.call("POST", "/api/announce",
                        {"host": srv.domain, "body": "x"})
    check("a read-only token may not write: 403", s == 403, str(s))
    rc, out = srv.ctl("token", "revoke", "viewer")
    check("parleyctl token revoke", rc == 0, out)
    s, r, doc = ro.call("GET", "/api/sessions")
    check("a revoked token: 401", s == 401, str(s))
    rc, out = srv.ctl("token", "revoke", "viewer")
    check("revoking it again fails", rc == 1, out)
    s, r, doc = api.call("GET", "/api/stats")
    check("the other token still works", s == 200, str(s))

    # -- the API is not served on a public listener
    s, r, doc = Api(public_port, token).call("GET", "/api/stats")
    check("/api/ on a listener on 0.0.0.0: 404", s == 404, str(s))

    # -- the log
    log = srv.log_text(log0)
    check("calls are logged with the token's name",
          re.search(r"admin_api.*token ops: POST /api/users: 201", log) and
          re.search(r"admin_api.*token ops: DELETE /api/users/\S+: 200",
                    log) and
          re.search(r"admin_api.*token viewer: POST /api/announce: 403",
                    log), log[-2000:])
    check("refused calls are logged too",
          len(re.findall(r"admin_api.*token -: GET /api/\S+: 401", log))
          >= 4, "")
    # -- parleyctl reaches the same operations through the admin socket
    rc, out = srv.ctl("sessions", "--json")
    check("parleyctl sessions lists alice's session", rc == 0 and
          alice + "/desk" in out, out)
    rc, out = srv.ctl("announce", srv.domain, "from the shell")
    check("parleyctl announce delivers to one session",
          rc == 0 and out.strip() == "1", out)
    m = ca.next(lambda e: e.tag == C + "message" and
                e.findtext(C + "body") == "from the shell", timeout=10)
    check("alice got it", m is not None)
    rc, out = srv.ctl("kick", alice)
    check("parleyctl kick ends alice's session", rc == 0 and
          out.strip() == "1", out)
    check("alice's stream ended", ca.read_until_closed(timeout=10))
    ca.close()
    harness.finish()


if __name__ == "__main__":
    main()
