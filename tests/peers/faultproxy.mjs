// A fault-injecting HTTP proxy in front of one upstream peer (the test Backstage): the real
// Backstage answers, but a test can make it look down, slow or failing without stopping it
// (a private Backstage costs 5-10 s and 200 MB; this costs 50 ms). It also counts what
// passed, per route and per catalog refresh target, so a test can tell duplicates apart.
//
// Usage: node faultproxy.mjs --upstream URL [--port N]
//   --upstream  base URL of the peer to forward to (http://127.0.0.1:PORT).
// Options may also come from STAGEPASS_PROXY_UPSTREAM / STAGEPASS_PROXY_PORT.
//
// READY extra fields: `upstream`, `control_url` (a port of its own serving only the
// control routes, never faulted; the proxied port forwards every path, /__test/ included).
//
// Control routes (JSON):
//   GET  /__test/health         {"ok":true}
//   GET  /__test/fault          the current fault
//   POST /__test/fault          {"mode","ms"?,"status"?,"times"?}
//        none      forward normally (the default)
//        down      accept the connection and drop it without an answer
//        slow      wait `ms` (default 1000) before forwarding; a client that gives up
//                  meanwhile is not forwarded (counted in `abandoned`)
//        5xx       answer `status` (default 503) with an HTML body, like a gateway
//        times     only the next N requests, then back to none
//   GET  /__test/stats          {"requests","forwarded","faulted","abandoned","in_flight",
//                                "by_route":{"METHOD /path":N},"refreshes":{"ENTITY_REF":N}}
//                                (`refreshes`: bodies of POST /api/catalog/refresh that the
//                                upstream answered 2xx)
//   POST /__test/stats/reset    zero the counters

import * as http from 'node:http';

import {
  announceReady, exitOnSignals, intOption, listen, log, options, readBody, readJson, sendJson,
} from './lib/common.mjs';

const NAME = 'faultproxy';
const MODES = ['none', 'down', 'slow', '5xx'];

const opts = options({
  port: { env: 'STAGEPASS_PROXY_PORT', default: '0' },
  upstream: { env: 'STAGEPASS_PROXY_UPSTREAM' },
});
if (!opts.upstream) {
  log(NAME, '--upstream is required');
  process.exit(2);
}
const upstream = new URL(opts.upstream);

let fault = { mode: 'none' };

function emptyStats() {
  return { requests: 0, forwarded: 0, faulted: 0, abandoned: 0, by_route: {}, refreshes: {} };
}
let stats = emptyStats();
let inFlight = 0;

function parseFault(body) {
  const mode = body.mode ?? 'none';
  if (!MODES.includes(mode)) throw new Error(`unknown fault mode ${mode}; one of ${MODES.join(', ')}`);
  const f = { mode };
  if (mode === 'slow') f.ms = Number(body.ms ?? 1000);
  if (mode === '5xx') f.status = Number(body.status ?? 503);
  if (body.times !== undefined && body.times !== null) f.times = Number(body.times);
  for (const k of ['ms', 'status', 'times']) {
    if (k in f && (!Number.isInteger(f[k]) || f[k] < 0)) throw new Error(`${k} must be a non-negative integer`);
  }
  if (mode === '5xx' && (f.status < 500 || f.status > 599)) throw new Error('status must be 5xx');
  return f;
}

/** The fault for this request (consuming one of `times`). */
function takeFault() {
  const f = fault;
  if (f.mode !== 'none' && f.times !== undefined) {
    f.times -= 1;
    if (f.times <= 0) fault = { mode: 'none' };
  }
  return f;
}

/** Forwards one request (body already read) and relays the answer. */
function forward(req, res, body, route) {
  return new Promise((resolve) => {
    const headers = { ...req.headers, host: upstream.host };
    const up = http.request({
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers,
    }, (upRes) => {
      const chunks = [];
      upRes.on('data', (c) => chunks.push(c));
      upRes.on('end', () => {
        const out = Buffer.concat(chunks);
        if (route === 'POST /api/catalog/refresh' && upRes.statusCode < 300) {
          try {
            const ref = String(JSON.parse(body.toString('utf8')).entityRef).toLowerCase();
            stats.refreshes[ref] = (stats.refreshes[ref] ?? 0) + 1;
          } catch {
            // not JSON: not counted
          }
        }
        const h = { ...upRes.headers };
        delete h['transfer-encoding'];
        h['content-length'] = out.length;
        if (!res.destroyed) {
          res.writeHead(upRes.statusCode, h);
          res.end(out);
        }
        resolve();
      });
      upRes.on('error', () => resolve());
    });
    up.on('error', (err) => {
      if (!res.headersSent && !res.destroyed) sendJson(res, 502, { error: 'bad_gateway', message: err.message });
      resolve();
    });
    up.end(body);
  });
}

const server = http.createServer(async (req, res) => {
  const route = `${req.method} ${new URL(req.url, 'http://x').pathname}`;
  stats.requests += 1;
  stats.by_route[route] = (stats.by_route[route] ?? 0) + 1;
  inFlight += 1;
  let gone = false;
  res.on('close', () => { gone = !res.writableFinished; });
  try {
    const body = Buffer.from(await readBody(req, 8 * 1024 * 1024));
    const f = takeFault();
    if (f.mode !== 'none') stats.faulted += 1;
    switch (f.mode) {
      case 'down':
        req.socket.destroy();
        return;
      case '5xx':
        res.writeHead(f.status, { 'content-type': 'text/html' });
        res.end(`<html><body>${f.status} injected fault</body></html>`);
        return;
      case 'slow':
        await new Promise((resolve) => { setTimeout(resolve, f.ms); });
        if (gone || res.destroyed) {
          stats.abandoned += 1;
          return;
        }
        break;
      default:
        break;
    }
    stats.forwarded += 1;
    await forward(req, res, body, route);
  } catch (err) {
    log(NAME, 'request failed', err.message);
    if (!res.headersSent && !res.destroyed) sendJson(res, 502, { error: 'bad_gateway', message: err.message });
  } finally {
    inFlight -= 1;
  }
});

const controlServer = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    const body = req.method === 'POST' ? await readJson(req) : {};
    switch (`${req.method} ${path}`) {
      case 'GET /__test/health': sendJson(res, 200, { ok: true }); break;
      case 'GET /__test/fault': sendJson(res, 200, fault); break;
      case 'POST /__test/fault':
        fault = parseFault(body);
        log(NAME, 'fault', fault);
        sendJson(res, 200, fault);
        break;
      case 'GET /__test/stats': sendJson(res, 200, { ...stats, in_flight: inFlight }); break;
      case 'POST /__test/stats/reset': stats = emptyStats(); sendJson(res, 200, stats); break;
      default: sendJson(res, 404, { error: 'not_found', message: `no control route ${req.method} ${path}` });
    }
  } catch (err) {
    sendJson(res, 400, { error: 'invalid_request', message: err.message });
  }
});

const port = await listen(server, intOption('port', opts.port));
const controlPort = await listen(controlServer, 0);
exitOnSignals(() => {
  server.close();
  controlServer.close();
});
const url = `http://127.0.0.1:${port}`;
log(NAME, `forwarding ${url} -> ${upstream.origin}`);
announceReady(NAME, url, { upstream: upstream.origin, control_url: `http://127.0.0.1:${controlPort}` });
