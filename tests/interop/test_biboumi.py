#!/usr/bin/python3
"""test_biboumi.py - a real XEP-0114 component: biboumi, the XMPP-IRC gateway.

Starts parleyd with a component listener and biboumi.localhost configured,
ngircd (an IRC server) on a loopback address of its own, and biboumi
(Debian's) pointed at both.  A Parley user joins an IRC channel as a MUC
room through biboumi (#chan%<irc-address>@biboumi.localhost/nick) while a
plain IRC client (a raw socket) sits in the channel: the join shows on IRC,
the user's groupchat message reaches IRC, the IRC client's message reaches
the user.  `parleyctl components` shows biboumi connected.  Every server is
stopped by its process id at the end.

Run with /usr/bin/python3; `scripts/run-tests test_biboumi`.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users  # noqa: E402

DOMAIN = "biboumi.localhost"
SECRET = "biboumi-secret"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"


def wait_port(host, port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Irc:
    """A minimal IRC client on a blocking socket, every read bounded."""

    def __init__(self, host, port, nick):
        self.sock = socket.create_connection((host, port), 10)
        self.buf = b""
        self.lines = []
        self.nick = nick
        self.send("NICK %s" % nick)
        self.send("USER %s 0 * :test client" % nick)

    def send(self, line):
        self.sock.sendall((line + "\r\n").encode("utf-8"))

    def wait(self, pred, timeout=20):
        """The first line matching pred (PINGs answered on the way)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.lines):
                if pred(line):
                    return self.lines.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                return None
            if not data:
                return None
            self.buf += data
            while b"\r\n" in self.buf:
                raw, self.buf = self.buf.split(b"\r\n", 1)
                line = raw.decode("utf-8", "replace")
                if line.startswith("PING"):
                    self.send("PONG" + line[4:])
                else:
                    self.lines.append(line)

    def close(self):
        try:
            self.send("QUIT :bye")
        except OSError:
            pass
        self.sock.close()


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main():
    for tool in ("biboumi", "ngircd"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            check("%s is installed (scripts/bootstrap --test)" % tool, False)
            harness.finish()
    cport, = harness.free_ports(1)
    srv = harness.Server(
        listeners_extra='{ protocol = "component"; address = "127.0.0.1"; '
                        'port = %d; tls = "none"; }' % cport,
        host_extra='components = ( { domain = "%s"; secret = "%s"; } );'
                   % (DOMAIN, SECRET))
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    # An address of ngircd's own: the IRC port is fixed (biboumi's
    # default), so it is the address that keeps runs apart.
    irc_ip = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(1, 254),
                               random.randint(2, 254))
    d = srv.dir
    with open(os.path.join(d, "ngircd.conf"), "w") as f:
        f.write("""[Global]
Name = irc.test
Info = Parley test IRC server
Listen = %s
Ports = 6667
PidFile = %s/ngircd.pid
MotdPhrase = test
[Limits]
MaxConnectionsIP = 0
PingTimeout = 300
[Options]
DNS = no
Ident = no
PAM = no
SyslogFacility = local1
""" % (irc_ip, d))
    ngircd = subprocess.Popen(["/usr/sbin/ngircd", "-n", "-p", "-f",
                               os.path.join(d, "ngircd.conf")],
                              stdin=subprocess.DEVNULL,
                              stdout=open(os.path.join(d, "ngircd.log"), "w"),
                              stderr=subprocess.STDOUT)
    biboumi = None
    try:
        check("ngircd listens on its loopback address",
              wait_port(irc_ip, 6667, time.monotonic() + 15),
              open(os.path.join(d, "ngircd.log")).read()[-2000:])
        with open(os.path.join(d, "biboumi.cfg"), "w") as f:
            f.write("hostname=%s\npassword=%s\nxmpp_server_ip=127.0.0.1\n"
                    "port=%d\nidentd_port=0\nlog_level=1\n"
                    "db_name=%s/biboumi.sqlite\npolicy_directory=%s\n"
                    "realname_customization=false\n"
                    % (DOMAIN, SECRET, cport, d, d))
        biboumi = subprocess.Popen(
            ["biboumi", os.path.join(d, "biboumi.cfg")],
            stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(d, "biboumi.log"), "w"),
            stderr=subprocess.STDOUT, cwd=d)
        connected = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not connected:
            rc, out = srv.ctl("components", "--json")
            try:
                connected = any(c.get("domain") == DOMAIN and c["connected"]
                                for c in json.loads(out))
            except (ValueError, KeyError, TypeError):
                pass
            if not connected:
                time.sleep(0.1)
        check("biboumi connects as a component (parleyctl components)",
              connected, open(os.path.join(d, "biboumi.log")).read()[-2000:])
        if connected:
            talk(srv, d, irc_ip)
    finally:
        stop(biboumi)
        stop(ngircd)
    check("biboumi and ngircd stopped", (biboumi is None or
                                         biboumi.poll() is not None) and
          ngircd.poll() is not None)
    harness.finish()


def talk(srv, d, irc_ip):
    user, = (harness.unique("irc"),)
    add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()
    irc = Irc(irc_ip, 6667, "ircbob")
    check("IRC client registers with ngircd",
          irc.wait(lambda l: " 001 " in l) is not None)
    irc.send("JOIN #parley")
    check("IRC client joins #parley",
          irc.wait(lambda l: "JOIN" in l and "#parley" in l) is not None)

    room = "#parley%%%s@%s" % (irc_ip, DOMAIN)
    cu.send("<presence to='%s/alice'><x xmlns='%s'/></presence>"
            % (room, NS_MUC))
    selfp = cu.wait(lambda e: e.tag.endswith("}presence") and
                    (e.get("from") or "").startswith(room) and
                    e.find("{%s}x/{%s}status[@code='110']"
                           % (NS_MUC_USER, NS_MUC_USER)) is not None,
                    timeout=30)
    check("XMPP user joins the IRC channel as a MUC room through biboumi "
          "(self-presence, status 110)", selfp is not None,
          open(os.path.join(d, "biboumi.log")).read()[-2000:])
    joined = irc.wait(lambda l: "JOIN" in l and l.startswith(":alice"))
    check("IRC sees the XMPP user join", joined is not None)

    cu.send("<message to='%s' type='groupchat'><body>hello from xmpp"
            "</body></message>" % room)
    line = irc.wait(lambda l: "PRIVMSG #parley" in l and
                    "hello from xmpp" in l)
    check("the XMPP user's groupchat message reaches IRC",
          line is not None and line.startswith(":alice"), str(line))
    irc.send("PRIVMSG #parley :hello from irc")
    got = cu.wait(lambda e: e.tag.endswith("}message") and
                  e.findtext("{jabber:client}body") == "hello from irc",
                  timeout=20)
    check("the IRC client's message reaches the XMPP user as groupchat "
          "from room/ircbob",
          got is not None and got.get("type") == "groupchat" and
          got.get("from") == room + "/ircbob", tostr(got))
    cu.send("<presence to='%s/alice' type='unavailable'/>" % room)
    parted = irc.wait(lambda l: l.startswith(":alice") and
                      ("PART" in l or "QUIT" in l))
    check("leaving the room parts the IRC channel", parted is not None)
    irc.close()
    cu.close()


if __name__ == "__main__":
    main()
