#!/usr/bin/python3
"""test_webclient.py - Parley's web client (Converse.js at /chat/, doc/web.md)
in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright (playwright-core from web/package-lock.json) through
webclient_driver.mjs.

parleyd serves /chat/ and /xmpp-websocket on a plain HTTP listener on
127.0.0.1 declared secure (as loopback is); the browser opens
http://localhost:PORT/chat/ (localhost is a secure context, so the page
has crypto.subtle for SCRAM).  A contact runs slixmpp over TCP, both
subscribed to each other's presence.  Checked:
  - the HTTP answers: /chat redirected to /chat/, the page with its
    Content-Security-Policy and nosniff, ES modules as text/javascript,
    WebAssembly as application/wasm;
  - in the browser: login through the form over WebSocket (an absolute
    ws:// URL, not BOSH), the contact shown online, a message sent that
    the contact receives, one from the contact shown, no CSP violation,
    no request to another origin, no uncaught page error;
  - XEP-0363 upload, when the server offers an upload service: a file
    sent from the page that the contact downloads with the GET URL.  With
    no upload service, only this part is skipped (said so by a note).
A screenshot of the chat is kept: $BUILD/test-artifacts/webclient-chat.png.
Run with /usr/bin/python3.
"""

import asyncio
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note  # noqa: E402
from im_common import LoopThread, EventBox, add_users, make_both, PW  # noqa

import slixmpp  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEB = os.path.join(harness.ROOT, "web")
WEB_DIST = os.path.join(WEB, "dist")
DRIVER = os.path.join(HERE, "webclient_driver.mjs")
STEP = 30          # seconds one browser step may take (ms to the driver)
NS_UPLOAD = "urn:xmpp:http:upload:0"

srv = None


class Contact(slixmpp.ClientXMPP):
    """The contact: slixmpp over STARTTLS; messages land in .inbox."""

    def __init__(self, lt, jid):
        super().__init__(jid + "/slix", PW)
        self.ssl_context = harness.no_verify_context()
        self.use_ipv6 = False
        self.register_plugin("xep_0030")
        harness.slixmpp_without_channel_binding(self)
        self.lt = lt
        self.inbox = EventBox()
        self.started = None
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler(
            "message", lambda m: self.inbox.put(
                (str(m["from"]), m["type"], m["body"],
                 m.xml.findtext("{jabber:x:oob}x/{jabber:x:oob}url"))))

    async def _on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.started.set_result(True)

    def start(self):
        async def go():
            self.started = asyncio.get_running_loop().create_future()
            self.connect((srv.host, srv.starttls_port))
            await asyncio.wait_for(self.started, 60)
        self.lt.run(go(), timeout=65)

    def say(self, to, body):
        async def go():
            self.send_message(mto=to, mbody=body, mtype="chat")
        self.lt.run(go())

    def upload_service(self):
        """The JID of the server's XEP-0363 service, or None."""
        async def go():
            disco = self["xep_0030"]
            items = await disco.get_items(jid=srv.domain, timeout=10)
            for it in items["disco_items"]["items"]:
                info = await disco.get_info(jid=it[0], timeout=10)
                if NS_UPLOAD in info["disco_info"]["features"]:
                    return it[0]
            return None
        return self.lt.run(go(), timeout=30)

    def stop(self):
        async def go():
            self.disconnect()
        try:
            self.lt.run(go(), timeout=10)
        except Exception:  # noqa: BLE001 - best effort at the end
            pass


