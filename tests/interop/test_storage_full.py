#!/usr/bin/python3
"""test_storage_full.py - a full store refuses a message, says so, and
works again once space is freed (doc/storage.md, "When a batch fails").

parleyd runs on SQLite with storage.sqlite_max_size = 512 KiB.  A sender
with stream management (XEP-0198) sends messages of 20 KB, one at a time,
to an account that is offline, until one cannot be stored.  Each message
is either stored (no error comes back) or answered with
<resource-constraint/> type wait (RFC 6120 §8.3.3.18) from the recipient's
JID; the error reaches the sender before the <a h/> that counts the
message, so no acknowledgement announces it as stored.  Then the recipient
logs in: it gets exactly the messages that were stored, each once, and not
the refused one; their delivery frees their space.  A new message is then
stored without error and delivered at the next login.

SQLite only (sqlite_max_size is the SQLite driver's cap): the script runs
with PARLEY_STORAGE=sqlite whatever the environment says.  Every wait is
bounded (STEP, QUIET in im_common.py).  Run with /usr/bin/python3;
`scripts/run-tests storage_full`.
"""

import os
import sys

os.environ["PARLEY_STORAGE"] = "sqlite"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, note, tostr  # noqa: E402
from im_common import (QUIET, STEP, ImClient, add_users,  # noqa: E402
                       bare_of, error_of)
from sm_common import NS_SM, SM, SmClient  # noqa: E402

C = "{jabber:client}"
ERR = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
MAX_SIZE = 512 * 1024
BODY = 20000          # bytes of body per message
MAX_MESSAGES = 60     # 1.2 MB: far beyond the cap


def body(i):
    head = "full %02d " % i
    return head + "x" * (BODY - len(head))


def is_body_message(frm_bare):
    def pred(el):
        return el.tag == C + "message" and el.get("type") != "error" and \
            bare_of(el.get("from")) == frm_bare
    return pred


def send_one(s, to, i):
    """Sends message i; returns ("stored", None), ("refused", error
    element) or ("lost", detail) when neither its error nor an <a/>
    counting it came.  Checks that an error comes before that <a/>."""
    mid = "f%02d" % i
    s.message(to, body(i), msg_id=mid)
    want = s.stanzas_sent
    s.send("<r xmlns='%s'/>" % NS_SM)

    def error_or_ack(el):
        return (el.get("id") == mid and el.get("type") == "error") or \
            (el.tag == SM + "a" and int(el.get("h")) >= want)
    first = s.wait(error_or_ack, STEP * 2)
    if first is None:
        return "lost", "no error and no <a h='%d'/> within %d s" % (
            want, STEP * 2)
    if first.tag == SM + "a":
        late = s.quiet(lambda el: el.get("id") == mid, 0)
        if late:
            check("message %d: its error comes before the <a/> counting it "
                  "(XEP-0198)" % i, False, tostr(late[0]))
            return "refused", late[0]
        return "stored", None
    ack = s.wait(lambda el: el.tag == SM + "a" and int(el.get("h")) >= want,
                 STEP * 2)
    check("message %d: after its error, an <a/> counts it as handled "
          "(XEP-0198)" % i, ack is not None, "no <a h='%d'/>" % want)
    return "refused", first


def fill_and_free(srv):
    sender, rcpt = harness.unique("fs"), harness.unique("fr")
    js, jr = add_users(srv, sender, rcpt)
    s = SmClient(srv, sender, "s", auto_ack=True)
    s.roster_get()
    en = s.enable(resume=False)
    check("stream management enabled", en is not None and
          en.tag == SM + "enabled", tostr(en))
    s.presence()

    stored, refused = [], None
    for i in range(MAX_MESSAGES):
        what, el = send_one(s, jr, i)
        if what == "lost":
            check("message %d is stored or refused" % i, False, el)
            return
        if what == "stored":
            stored.append(body(i))
            continue
        refused = (i, el)
        break
    note("%d messages of %d bytes stored before the store was full"
         % (len(stored), BODY))
    check("some messages are stored before the store is full",
          len(stored) >= 3, "%d stored" % len(stored))
    check("a message beyond storage.sqlite_max_size is refused",
          refused is not None, "all %d stored" % MAX_MESSAGES)
    if refused is None:
        return
    i, el = refused
    err = el.find(C + "error")
    check("the refusal is <resource-constraint/> type wait "
          "(RFC 6120 §8.3.3.18)",
          error_of(el) == "resource-constraint" and err is not None and
          err.get("type") == "wait", tostr(el))
    check("the refusal comes from the recipient's JID to the sender",
          bare_of(el.get("from")) == jr and el.get("to") == s.jid,
          tostr(el))

    # The recipient logs in: what was stored, each once, not the refused.
    r = ImClient(srv, rcpt, "r")
    r.presence(priority=0)
    got = r.collect(is_body_message(js), len(stored), STEP * 3)
    got += r.quiet(is_body_message(js), QUIET)
    bodies = [m.findtext(C + "body") for m in got]
    check("the recipient gets every stored message, in order, once",
          bodies == stored, "got %d of %d; first bodies %s" % (
              len(bodies), len(stored), [b[:8] for b in bodies[:3]]))
    check("the refused message is not delivered",
          body(i) not in bodies, "it was")
    r.logout()

    # Their space is free again: a new message is stored.
    what, el = send_one(s, jr, MAX_MESSAGES)
    check("after the recipient read its messages, a new one is stored",
          what == "stored", "%s: %s" % (
              what, tostr(el) if el is not None and what != "lost" else el))
    r = ImClient(srv, rcpt, "r2")
    r.presence(priority=0)
    got = r.collect(is_body_message(js), 1, STEP * 3)
    got += r.quiet(is_body_message(js), QUIET)
    check("and delivered at the next login",
          [m.findtext(C + "body") for m in got] == [body(MAX_MESSAGES)],
          "got %d messages" % len(got))
    r.logout()
    s.logout()


def run():
    srv = harness.Server(storage_extra="sqlite_max_size = %d;" % MAX_SIZE,
                         label="sqlite_max_size")
    if srv.start():
        try:
            fill_and_free(srv)
        except Exception as e:  # noqa: BLE001 - report, don't crash
            import traceback
            traceback.print_exc()
            check("the store-full test runs without exceptions", False,
                  repr(e))
        log = open(srv.log_path, errors="replace").read()
        check("the server logs why the message was refused",
              "storing for" in log and "failed" in log,
              "no such line in %s" % srv.log_path)
    harness.finish()


if __name__ == "__main__":
    run()
