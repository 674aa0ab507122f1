#!/usr/bin/python3
"""test_cli.py - the parley command-line client, command by command,
against parleyd and against Prosody (any standard server must do).

For each server: register (and its conflict), login failures (bad
password: exit 5; untrusted certificate: exit 4; refused port: exit 3),
--ca-file, ping, roster add/list/remove, subscribe/approve, presence
(online, away, busy, status text) seen by a contact's `listen`, send with
an XEP-0184 receipt and an XEP-0335 JSON payload, `listen` JSON lines
(stanzas only: no XEP-0198 <enabled/> or <r/>, and --count counts stanzas),
vCard set/get, user search (parleyd: XEP-0055), joining a room and talking
(Prosody's MUC; parleyd has no MUC service: the error exit), --json output
of every command, usage errors (exit 2), and a receipt timeout (exit 7).
Run with /usr/bin/python3.
"""

import glob
import json
import os
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402

PARLEY = harness._abs(os.environ.get(
    "PARLEY_CLI", os.path.join(os.path.dirname(harness._abs(os.environ.get(
        "PARLEYD", os.path.join(harness.BUILD, "parleyd")))), "parley")))


class ProsodyServer(harness.Server):
    """Prosody 0.12 with MUC and vcard-temp, on the harness's ports."""

    def __init__(self):
        super().__init__(label="prosody")
        self.reference = "prosody"

    def _prosody_config(self):
        conf = super()._prosody_config()
        conf = conf.replace('"version", "time", "ping",',
                            '"version", "time", "ping", "vcard",')
        return conf + '\nComponent "conference.localhost" "muc"\n'


# What `parley listen` may print: stanzas (RFC 6120 §8), nothing else.
STANZAS = ("message", "presence", "iq")


def cli(srv, *args, timeout=30, stdin=None):
    argv = [PARLEY, "--server", srv.host, "--port", str(srv.starttls_port),
            "--timeout", "8"] + list(args)
    try:
        p = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout, input=stdin)
    except subprocess.TimeoutExpired as e:
        return None, "", str(e)
    return p.returncode, p.stdout, p.stderr


def jout(out):
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def listen(srv, acct, *args):
    argv = [PARLEY, "--server", srv.host, "--port", str(srv.starttls_port),
            "--ca-file", srv.ca] + acct + ["listen"] + list(args)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    # Wait for "listening as" on stderr: presence is sent by then.
    line = p.stderr.readline()
    return p, line


def lines(p, timeout=20):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    res = []
    for ln in out.splitlines():
        try:
            res.append(json.loads(ln))
        except ValueError:
            res.append({"garbage": ln})
    return res


