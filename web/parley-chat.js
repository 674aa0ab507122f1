// parley-chat.js - starts Converse.js for Parley's web client (doc/web.md).
//
// The WebSocket URL is absolute and built from the page's own location:
// Converse 14 treats a relative websocket_url as unusable and silently
// falls back to BOSH.  The page is served over https:// in a real
// deployment (browsers give crypto.subtle, which SCRAM needs, only to
// secure origins and to localhost), so wss:// follows; ws:// only for
// http://localhost.  XEP-0156 discovery is off: the endpoint is known.
// The login form's domain is the page's host name.  Converse's footer
// (in fullscreen mode) shows sponsors' logos from conversejs.org: an
// element of the same name defined first replaces it (Converse defines
// only the elements not yet defined), so that the page loads nothing from
// another origin.
import converse from './converse/converse.min.js';

customElements.define('converse-footer', class extends HTMLElement {});

// ?transport=bosh uses BOSH (XEP-0206, /http-bind) instead, for networks
// that let no WebSocket through.
const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
const bosh = new URLSearchParams(location.search).get('transport') === 'bosh';
const endpoint = bosh
    ? {bosh_service_url: `${location.protocol}//${location.host}/http-bind`}
    : {websocket_url: `${scheme}//${location.host}/xmpp-websocket`};

converse.initialize({
    ...endpoint,
    discover_connection_methods: false,
    view_mode: 'fullscreen',
    default_domain: location.hostname,
    assets_path: new URL('converse/', location.href).pathname,
    show_connection_url_input: false,
    allow_registration: false,
    i18n: 'en',
    loglevel: 'warn',
});
