#!/usr/bin/python3
"""test_listen.py - listeners entries as the core reads them (listen.h).

A c2s entry declared `secure` (TLS ends at a proxy in front of it, or it
is on loopback) offers SASL, PLAIN included, without STARTTLS, and a
client logs in over it; the same plain entry without `secure` offers
nothing but STARTTLS under c2s.require_encryption; -PLUS mechanisms need
real TLS either way.  `parleyd --check-config` names the file and line of
an entry with an unknown protocol and lists the protocols there are, and
refuses a protocol over a transport it does not serve.

Run with /usr/bin/python3; `scripts/run-tests test_listen`.
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"


def features_on(srv, port):
    c = harness.RawClient(srv.host, port, srv.domain)
    c.open_stream()
    return c, c.features()


def main():
    secure_port, plain_port = harness.free_ports(2)
    srv = harness.Server(listeners_extra=(
        '{ protocol = "c2s"; address = "127.0.0.1"; port = %d; tls = "none";'
        ' secure = true; },\n  { protocol = "c2s"; address = "127.0.0.1"; '
        'port = %d; tls = "starttls"; }' % (secure_port, plain_port)))
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()
    user = harness.unique("ls")
    ok, detail = harness.register_user(srv, user, "pw-listen")
    check("listen: an account to log in with", ok, detail)

    c, feats = features_on(srv, secure_port)
    mechs = c.mechanisms(feats)
    check("listen: a secure entry offers SASL (PLAIN too) without STARTTLS",
          "PLAIN" in mechs and "SCRAM-SHA-256" in mechs and
          feats.find("{%s}starttls" % NS_TLS) is None, tostr(feats))
    check("listen: a secure entry offers no -PLUS (no channel to bind)",
          not any(m.endswith("-PLUS") for m in mechs), str(mechs))
    el = c.auth_plain(user, "pw-listen")
    check("listen: PLAIN login over a secure entry",
          el.tag == "{%s}success" % NS_SASL, tostr(el))
    c.close()

    c, feats = features_on(srv, plain_port)
    check("listen: the same plain entry without `secure` offers only "
          "STARTTLS (required)",
          c.mechanisms(feats) == [] and
          feats.find("{%s}starttls/{%s}required" % (NS_TLS, NS_TLS))
          is not None, tostr(feats))
    c.close()

    with tempfile.TemporaryDirectory(prefix="parley-listen-") as d:
        conf = os.path.join(d, "bad.conf")
        with open(conf, "w") as f:
            f.write('server: { data_dir = "%s"; };\nlisteners = (\n'
                    '  { protocol = "c2s"; port = 15222; },\n'
                    '  { protocol = "sipx"; port = 5060; }\n);\n' % d)
        p = subprocess.run([srv.bin, "--config", conf, "--check-config"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        err = p.stderr.decode()
        check("listen: --check-config names file:line of an unknown protocol "
              "and the protocols there are",
              p.returncode == 1 and "bad.conf:4" in err and
              "unknown listener protocol 'sipx'" in err and
              "available: c2s, s2s, component" in err, err)
        with open(conf, "w") as f:
            f.write('server: { data_dir = "%s"; };\nlisteners = (\n'
                    '  { protocol = "component"; port = 15347; '
                    'transport = "udp"; }\n);\n' % d)
        p = subprocess.run([srv.bin, "--config", conf, "--check-config"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        err = p.stderr.decode()
        check("listen: --check-config refuses a transport the protocol does "
              "not serve", p.returncode == 1 and
              "protocol component is not served over udp" in err, err)
        with open(conf, "w") as f:
            f.write('server: { data_dir = "%s"; };\nlisteners = (\n'
                    '  { protocol = "sip"; port = 15060; transport = "udp"; '
                    'udp_buffer = -1; }\n);\n' % d)
        p = subprocess.run([srv.bin, "--config", conf, "--check-config"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        err = p.stderr.decode()
        check("listen: --check-config refuses a negative udp_buffer, naming "
              "the line", p.returncode == 1 and "bad.conf:3" in err and
              "udp_buffer is 0 to 1073741824 bytes" in err, err)
    harness.finish()


if __name__ == "__main__":
    main()
