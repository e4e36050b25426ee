// Helpers of the browser test: the host as a child process, the page's HTTP
// server, and a TCP proxy that can cut the EventSource's connection.
// Only node's standard library; nothing here knows about the browser.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..');

/** The host binary the Makefile builds (the test builds nothing). */
export function hostBinary() {
  if (process.env.MEDIATION_HOST_BIN) return process.env.MEDIATION_HOST_BIN;
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
    : path.join(os.homedir(), '.cache', 'mediation-host', 'target');
  return path.join(target, 'release', 'mediation-host');
}

/** Rejects with `what` when `promise` has not settled within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `check()` is truthy, polling; throws with `what` after `ms`. */
export async function waitUntil(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A loopback port that was free a moment ago (listen on 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `server` on a free loopback port; resolves with the port. */
export function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

/** Closes `server` and every connection it still has. */
export function close(server) {
  return new Promise((resolve) => {
    if (!server?.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections?.();
  });
}

/** GET `url`; resolves with the status code, or 0 when nothing answered. */
export function getStatus(url) {
  return new Promise((resolve) => {
    const request = http.get(url, { timeout: 1000 }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(0));
  });
}

/**
 * Sends a WebSocket handshake with `origin` and resolves with the status the host
 * answers (101 when it accepts). The upgraded socket, if any, is closed at once.
 */
export function handshakeStatus(port, pathname, origin) {
  return new Promise((resolve, reject) => {
    const request = http.get({
      host: '127.0.0.1',
      port,
      path: pathname,
      timeout: 5000,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        Origin: origin,
      },
    });
    request.on('upgrade', (response, socket) => {
      socket.destroy();
      resolve(response.statusCode);
    });
    request.on('response', (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on('timeout', () => request.destroy(new Error('handshake timed out')));
    request.on('error', reject);
  });
}

/**
 * The host as a child process on `config` (TOML text written to a temporary file);
 * its stdout (the packet log) and stderr go to files next to it.
 */
export class Host {
  constructor(dir, config) {
    this.dir = dir;
    this.configPath = path.join(dir, 'config.toml');
    this.stdoutPath = path.join(dir, 'host.stdout.log');
    this.stderrPath = path.join(dir, 'host.stderr.log');
    fs.writeFileSync(this.configPath, config);
    const stdout = fs.openSync(this.stdoutPath, 'w');
    const stderr = fs.openSync(this.stderrPath, 'w');
    this.child = spawn(hostBinary(), ['run', '--config', this.configPath], {
      stdio: ['ignore', stdout, stderr],
      env: { ...process.env, RUST_BACKTRACE: '1' },
    });
    fs.closeSync(stdout);
    fs.closeSync(stderr);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => resolve({ code, signal }));
      this.child.on('error', (error) => resolve({ code: null, signal: null, error }));
    });
    this.exit = null;
    this.exited.then((exit) => { this.exit = exit; });
    // Should the test process end early, the host must not outlive it.
    const reap = () => this.kill();
    process.once('exit', reap);
    this.exited.then(() => process.off('exit', reap));
  }

  /** The last `bytes` of the host's stderr, for failure messages. */
  stderr(bytes = 4000) {
    try {
      const text = fs.readFileSync(this.stderrPath, 'utf8');
      return text.slice(-bytes);
    } catch {
      return '';
    }
  }

  /** Waits for GET /readyz to answer 200; throws when the host exits first or after `ms`. */
  async ready(adminPort, ms) {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.exit) {
        const why = this.exit.error ? this.exit.error.message : `exit code ${this.exit.code}, signal ${this.exit.signal}`;
        throw new Error(`the host exited before it was ready (${why}); stderr:\n${this.stderr()}`);
      }
      if (await getStatus(`http://127.0.0.1:${adminPort}/readyz`) === 200) return;
      if (Date.now() > deadline) {
        throw new Error(`GET /readyz did not answer 200 within ${ms} ms; stderr:\n${this.stderr()}`);
      }
      await sleep(50);
    }
  }

  /** SIGTERM, then waits up to `ms` for the exit; resolves with {code, signal}. */
  async stop(ms) {
    if (this.exit) return this.exit;
    this.child.kill('SIGTERM');
    return withTimeout(this.exited, ms, 'the host to exit after SIGTERM');
  }

  /** Last resort in cleanup: SIGKILL a host that is still running. */
  kill() {
    if (!this.exit) this.child.kill('SIGKILL');
  }
}

/**
 * A TCP proxy for the EventSource's connections: it reads each request head (to
 * record the request line and headers, `Last-Event-ID` among them), waits while
 * `hold()` is in force, then connects to the host and forwards both directions
 * byte for byte. `cut()` destroys every live connection.
 */
export class SseProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.requests = [];   // {line, headers} per request head seen, in order
    this.responses = [];  // the first bytes the host answered, per forwarded connection
    this.pairs = new Set();
    this.gate = null;
    this.server = net.createServer((client) => this.accept(client));
  }

  async start() {
    this.port = await listen(this.server);
    return this.port;
  }

  /** New requests wait (connected, head read, nothing forwarded) until `release()`. */
  hold() {
    let release;
    this.gate = new Promise((resolve) => { release = resolve; });
    this.release = () => { this.gate = null; release(); };
  }

  /** Destroys every open connection, both sides. */
  cut() {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream?.destroy();
    }
    this.pairs.clear();
  }

  async close() {
    this.release?.();
    this.cut();
    await close(this.server);
  }

  accept(client) {
    const pair = { client, upstream: null };
    this.pairs.add(pair);
    const drop = () => {
      client.destroy();
      pair.upstream?.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', drop);
    client.on('close', drop);
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 65536) drop();
        return;
      }
      client.off('data', onData);
      client.pause();
      const [line, ...fields] = head.subarray(0, end).toString('latin1').split('\r\n');
      const headers = {};
      for (const field of fields) {
        const colon = field.indexOf(':');
        if (colon > 0) headers[field.slice(0, colon).trim().toLowerCase()] = field.slice(colon + 1).trim();
      }
      this.requests.push({ line, headers });
      Promise.resolve(this.gate).then(() => this.forward(pair, head, drop));
    };
    client.on('data', onData);
  }

  forward(pair, head, drop) {
    const { client } = pair;
    if (client.destroyed) return;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    pair.upstream = upstream;
    upstream.on('error', drop);
    upstream.on('close', drop);
    const response = { first: '' };
    this.responses.push(response);
    upstream.on('data', (chunk) => {
      if (response.first.length < 1024) response.first += chunk.toString('latin1');
    });
    upstream.on('connect', () => {
      upstream.write(head);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  }
}

/**
 * The page's HTTP server: serves page.html at `/` (the page reads where the host
 * is from its query) and answers 204 to anything else (the favicon).
 */
export function pageServer() {
  const html = fs.readFileSync(path.join(HERE, 'page.html'));
  return http.createServer((request, response) => {
    const url = new URL(request.url, 'http://page');
    if (url.pathname === '/') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      response.end(html);
    } else {
      response.writeHead(204);
      response.end();
    }
  });
}
