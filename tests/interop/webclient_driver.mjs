// webclient_driver.mjs - drives Parley's web client (Converse.js at /chat/)
// in headless Chromium through Playwright, for test_webclient.py.
//
// Run by test_webclient.py with Node.js:
//   node webclient_driver.mjs WEB_DIR PROFILE_DIR
// WEB_DIR is web/ (playwright-core is in its node_modules, from
// web/package-lock.json); PROFILE_DIR an empty directory for Chromium's
// profile.  Commands arrive one JSON object a line on stdin; each is
// answered by one JSON line on stdout, {"ok": true, ...} or {"ok": false,
// "error": "..."}.  Every wait is Playwright's, event-driven and bounded
// by the command's "timeout" (ms, default 20000); nothing sleeps.
//   {"op":"open","url":U}            starts Chromium, loads U, waits for
//                                    the login form
//   {"op":"login","jid":J,"password":P}  logs in; waits for the roster
//   {"op":"wait_online","jid":J}     J is in the roster, shown online
//   {"op":"open_chat","jid":J}       opens the chat with J
//   {"op":"send","text":T}           types T in the chat and sends it;
//                                    waits until the chat shows it
//   {"op":"wait_text","text":T}      the chat shows a message with T
//   {"op":"upload_ready"}            {"ready": bool}: the chat's toolbar
//                                    offers file upload (XEP-0363 found)
//   {"op":"upload","path":F}         sends file F from the chat's toolbar
//   {"op":"wait_link","href":U}      the chat shows a link to U
//   {"op":"screenshot","path":F}     a PNG of the page
//   {"op":"state"}                   what the page did: WebSocket URLs,
//                                    CSP violations, requests to other
//                                    origins, page errors, whether
//                                    crypto.subtle is there
//   {"op":"close"}                   closes Chromium, then exits
// Chromium: Debian's /usr/bin/chromium, no background networking, so that
// nothing leaves loopback (doc/web.md, tests).
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';

const [webDir, profileDir] = process.argv.slice(2);
const require = createRequire(path.join(webDir, 'package.json'));
const { chromium } = require('playwright-core');

const CHROMIUM_ARGS = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-default-apps', '--disable-extensions',
    '--no-default-browser-check', '--disable-features=Translate,MediaRouter',
];

let context = null;
let page = null;
let origin = null;
const seen = {
    websockets: [], // URLs of the WebSockets the page opened
    foreign: [],    // requests to another origin (not data: or blob:)
    pageErrors: [], // uncaught exceptions
    consoleErrors: [],
};

function chat(jid) {
    return page.locator(`converse-chat[jid="${jid}"]`);
}

let current = null; // the open chat's JID

async function open(cmd, t) {
    context = await chromium.launchPersistentContext(profileDir, {
        executablePath: '/usr/bin/chromium',
        headless: true,
        args: CHROMIUM_ARGS,
        viewport: { width: 1200, height: 800 },
        timeout: t,
    });
    page = context.pages()[0] || (await context.newPage());
    origin = new URL(cmd.url).origin;
    page.on('websocket', (ws) => seen.websockets.push(ws.url()));
    page.on('request', (req) => {
        const u = req.url();
        if (!u.startsWith('data:') && !u.startsWith('blob:') &&
            new URL(u).origin !== origin)
            seen.foreign.push(u);
    });
    page.on('pageerror', (e) => seen.pageErrors.push(String(e)));
    page.on('console', (m) => {
        if (m.type() === 'error')
            seen.consoleErrors.push(m.text());
    });
    // Injected by the browser itself, before the page's own scripts:
    // the CSP does not apply to it.
    await page.addInitScript(() => {
        window.__csp = [];
        document.addEventListener('securitypolicyviolation', (e) =>
            window.__csp.push(`${e.effectiveDirective} ${e.blockedURI}`));
    });
    const resp = await page.goto(cmd.url, { timeout: t });
    await page.locator('input[name="jid"]').waitFor({ timeout: t });
    return { status: resp ? resp.status() : 0 };
}

async function login(cmd, t) {
    await page.fill('input[name="jid"]', cmd.jid);
    await page.fill('input[name="password"]', cmd.password);
    await page.click('#converse-login button[type="submit"]');
    await page.locator('converse-roster').waitFor({ timeout: t });
    return {};
}

async function waitOnline(cmd, t) {
    await page.locator(
        `a.open-chat[data-jid="${cmd.jid}"] .contact-name--online`)
        .waitFor({ timeout: t });
    return {};
}

async function openChat(cmd, t) {
    await page.click(`a.open-chat[data-jid="${cmd.jid}"]`, { timeout: t });
    await chat(cmd.jid).locator('textarea.chat-textarea')
        .waitFor({ timeout: t });
    current = cmd.jid;
    return {};
}

function message(text) {
    return chat(current).locator('.chat-msg__text', { hasText: text });
}

async function send(cmd, t) {
    const box = chat(current).locator('textarea.chat-textarea');
    await box.fill(cmd.text, { timeout: t });
    await box.press('Enter', { timeout: t });
    await message(cmd.text).first().waitFor({ timeout: t });
    return {};
}

async function waitText(cmd, t) {
    await message(cmd.text).first().waitFor({ timeout: t });
    return {};
}

async function uploadReady(cmd, t) {
    const input = chat(current).locator('.chat-toolbar input.fileupload');
    try {
        await input.waitFor({ state: 'attached', timeout: t });
        return { ready: true };
    } catch (e) {
        return { ready: false };
    }
}

async function upload(cmd, t) {
    await chat(current).locator('.chat-toolbar input.fileupload')
        .setInputFiles(cmd.path, { timeout: t });
    return {};
}

async function waitLink(cmd, t) {
    await chat(current).locator(`.chat-msg a[href="${cmd.href}"]`).first()
        .waitFor({ timeout: t });
    return {};
}

async function screenshot(cmd, t) {
    await page.screenshot({ path: cmd.path, timeout: t });
    return {};
}

async function state() {
    const page_state = await page.evaluate(() => ({
        csp: window.__csp || [],
        subtle: !!(window.crypto && window.crypto.subtle),
        secure: window.isSecureContext,
    }));
    return { ...seen, ...page_state };
}

const ops = {
    open, login, wait_online: waitOnline, open_chat: openChat, send,
    wait_text: waitText, upload_ready: uploadReady, upload,
    wait_link: waitLink, screenshot,
    state,
};

function reply(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

async function closeAll() {
    if (context) {
        const c = context;
        context = null;
        await c.close().catch(() => {});
    }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
    let cmd;
    try {
        cmd = JSON.parse(line);
    } catch (e) {
        reply({ ok: false, error: `bad command: ${line}` });
        continue;
    }
    if (cmd.op === 'close')
        break;
    const fn = ops[cmd.op];
    if (!fn) {
        reply({ ok: false, error: `unknown op ${cmd.op}` });
        continue;
    }
    try {
        reply({ ok: true, ...(await fn(cmd, cmd.timeout || 20000)) });
    } catch (e) {
        reply({ ok: false, error: String(e && e.message || e).slice(0, 2000) });
    }
}
await closeAll();
reply({ ok: true, closed: true });
process.exit(0);
