#!/usr/bin/python3
"""nbxmpp_ws_client.py - nbxmpp (Debian python3-nbxmpp) as an XMPP client
over WebSocket, for test_websocket.py.

    nbxmpp_ws_client.py URL JID PASSWORD PEER

Connects to URL (ws:// or wss://, libsoup's WebSocket underneath) as JID
with SCRAM, sends PEER the chat message "hi from nbxmpp", waits for the
server's answer to a ping (so the message has been routed), disconnects,
and prints one JSON line: {"connected": bool, "pinged": bool, "error":
str}.  Bounded: gives up after 30 s.
"""

import json
import sys

from gi.repository import GLib

from nbxmpp.client import Client
from nbxmpp.const import ConnectionProtocol, ConnectionType
from nbxmpp.protocol import JID, Iq, Message


def main():
    url, jid, password, peer = sys.argv[1:5]
    j = JID.from_string(jid)
    result = {"connected": False, "pinged": False, "error": ""}
    loop = GLib.MainLoop()

    client = Client()
    client.set_domain(j.domain)
    client.set_username(j.localpart)
    client.set_resource("nbxmpp")
    client.set_password(password)
    client.set_custom_host(url, ConnectionProtocol.WEBSOCKET,
                           ConnectionType.PLAIN)
    client.set_ignore_tls_errors(True)
    client.set_mechs({"SCRAM-SHA-1", "SCRAM-SHA-256"})

    def done(*_a):
        loop.quit()

    def on_pong(_client, stanza, *_a):
        result["pinged"] = stanza.getType() == "result"
        client.disconnect()
        GLib.timeout_add(2000, done)

    def on_connected(*_a):
        result["connected"] = True
        client.send_stanza(Message(to=peer, body="hi from nbxmpp",
                                   typ="chat"))
        iq = Iq(typ="get", to=j.domain)
        iq.addChild(name="ping", namespace="urn:xmpp:ping")
        client.send_stanza(iq, callback=on_pong)

    def on_failed(*_a):
        result["error"] = "connection failed: %s" % (client.get_error(),)
        loop.quit()

    def on_disconnected(*_a):
        if not result["pinged"]:
            result["error"] = "disconnected: %s" % (client.get_error(),)
        loop.quit()

    client.subscribe("connected", on_connected)
    client.subscribe("connection-failed", on_failed)
    client.subscribe("disconnected", on_disconnected)
    GLib.timeout_add_seconds(30, done)
    client.connect()
    loop.run()
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
