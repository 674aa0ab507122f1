#!/usr/bin/python3
"""test_component_links.py - several links per component and XEP-0198 on
component streams (src/xmpp/component.c, comp_sm.c).

Raw sockets as the component: two links of one domain with stream
management (<enable/> after the handshake, <enabled/> back), the third
refused with <conflict/> (max_links = 2); a user's messages spread over
both links, each conversation on one link and in order; <r/> from
parleyd; a link closed without acknowledging: its stanzas arrive again
on the other, in order; <a h/> for the component's own stanzas; with no
link left, unacknowledged and new stanzas held and delivered in order to
the next link that enables; bounced (service-unavailable) after sm_hold;
a link without <enable/> still served after the enable wait; an <a h/>
over the count gets <handled-count-too-high/>.

Run with /usr/bin/python3; `scripts/run-tests test_component_links`.
"""

import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, tostr  # noqa: E402
from im_common import ImClient, add_users, error_of  # noqa: E402
from test_component import Component  # noqa: E402

NS_COMP = "jabber:component:accept"
NS_SM = "urn:xmpp:sm:3"
SECRET = "s3cr3t-Ω"
DOMAIN = "gw.localhost"
HOLD = 3


def is_msg(e):
    return e.tag == "{%s}message" % NS_COMP


def is_sm(name):
    return lambda e: e.tag == "{%s}%s" % (NS_SM, name)


def link(srv, cport, enable=True):
    c = Component(srv, cport)
    c.open()
    hs = c.handshake()
    if hs.tag != "{%s}handshake" % NS_COMP:
        return c, hs
    if enable:
        c.send("<enable xmlns='%s'/>" % NS_SM)
        return c, c.next(is_sm("enabled"))
    return c, hs


def gather(links, n, timeout=10):
    """Messages arriving on links (a dict name -> Component) until n in
    all; returns {name: [message, ...]}."""
    got = {k: [] for k in links}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < n and \
            time.monotonic() < deadline:
        for k, c in links.items():
            try:
                got[k].append(c.next(is_msg, timeout=0.05))
            except (TimeoutError, harness.StreamClosed, OSError):
                pass
    return got


def ids(msgs):
    return [m.get("id") for m in msgs]


def components(srv):
    rc, out = srv.ctl("components", "--json")
    try:
        return {x["domain"]: x for x in json.loads(out)}.get(DOMAIN, {})
    except (ValueError, KeyError, TypeError):
        return {}


