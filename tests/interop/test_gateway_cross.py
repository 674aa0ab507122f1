#!/usr/bin/python3
"""test_gateway_cross.py - parley-gateway across channels: e-mail <-> SMS,
reports to phone senders, and linking an e-mail address (XEP-0100).

Starts parleyd (components sms.localhost and mail.localhost), Kannel
(bearerbox + smsbox, fakesmsc as the phones; its sendsms user denies the
prefix +1555999 by a black-list-regex: Kannel refuses them with a 400),
gw_smtp_probe as the outside world's mail server (the gateway's relay;
recipients starting with "reject" get 550) and the gateway, whose SMTP
listener swaks and smtplib (for RFC 3461 NOTIFY and ENVID) talk to.
Kannel and the probe come from test_gateway_sms.py and
test_gateway_mail.py.

Checks: e-mail -> SMS (text "SENDER: SUBJECT\\nTEXT", a national number
normalized, a long text cut to the parts allowed with "..."); a success
DSN only with NOTIFY=SUCCESS (with its ENVID), a failure DSN without
NOTIFY, none with NOTIFY=NEVER; SMS -> e-mail by the address at the start
of the SMS (From the number at the SMS domain) and the e-mail reply back
as SMS; an SMS reply to an e-mail's SMS goes back to that e-mail address;
report SMS to phone senders for a failed and a refused message, one each
(no report on a report); e-mail registration with the code sent by
e-mail, and mail to the linked address reaching the IM user.

Run with /usr/bin/python3; `scripts/run-tests test_gateway_cross`.
"""

import os
import re
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gw_common  # noqa: E402
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users, error_of  # noqa: E402
import test_gateway_mail as tgm  # noqa: E402
import test_gateway_sms as tgs  # noqa: E402

SMS = "sms.localhost"
MAIL = "mail.localhost"
SECRET = "cross-secret"
SENDER = tgs.SENDER
GATEWAY = tgs.GATEWAY
NS_DISCO = "http://jabber.org/protocol/disco#info"
NS_REG = "jabber:iq:register"
DENIED = "+15559990001"


class Phone(tgs.Phone):
    """fakesmsc's protocol is one line per message, so an SMS with a line
    break shows in its log as several "Got message" entries: an entry
    that does not start with "FROM TO KIND " continues the one before.
    Texts here are plain (no UDH) or UDH parts, as in tgs.Phone."""

    def received(self):
        entries = []
        with open(self.log, errors="replace") as f:
            for line in f:
                m = re.search(r"Got message \d+: <(.*)>", line)
                if not m:
                    continue
                if re.match(r"\+?\d+ \+?\d+ (text|data|udh) ",
                            m.group(1)) or not entries:
                    entries.append(m.group(1))
                else:
                    entries[-1] += "\n" + m.group(1)
        return [mt for mt in map(tgs.parse_mt, entries) if mt]


def gateway_conf(d, cport, cb, smtp_port, relay_port, kannel):
    return """instance = "gw1";
data_dir = "%s";
queue = "gateway.db";
log_level = "debug";
component = { host = "127.0.0.1"; port = %d; secret = "%s";
              reconnect_min = 100; reconnect_max = 1000; };
sms = {
  domain = "%s"; default_country = "1"; sender = "%s"; max_parts = 3;
  kannel = { sendsms_url = "http://127.0.0.1:%d/cgi-bin/sendsms";
             user = "gw"; password = "gwpass"; timeout = 2; };
  callback = { address = "127.0.0.1"; port = %d;
               url = "http://127.0.0.1:%d"; };
  report = { failed = "Not delivered to %%a: %%r"; };
};
mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  smtp = { address = "127.0.0.1"; port = %d; };
  relay = { url = "smtp://127.0.0.1:%d"; starttls = "none";
            connect_timeout = 2; timeout = 5; };
};
retry = { base = 300; max = 1000; jitter = 20; expiry = 120; };
queue_lease = 30;
queue_poll = 200;
""" % (d, cport, SECRET, SMS, SENDER, kannel.sendsms, cb, cb, MAIL,
       smtp_port, relay_port)


