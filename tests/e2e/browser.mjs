// pollchat's real-browser test: Debian's chromium, driven by playwright-core
// (which downloads no browser), chats through the page served on
// `--web-port` with raw TCP and TLS line clients in the same room.
//
//   npm ci --no-audit --no-fund --prefix tests/e2e
//   node tests/e2e/browser.mjs target/debug/pollchat [--engine poll|threaded]
//
// Skips (exit 0, saying so) when `chromium` is not on PATH, so nothing else
// needs a browser. Every wait is bounded; every process it starts is killed
// at the end, also on failure. Prints `e2e: N passed, M failed`.

import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SCREENSHOT = path.resolve(HERE, '../../docs/web-page.png');
// One expected event (a line, a state) may take this long. It bounds a
// hung run; it is not a speed check.
const WAIT = 10_000;
// Chromium's first start on a fresh machine, right after `cargo test` has
// loaded both cores, once took longer than WAIT (CI, 2026-12-02); the
// page's own checks keep WAIT.
const LAUNCH_WAIT = 60_000;
// Reconnecting after a restart: the page's backoff may have grown to a few
// seconds by the time the server is back.
const RECONNECT_WAIT = 20_000;
// The whole run, whatever happens.
const RUN_LIMIT = 180_000;
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// Any C0/C1 control character, or DEL.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

// ----- checks --------------------------------------------------------------

let passed = 0;
let failed = 0;

