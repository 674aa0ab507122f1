"""baresip_ua.py - Debian's baresip (baresip-core) as a SIP client under
test: a configuration in a temporary directory, the process started with
its SIP trace (-s) in a log, and commands sent through its ctrl_tcp module
(netstring JSON).  Used by test_sip_im.py (register, MESSAGE both ways)
and test_sip_presence.py (PUBLISH, SUBSCRIBE through its presence module).

    ua = Baresip(aor_user, domain, password, outbound_port,
                 contacts=['"X" <sip:x@localhost>;presence=p2p'],
                 modules=["presence.so"], account_params=";pubint=60")
    if ua.start():
        ua.command("presence_offline")
        ua.wait_log("changed status from", 10)
    ua.stop()

Everything listens on 127.0.0.1 and ports from harness.free_ports; the
process is stopped by its process group.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile

import harness
from harness import wait_for

STEP = 10


class Baresip:
    def __init__(self, user, domain, password, port, contacts=(),
                 modules=(), account_params="", transport="udp",
                 outbound=False):
        """port: where it sends everything (its outbound proxy);
        outbound: RFC 5626 on (sipnat=outbound, with the uuid module for
        its +sip.instance), with which libre says Supported: path."""
        self.user, self.domain = user, domain
        self.aor = "%s@%s" % (user, domain)
        self.sip_port, self.ctrl_port = self._ports()
        self.dir = tempfile.mkdtemp(prefix="parley-baresip-")
        self.log_path = os.path.join(self.dir, "baresip.log")
        self.proc = None
        self.ctl = None
        self._log = None
        apps = ["account.so", "contact.so", "menu.so", "ctrl_tcp.so"]
        apps += list(modules)
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write("poll_method epoll\nnet_interface 127.0.0.1\n"
                    "sip_listen 127.0.0.1:%d\n"
                    "module_path /usr/lib/baresip/modules\n"
                    % self.sip_port)
            if outbound:
                f.write("module_tmp uuid.so\n")
            for m in apps:
                f.write("module_app %s\n" % m)
            f.write("ctrl_tcp_listen 127.0.0.1:%d\n" % self.ctrl_port)
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write('<sip:%s>;auth_pass=%s;outbound="sip:127.0.0.1:%d;'
                    'transport=%s";regint=60%s\n'
                    % (self.aor, password, port, transport,
                       account_params + (";sipnat=outbound" if outbound
                                         else "")))
        with open(os.path.join(self.dir, "contacts"), "w") as f:
            for c in contacts:
                f.write(c + "\n")

    @staticmethod
    def _ports():
        """A SIP port whose next port is free too (baresip listens for
        TLS on sip_listen's port + 1, whatever the config says), and a
        control port apart from both."""
        for _ in range(100):
            sip, ctrl = harness.free_ports(2)
            if ctrl in (sip, sip + 1):
                continue
            try:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as t:
                        t.bind(("127.0.0.1", sip + 1))
            except OSError:
                continue
            return sip, ctrl
        raise RuntimeError("no free port pair for baresip")

    @staticmethod
    def installed():
        return shutil.which("baresip") is not None

    def start(self):
        """Starts baresip; True once its control socket answers."""
        self._log = open(self.log_path, "w")
        argv = ["baresip", "-f", self.dir, "-s"]
        if shutil.which("stdbuf"):
            argv = ["stdbuf", "-oL"] + argv  # the trace line by line
        self.proc = harness.spawn("baresip", argv, stdin=subprocess.DEVNULL,
                                  stdout=self._log, stderr=subprocess.STDOUT)

        def connect():
            try:
                self.ctl = socket.create_connection(
                    ("127.0.0.1", self.ctrl_port), 1)
                return True
            except OSError:
                return False
        return bool(wait_for(connect, STEP)) and self.ctl is not None

    def command(self, name, params=""):
        """Sends a command (as menu's keys would) through ctrl_tcp."""
        j = json.dumps({"command": name, "params": params,
                        "token": name}).encode()
        self.ctl.sendall(b"%d:%s," % (len(j), j))

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, text, timeout=STEP, after=0):
        """Waits for text in the log past offset after; True if seen."""
        return bool(wait_for(lambda: text in self.log()[after:], timeout))

    def stop(self):
        if self.ctl:
            self.ctl.close()
            self.ctl = None
        if self.proc:
            harness.stop_group(self.proc, grace=5)
            self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        shutil.rmtree(self.dir, ignore_errors=True)
