#!/usr/bin/python3
"""test_gateway_policy.py - parley-gateway's policy module (who may send
where) with real peers: parleyd, Kannel (bearerbox + smsbox) with its fake
SMSC, swaks on the gateway's SMTP listener.

The gateway runs with a policy group: IM->e-mail only for users with a
verified e-mail link ("linked"), destinations +1900... (SMS) and
*@blocked.test (e-mail) denied, senders spammer@* (e-mail) denied, a
sender rate of 6 a minute with a burst of 3, and users pq*@localhost with
a daily quota of 2 and no rate limit.

Checks: an allowed message passes (IM->SMS with its receipt); a denied SMS
destination and a denied e-mail destination refused at once with the
reason (not-allowed) and stored refused (`parleyctl gateway trace` shows
the reason); IM->e-mail without a link refused (forbidden); the sender rate limit hit on the 4th message
(policy-violation, wait) while the first 3 reach the phone; the daily
quota hit on the 3rd message, and still hit after the gateway is
restarted (counted in the queue file), while another user passes; SMS
from a phone over the rate limit refused with an SMS back saying why; an
e-mail from a denied sender refused at RCPT with 550 5.7.1, and a 4th
e-mail from one sender in a minute with 451 4.7.1.

Helpers come from test_gateway_sms.py and test_gateway_mail.py.  Run with
/usr/bin/python3; `scripts/run-tests test_gateway_policy`.
"""

import os
import re
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gw_common  # noqa: E402
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users, error_of  # noqa: E402
import test_gateway_mail as tgm  # noqa: E402
import test_gateway_sms as tgs  # noqa: E402

SMS = tgs.DOMAIN
MAIL = "mail.localhost"
SECRET = tgs.SECRET
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def policy_conf(smtp_port, relay_port):
    return """
mail = {
  domain = "%s"; im_host = "localhost"; recipient_domains = "gw.test";
  smtp = { address = "127.0.0.1"; port = %d; };
  relay = { url = "smtp://127.0.0.1:%d"; starttls = "none";
            connect_timeout = 2; timeout = 5; };
};
policy = {
  routes = { im_mail = "linked"; };
  senders = { deny = [ "mail:spammer@*" ]; };
  destinations = { deny = [ "sms:+1900*", "mail:*@blocked.test" ]; };
  sender_rate = { rate = 6; burst = 3; };
  users = ( { match = "pq*@localhost"; daily = 2; rate = 0; } );
  sms_notice = 3600;
};
""" % (MAIL, smtp_port, relay_port)


def error_text(e):
    if e is None:
        return ""
    return e.findtext("{jabber:client}error/{%s}text" % NS_STANZAS) or ""


def error_type(e):
    err = e.find("{jabber:client}error") if e is not None else None
    return err.get("type") if err is not None else None


def answer(cu, mid, timeout=15):
    """The gateway's answer to message mid: an error, or None."""
    return cu.wait(lambda e: e.get("id") == mid and
                   e.get("type") == "error", timeout=timeout)


def queue_id(text):
    m = re.search(r"message ([0-9a-f]{32})", text)
    return m.group(1) if m else None


def trace(d, qid):
    out = tgs.ctl(d, "trace", qid or "none")
    return out.stdout + out.stderr


def main():
    gw_common.require(tgs.FAKESMSC, "/usr/sbin/bearerbox", "/usr/sbin/smsbox",
                      tgs.GATEWAY, tgm.SWAKS)
    cport, cb, smtp_port, relay_port = harness.free_ports(4)
    srv = gw_common.start_server(cport, ((SMS, SECRET), (MAIL, SECRET)))
    d = srv.dir
    kannel = tgs.Kannel(d, cb)
    gw = None
    try:
        check("bearerbox starts with the fake SMSC", kannel.start_bearer())
        phone = tgs.Phone(d, kannel.smsc)
        check("smsbox starts (sendsms)", kannel.start_smsbox())
        time.sleep(1)
        gw = tgs.Gateway(d, cport, "gw1", cb, kannel,
                         extra=policy_conf(smtp_port, relay_port))
        gw.start()
        linked = harness.wait_for(
            lambda: gw.logtext().count("linked to parleyd") >= 2, 20)
        check("parley-gateway links to parleyd (sms and mail domains)",
              linked, gw.logtext())
        if linked:
            run(srv, d, phone, gw, smtp_port)
    finally:
        if gw:
            gw.stop()
        kannel.stop()
        harness.finish()