// Run one named check; a thrown error (a timeout included) fails it and the
// run goes on, so one report lists everything that broke.
async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL ${name}: ${String(err && err.message || err).split('\n')[0]}`);
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(what);
}

// ----- processes -----------------------------------------------------------

const children = new Set();

function freePorts(n) {
  // Hold all n open at once so they differ, then let them go for the server.
  return new Promise((resolve, reject) => {
    const servers = [];
    const ports = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      s.on('error', reject);
      s.listen(0, '127.0.0.1', () => {
        ports.push(s.address().port);
        servers.push(s);
        if (ports.length === n) {
          let open = n;
          for (const t of servers) t.close(() => { if (--open === 0) resolve(ports); });
        }
      });
    }
  });
}

// Poll until something accepts on `port` (the server binds all its
// listeners before it serves, but we check each one anyway).
async function waitListening(port, ms = WAIT) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A server process; its output is kept to show if something fails.
class Server {
  constructor(bin, args, ports) {
    this.args = args;
    this.ports = ports;
    this.output = '';
    this.proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(this.proc);
    for (const s of [this.proc.stdout, this.proc.stderr]) {
      s.on('data', (d) => { this.output = (this.output + d).slice(-4000); });
    }
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, sig) => {
        children.delete(this.proc);
        resolve({ code, sig });
      });
      // Could not start at all (a wrong path): no 'exit' follows.
      this.proc.once('error', (err) => {
        children.delete(this.proc);
        this.output += String(err);
        resolve({ code: err.code });
      });
    });
  }

  async ready() {
    const early = this.exited.then(({ code, sig }) => {
      throw new Error(`server exited (${code ?? sig}) before listening: ${this.output.trim()}`);
    });
    await Promise.race([Promise.all(this.ports.map((p) => waitListening(p))), early]);
  }

  async stop() {
    if (!children.has(this.proc)) return this.exited;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), WAIT);
    const how = await this.exited;
    clearTimeout(timer);
    return how;
  }
}

// ----- line clients (what nc sees) -------------------------------------------

class LineClient {
  constructor(sock, label) {
    this.label = label;
    this.sock = sock;
    this.lines = [];
    this.seen = 0; // lines before this index were matched already
    this.wake = null;
    this.ended = false;
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, nl).replace(/\r$/, ''));
        buf = buf.slice(nl + 1);
      }
      if (this.wake) this.wake();
    });
    const end = () => { this.ended = true; if (this.wake) this.wake(); };
    sock.on('close', end);
    sock.on('error', end);
  }

  static connect(port, label) {
    return LineClient.opened(net.connect(port, '127.0.0.1'), 'connect', label);
  }

  // TLS with verification against the throwaway certificate.
  static connectTls(port, ca, label) {
    const sock = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca });
    return LineClient.opened(sock, 'secureConnect', label);
  }

  static opened(sock, event, label) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { sock.destroy(); reject(new Error(`${label}: connect timed out`)); }, WAIT);
      sock.once(event, () => { clearTimeout(timer); resolve(new LineClient(sock, label)); });
      sock.once('error', (e) => { clearTimeout(timer); reject(e); });
    });
  }

  send(line) {
    this.sock.write(line + '\n');
  }

  // The next line (after those already matched) that satisfies `pred`.
  async expect(pred, what, ms = WAIT) {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.lines.findIndex((l, j) => j >= this.seen && pred(l));
      if (i >= 0) {
        this.seen = i + 1;
        return this.lines[i];
      }
      const left = deadline - Date.now();
      if (left <= 0 || this.ended) {
        const last = this.lines.slice(-3).map((l) => JSON.stringify(l)).join(', ');
        throw new Error(`${this.label} never got ${what}${this.ended ? ' (connection closed)' : ''}; last lines: ${last}`);
      }
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.wake = () => { clearTimeout(t); r(); };
      });
      this.wake = null;
    }
  }

  async join(name) {
    const welcome = await this.expect((l) => l.includes('You are '), 'the welcome');
    this.send(`/nick ${name}`);
    await this.expect((l) => l.endsWith(` is now known as ${name}`), `the rename to ${name}`);
    return welcome;
  }

  close() {
    this.sock.destroy();
  }
}

// ----- a reverse proxy that serves the web port under a sub-path -----------

// What nginx's `location /chat/ { proxy_pass http://backend/; }` does, for
// the page and its WebSocket: strip the prefix, pass everything else.
function subPathProxy(target, prefix) {
  const strip = (url) => url.slice(prefix.length - 1);
  const proxy = http.createServer((req, res) => {
    if (!req.url.startsWith(prefix)) {
      res.writeHead(404).end();
      return;
    }
    const opts = { host: '127.0.0.1', port: target, path: strip(req.url), method: req.method, headers: req.headers };
    const up = http.request(opts, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
  // An upgrade: replay the head with the shorter path, then relay bytes.
  proxy.on('upgrade', (req, sock, head) => {
    if (!req.url.startsWith(prefix)) {
      sock.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const up = net.connect(target, '127.0.0.1', () => {
      const lines = [`${req.method} ${strip(req.url)} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(lines.join('\r\n') + '\r\n\r\n');
      up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  return new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve(proxy)));
}

// ----- browser tabs ----------------------------------------------------------

class Tab {
  static async open(browser, url, label, options = {}) {
    const context = await browser.newContext({ viewport: { width: 900, height: 600 }, ...options });
    const page = await context.newPage();
    const tab = new Tab(context, page, label);
    // Collected before any page script runs: CSP violations and script errors.
    await page.addInitScript(() => {
      window.__csp = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    page.on('pageerror', (e) => tab.errors.push(String(e)));
    page.on('websocket', (ws) => tab.sockets.push(ws.url()));
    tab.response = await page.goto(url, { timeout: WAIT });
    return tab;
  }

  constructor(context, page, label) {
    this.context = context;
    this.page = page;
    this.label = label;
    this.errors = [];
    this.sockets = [];
  }

  async waitState(prefix, ms = WAIT) {
    try {
      await this.page.waitForFunction(
        (p) => document.getElementById('state').textContent.startsWith(p), prefix, { timeout: ms });
    } catch {
      const now = await this.page.textContent('#state').catch(() => '?');
      throw new Error(`${this.label}: state never "${prefix}…" in ${ms} ms (it says "${now}")`);
    }
  }

  // Wait for a log line whose text is exactly `text` (or passes `text` as a
  // predicate source), with class `kind` if given.
  async waitLine(text, kind, ms = WAIT) {
    try {
      await this.page.waitForFunction(([t, k]) => [...document.querySelectorAll('#log .line')]
        .some((d) => d.textContent === t && (!k || d.classList.contains(k))), [text, kind], { timeout: ms });
    } catch {
      const last = await this.lines().then((l) => l.slice(-3).map((x) => JSON.stringify(x)).join(', '));
      throw new Error(`${this.label} never showed ${JSON.stringify(text)}${kind ? ` as ${kind}` : ''}; last lines: ${last}`);
    }
  }

  async waitLineMatching(re, ms = WAIT) {
    try {
      const h = await this.page.waitForFunction((src) => [...document.querySelectorAll('#log .line')]
        .map((d) => d.textContent).reverse().find((t) => new RegExp(src).test(t)), re.source, { timeout: ms });
      return await h.jsonValue();
    } catch {
      const last = await this.lines().then((l) => l.slice(-3).map((x) => JSON.stringify(x)).join(', '));
      throw new Error(`${this.label} never showed a line like ${re}; last lines: ${last}`);
    }
  }

  lines() {
    return this.page.$$eval('#log .line', (ds) => ds.map((d) => d.textContent));
  }

  // Type a line and press Enter, as a user would.
  async say(text) {
    await this.page.fill('#input', text);
    await this.page.press('#input', 'Enter');
  }

  async join(name) {
    await this.waitLineMatching(/You are /);
    await this.say(`/nick ${name}`);
    await this.waitLineMatching(new RegExp(` is now known as ${name}$`));
  }

  async healthy() {
    const csp = await this.page.evaluate(() => window.__csp);
    assert(csp.length === 0, `${this.label}: CSP violations: ${csp.join('; ')}`);
    assert(this.errors.length === 0, `${this.label}: script errors: ${this.errors.join('; ')}`);
  }
}

// ----- the run ---------------------------------------------------------------

function chromiumPath() {
  try {
    return execFileSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

// A throwaway certificate for localhost and 127.0.0.1, valid two days.
function makeCert(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-addext', 'basicConstraints=critical,CA:FALSE',
    '-keyout', key, '-out', cert,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { cert, key, ca: fs.readFileSync(cert) };
}

const CSP_HEAD = "default-src 'none'";
const MARKUP = '<b>x</b> <img src=x onerror="window.pwned=1">';

async function main() {
  const [bin, ...rest] = process.argv.slice(2);
  // `--engine E` goes to every server started; without it, the default.
  const engine = rest[0] === '--engine' && rest[1] ? ['--engine', rest[1]] : [];
  if (!bin || rest.length !== engine.length) {
    console.error('usage: node tests/e2e/browser.mjs PATH/TO/pollchat [--engine poll|threaded]');
    return 2;
  }
  const executablePath = chromiumPath();
  if (!executablePath) {
    console.log('e2e: skipped: no `chromium` on PATH (apt-get install -y --no-install-recommends chromium)');
    return 0;
  }
  let chromium;
  try {
    ({ chromium } = createRequire(import.meta.url)('playwright-core'));
  } catch {
    console.error('e2e: playwright-core missing: npm ci --no-audit --no-fund --prefix tests/e2e');
    return 2;
  }

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pollchat-e2e-'));
  const servers = [];
  const clients = [];
  const proxies = [];
  let browser = null;
  let erin = null; // the line client of the plain-http server
  try {
    const { cert, key, ca } = makeCert(dir);
    const [line, web, tlsLine, line2, web2] = await freePorts(5);
    // --rate 0: the test sends faster than flood control allows.
    const host = ['--host', '127.0.0.1', '--rate', '0', ...engine];
    const withTls = ['serve', ...host, '--port', `${line}`, '--web-port', `${web}`,
      '--tls-port', `${tlsLine}`, '--tls-cert', cert, '--tls-key', key];
    let server = new Server(bin, withTls, [line, web, tlsLine]);
    servers.push(server);
    await server.ready();
    browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: LAUNCH_WAIT });

    // 1. Everyone joins: carol (nc), dave (TLS line client), alice and bob
    // (tabs over https/wss; the certificate is throwaway, hence
    // ignoreHTTPSErrors).
    const carol = await LineClient.connect(line, 'carol');
    clients.push(carol);
    await carol.join('carol');
    const dave = await LineClient.connectTls(tlsLine, ca, 'dave');
    clients.push(dave);
    await dave.join('dave');

    const pageUrl = `https://localhost:${web}/`;
    const a = await Tab.open(browser, pageUrl, 'alice', { ignoreHTTPSErrors: true });
    const b = await Tab.open(browser, pageUrl, 'bob', { ignoreHTTPSErrors: true });
    await check('the page loads over https with the CSP', async () => {
      assert(a.response && a.response.status() === 200, `status ${a.response && a.response.status()}`);
      const csp = a.response.headers()['content-security-policy'] || '';
      assert(csp.includes(CSP_HEAD), `CSP header: ${JSON.stringify(csp)}`);
    });
    await check('both tabs connect over wss', async () => {
      await a.waitState('connected');
      await b.waitState('connected');
      const want = `wss://localhost:${web}/ws`;
      assert(a.sockets[0] === want && b.sockets[0] === want, `socket URLs ${a.sockets}, ${b.sockets}`);
    });
    await check('/nick from a tab is announced to the others', async () => {
      await a.join('alice');
      await carol.expect((l) => l.endsWith(' is now known as alice'), 'alice\'s rename');
      await dave.expect((l) => l.endsWith(' is now known as alice'), 'alice\'s rename');
      await b.join('bob');
      await a.waitLineMatching(/ is now known as bob$/);
      await carol.expect((l) => l.endsWith(' is now known as bob'), 'bob\'s rename');
    });

    // 2. Every sender reaches every other client.
    await check('tab → tab, nc and TLS line client', async () => {
      await a.say('hi all, quiz at eight?');
      await b.waitLine('<alice> hi all, quiz at eight?', 'chat');
      await carol.expect((l) => l === '<alice> hi all, quiz at eight?', 'alice\'s line');
      await dave.expect((l) => l === '<alice> hi all, quiz at eight?', 'alice\'s line');
    });
    await check('the sender sees its own line, styled as own', async () => {
      await a.waitLine('hi all, quiz at eight?', 'own');
    });
    await check('nc → both tabs', async () => {
      carol.send('count me in');
      await a.waitLine('<carol> count me in', 'chat');
      await b.waitLine('<carol> count me in', 'chat');
    });
    await check('TLS line client → both tabs', async () => {
      dave.send('me too, from the terminal');
      await a.waitLine('<dave> me too, from the terminal');
      await b.waitLine('<dave> me too, from the terminal');
    });
    await check('the other tab → tab and nc; /me is a notice', async () => {
      await b.say('/me brings snacks');
      await a.waitLine('* bob brings snacks', 'notice');
      await carol.expect((l) => l === '* bob brings snacks', 'bob\'s /me');
      await b.say('see you at eight');
      await a.waitLine('<bob> see you at eight', 'chat');
    });
    await check('an error line is styled as an error', async () => {
      await a.say('/dance');
      await a.waitLineMatching(/^! unknown command \/dance/);
      const kind = await a.page.$eval('#log .line:last-child', (d) => d.className);
      assert(kind.includes('error'), `class "${kind}"`);
    });
    await check('Up recalls the last line sent', async () => {
      await a.page.press('#input', 'ArrowUp');
      const v = await a.page.inputValue('#input');
      assert(v === '/dance', `input holds ${JSON.stringify(v)}`);
      await a.page.fill('#input', '');
    });
    await check('screenshot of the conversation', async () => {
      await a.page.screenshot({ path: SCREENSHOT });
      assert(fs.statSync(SCREENSHOT).size > 1000, 'screenshot is empty');
    });

    // 3. Markup and control bytes: text everywhere, no element, no script.
    await check('markup, ESC and BEL from a tab: nc gets text without control bytes', async () => {
      await b.say(`${MARKUP} \u001b[31mred\u0007`);
      // The bytes really went out: the sender's own copy still holds them.
      const mine = await b.page.$$eval('#log .own', (ds) => ds.map((d) => d.textContent).pop());
      assert(mine.includes('\u001b[31m') && mine.endsWith('\u0007'), `sent ${JSON.stringify(mine)}`);
      const got = await carol.expect((l) => l.startsWith('<bob> <b>'), 'bob\'s markup line');
      assert(!CONTROL.test(got), `control character in ${JSON.stringify(got)}`);
      assert(got.includes(MARKUP) && got.endsWith('red'), `line was ${JSON.stringify(got)}`);
    });
    await check('markup shows as text in the other tab: no img, no script ran', async () => {
      const shown = await a.waitLineMatching(/^<bob> <b>/);
      assert(shown.includes(MARKUP), `shown as ${JSON.stringify(shown)}`);
      // One more round trip, so an onerror would have had its chance.
      carol.send('after the markup');
      await a.waitLine('<carol> after the markup');
      const { imgs, pwned, text } = await a.page.evaluate(() => ({
        imgs: document.querySelectorAll('#log img, #log b').length,
        pwned: typeof window.pwned,
        text: document.getElementById('log').textContent,
      }));
      assert(imgs === 0, `${imgs} img or b elements in the log`);
      assert(pwned === 'undefined', 'window.pwned is set: the markup ran');
      assert(!CONTROL.test(text), 'a control character is in the log');
      const own = await b.page.evaluate(() => document.querySelectorAll('#log img, #log b').length);
      assert(own === 0, 'the sender\'s own line made an img');
    });

    // 4. The list sticks to the bottom, unless the reader scrolled up.
    await check('scrolled up, new lines do not move the list; the button returns', async () => {
      for (let i = 1; i <= 30; i++) carol.send(`filler ${i}`);
      await a.waitLine('<carol> filler 30');
      const bottom = await a.page.$eval('#log', (l) => l.scrollHeight - l.scrollTop - l.clientHeight);
      assert(bottom < 8, `not at the bottom after new lines (${bottom}px above)`);
      await a.page.$eval('#log', (l) => { l.scrollTop = 0; });
      carol.send('while you were reading');
      await a.waitLine('<carol> while you were reading');
      const top = await a.page.$eval('#log', (l) => l.scrollTop);
      assert(top === 0, `the list moved to ${top}px`);
      assert(await a.page.isVisible('#jump'), 'no "new messages" button');
      await a.page.click('#jump');
      const after = await a.page.$eval('#log', (l) => l.scrollHeight - l.scrollTop - l.clientHeight);
      assert(after < 8, `the button left the list ${after}px above the bottom`);
    });

    // 5. Rooms from the page (issue 14): a class in a room of its own.
    await check('/join from a tab: the room gets its history, the lobby hears nothing of it', async () => {
      await a.say('/join #class');
      await a.waitLine('* you are now in #class (1 user here)', 'notice');
      await carol.expect((l) => l === '* alice left for #class', 'alice leaving for #class');
      await a.say('homework is page 12');
      // A round trip: the line is in the history before bob asks to join.
      await a.say('/who');
      await a.waitLine('* 1 user here: alice', 'notice');
      await b.say('/join #class');
      await b.waitLine('* last 1 line of #class:', 'notice');
      await b.waitLineMatching(/^\[\d\d:\d\d\] <alice> homework is page 12$/);
      await b.waitLine('* end of history', 'notice');
      await b.say('thanks');
      await a.waitLine('<bob> thanks', 'chat');
      carol.send('lobby only');
      carol.send('/msg alice are you coming?');
      await a.waitLine('*carol* are you coming?');
      await carol.expect((l) => l === '-> alice: are you coming?', 'the /msg confirmation');
      const seen = await a.lines();
      assert(!seen.includes('<carol> lobby only'), 'a lobby line reached #class');
      assert(!carol.lines.some((l) => l.endsWith('homework is page 12')), 'a #class line reached the lobby');
      await a.say('/part');
      await a.waitLine('* you are now in #lobby (3 users here)', 'notice');
      await b.say('/part');
      await b.waitLine('* you are now in #lobby (4 users here)', 'notice');
    });

    // 6. The server goes away and comes back: both tabs rejoin by themselves.
    await check('after SIGTERM the tabs show they are reconnecting', async () => {
      await server.stop();
      await a.waitState('reconnecting');
      await b.waitState('reconnecting');
    });
    await check('after a restart on the same ports both tabs reconnect and chat', async () => {
      server = new Server(bin, withTls, [line, web, tlsLine]);
      servers.push(server);
      await server.ready();
      await a.waitState('connected', RECONNECT_WAIT);
      await b.waitState('connected', RECONNECT_WAIT);
      await a.waitLineMatching(/You are /);
      await a.say('back again');
      await b.waitLineMatching(/^<[^>]+> back again$/);
      await b.say('welcome back');
      await a.waitLineMatching(/^<[^>]+> welcome back$/);
    });

    // 7. A message over --max-line: the server closes with a reason, which
    // the page shows before it reconnects.
    await check('an oversized message: the close reason is shown, then it reconnects', async () => {
      await b.say('x'.repeat(100_000));
      await b.waitLineMatching(/^! closed: \S/);
      await b.waitState('connected', RECONNECT_WAIT);
    });
    await check('no CSP violations or script errors in the tabs', async () => {
      await a.healthy();
      await b.healthy();
    });

    // 8. Without a certificate the web port is plain http, and ws: is used.
    await check('plain http: the page connects over ws and chats with nc', async () => {
      const plain = new Server(bin, ['serve', ...host, '--port', `${line2}`, '--web-port', `${web2}`],
        [line2, web2]);
      servers.push(plain);
      await plain.ready();
      erin = await LineClient.connect(line2, 'erin');
      clients.push(erin);
      await erin.join('erin');
      const c = await Tab.open(browser, `http://127.0.0.1:${web2}/`, 'frank');
      await c.waitState('connected');
      assert(c.sockets[0] === `ws://127.0.0.1:${web2}/ws`, `socket URL ${c.sockets[0]}`);
      await c.join('frank');
      await c.say('plain hello');
      await erin.expect((l) => l === '<frank> plain hello', 'frank\'s line');
      erin.send('plain reply');
      await c.waitLine('<erin> plain reply', 'chat');
      await c.healthy();
    });
    await check('behind a proxy at /chat/ the page uses /chat/ws', async () => {
      const proxy = await subPathProxy(web2, '/chat/');
      proxies.push(proxy);
      const port = proxy.address().port;
      const g = await Tab.open(browser, `http://127.0.0.1:${port}/chat/`, 'grace');
      await g.waitState('connected');
      assert(g.sockets[0] === `ws://127.0.0.1:${port}/chat/ws`, `socket URL ${g.sockets[0]}`);
      await g.join('grace');
      await g.say('hello via the proxy');
      await erin.expect((l) => l === '<grace> hello via the proxy', 'grace\'s line');
      await g.healthy();
    });
  } catch (err) {
    // Set-up that every check needs (cert, ports, server, browser) failed.
    failed += 1;
    console.log(`FAIL set-up: ${err && err.message || err}`);
  } finally {
    for (const c of clients) c.close();
    for (const p of proxies) p.close();
    for (const p of proxies) p.closeAllConnections();
    if (browser) await browser.close().catch(() => {});
    for (const s of servers) {
      if (failed) console.log(`-- server ${s.args.slice(0, 8).join(' ')} …:\n${s.output.trim()}`);
      await s.stop();
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`e2e: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

// Belt and braces: whatever hangs, the run ends and takes its children.
process.on('exit', () => { for (const p of children) p.kill('SIGKILL'); });
const limit = setTimeout(() => {
  console.log(`FAIL the whole run: still going after ${RUN_LIMIT / 1000} s`);
  console.log(`e2e: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, RUN_LIMIT);
limit.unref();
process.exitCode = await main();
clearTimeout(limit);
