-- Prosody 0.12 under `make bench` (bench/run fills in the @NAME@ fields and
-- runs `prosody --config FILE -F`, pinned to one core).
-- Tuned as a competent operator would for throughput (see shared/PEERS.md):
-- generational GC, a listen backlog of 1024, open registration without
-- throttling, no rate limits (mod_limits is not loaded), internal storage.
-- Both c2s ports offer STARTTLS without requiring it; SASL PLAIN is only
-- offered inside TLS (Prosody's default, as in Parley).
run_as_root = true
daemonize = false
pidfile = "@DATA@/prosody.pid"
data_path = "@DATA@"
certificates = "@DATA@/certs"
log = { warn = "@DATA@/prosody.log" }
gc = { mode = "generational" }

c2s_ports = { @PORT_PLAIN@, @PORT_TLS@ }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
component_ports = { }
-- mod_websocket at /xmpp-websocket (the ws scenarios), plain ws on
-- loopback, treated as secure so SASL is offered as on c2s.
http_ports = { @PORT_WS@ }
http_interfaces = { "127.0.0.1" }
consider_websocket_secure = true
https_ports = { }
network_settings = { tcp_backlog = 1024 }

c2s_require_encryption = false
allow_registration = true
min_seconds_between_registrations = 0
authentication = "internal_hashed"
storage = "internal"

modules_enabled = {
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "register"; "offline";
  "version"; "time";
  "smacks"; -- XEP-0198, bundled since 0.12 (resume scenario)
  "websocket"; -- RFC 7395 (ws scenarios)
}
-- Resumable sessions wait 300 s, as in Parley and ejabberd.
smacks_hibernation_time = 300

ssl = { certificate = "@CERT@"; key = "@KEY@"; }

VirtualHost "localhost"
  ssl = { certificate = "@CERT@"; key = "@KEY@"; }

-- Multi-user chat for the muc scenario (Prosody's own defaults otherwise:
-- anyone may create rooms, no occupant cap).
Component "conference.localhost" "muc"
