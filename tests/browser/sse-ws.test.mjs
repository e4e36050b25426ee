// The quickstart in a real browser: headless Chromium (Debian's `chromium`, driven
// by playwright-core) loads a page from another origin, which publishes with
// fetch POST /ingest and over a WebSocket, and receives over EventSource and
// WebSocket. Checks CORS, the origin policy, and that an EventSource that loses its
// connection resumes with Last-Event-ID without losing or repeating an event.
//
// Run by scripts/browser-test.sh (`node --test tests/browser/`). It builds nothing:
// the host binary is the one the Makefile built (see support.mjs: hostBinary).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import {
  Host, SseProxy, close, freePort, handshakeStatus, hostBinary, listen, pageServer, waitUntil, withTimeout,
} from './support.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic',
  // Debian's launcher adds this when /dev/shm is small, but its check can fail; containers often have 64 MiB.
  '--disable-dev-shm-usage',
];
/** The bound on every single wait of the test. */
const WAIT_MS = 10_000;
/** The `retry:` hint the SSE entrypoint sends: how long the browser waits to reconnect. */
const RETRY_MS = 300;

/** The quickstart (config.toml) on free ports, with the page's origin allowed everywhere. */
function configFor({ listen, admin, allowed }) {
  const origins = `allowed_origins = ${JSON.stringify([allowed])}`;
  return `# Written by tests/browser/sse-ws.test.mjs: the quickstart on free ports.
[host]
listen = "127.0.0.1:${listen}"
admin_listen = "127.0.0.1:${admin}"
reload_poll_ms = 0

[entrypoints.ingest]
type = "http_post"
path = "/ingest"
destination = "chat"
${origins}

[entrypoints.ws]
type = "websocket"
path = "/ws"
destination = "chat"
adapter_settings = { protocol = "envelope" }
${origins}

[entrypoints.events]
type = "sse"
path = "/events"
retry_ms = ${RETRY_MS}
${origins}

[entrypoints.poll]
type = "http_get"
path = "/poll"
${origins}

[endpoints.chat]
type = "memory"

[[routes]]
source = "ingest"
target = "chat"

[[routes]]
source = "ws"
target = "chat"

[[routes]]
source = "chat"
target = "events"

[[routes]]
source = "chat"
target = "ws"

[[routes]]
source = "chat"
target = "poll"
`;
}