def run(srv, d, phone, gw, smtp_port):
    a, r, q, b = (harness.unique("pa"), harness.unique("pr"),
                  harness.unique("pq"), harness.unique("pb"))
    add_users(srv, a, r, q, b)
    ca = ImClient(srv, a, "desk")
    ca.presence()
    num = "+15551234567"
    njid = "%s@%s" % (num, SMS)

    # an allowed message passes
    tgs.send_sms(ca, num, "allowed one", "ok1")
    got = phone.wait_for(lambda m: m[1] == num and m[3] == "allowed one")
    rc = ca.wait(tgs.receipt_for(njid, "ok1"), timeout=20)
    check("allowed: IM->SMS reaches the phone, with its receipt",
          len(got) == 1 and rc is not None, gw.logtext())

    # a denied SMS destination
    tgs.send_sms(ca, "+19005550123", "premium", "deny1")
    e = answer(ca, "deny1")
    text = error_text(e)
    check("denied destination +1900...: not-allowed (cancel) at once, "
          "with the reason", e is not None and error_of(e) == "not-allowed"
          and error_type(e) == "cancel" and "+19005550123" in text and
          "not allowed" in text, tostr(e))
    out = trace(d, queue_id(text))
    check("denied destination: stored refused; parleyctl gateway trace "
          "shows the reason", "refused" in out and
          "messages to +19005550123 are not allowed" in out and
          "queued" not in out, out)

    # a denied e-mail destination
    ca.send("<message to='carol\\40blocked.test@%s' id='deny2'>"
            "<body>hello</body></message>" % MAIL)
    e = answer(ca, "deny2")
    check("denied e-mail destination *@blocked.test: not-allowed with the "
          "reason", e is not None and error_of(e) == "not-allowed" and
          "carol@blocked.test" in error_text(e), tostr(e))

    # a linked route: IM->e-mail only with a verified e-mail link
    ca.send("<message to='bob\\40example.org@%s' id='link1'>"
            "<body>hello</body></message>" % MAIL)
    e = answer(ca, "link1")
    text = error_text(e)
    check("linked route im_mail: a user without a verified e-mail link "
          "gets forbidden (auth) with the reason", e is not None and
          error_of(e) == "forbidden" and error_type(e) == "auth" and
          "linked and verified" in text, tostr(e))
    out = trace(d, queue_id(text))
    check("linked route: stored refused", "refused" in out and
          "linked and verified" in out, out)

    # the sender rate limit: burst 3
    cr = ImClient(srv, r, "desk")
    cr.presence()
    rnum = "+15552223333"
    for i in range(4):
        tgs.send_sms(cr, rnum, "rate %d" % i, "r%d" % i)
    e = answer(cr, "r3")
    text = error_text(e)
    check("rate limit: the 4th message at once gets policy-violation "
          "(wait) with the limit in the text",
          e is not None and error_of(e) == "policy-violation" and
          error_type(e) == "wait" and "rate limit" in text and
          "6 messages a minute" in text, tostr(e))
    check("rate limit: none of the first three was refused",
          all(answer(cr, "r%d" % i, timeout=1) is None for i in range(3)))
    got = phone.wait_for(lambda m: m[1] == rnum, count=3)
    time.sleep(1)
    got = [m for m in phone.received() if m[1] == rnum]
    check("rate limit: exactly the first three reach the phone",
          sorted(m[3] for m in got) == ["rate 0", "rate 1", "rate 2"],
          str(got))
    out = trace(d, queue_id(text))
    check("rate limit: the refusal is in the history with its reason",
          "refused" in out and "rate limit" in out, out)

    # the daily quota: 2 for pq*@localhost
    cq = ImClient(srv, q, "desk")
    cq.presence()
    qnum = "+15553334444"
    for i in range(3):
        tgs.send_sms(cq, qnum, "quota %d" % i, "q%d" % i)
    e = answer(cq, "q2")
    check("daily quota: the 3rd message gets policy-violation with the "
          "quota in the text", e is not None and
          error_of(e) == "policy-violation" and
          "daily quota: 2 messages a day" in error_text(e), tostr(e))
    got = phone.wait_for(lambda m: m[1] == qnum, count=2)
    check("daily quota: the first two are sent",
          sorted(m[3] for m in got) == ["quota 0", "quota 1"], str(got))

    def counted():
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(
            d, "gateway.db"), uri=True)
        try:
            row = db.execute("SELECT count FROM policy_quota WHERE "
                             "sender = ?", ("im:%s@localhost" % q,)
                             ).fetchone()
            return row[0] if row else None
        finally:
            db.close()
    check("daily quota: counted in the queue file (policy_quota)",
          counted() == 2, str(counted()))

    # ... and after a restart
    gw.stop()
    gw.start()
    relinked = harness.wait_for(
        lambda: gw.logtext().count("linked to parleyd") >= 4, 20)
    check("the gateway restarts and links again", relinked, gw.logtext())
    # parleyd may still route to the old link for a moment: retry until
    # the gateway answers.
    e = None
    for i in range(5):
        tgs.send_sms(cq, qnum, "quota again", "q3-%d" % i)
        e = answer(cq, "q3-%d" % i, timeout=4)
        if e is not None:
            break
    check("daily quota: still used up after a restart",
          e is not None and error_of(e) == "policy-violation" and
          "daily quota" in error_text(e), tostr(e))
    cb_ = ImClient(srv, b, "desk")
    cb_.presence()
    tgs.send_sms(cb_, qnum, "another user", "b1")
    got = phone.wait_for(lambda m: m[3] == "another user")
    check("after the restart another user's message passes",
          len(got) == 1 and answer(cb_, "b1", timeout=1) is None, str(got))
    check("daily quota: still 2 in the queue file", counted() == 2,
          str(counted()))

    # SMS from a phone over the rate limit: refused, told by SMS
    # fakesmsc takes one stdin line per read: one line at a time.
    for i in range(4):
        phone.send(num, tgs.SENDER, "mo%d" % i)
        time.sleep(0.4)
    notice = phone.wait_for(lambda m: m[1] == num and
                            m[3].startswith("Not delivered"), timeout=20)
    check("SMS over the rate limit: an SMS back to the phone says why",
          len(notice) == 1 and "rate limit" in notice[0][3],
          str(phone.received()[-5:]))
    def is_mo(e):
        return (e.findtext("{jabber:client}body") or "").startswith("mo")
    bodies = []
    deadline = time.monotonic() + 15
    while len(bodies) < 3 and time.monotonic() < deadline:
        m = ca.wait(tgs.is_msg_from(njid, is_mo), timeout=1)
        if m is not None:
            bodies.append(m.findtext("{jabber:client}body"))
    extra = ca.wait(tgs.is_msg_from(njid, is_mo), timeout=2)
    check("SMS over the rate limit: 3 of the 4 reach the IM user",
          len(bodies) == 3 and extra is None, str(bodies))

    # e-mail: a denied sender at RCPT
    rc, out = tgm.swaks("--server", "127.0.0.1", "--port", str(smtp_port),
                        "--from", "spammer@evil.test", "--to",
                        "%s@gw.test" % a, "--body", "buy now\n")
    check("e-mail from a denied sender: 550 5.7.1 at RCPT with the reason",
          rc != 0 and "550 5.7.1 spammer@evil.test may not send" in out,
          out[-600:])
    out2 = trace(d, queue_id(out))
    check("e-mail refusal: stored refused with the reason",
          "refused" in out2 and "spammer@evil.test may not send" in out2,
          out2)

    # e-mail: the rate limit, 4 messages from one sender
    codes = []
    for i in range(4):
        rc, out = tgm.swaks("--server", "127.0.0.1", "--port",
                            str(smtp_port), "--from", "bob@example.org",
                            "--to", "%s@gw.test" % a, "--body",
                            "mail %d\n" % i)
        codes.append((rc, "451 4.7.1" in out and "rate limit" in out))
    check("e-mail rate limit: 3 accepted, the 4th 451 4.7.1 at RCPT",
          [c[0] == 0 for c in codes] == [True, True, True, False] and
          codes[3][1], str(codes) + out[-600:])
    for c in (ca, cr, cq, cb_):
        c.close()


if __name__ == "__main__":
    main()