def main():
    cport, = harness.free_ports(1)
    srv = harness.Server(
        listeners_extra='{ protocol = "component"; address = "127.0.0.1"; '
                        'port = %d; tls = "none"; }' % cport,
        host_extra='components = ( { domain = "%s"; secret = "%s"; '
                   'max_links = 2; } );' % (DOMAIN, SECRET),
        extra="component: { sm_hold = %d; sm_enable_wait = 300; };" % HOLD)
    if not srv.start():
        check("parleyd starts", False, srv.dump_log())
        harness.finish()

    user, = (harness.unique("cl"),)
    ju, = add_users(srv, user)
    cu = ImClient(srv, user, "desk")
    cu.presence()

    a, ea = link(srv, cport)
    b, eb = link(srv, cport)
    check("links: two links of one domain enable stream management "
          "(<enabled/> after <enable/>)",
          ea.tag == "{%s}enabled" % NS_SM and eb.tag == "{%s}enabled" % NS_SM
          and ea.get("resume") is None, tostr(ea) + tostr(eb))
    c3 = Component(srv, cport)
    c3.open()
    c3.send("<handshake>%s</handshake>" % hashlib.sha1(
        (c3.header.get("id") + SECRET).encode()).hexdigest())
    check("links: a third link over max_links = 2 gets <conflict/>",
          c3.stream_error() == "conflict")
    c3.close()

    # -- spreading: 20 conversations, 3 messages each
    for k in range(3):
        for i in range(20):
            cu.message("n%d@%s" % (i, DOMAIN), "hello %d" % k,
                       msg_id="m%d-%d" % (i, k))
    got = gather({"a": a, "b": b}, 60)
    total = len(got["a"]) + len(got["b"])
    check("links: 60 messages arrive, spread over both links",
          total == 60 and got["a"] and got["b"],
          "a %d, b %d" % (len(got["a"]), len(got["b"])))
    split, order = [], []
    for i in range(20):
        to = "n%d@%s" % (i, DOMAIN)
        on = [k for k in ("a", "b") if any(m.get("to") == to
                                            for m in got[k])]
        if len(on) != 1:
            split.append(to)
            continue
        seq = [m.get("id") for m in got[on[0]] if m.get("to") == to]
        if seq != ["m%d-%d" % (i, k) for k in range(3)]:
            order.append((to, seq))
    check("links: each conversation stays on one link, in order",
          not split and not order, "split %s, order %s" % (split, order))
    try:
        ra = a.next(is_sm("r"), timeout=5)
        rb = b.next(is_sm("r"), timeout=5)
    except (TimeoutError, harness.StreamClosed) as e:
        ra = rb = None
        check("links: parleyd asks for acks", False, repr(e))
    else:
        check("links: parleyd asks for acks with <r/> on both links",
              ra is not None and rb is not None)

    # -- b acknowledges its share; a dies without a word
    b.send("<a xmlns='%s' h='%d'/>" % (NS_SM, len(got["b"])))
    a_ids = ids(got["a"])
    a.sock.close()
    again = gather({"b": b}, len(a_ids))["b"]
    check("links: what the dead link left unacknowledged arrives on the "
          "other, once each and in order", ids(again) == a_ids,
          "%s vs %s" % (ids(again), a_ids))
    check("links: the user got no bounce meanwhile",
          not cu.quiet(lambda e: e.get("type") == "error", 0.5))
    info = components(srv)
    check("parleyctl components: one link, the resent count",
          info.get("links") == 1 and info.get("max_links") == 2 and
          info.get("resent", 0) >= len(a_ids), json.dumps(info))
    b.send("<a xmlns='%s' h='%d'/>" % (NS_SM, len(got["b"]) + len(again)))

    # -- inbound counting
    b.send("<r xmlns='%s'/>" % NS_SM)
    a0 = b.next(is_sm("a"))
    for i in range(3):
        b.send("<message from='bot@%s' to='%s' type='chat' id='in%d'>"
               "<body>back %d</body></message>" % (DOMAIN, ju, i, i))
    b.send("<r xmlns='%s'/>" % NS_SM)
    # The answer may lag (h counts a stanza once its writes committed);
    # then an unrequested <a/> follows when it moves.
    acks = []
    try:
        while not acks or acks[-1].get("h") != "3":
            acks.append(b.next(is_sm("a"), timeout=5))
    except (TimeoutError, harness.StreamClosed):
        pass
    hs = [int(x.get("h")) for x in acks]
    check("links: parleyd's <a h/> counts the component's stanzas "
          "(0, then up to 3)", a0.get("h") == "0" and hs and
          hs[-1] == 3 and hs == sorted(hs), "%s %s" % (tostr(a0), hs))
    back = cu.collect(lambda e: (e.get("id") or "").startswith("in"), 3)
    check("links: the component's messages reach the user", len(back) == 3)

    # -- no link left: held, then delivered in order to the next link
    cu.message("n0@%s" % DOMAIN, "held 1", msg_id="h1")
    first = b.next(is_msg)
    b.sock.close()
    time.sleep(0.3)
    cu.message("n0@%s" % DOMAIN, "held 2", msg_id="h2")
    cu.message("n1@%s" % DOMAIN, "held 3", msg_id="h3")
    time.sleep(0.3)
    info = components(srv)
    check("links: with no link left, the unacknowledged and the new "
          "stanzas are held", first.get("id") == "h1" and
          info.get("links") == 0 and info.get("held") == 3,
          json.dumps(info))
    d, ed = link(srv, cport)
    held = gather({"d": d}, 3)["d"]
    check("links: the next link to enable gets the held stanzas in order",
          ids(held) == ["h1", "h2", "h3"], ids(held))
    check("links: nothing was bounced while held",
          not cu.quiet(lambda e: e.get("type") == "error", 0.3))

    # -- bounced after sm_hold
    cu.message("n5@%s" % DOMAIN, "lost?", msg_id="b1")
    d.next(is_msg)
    d.sock.close()
    err = cu.wait(lambda e: e.get("id") == "b1" and
                  e.get("type") == "error", timeout=HOLD + 5)
    check("links: held longer than sm_hold: bounced with "
          "<service-unavailable/>", error_of(err) == "service-unavailable",
          tostr(err))

    # -- a component that does not enable stream management
    e, _ = link(srv, cport, enable=False)
    t0 = time.monotonic()
    cu.message("n7@%s" % DOMAIN, "plain", msg_id="p1")
    try:
        pm = e.next(is_msg)
    except (TimeoutError, harness.StreamClosed):
        pm = None
    check("links: a link without <enable/> gets its stanzas (after the "
          "enable wait)", pm is not None and pm.get("id") == "p1",
          "%.2f s" % (time.monotonic() - t0))
    e.send("<r xmlns='%s'/>" % NS_SM)
    check("links: <r/> on a link without stream management gets "
          "<unsupported-stanza-type/>",
          e.stream_error() == "unsupported-stanza-type")

    # -- an ack for more than was sent
    f, _ = link(srv, cport)
    f.send("<a xmlns='%s' h='5'/>" % NS_SM)
    try:
        el = f.next(lambda x: x.tag.endswith("}error"))
        too_high = el.find("{%s}handled-count-too-high" % NS_SM)
    except (TimeoutError, harness.StreamClosed):
        el, too_high = None, None
    check("links: <a h/> over the count gets <handled-count-too-high/>",
          too_high is not None and too_high.get("send-count") == "0",
          tostr(el))
    check("links: the user is served throughout", cu.ping() is not None)
    harness.finish()


if __name__ == "__main__":
    main()
