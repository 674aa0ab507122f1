#!/usr/bin/python3
"""test_gateway_mail_flow.py - parley-gateway's e-mail channel end to end:
parleyd, parley-gateway (components sms.localhost and mail.localhost),
Postfix delivering its domain gw.test to the gateway over LMTP on a unix
socket (as in production), and gw_smtp_probe as the outside world's
mail server (the gateway's relay, mail.relay.url).

Checks: disco identity gateway/smtp; IM->e-mail delivered (From the
user's address at gw.test, Message-ID tied to the queue id); e-mail->IM
through Postfix, from bob\\40example.org@mail.localhost with subject and
text; a reply from IM threads back (In-Reply-To); the relay down then
up (retried, delivered once); a permanent 5xx reported to the IM sender
as an error; an unknown recipient refused at RCPT (550 5.1.1) on the
gateway's SMTP listener; an e-mail for an account parleyd does not have
bounced with an RFC 3464 DSN to its sender.

Postfix helpers come from test_gateway_mail.py.  Run with
/usr/bin/python3; `scripts/run-tests test_gateway_mail_flow`.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gw_common  # noqa: E402
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users, error_of  # noqa: E402
import test_gateway_mail as tgm  # noqa: E402

SECRET = "gw-secret"
MAIL = "mail.localhost"
SMS = "sms.localhost"
GATEWAY = gw_common.GATEWAY
NS_DISCO = "http://jabber.org/protocol/disco#info"


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def gateway_conf(d, cport, lmtp_sock, smtp_port, relay_port, cb_port):
    return """instance = "gw1";
data_dir = "%s";
queue = "gateway.db";
log_level = "debug";
component = { host = "127.0.0.1"; port = %d; secret = "%s";
              reconnect_min = 100; reconnect_max = 1000; };
sms = { domain = "%s"; kannel = { timeout = 2; };
        callback = { port = %d; url = "http://127.0.0.1:%d"; }; };
mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  lmtp = { socket = "%s"; };
  smtp = { address = "127.0.0.1"; port = %d; };
  relay = { url = "smtp://127.0.0.1:%d"; starttls = "none";
            connect_timeout = 2; timeout = 5; };
};
retry = { base = 300; max = 1000; jitter = 20; expiry = 120; };
queue_lease = 30;
queue_poll = 200;
""" % (d, cport, SECRET, SMS, cb_port, cb_port, MAIL, lmtp_sock, smtp_port,
       relay_port)


def start_postfix(d, lmtp_sock):
    """Postfix on a free port, gw.test delivered over LMTP to the gateway."""
    pd = os.path.join(d, "postfix")
    for sub in ("etc", "queue", "data"):
        os.makedirs(os.path.join(pd, sub))
    shutil.chown(os.path.join(pd, "data"), "postfix", "postfix")
    port = harness.free_ports(1)[0]
    main_cf = tgm.POSTFIX_MAIN.format(d=pd).replace(
        "local_transport = lmtp:unix:%s/lmtp.sock" % pd,
        "local_transport = lmtp:unix:%s" % lmtp_sock)
    with open(os.path.join(pd, "etc", "main.cf"), "w") as f:
        f.write(main_cf)
    with open(os.path.join(pd, "etc", "master.cf"), "w") as f:
        f.write(tgm.postfix_master_cf(port))
    log = open(os.path.join(pd, "master.log"), "w")
    master = harness.spawn("postfix", [tgm.POSTFIX, "-c",
                                       os.path.join(pd, "etc"), "start-fg"],
                           stdout=log, stderr=subprocess.STDOUT)
    up = harness.wait_for(lambda: listening(port), 30)
    return master, port, pd, log, up


def stop_postfix(master, pd, log):
    subprocess.run([tgm.POSTFIX, "-c", os.path.join(pd, "etc"), "stop"],
                   capture_output=True, timeout=30)
    try:
        master.wait(20)
    except subprocess.TimeoutExpired:
        pass
    harness.stop_group(master, grace=5)
    harness.untrack(master)
    log.close()


def main():
    gw_common.require(tgm.POSTFIX, tgm.SWAKS, tgm.PROBE, GATEWAY)
    cport, smtp_port, relay_port, cb_port = harness.free_ports(4)
    srv = gw_common.start_server(cport, ((SMS, SECRET), (MAIL, SECRET)))
    d = srv.dir
    os.chmod(d, 0o755)
    lmtp_sock = os.path.join(d, "gw-lmtp.sock")
    conf = os.path.join(d, "gw.conf")
    with open(conf, "w") as f:
        f.write(gateway_conf(d, cport, lmtp_sock, smtp_port, relay_port,
                             cb_port))
    gwlog = os.path.join(d, "gw.log")
    gw = harness.spawn("gateway", [GATEWAY, "--config", conf],
                       stdout=open(gwlog, "a"), stderr=subprocess.STDOUT)

    def logtext():
        return open(gwlog, errors="replace").read()[-4000:]

    sink = tgm.Probe("--port", str(relay_port))
    master = None
    try:
        linked = harness.wait_for(
            lambda: logtext().count("linked to parleyd") >= 2, 20)
        check("the gateway links to parleyd for both domains", linked,
              logtext())
        harness.wait_for(lambda: os.path.exists(lmtp_sock), 10)
        os.chmod(lmtp_sock, 0o666)  # Postfix's lmtp client runs as postfix
        master, pport, pd, plog, up = start_postfix(d, lmtp_sock)
        check("postfix starts", up, open(plog.name).read()[-1500:])
        if linked and up:
            run(srv, sink, pport, smtp_port, relay_port, logtext,
                lambda: open(plog.name).read()[-2000:])
    finally:
        if master:
            stop_postfix(master, pd, plog)
        if sink.proc.poll() is None:
            sink.stop()
        harness.stop_group(gw)
        harness.untrack(gw)
        harness.finish()


def run(srv, sink, pport, smtp_port, relay_port, logtext, pflog):
    user = harness.unique("mail")
    add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()
    bob = "bob\\40example.org@" + MAIL

    r = cu.request("<query xmlns='%s'/>" % NS_DISCO, to=MAIL)
    ident = r.find("{%s}query/{%s}identity" % (NS_DISCO, NS_DISCO)) \
        if r is not None else None
    check("disco#info on the mail domain: identity gateway/smtp",
          ident is not None and ident.get("type") == "smtp", tostr(r))

    # IM -> e-mail
    cu.send("<message to='%s' type='chat' id='o1'><subject>Hi Bob</subject>"
            "<body>hello mail</body></message>" % bob)
    sink.wait_data(1, timeout=20)
    got = sink.events("data")
    ok = len(got) == 1 and got[0]["rcpts"] == ["bob@example.org"] and \
        got[0]["from"] == "%s@gw.test" % user and \
        got[0]["subject"] == "Hi Bob" and "hello mail" in got[0]["text"] \
        and (got[0].get("message_id") or "").endswith("@" + MAIL)
    check("IM->e-mail: delivered to the relay, From the user's address at "
          "gw.test, Message-ID at the mail domain", ok,
          str(got) + logtext())

    # e-mail -> IM through Postfix over LMTP
    rc, out = tgm.swaks("--server", "127.0.0.1", "--port", str(pport),
                        "--from", "bob@example.org", "--to",
                        "%s@gw.test" % user, "--header",
                        "Subject: from the mail side", "--header",
                        "Message-ID: <t1@example.org>", "--body",
                        "hello IM\n")
    check("e-mail->IM: Postfix accepts the message", rc == 0, out[-500:])
    m = cu.wait(lambda e: e.tag.endswith("}message") and
                e.get("from") == bob and
                e.findtext("{jabber:client}body", "").strip() == "hello IM",
                timeout=30)
    check("e-mail->IM: the user gets it from bob\\40example.org@%s with "
          "the subject" % MAIL,
          m is not None and m.findtext("{jabber:client}subject") ==
          "from the mail side", logtext() + pflog())

    # a reply threads back
    cu.send("<message to='%s' type='chat' id='o2'><body>my reply</body>"
            "</message>" % bob)
    sink.wait_data(2, timeout=20)
    got = sink.events("data")
    check("a reply from IM goes back by e-mail with In-Reply-To",
          len(got) == 2 and got[1].get("in_reply_to") == "t1@example.org"
          and "my reply" in got[1]["text"], str(got[1:]))

    # relay down then up
    sink.stop()
    cu.send("<message to='%s' type='chat' id='o3'><body>while down</body>"
            "</message>" % bob)
    retried = harness.wait_for(lambda: logtext().count("no answer") >= 2,
                               15)
    check("relay down: the message is queued again (retry)", retried,
          logtext())
    sink2 = tgm.Probe("--port", str(relay_port))
    try:
        sink2.wait_data(1, timeout=30)
        time.sleep(2)
        got = [e for e in sink2.events("data") if "while down" in e["text"]]
        check("relay up: the message is delivered once", len(got) == 1,
              str(sink2.events("data")) + logtext())

        # permanent 5xx
        cu.send("<message to='reject1\\40example.org@%s' type='chat' "
                "id='o4'><body>to be refused</body></message>" % MAIL)
        e = cu.wait(lambda e: e.get("id") == "o4" and
                    e.get("type") == "error", timeout=20)
        check("a 5xx from the relay: the IM sender gets an error "
              "(recipient-unavailable) naming the reply",
              e is not None and error_of(e) == "recipient-unavailable" and
              "550" in tostr(e), tostr(e))

        # unknown recipient refused at RCPT
        rc, out = tgm.swaks("--server", "127.0.0.1", "--port",
                            str(smtp_port), "--from", "eve@example.org",
                            "--to", "someone@elsewhere.test", "--body", "x")
        check("a recipient at a domain not ours: 550 5.7.1 (no relaying) "
              "at RCPT on the gateway's SMTP",
              rc != 0 and "550 5.7.1" in out, out[-600:])

        # an account parleyd does not have: DSN to the sender
        rc, out = tgm.swaks("--server", "127.0.0.1", "--port",
                            str(smtp_port), "--from", "carol@example.org",
                            "--to", "ghost-nobody@gw.test", "--body",
                            "anyone there?\n")
        check("e-mail for a missing account: accepted after commit",
              rc == 0 and "250 2.0.0" in out, out[-600:])
        ok = harness.wait_for(lambda: any(
            e["rcpts"] == ["carol@example.org"]
            for e in sink2.events("data")), 20)
        dsn = [e for e in sink2.events("data")
               if e["rcpts"] == ["carol@example.org"]]
        check("...and its sender gets a DSN (RFC 3464) from the gateway",
              ok and len(dsn) == 1, str(sink2.events("data")) + logtext())
    finally:
        sink2.stop()
    cu.close()


if __name__ == "__main__":
    main()