class Driver:
    """webclient_driver.mjs under Node.js: one JSON command, one answer."""

    def __init__(self, profile, log_path):
        self.log = open(log_path, "w")
        self.proc = harness.spawn(
            "webclient-driver", [shutil.which("node"), DRIVER, WEB, profile],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def do(self, op, timeout=STEP, **kw):
        """The driver's answer (a dict); {"ok": False, ...} on failure."""
        cmd = dict(kw, op=op, timeout=timeout * 1000)
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.lines.get(timeout=timeout + 15)
        except (OSError, queue.Empty) as e:
            return {"ok": False, "error": "driver: %r" % e}
        if line is None:
            return {"ok": False, "error": "driver exited"}
        return json.loads(line)

    def close(self):
        try:
            self.proc.stdin.write('{"op":"close"}\n')
            self.proc.stdin.flush()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            harness.stop_group(self.proc, grace=5)
        self.log.close()


def http_get(port, path):
    """(status, headers, body) of a GET on the web listener, following
    no redirect."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request("http://localhost:%d%s" % (port, path))
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def check_http(port):
    st, hd, _ = http_get(port, "/chat")
    check("/chat is redirected to /chat/", st == 301 and
          hd.get("Location") == "/chat/", "%s %s" % (st, hd.get("Location")))
    st, hd, body = http_get(port, "/chat/")
    csp = hd.get("Content-Security-Policy", "")
    check("/chat/ serves the page", st == 200 and
          hd.get("Content-Type", "").startswith("text/html") and
          b"parley-chat.js" in body, "%s %s" % (st, hd.get("Content-Type")))
    check("the page's CSP: own origin, 'wasm-unsafe-eval', no inline script",
          "default-src 'self'" in csp and "connect-src 'self'" in csp and
          "script-src 'self' 'wasm-unsafe-eval';" in csp and
          "unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", ""), csp)
    check("X-Content-Type-Options: nosniff",
          hd.get("X-Content-Type-Options") == "nosniff",
          str(hd.get("X-Content-Type-Options")))
    st, hd, _ = http_get(port, "/chat/converse/converse.min.js")
    check("Converse's ES module as text/javascript, with the CSP",
          st == 200 and hd.get("Content-Type", "").startswith(
              "text/javascript") and hd.get("Content-Security-Policy") == csp,
          "%s %s" % (st, hd.get("Content-Type")))
    st, hd, _ = http_get(port, "/chat/converse/curve25519_compiled.wasm")
    check("WebAssembly as application/wasm", st == 200 and
          hd.get("Content-Type") == "application/wasm",
          "%s %s" % (st, hd.get("Content-Type")))


# The default modules and XEP-0363 upload (off by default).
MODULES = ('"disco", "ping", "version", "time", "register", "admin", '
           '"session", "roster", "presence", "offline", "vcard", "search", '
           '"private", "csi", "push", "pep", "carbons", "blocking", '
           '"contact_info", "mam", "muc", "upload"')


def without_web_client():
    """parleyd with a web_root that does not exist: it starts, warns, and
    /chat/ is 404 (nothing half-served)."""
    global srv
    (port,) = harness.free_ports(1)
    srv = harness.Server(
        listeners_extra=('{ protocol = "http"; address = "127.0.0.1"; '
                         'port = %d; secure = true; }' % port),
        extra='http: { web_root = "%s"; };'
        % os.path.join(harness.ROOT, "web", "no-such-dist"))
    srv.start()
    st, _, _ = http_get(port, "/chat/")
    check("without the web client's files /chat/ is 404", st == 404, str(st))
    check("...and parleyd says how to build them",
          srv.wait_log(r"make web", 0, 10) is not None)


def main():
    global srv
    missing = [what for what, ok in (
        ("node (scripts/bootstrap)", shutil.which("node")),
        ("/usr/bin/chromium (scripts/bootstrap --test)",
         os.access("/usr/bin/chromium", os.X_OK)),
        ("web/dist (make web)",
         os.path.isfile(os.path.join(WEB_DIST, "index.html"))),
        ("playwright-core (make web)", os.path.isdir(
            os.path.join(WEB, "node_modules", "playwright-core"))),
    ) if not ok]
    unreachable = os.path.join(WEB, ".unreachable")
    if missing and os.path.exists(unreachable):
        # scripts/build-web could not reach the npm registry: the browser
        # test cannot run here; what parleyd does without the files can.
        with open(unreachable) as f:
            why = f.read().strip()
        note("skipped: the browser test (the npm registry cannot be reached"
             " from this machine: %s; missing: %s)" % (why, ", ".join(missing)))
        without_web_client()
        return
    check("the web client and its test tools are there", not missing,
          "missing: " + ", ".join(missing))
    if missing:
        return
    (port,) = harness.free_ports(1)
    srv = harness.Server(
        listeners_extra=('{ protocol = "http"; address = "127.0.0.1"; '
                         'port = %d; secure = true; }' % port),
        extra=('http: { web_root = "%s"; };\n'
               'upload: { url = "http://localhost:%d"; };' % (WEB_DIST, port)),
        host_extra="modules = [%s];" % MODULES,
        c2s_extra="keepalive_interval = 0;")
    srv.start()
    check_http(port)

    alice, bob = add_users(srv, harness.unique("weba"),
                           harness.unique("webb"))
    check("alice and bob subscribed to each other",
          make_both(srv, alice.split("@")[0], bob.split("@")[0]))
    lt = LoopThread()
    contact = Contact(lt, bob)
    contact.start()
    upload_jid = contact.upload_service()

    profile = os.path.join(srv.dir, "chromium-profile")
    os.makedirs(profile)
    drv = Driver(profile, os.path.join(srv.dir, "driver.log"))
    try:
        browse(drv, port, alice, bob, contact, upload_jid)
    finally:
        drv.close()
    # The same page over BOSH (?transport=bosh), in a browser of its own.
    profile2 = os.path.join(srv.dir, "chromium-profile-bosh")
    os.makedirs(profile2)
    drv = Driver(profile2, os.path.join(srv.dir, "driver-bosh.log"))
    try:
        browse_bosh(drv, port, alice, bob, contact)
    finally:
        drv.close()
        contact.stop()
        lt.stop()
        with open(os.path.join(srv.dir, "driver.log")) as f:
            tail = f.read()[-3000:]
        if tail.strip() and harness.failed():
            note("driver's stderr:\n" + tail)


def browse(drv, port, alice, bob, contact, upload_jid):
    url = "http://localhost:%d/chat/" % port
    r = drv.do("open", url=url, timeout=60)
    check("Chromium loads %s and shows the login form" % url,
          r["ok"] and r.get("status") == 200, str(r))
    if not r["ok"]:
        return
    r = drv.do("login", jid=alice, password=PW)
    check("logged in from the page's form (SCRAM, crypto.subtle)", r["ok"],
          str(r))
    if not r["ok"]:
        return
    st = drv.do("state")
    ws = "ws://localhost:%d/xmpp-websocket" % port
    check("the page connected over WebSocket at an absolute ws:// URL",
          st.get("websockets") == [ws], str(st.get("websockets")))
    check("localhost is a secure context with crypto.subtle",
          st.get("secure") is True and st.get("subtle") is True, str(st))

    r = drv.do("wait_online", jid=bob)
    check("the contact is shown online (presence)", r["ok"], str(r))
    r = drv.do("open_chat", jid=bob)
    check("the chat with the contact opens", r["ok"], str(r))
    if not r["ok"]:
        return
    text = "hello from the browser " + harness.unique("m")
    r = drv.do("send", text=text)
    check("a message typed in the page is shown sent", r["ok"], str(r))
    got = contact.inbox.wait(lambda m: m[2] == text, timeout=STEP)
    check("the contact receives it, from alice over WebSocket",
          got is not None and got[0].split("/")[0] == alice and
          got[1] == "chat", str(got))
    reply = "and hello back " + harness.unique("m")
    contact.say(alice, reply)
    r = drv.do("wait_text", text=reply)
    check("the contact's message is shown in the chat", r["ok"], str(r))

    if upload_jid is None:
        note("skipped: XEP-0363 upload from the page (the server offers "
             "no upload service: disco#items of %s lists none with %s)"
             % (srv.domain, NS_UPLOAD))
    else:
        upload(drv, alice, contact, upload_jid)

    shot = os.path.join(srv.dir, "webclient-chat.png")
    r = drv.do("screenshot", path=shot)
    check("a screenshot of the chat is taken", r["ok"] and
          os.path.getsize(shot) > 10000 if r["ok"] else False, str(r))
    if r["ok"]:
        out = os.path.join(harness.ROOT, harness.BUILD, "test-artifacts")
        os.makedirs(out, exist_ok=True)
        shutil.copy(shot, os.path.join(out, "webclient-chat.png"))
        note("screenshot: %s" % os.path.join(out, "webclient-chat.png"))

    st = drv.do("state")
    check("no Content-Security-Policy violation in the page",
          st.get("ok") and not st.get("csp"), str(st.get("csp")))
    check("no request left the page's origin",
          st.get("ok") and not st.get("foreign"), str(st.get("foreign")))
    check("no uncaught error in the page",
          st.get("ok") and not st.get("pageErrors"),
          str(st.get("pageErrors")))


def browse_bosh(drv, port, alice, bob, contact):
    url = "http://localhost:%d/chat/?transport=bosh" % port
    before = srv.counter("bosh_sessions") or 0
    r = drv.do("open", url=url, timeout=60)
    check("Chromium loads the page for BOSH", r["ok"], str(r))
    if not r["ok"]:
        return
    r = drv.do("login", jid=alice, password=PW)
    check("logged in over BOSH from the page's form", r["ok"], str(r))
    if not r["ok"]:
        return
    st = drv.do("state")
    n = srv.counter("bosh_sessions") or 0
    check("the page used BOSH (/http-bind), no WebSocket",
          n > before and not st.get("websockets"),
          "bosh_sessions %s -> %s, websockets %s"
          % (before, n, st.get("websockets")))
    r = drv.do("wait_online", jid=bob)
    check("over BOSH the contact is shown online", r["ok"], str(r))
    r = drv.do("open_chat", jid=bob)
    if not r["ok"]:
        check("over BOSH the chat opens", False, str(r))
        return
    text = "hello over bosh " + harness.unique("m")
    r = drv.do("send", text=text)
    got = contact.inbox.wait(lambda m: m[2] == text, timeout=STEP)
    check("the contact receives a message sent over BOSH",
          r["ok"] and got is not None and got[0].split("/")[0] == alice,
          "%s %s" % (r, got))
    reply = "bosh reply " + harness.unique("m")
    contact.say(alice, reply)
    r = drv.do("wait_text", text=reply)
    check("the contact's message arrives in a held BOSH request", r["ok"],
          str(r))
    st = drv.do("state")
    check("over BOSH: no CSP violation, nothing from another origin",
          st.get("ok") and not st.get("csp") and not st.get("foreign"),
          "%s %s" % (st.get("csp"), st.get("foreign")))


def upload(drv, alice, contact, upload_jid):
    r = drv.do("upload_ready")
    check("the chat offers file upload (%s found)" % upload_jid,
          r["ok"] and r.get("ready"), str(r))
    if not (r["ok"] and r.get("ready")):
        return
    data = os.urandom(50000) + b"parley web upload\n"
    name = harness.unique("upload") + ".bin"
    path = os.path.join(srv.dir, name)
    with open(path, "wb") as f:
        f.write(data)
    r = drv.do("upload", path=path)
    check("a file is chosen in the chat's upload field", r["ok"], str(r))
    # Converse asks a slot, PUTs the file, then sends the GET URL as the
    # body with an XEP-0066 <x xmlns='jabber:x:oob'><url/>.
    got = contact.inbox.wait(lambda m: (m[3] or "").startswith("http") or
                             (m[2] or "").strip().startswith("http"),
                             timeout=60)
    check("the contact receives the file's GET URL", got is not None,
          "nothing within 60 s")
    if got is None:
        return
    check("the file's message comes from alice, as a chat message",
          got[0].split("/")[0] == alice and got[1] == "chat", str(got))
    link = got[3] or got[2].strip()
    r = drv.do("wait_link", href=link)
    check("the page shows the sent file as a link to its GET URL", r["ok"],
          str(r))
    try:
        with urllib.request.urlopen(link, timeout=30) as resp:
            body = resp.read()
    except (OSError, ValueError) as e:
        body = repr(e).encode()
    check("the contact downloads the same bytes with the GET URL",
          hashlib.sha256(body).digest() == hashlib.sha256(data).digest(),
          "%s: %d bytes" % (link, len(body)))


if __name__ == "__main__":
    harness.run_main(main)