def suite(srv, name):
    T = "[%s] " % name
    certs = glob.glob(os.path.join(srv.dir, "var", "certs", "*.crt")) + \
        glob.glob(os.path.join(srv.dir, "certs", "*.crt"))
    srv.ca = certs[0] if certs else ""
    alice, bob = harness.unique("alice"), harness.unique("bob")
    aj, bj = alice + "@localhost", bob + "@localhost"
    A = ["--ca-file", srv.ca, "--jid", aj, "--password", "pa"]
    B = ["--ca-file", srv.ca, "--jid", bj, "--password", "pb"]

    rc, out, err = cli(srv, "--ca-file", srv.ca, "register", aj, "pa")
    check(T + "register creates an account", rc == 0 and
          "registered" in out, (rc, out, err))
    rc, out, err = cli(srv, "--ca-file", srv.ca, "--json", "register", bj,
                       "pb")
    check(T + "register --json", rc == 0 and jout(out) == {"registered": bj},
          (rc, out, err))
    rc, out, err = cli(srv, "--ca-file", srv.ca, "--json", "register", aj,
                       "px")
    check(T + "register of an existing account exits 8", rc == 8 and
          jout(out) and "conflict" in jout(out).get("error", ""),
          (rc, out, err))
    rc, out, err = cli(srv, "--ca-file", srv.ca, "--jid", aj, "--password",
                       "wrong", "ping")
    check(T + "a bad password exits 5", rc == 5, (rc, err))
    rc, out, err = cli(srv, "--jid", aj, "--password", "pa", "ping")
    check(T + "an untrusted certificate exits 4 (verification is on)",
          rc == 4, (rc, err))
    rc, out, err = cli(srv, "--jid", aj, "--password", "pa", "--insecure",
                       "--port", str(harness.free_ports(1)[0]), "ping")
    check(T + "a refused connection exits 3", rc == 3, (rc, err))
    rc, out, err = cli(srv, *A, "--json", "ping")
    check(T + "ping the server with --ca-file", rc == 0 and
          jout(out) and "ms" in jout(out), (rc, out, err))
    rc, out, err = cli(srv, *A, "frobnicate")
    check(T + "an unknown command exits 2", rc == 2, (rc, err))
    rc, out, err = cli(srv, "ping")
    check(T + "no account exits 2", rc == 2, (rc, err))
    rc, out, err = cli(srv, "--ca-file", srv.ca, "--jid", aj, "--password",
                       "-", "ping", stdin="pa\n")
    check(T + "--password - reads the password from stdin", rc == 0,
          (rc, err))

    # roster
    rc, out, err = cli(srv, *A, "--json", "roster", "add", bj, "--name",
                       "Bob", "--group", "Friends")
    check(T + "roster add", rc == 0 and jout(out) and
          jout(out).get("added") == bj, (rc, out, err))
    rc, out, err = cli(srv, *A, "--json", "roster", "list")
    items = (jout(out) or {}).get("items", [])
    check(T + "roster list --json shows name and group",
          any(i["jid"] == bj and i.get("name") == "Bob" and
              i.get("groups") == ["Friends"] for i in items), (rc, out, err))
    rc, out, err = cli(srv, *A, "roster", "list")
    check(T + "roster list (text)", rc == 0 and bj in out, (rc, out))

    # subscription: bob listens, alice subscribes, bob approves
    pb, _ = listen(srv, B, "--for", "4")
    rc, out, err = cli(srv, *A, "subscribe", bj)
    check(T + "subscribe", rc == 0, (rc, out, err))
    got = lines(pb)
    check(T + "listen shows the subscription request as JSON",
          any(g.get("kind") == "presence" and g.get("type") == "subscribe"
              and (g.get("from") or "").startswith(aj) for g in got), got)
    rc, out, err = cli(srv, *B, "--json", "approve", aj)
    check(T + "approve", rc == 0 and jout(out) == {"sent": "subscribed",
                                                   "to": aj}, (rc, out, err))
    sub = None
    for _ in range(20):
        rc, out, err = cli(srv, *A, "--json", "roster", "list")
        sub = [i.get("subscription") for i in
               (jout(out) or {}).get("items", []) if i["jid"] == bj]
        if sub == ["to"]:
            break
        time.sleep(0.2)
    check(T + "after approval alice's roster says subscription 'to'",
          sub == ["to"], sub)

    # presence: alice listens, bob is away then busy
    # (alice listens long enough for two logins on a loaded machine)
    pa, _ = listen(srv, A, "--for", "14")
    rc1, out1, err1 = cli(srv, *B, "--json", "presence", "away", "--status",
                          "at lunch", "--for", "1.5")
    rc2, out2, err2 = cli(srv, *B, "presence", "busy", "--for", "1.5")
    got = lines(pa, timeout=30)
    pres = [g for g in got if g.get("kind") == "presence" and
            (g.get("from") or "").startswith(bj)]
    check(T + "presence away with status text reaches a subscriber",
          rc1 == 0 and any(g.get("show") == "away" and
                           g.get("status") == "at lunch" for g in pres),
          (rc1, err1, pres))
    check(T + "presence --json", jout(out1) == {"presence": "away",
                                                "show": "away",
                                                "status": "at lunch"}, out1)
    check(T + "presence busy is <show>dnd</show>",
          rc2 == 0 and any(g.get("show") == "dnd" for g in pres), pres)
    check(T + "leaving sends unavailable presence",
          any(g.get("type") == "unavailable" for g in pres), pres)

    # messages, receipts, JSON payloads
    pb, _ = listen(srv, B, "--for", "4")
    rc, out, err = cli(srv, *A, "--json", "send", bj, "hello bob",
                       "--receipt")
    check(T + "send --receipt gets the XEP-0184 receipt from listen",
          rc == 0 and (jout(out) or {}).get("receipt") is True,
          (rc, out, err))
    rc2, out2, err2 = cli(srv, *A, "send", bj, "--type", "normal",
                          "--json-payload", '{"cmd": "x", "n": [1, 2]}')
    got = lines(pb)
    msgs = [g for g in got if g.get("kind") == "message"]
    check(T + "listen prints the chat message",
          any(g.get("body") == "hello bob" and g.get("type") == "chat"
              for g in msgs), got)
    check(T + "listen parses the XEP-0335 payload",
          rc2 == 0 and any(g.get("json") == {"cmd": "x", "n": [1, 2]}
                           for g in msgs), (rc2, err2, msgs))
    check(T + "listen prints stanzas only (no XEP-0198 <enabled/>, <r/>)",
          got and all(g.get("kind") in STANZAS for g in got), got)
    # --count counts stanzas only: bob listens for exactly two messages to
    # his full JID, and the stream's XEP-0198 traffic (<enabled/>, and the
    # <r/> parleyd sends after each stanza) must neither show nor count.
    pb, _ = listen(srv, B + ["--resource", "count"], "--no-presence",
                   "--count", "2", "--for", "25")
    t0 = time.time()
    rcs = [cli(srv, *A, "send", bj + "/count", "n%d" % i)[0]
           for i in (1, 2)]
    got = lines(pb, timeout=30)
    check(T + "listen --count 2 prints the two messages and stops",
          rcs == [0, 0] and pb.returncode == 0 and time.time() - t0 < 20 and
          [(g.get("kind"), g.get("body")) for g in got] ==
          [("message", "n1"), ("message", "n2")], (rcs, pb.returncode, got))
    rc, out, err = cli(srv, *A, "send", bj, "--json-payload", "{bad")
    check(T + "send refuses a payload that is not JSON (exit 2)", rc == 2,
          (rc, err))
    rc, out, err = cli(srv, *A, "--timeout", "1.5", "send", bj, "anyone?",
                       "--receipt")
    check(T + "no receipt in time exits 7", rc == 7, (rc, err))

    # vCard
    rc, out, err = cli(srv, *A, "vcard", "set", "FN=Alice Liddell",
                       "N/GIVEN=Alice", "NICKNAME=" + alice[:8])
    check(T + "vcard set", rc == 0, (rc, out, err))
    rc, out, err = cli(srv, *A, "--json", "vcard", "get")
    v = (jout(out) or {}).get("vcard", {})
    check(T + "vcard get (own)", rc == 0 and v.get("FN") == "Alice Liddell"
          and v.get("N/GIVEN") == "Alice", (rc, out, err))
    rc, out, err = cli(srv, *B, "vcard", "get", aj)
    check(T + "vcard get of a contact (text)",
          rc == 0 and "FN=Alice Liddell" in out, (rc, out, err))

    if name == "parleyd":
        rc, out, err = cli(srv, *B, "--json", "search",
                           "nick=" + alice[:8])
        items = (jout(out) or {}).get("items", [])
        check(T + "search finds the user by nickname (XEP-0055)",
              rc == 0 and [i["jid"] for i in items] == [aj], (rc, out, err))
        rc, out, err = cli(srv, *A, "--json", "room", "join",
                           "r@nosuch.localhost/al")
        check(T + "room join without a room service exits 6 with the "
              "condition", rc == 6 and (jout(out) or {}).get("error"),
              (rc, out, err))
    # Rooms: parleyd serves conference.localhost (mod_muc), as Prosody does.
    room = "r%s@conference.localhost" % alice[-6:]
    pb = subprocess.Popen(
        [PARLEY, "--server", srv.host, "--port", str(srv.starttls_port),
         "--ca-file", srv.ca] + B +
        ["room", "join", room + "/bob", "--for", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Bob's first line says he is in (he creates the room): only then
    # may alice join, or she would create it (a loaded machine).
    first = ""
    if select.select([pb.stdout], [], [], 15)[0]:
        first = pb.stdout.readline()
    rc, out, err = cli(srv, *A, "--json", "room", "join",
                       room + "/alice", "--say", "hi room")
    check(T + "room join and say", rc == 0 and
          jout(out.splitlines()[0] if out else "") ==
          {"joined": room + "/alice", "created": False}, (rc, out, err))
    try:
        bout, berr = pb.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pb.kill()
        bout, berr = pb.communicate()
    said = [json.loads(x) for x in (first + bout).splitlines()[1:]
            if x.startswith("{")]
    check(T + "another occupant sees the groupchat message",
          any(m.get("kind") == "message" and m.get("type") ==
              "groupchat" and m.get("body") == "hi room" and
              m.get("from") == room + "/alice" for m in said),
          (bout, berr))

    rc, out, err = cli(srv, *A, "--json", "roster", "remove", bj)
    rc2, out2, err2 = cli(srv, *A, "--json", "roster", "list")
    check(T + "roster remove", rc == 0 and bj not in out2,
          (rc, out, out2))


def main():
    srv = harness.Server()
    if srv.start():
        suite(srv, "parleyd")
    srv.stop()
    if subprocess.run(["which", "prosody"], capture_output=True).returncode:
        check("prosody is installed (scripts/bootstrap --test)", False)
        harness.finish()
    pro = ProsodyServer()
    if pro.start():
        time.sleep(0.5)
        suite(pro, "prosody")
    harness.finish()


main()