def main():
    gw_common.require(tgs.FAKESMSC, "/usr/sbin/bearerbox", "/usr/sbin/smsbox",
                      tgm.SWAKS, tgm.PROBE, GATEWAY)
    cport, cb, smtp_port, relay_port = harness.free_ports(4)
    srv = gw_common.start_server(cport, ((SMS, SECRET), (MAIL, SECRET)))
    d = srv.dir
    kannel = tgs.Kannel(d, cb)
    # Kannel refuses numbers of this prefix (400): a permanent failure.
    with open(kannel.conf) as f:
        conf = f.read()
    with open(kannel.conf, "w") as f:
        f.write(conf.replace("password = gwpass\n",
                             'password = gwpass\n'
                             'black-list-regex = "^\\+?%s"\n'
                             % DENIED[1:8], 1))
    sink = tgm.Probe("--port", str(relay_port))
    gw = None
    try:
        check("bearerbox starts with the fake SMSC", kannel.start_bearer())
        phone = Phone(d, kannel.smsc)
        check("smsbox starts (sendsms)", kannel.start_smsbox())
        time.sleep(1)
        conf = os.path.join(d, "gw.conf")
        with open(conf, "w") as f:
            f.write(gateway_conf(d, cport, cb, smtp_port, relay_port, kannel))
        gwlog = os.path.join(d, "gw.log")
        gw = harness.spawn("gateway", [GATEWAY, "--config", conf],
                           stdout=open(gwlog, "a"), stderr=subprocess.STDOUT)

        def logtext():
            return open(gwlog, errors="replace").read()[-4000:]
        linked = harness.wait_for(
            lambda: logtext().count("linked to parleyd") >= 2, 20)
        check("the gateway links to parleyd for both domains", linked,
              logtext())
        if linked and tgs.wait_port(smtp_port):
            run(srv, d, phone, sink, smtp_port, logtext)
    finally:
        if gw:
            harness.stop_group(gw)
            harness.untrack(gw)
        kannel.stop()
        if sink.proc.poll() is None:
            sink.stop()
        harness.finish()


def mails_to(sink, addr):
    return [e for e in sink.events("data") if e["rcpts"] == [addr]]


def smtp_send(port, frm, to, subject, body, rcpt_options=(),
              mail_options=()):
    """One message through smtplib (which can give NOTIFY and ENVID)."""
    msg = ("From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n"
           % (frm, to, subject, body))
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.example.org")
        return s.sendmail(frm, [to], msg, mail_options=list(mail_options),
                          rcpt_options=list(rcpt_options))


