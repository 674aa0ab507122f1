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
(both servers' MUC; a service that does not exist: the error exit), a
login right after a room empties succeeds as the ones around it (issue 13:
a server stall there), --json output of every command, usage errors
(exit 2), and a receipt timeout (exit 7).

Long-running commands (listen, presence, room join) run until the test
has seen what it waits for, then get SIGTERM: no fixed durations.
Run with /usr/bin/python3.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import threading
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


def cli(srv, *args, timeout=90, stdin=None):
    # The client's own timeout is generous: in the sanitizer pass it is an
    # ASan build, whose SCRAM (PBKDF2 through OpenSSL, every allocation
    # through ASan's allocator) takes seconds of CPU on a loaded machine.
    # Checks of its timeouts pass their own --timeout (given later, it
    # wins).
    argv = [PARLEY, "--server", srv.host, "--port", str(srv.starttls_port),
            "--timeout", "30"] + list(args)
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


class Bg:
    """A parley command running in the background.  Its stdout lines
    (parsed as JSON where they parse) and stderr lines are collected by
    threads; tests wait for the line they expect, then stop it (SIGTERM:
    it leaves cleanly and exits 0) instead of giving it a fixed time."""

    def __init__(self, srv, *args):
        argv = [PARLEY, "--server", srv.host, "--port",
                str(srv.starttls_port)] + list(args)
        self.p = harness.spawn("parley " + " ".join(args[-3:]), argv,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self.eof = set()
        self.cond = threading.Condition()
        for f, dst in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=self._read, args=(f, dst),
                             daemon=True).start()

    def _read(self, f, dst):
        for ln in f:
            ln = ln.rstrip("\n")
            if dst is self.out:
                try:
                    ln = json.loads(ln)
                except ValueError:
                    ln = {"garbage": ln}
            with self.cond:
                dst.append(ln)
                self.cond.notify_all()
        with self.cond:
            self.eof.add(id(dst))
            self.cond.notify_all()

    def wait(self, pred, timeout=20, stream="out"):
        """The first line matching pred (None after timeout, or once the
        stream ended without one)."""
        src = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ln in src:
                    if pred(ln):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0 or id(src) in self.eof:
                    return None
                self.cond.wait(left)

    def term(self):
        """SIGTERM, without waiting."""
        harness._signal(self.p.pid, signal.SIGTERM)

    def stop(self, timeout=15):
        """SIGTERM; its exit status (None if it had to be killed)."""
        harness.untrack(self.p)
        rc = harness.stop_group(self.p, timeout)
        return None if rc == -signal.SIGKILL else rc

    def end(self, timeout=30):
        """Waits for it to exit by itself; its exit status or None."""
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        harness.untrack(self.p)
        harness.stop_group(self.p, 0)
        return rc


def listen(srv, acct, *args):
    """parley listen, until stopped; returns once it says it listens
    (its presence is sent by then)."""
    b = Bg(srv, "--ca-file", srv.ca, *acct, "listen", "--for", "300",
           *args)
    b.wait(lambda ln: "listening as" in ln, 30, stream="err")
    return b


def timed_login(srv, acct):
    """Seconds a complete `parley ping` takes (connect, TLS, SASL, bind,
    ping, logout); None if it failed."""
    t0 = time.monotonic()
    rc, out, err = cli(srv, *acct, "ping")
    return time.monotonic() - t0 if rc == 0 else None


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
    pb = listen(srv, B)
    rc, out, err = cli(srv, *A, "subscribe", bj)
    check(T + "subscribe", rc == 0, (rc, out, err))
    got = pb.wait(lambda g: g.get("kind") == "presence" and
                  g.get("type") == "subscribe" and
                  (g.get("from") or "").startswith(aj))
    check(T + "listen shows the subscription request as JSON",
          got is not None, pb.out)
    check(T + "listen exits 0 on SIGTERM", pb.stop() == 0, pb.err)
    rc, out, err = cli(srv, *B, "--json", "approve", aj)
    check(T + "approve", rc == 0 and jout(out) == {"sent": "subscribed",
                                                   "to": aj}, (rc, out, err))
    sub = []

    def subscription_to():
        rc, out, err = cli(srv, *A, "--json", "roster", "list")
        sub[:] = [i.get("subscription") for i in
                  (jout(out) or {}).get("items", []) if i["jid"] == bj]
        return sub == ["to"]
    check(T + "after approval alice's roster says subscription 'to'",
          harness.wait_for(subscription_to, 30, 0.2), sub)

    # presence: alice listens, bob is away then busy, each until alice
    # has seen it
    pa = listen(srv, A)

    def bob_pres(pred):
        return pa.wait(lambda g: g.get("kind") == "presence" and
                       (g.get("from") or "").startswith(bj) and pred(g))
    p1 = Bg(srv, "--ca-file", srv.ca, *B, "--json", "presence", "away",
            "--status", "at lunch", "--for", "300")
    away = bob_pres(lambda g: g.get("show") == "away")
    rc1 = p1.stop()
    gone1 = bob_pres(lambda g: g.get("type") == "unavailable")
    p2 = Bg(srv, "--ca-file", srv.ca, *B, "presence", "busy", "--for", "300")
    dnd = bob_pres(lambda g: g.get("show") == "dnd")
    rc2 = p2.stop()
    check(T + "presence away with status text reaches a subscriber",
          rc1 == 0 and away is not None and
          away.get("status") == "at lunch", (rc1, p1.err, pa.out))
    check(T + "presence --json", p1.out[:1] == [
        {"presence": "away", "show": "away", "status": "at lunch"}], p1.out)
    check(T + "presence busy is <show>dnd</show>",
          rc2 == 0 and dnd is not None, (rc2, p2.err, pa.out))
    check(T + "leaving sends unavailable presence", gone1 is not None,
          pa.out)
    pa.stop()

    # messages, receipts, JSON payloads
    pb = listen(srv, B)
    rc, out, err = cli(srv, *A, "--json", "send", bj, "hello bob",
                       "--receipt")
    check(T + "send --receipt gets the XEP-0184 receipt from listen",
          rc == 0 and (jout(out) or {}).get("receipt") is True,
          (rc, out, err))
    rc2, out2, err2 = cli(srv, *A, "send", bj, "--type", "normal",
                          "--json-payload", '{"cmd": "x", "n": [1, 2]}')
    chat = pb.wait(lambda g: g.get("kind") == "message" and
                   g.get("body") == "hello bob")
    payload = pb.wait(lambda g: g.get("kind") == "message" and
                      g.get("json") == {"cmd": "x", "n": [1, 2]})
    pb.stop()
    check(T + "listen prints the chat message",
          chat is not None and chat.get("type") == "chat", pb.out)
    check(T + "listen parses the XEP-0335 payload",
          rc2 == 0 and payload is not None, (rc2, err2, pb.out))
    check(T + "listen prints stanzas only (no XEP-0198 <enabled/>, <r/>)",
          pb.out and all(g.get("kind") in STANZAS for g in pb.out), pb.out)
    # --count counts stanzas only: bob listens for exactly two messages to
    # his full JID, and the stream's XEP-0198 traffic (<enabled/>, and the
    # <r/> parleyd sends after each stanza) must neither show nor count.
    pc = listen(srv, B + ["--resource", "count"], "--no-presence",
                "--count", "2")
    rcs = [cli(srv, *A, "send", bj + "/count", "n%d" % i)[0]
           for i in (1, 2)]
    rc_end = pc.end(30)
    check(T + "listen --count 2 prints the two messages and stops",
          rcs == [0, 0] and rc_end == 0 and
          [(g.get("kind"), g.get("body")) for g in pc.out] ==
          [("message", "n1"), ("message", "n2")], (rcs, rc_end, pc.out))
    rc, out, err = cli(srv, *A, "send", bj, "--json-payload", "{bad")
    check(T + "send refuses a payload that is not JSON (exit 2)", rc == 2,
          (rc, err))
    # (--timeout bounds the login too: long enough for that, and it must
    # be the receipt that timed out.)
    rc, out, err = cli(srv, *A, "--timeout", "8", "send", bj, "anyone?",
                       "--receipt")
    check(T + "no receipt in time exits 7", rc == 7 and
          "no receipt in time" in err, (rc, err))

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
    # A login before the room part is the baseline of the one after it.
    base = [timed_login(srv, A) for _ in range(3)]
    room = "r%s@conference.localhost" % alice[-6:]
    pb = Bg(srv, "--ca-file", srv.ca, *B, "--json", "room", "join",
            room + "/bob", "--for", "300")
    # Bob's first line says he is in (he creates the room): only then
    # may alice join, or she would create it (a loaded machine).
    first = pb.wait(lambda g: "joined" in g, 30)
    rc, out, err = cli(srv, *A, "--json", "room", "join",
                       room + "/alice", "--say", "hi room")
    check(T + "room join and say", first is not None and rc == 0 and
          jout(out.splitlines()[0] if out else "") ==
          {"joined": room + "/alice", "created": False}, (rc, out, err))
    said = pb.wait(lambda m: m.get("kind") == "message" and
                   m.get("type") == "groupchat" and
                   m.get("body") == "hi room" and
                   m.get("from") == room + "/alice")
    # Issue 13: a login right after a room emptied timed out (the server
    # looked stalled).  Bob leaves (SIGTERM: his unavailable presence goes
    # out at once and the room, empty, goes) while alice logs in: her
    # login overlaps whatever the server does then, and must succeed, as
    # the logins just before and after it do.  Their times are noted, not
    # compared: on a loaded machine (the sanitizer pass beside other
    # scripts) one login can take seconds with nothing wrong, and a
    # timed check then fails now and then.
    pb.term()
    after = timed_login(srv, A)
    rc = pb.stop()
    check(T + "another occupant sees the groupchat message",
          said is not None, (pb.out, pb.err))
    check(T + "room join exits 0 when stopped", rc == 0, (rc, pb.err))
    base += [timed_login(srv, A) for _ in range(2)]
    ok = None not in base and after is not None
    times = "around %s, right after %s" % (
        ["%.2f" % b if b is not None else "failed" for b in base],
        "%.2f" % after if after is not None else "failed")
    note(T + "login seconds: " + times)
    check(T + "a login right after a room empties succeeds, as the ones "
          "around it do", ok, times)

    rc, out, err = cli(srv, *A, "--json", "roster", "remove", bj)
    rc2, out2, err2 = cli(srv, *A, "--json", "roster", "list")
    check(T + "roster remove", rc == 0 and bj not in out2,
          (rc, out, out2))


def serving(srv):
    """True once the server answers a stream header with features."""
    c = None
    try:
        c = harness.RawClient(srv.host, srv.starttls_port, srv.domain,
                              timeout=3)
        c.open_stream()
        return c.features() is not None
    except (OSError, harness.StreamClosed, TimeoutError):
        return False
    finally:
        if c:
            c.close()


def main():
    srv = harness.Server()
    if srv.start():
        suite(srv, "parleyd")
    srv.stop()
    if subprocess.run(["which", "prosody"], capture_output=True).returncode:
        check("prosody is installed (scripts/bootstrap --test)", False)
        harness.finish()
    pro = ProsodyServer()
    if pro.start() and check("prosody answers a stream header",
                             harness.wait_for(lambda: serving(pro), 15)):
        suite(pro, "prosody")
    harness.finish()


main()