describe('the quickstart in a browser', { timeout: 120_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mediation-host-browser-'));
  let host;
  let hostPort;
  let pages;      // the allowed page's server
  let evilPages;  // a second origin, not in allowed_origins
  let proxy;
  let browser;
  let page;
  let evil;
  let pageOrigin;
  let evilOrigin;
  /** Every payload the page's EventSource must have received, in order. */
  const published = [];

  /** Resolves once the page's EventSource holds `count` messages (throws on timeout). */
  const sseCount = (count) => page.waitForFunction(
    (n) => window.received.sse.length >= n, count, { timeout: WAIT_MS, polling: 20 },
  );

  /** POSTs `payload` from the page and asserts a 202 the page can read. */
  async function postFromPage(payload) {
    const answer = await withTimeout(page.evaluate((body) => window.post(body), payload), WAIT_MS, `POST ${payload}`);
    assert.equal(answer.error, undefined, `fetch POST /ingest failed in the page: ${answer.error}`);
    assert.equal(answer.status, 202, `POST /ingest answered ${answer.status}: ${answer.text}`);
    assert.equal(JSON.parse(answer.text).status, 'delivered');
    published.push(payload);
    return answer;
  }

  before(async () => {
    assert.ok(fs.existsSync(hostBinary()), `no host binary at ${hostBinary()}: run \`make build\` first`);
    assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}: apt-get install chromium`);

    pages = pageServer();
    evilPages = pageServer();
    pageOrigin = `http://127.0.0.1:${await listen(pages)}`;
    evilOrigin = `http://127.0.0.1:${await listen(evilPages)}`;

    // A port picked this way can be taken by someone else before the host binds it:
    // then the host exits at once, and another pair of ports is tried.
    for (let attempt = 1; ; attempt += 1) {
      const ports = { listen: await freePort(), admin: await freePort() };
      if (ports.admin === ports.listen) ports.admin = await freePort();
      host = new Host(dir, configFor({ ...ports, allowed: pageOrigin }));
      try {
        await host.ready(ports.admin, 30_000);
        hostPort = ports.listen;
        break;
      } catch (error) {
        host.kill();
        await host.exited;
        if (attempt === 3) throw error;
      }
    }
    proxy = new SseProxy(hostPort);
    await proxy.start();

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
    const hostUrl = `http://127.0.0.1:${hostPort}`;
    const query = `?host=${encodeURIComponent(hostUrl)}&sse=${encodeURIComponent(`http://127.0.0.1:${proxy.port}`)}`;
    page = await browser.newPage();
    page.setDefaultTimeout(WAIT_MS);
    await page.goto(`${pageOrigin}/${query}`);
    evil = await browser.newPage();
    evil.setDefaultTimeout(WAIT_MS);
    await evil.goto(`${evilOrigin}/?host=${encodeURIComponent(hostUrl)}`);

    assert.equal(await withTimeout(page.evaluate(() => window.connect()), WAIT_MS, 'EventSource and WebSocket to open'),
      'connected');
  });

  after(async () => {
    if (page) {
      const shot = path.join(dir, 'page.png');
      try {
        await page.screenshot({ path: shot, fullPage: true, timeout: WAIT_MS });
        console.log(`screenshot: ${shot}`);
      } catch (error) {
        console.log(`no screenshot: ${error.message}`);
      }
    }
    await browser?.close().catch(() => {});
    await proxy?.close();
    await close(pages);
    await close(evilPages);
    if (host) {
      host.kill();
      await host.exited;
      console.log(`host logs: ${host.stderrPath} (stderr), ${host.stdoutPath} (packet log)`);
    }
  });

  it('delivers a fetch POST from another origin to the EventSource and the WebSocket', async () => {
    const payload = JSON.stringify({ text: 'hello from fetch', n: 1 });
    await postFromPage(payload);
    await sseCount(published.length);
    const sse = await page.evaluate(() => window.received.sse);
    assert.deepEqual(sse.map((m) => m.data), published);
    assert.match(sse[0].id, /^\d+$/, 'every SSE event carries its ring sequence as id');

    await page.waitForFunction((p) => window.received.ws.some((m) => JSON.stringify(m.data) === p), payload);
    const frames = await page.evaluate(() => window.received.ws);
    const frame = frames.find((m) => JSON.stringify(m.data) === payload);
    assert.equal(frame.type, 'message');
    assert.equal(frame.topic, 'chat');
    assert.deepEqual(frame.data, JSON.parse(payload));
    assert.equal(String(frame.seq), sse[0].id, 'the WebSocket frame and the SSE event carry the same sequence');
  });

  it('delivers a WebSocket publish to the EventSource', async () => {
    const data = { text: 'hello from the websocket', n: 2 };
    await page.evaluate((d) => window.wsSend({ type: 'publish', topic: 'chat', data: d }), data);
    published.push(JSON.stringify(data));
    await sseCount(published.length);
    const sse = await page.evaluate(() => window.received.sse);
    assert.deepEqual(sse.map((m) => m.data), published);
    // The publisher's own WebSocket gets it back too (route chat -> ws).
    await page.waitForFunction((n) => window.received.ws.some((m) => m.data?.n === n), data.n);
  });

  it('resumes a cut EventSource with Last-Event-ID, without loss or duplicates', async () => {
    const tag = (n) => JSON.stringify({ resume: n });
    const before = 5;
    const during = 5;
    for (let n = 1; n <= before; n += 1) await postFromPage(tag(n));
    await sseCount(published.length);
    const lastSeen = (await page.evaluate(() => window.received.sse.at(-1))).id;
    assert.equal(proxy.requests.length, 1, 'one EventSource request so far');
    assert.equal(proxy.requests[0].headers['last-event-id'], undefined);
    assert.match(proxy.responses[0].first, /^HTTP\/1\.1 200 /);
    assert.match(proxy.responses[0].first, new RegExp(`\\nretry: ${RETRY_MS}\\n\\n`), 'the stream opens with the retry hint');

    // Cut the connection; hold the browser's reconnect at the proxy while more is published.
    proxy.hold();
    proxy.cut();
    await page.waitForFunction(() => window.received.sseStates.at(-1) === 'error:0');
    await waitUntil(() => proxy.requests.length === 2, WAIT_MS, 'the EventSource to reconnect');
    for (let n = before + 1; n <= before + during; n += 1) await postFromPage(tag(n));
    // The page's WebSocket saw them, so they were delivered while the EventSource was away.
    await page.waitForFunction((n) => window.received.ws.some((m) => m.data?.resume === n), before + during);
    assert.equal(await page.evaluate(() => window.received.sse.length), published.length - during,
      'nothing reached the EventSource while it was disconnected');
    proxy.release();

    await sseCount(published.length);
    await new Promise((resolve) => setTimeout(resolve, 300)); // room for a duplicate to show up
    const sse = await page.evaluate(() => window.received.sse);
    assert.deepEqual(sse.map((m) => m.data), published, 'every event exactly once, in order');
    const ids = sse.map((m) => Number(m.id));
    for (let i = 1; i < ids.length; i += 1) assert.ok(ids[i] > ids[i - 1], `ids ascend: ${ids.join(',')}`);
    assert.deepEqual(await page.evaluate(() => window.received.sseGaps), [], 'no gap reported');

    assert.deepEqual(proxy.requests.map((r) => r.line), ['GET /events HTTP/1.1', 'GET /events HTTP/1.1'],
      'exactly one reconnect, and no preflight');
    assert.equal(proxy.requests[1].headers['last-event-id'], lastSeen, 'the reconnect carries Last-Event-ID');
    assert.deepEqual(await page.evaluate(() => window.received.sseStates), ['open', 'error:0', 'open']);
  });

  it('serves the same events to a cross-origin GET /poll', async () => {
    const answer = await withTimeout(page.evaluate(() => window.poll(0)), WAIT_MS, 'GET /poll');
    assert.equal(answer.status, 200, `GET /poll answered ${answer.status}: ${answer.text}`);
    const { events, next_cursor: next } = JSON.parse(answer.text);
    const sse = await page.evaluate(() => window.received.sse);
    assert.deepEqual(events.map((e) => JSON.stringify(e.data)), published);
    assert.deepEqual(events.map((e) => String(e.seq)), sse.map((m) => m.id), 'the same sequences as the SSE ids');
    assert.equal(next, events.at(-1).seq + 1);
  });

  it('refuses an origin that is not in allowed_origins', async () => {
    // A preflighted POST: the preflight gets 403, so fetch fails and nothing is sent.
    const preflighted = await withTimeout(evil.evaluate(() => window.post('{"evil":1}')), WAIT_MS, 'evil POST');
    assert.match(String(preflighted.error), /TypeError/, `fetch from ${evilOrigin} must fail: ${JSON.stringify(preflighted)}`);
    // A simple request (no preflight) does reach the host, which must refuse it too.
    const simple = await withTimeout(evil.evaluate(() => window.post('evil 2', 'text/plain')), WAIT_MS, 'evil POST 2');
    assert.match(String(simple.error), /TypeError/, `fetch from ${evilOrigin} must fail: ${JSON.stringify(simple)}`);

    const ws = await withTimeout(evil.evaluate(() => window.tryWebSocket()), WAIT_MS, 'evil WebSocket');
    assert.ok(!ws.includes('open'), `the WebSocket from ${evilOrigin} must not open: ${ws}`);
    assert.equal(ws.at(-1), 'close:1006');
    assert.equal(await handshakeStatus(hostPort, '/ws', evilOrigin), 403, 'the handshake is answered 403');
    assert.equal(await handshakeStatus(hostPort, '/ws', pageOrigin), 101, 'and the allowed origin gets 101');

    const es = await withTimeout(evil.evaluate(() => window.tryEventSource()), WAIT_MS, 'evil EventSource');
    assert.deepEqual(es, ['error:2'], 'the EventSource from a refused origin fails for good');

    // Nothing from the refused origin was published: the next event is the allowed page's.
    const marker = JSON.stringify({ marker: 'after the refused origin' });
    await postFromPage(marker);
    await sseCount(published.length);
    const sse = await page.evaluate(() => window.received.sse);
    assert.deepEqual(sse.map((m) => m.data), published);
  });

  it('stops with exit code 0 on SIGTERM while browser clients are connected', async () => {
    const exit = await host.stop(20_000);
    assert.deepEqual(exit, { code: 0, signal: null }, `the host's exit; stderr:\n${host.stderr()}`);
  });
});