def run(srv, d, phone, sink, smtp_port, logtext):
    gwsrv = ["--server", "127.0.0.1", "--port", str(smtp_port)]

    # ---- e-mail -> SMS
    # swaks reads an argument starting with "+" as an option: it writes
    # national numbers (default country 1); smtplib writes E.164.
    n1 = "+15551230001"
    rc, out = tgm.swaks(*gwsrv, "--from", "bob@example.org", "--to",
                        "5551230001@%s" % SMS, "--header",
                        "Subject: Lunch", "--body", "At noon?\n")
    check("e-mail->SMS: the gateway's SMTP listener takes mail for a "
          "national number at %s" % SMS, rc == 0 and "250 2.0.0" in out,
          out[-600:])
    got = phone.wait_for(lambda r: r[1] == n1)
    check("e-mail->SMS: the phone gets \"SENDER: SUBJECT\\nTEXT\" from the "
          "gateway's number",
          len(got) == 1 and got[0][0] == SENDER and
          got[0][3] == "bob@example.org: Lunch\nAt noon?",
          str(phone.received()[-3:]) + logtext())

    # E.164 as in RCPT TO:<+15551230002@...>, NOTIFY=SUCCESS and ENVID
    n2 = "+15551230002"
    refused = smtp_send(smtp_port, "carol@example.org",
                        "%s@%s" % (n2, SMS), "Hi", "e164 form",
                        rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
                        mail_options=["ENVID=carol-1"])
    check("e-mail->SMS: RCPT TO:<+E.164@%s> with NOTIFY and ENVID is taken"
          % SMS, refused == {}, str(refused))
    got = phone.wait_for(lambda r: r[1] == n2)
    check("...and its SMS arrives at %s" % n2,
          len(got) == 1 and got[0][3] == "carol@example.org: Hi\ne164 form",
          str(phone.received()[-3:]))
    ok = harness.wait_for(lambda: mails_to(sink, "carol@example.org"), 20)
    dsn = mails_to(sink, "carol@example.org")
    check("NOTIFY=SUCCESS: the sender gets a DSN (Action delivered, "
          "Status 2.0.0, its ENVID) once Kannel reports delivery, with a "
          "null reverse-path",
          ok and len(dsn) == 1 and dsn[0].get("dsn_action") == "delivered"
          and dsn[0].get("dsn_status") == "2.0.0" and
          dsn[0].get("dsn_envid") == "carol-1" and
          dsn[0].get("env_from") == "", str(dsn) + logtext())

    # a failure: Kannel refuses the number
    rc, out = tgm.swaks(*gwsrv, "--from", "dave@example.org", 
                        "--to", "%s@%s" % (DENIED[2:], SMS), "--header", "Subject: x",
                        "--body", "to a denied number\n")
    check("e-mail to a number Kannel refuses: accepted (after commit)",
          rc == 0, out[-500:])
    ok = harness.wait_for(lambda: mails_to(sink, "dave@example.org"), 20)
    dsn = mails_to(sink, "dave@example.org")
    check("...its sender gets a failure DSN (no NOTIFY: the default)",
          ok and len(dsn) == 1 and dsn[0].get("dsn_action") == "failed" and
          (dsn[0].get("dsn_status") or "").startswith("5."),
          str(dsn) + logtext())
    smtp_send(smtp_port, "erin@example.org", "%s@%s" % (DENIED, SMS), "y",
              "never tell me", rcpt_options=["NOTIFY=NEVER"])

    # a long e-mail: cut to sms.max_parts (3) parts
    n3 = "+15551230003"
    body = "\n".join(" ".join("word%d" % i for i in range(j, j + 10))
                     for j in range(0, 200, 10))
    rc, out = tgm.swaks(*gwsrv, "--from", "long@example.org", 
                        "--to", "%s@%s" % (n3[2:], SMS), "--body", body)
    parts = phone.wait_for(lambda r: r[1] == n3, count=3)
    joined = "".join(p[3] for p in sorted(parts, key=lambda p: p[2][5])) \
        if len(parts) == 3 and all(p[2] for p in parts) else ""
    check("a long e-mail is cut to 3 concatenated parts ending in \"...\"",
          joined.startswith("long@example.org: ") and
          "\nword0 word1" in joined and "word199" not in joined and
          joined.endswith("..."), str(parts))

    # ---- SMS -> e-mail
    # A reply from the phone that got bob's e-mail goes back to bob.
    phone.send(n1, SENDER, "Yes, see you")
    ok = harness.wait_for(lambda: [e for e in mails_to(
        sink, "bob@example.org") if "see you" in e.get("text", "")], 20)
    got = [e for e in mails_to(sink, "bob@example.org")
           if "see you" in e.get("text", "")]
    check("an SMS reply to an e-mail's SMS goes back to that address, From "
          "the number at %s" % SMS,
          ok and len(got) == 1 and got[0]["from"] == "%s@%s" % (n1, SMS),
          str(sink.events("data")[-3:]) + logtext())

    # The address at the start of the SMS.
    n4 = "+15551230004"
    phone.send(n4, SENDER, "frank@example.org hello frank")
    ok = harness.wait_for(lambda: mails_to(sink, "frank@example.org"), 20)
    got = mails_to(sink, "frank@example.org")
    check("SMS->e-mail: \"frank@example.org hello frank\" reaches frank "
          "with the text, From %s@%s" % (n4, SMS),
          ok and len(got) == 1 and got[0]["from"] == "%s@%s" % (n4, SMS) and
          got[0]["text"].strip() == "hello frank" and
          n4 in (got[0]["subject"] or ""), str(got) + logtext())
    rc, out = tgm.swaks(*gwsrv, "--from", "frank@example.org", 
                        "--to", "%s@%s" % (n4[2:], SMS), "--header", "Subject: Re: hi",
                        "--body", "hello phone\n")
    got = phone.wait_for(lambda r: r[1] == n4 and "hello phone" in r[3])
    check("...and frank's e-mail reply arrives on that phone as SMS",
          len(got) == 1 and got[0][3].startswith("frank@example.org:"),
          str(phone.received()[-3:]))

    # ---- reports to phone senders
    n5 = "+15551230005"
    phone.send(n5, SENDER, "reject1@example.org this will bounce")
    got = phone.wait_for(lambda r: r[1] == n5, timeout=20)
    check("a failed SMS->e-mail: the phone gets a report SMS naming the "
          "address and the relay's answer",
          len(got) == 1 and got[0][3].startswith(
              "Not delivered to reject1@example.org:") and "550" in got[0][3],
          str(phone.received()[-3:]) + logtext())
    n6 = "+15551230006"
    phone.send(n6, SENDER, "hello anybody")
    got = phone.wait_for(lambda r: r[1] == n6, timeout=20)
    check("an SMS nobody can take (refused): the phone gets a report SMS",
          len(got) == 1 and got[0][3].startswith("Not delivered:"),
          str(phone.received()[-3:]) + logtext())

    # ---- e-mail registration (XEP-0100 on the mail domain)
    user = harness.unique("xreg")
    add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()
    r = cu.request("<query xmlns='%s'/>" % NS_DISCO, to=MAIL)
    feats = [f.get("var") for f in r.iter("{%s}feature" % NS_DISCO)] \
        if r is not None else []
    check("disco#info on the mail domain lists jabber:iq:register",
          NS_REG in feats, tostr(r))
    r = cu.request("<query xmlns='%s'/>" % NS_REG, to=MAIL)
    check("e-mail registration form has <email/>",
          r is not None and r.find("{%s}query/{%s}email" % (NS_REG, NS_REG))
          is not None, tostr(r))
    mine = "%s@example.net" % user
    r = cu.request("<query xmlns='%s'><email>%s</email></query>"
                   % (NS_REG, mine), type_="set", to=MAIL)
    check("e-mail registration: the address is accepted",
          r is not None and r.get("type") == "result", tostr(r))
    r = cu.request("<query xmlns='%s'><email>me@gw.test</email></query>"
                   % NS_REG, type_="set", to=MAIL)
    check("an address of the gateway's own domains is not-acceptable",
          r is not None and error_of(r) == "not-acceptable", tostr(r))
    ok = harness.wait_for(lambda: mails_to(sink, mine), 20)
    got = mails_to(sink, mine)
    m = re.search(r"code: (\d{6})", got[0]["text"]) if got else None
    code = m.group(1) if m else None
    check("e-mail registration: a code arrives by e-mail at that address",
          ok and code is not None and got[0].get("env_from") == "",
          str(got) + logtext())
    wrong = "000000" if code != "000000" else "111111"
    r = cu.request("<query xmlns='%s'><email>%s</email><password>%s"
                   "</password></query>" % (NS_REG, mine, wrong),
                   type_="set", to=MAIL)
    check("e-mail registration: a wrong code is not-authorized",
          r is not None and error_of(r) == "not-authorized", tostr(r))
    r = cu.request("<query xmlns='%s'><email>%s</email><password>%s"
                   "</password></query>" % (NS_REG, mine, code),
                   type_="set", to=MAIL)
    check("e-mail registration: the right code links the address",
          r is not None and r.get("type") == "result", tostr(r))
    r = cu.request("<query xmlns='%s'/>" % NS_REG, to=MAIL)
    check("e-mail registration: <registered/> with the address",
          r is not None and r.find("{%s}query/{%s}registered"
                                   % (NS_REG, NS_REG)) is not None and
          r.findtext("{%s}query/{%s}email" % (NS_REG, NS_REG)) == mine,
          tostr(r))
    rc, out = tgm.swaks(*gwsrv, "--from", "gina@example.org", "--to", mine,
                        "--header", "Subject: to your address",
                        "--body", "reply to the linked address\n")
    m = cu.wait(lambda e: e.tag.endswith("}message") and
                e.get("from") == "gina\\40example.org@" + MAIL and
                "linked address" in e.findtext("{jabber:client}body", ""),
                timeout=20)
    check("mail to the linked address reaches the IM user", m is not None,
          out[-400:] + logtext())
    cu.close()

    # ---- what must not have happened
    time.sleep(3)
    check("no success DSN without NOTIFY=SUCCESS (bob), none with "
          "NOTIFY=NEVER (erin)",
          not [e for e in mails_to(sink, "bob@example.org")
               if e.get("dsn_action")] and
          not mails_to(sink, "erin@example.org"),
          str(sink.events("data")))
    check("one report SMS each, none on a report (no loop)",
          len([r for r in phone.received() if r[1] == n5]) == 1 and
          len([r for r in phone.received() if r[1] == n6]) == 1,
          str(phone.received()))


if __name__ == "__main__":
    main()
