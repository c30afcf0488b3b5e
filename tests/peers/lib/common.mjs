// Shared plumbing of the test peers: the READY line, option parsing, small HTTP helpers.
//
// Every peer prints exactly one line `STAGEPASS_PEER_READY {"name":...,"url":...}` on stdout
// once it answers requests; the Rust harness (tests/src) waits for that line. Everything
// else a peer prints is log, for humans reading a failed test.

import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';

/** Prefix of the one line each peer prints when it is ready. */
export const READY_PREFIX = 'STAGEPASS_PEER_READY ';

/** Prints the READY line. `extra` adds peer-specific fields (e.g. the issuer). */
export function announceReady(name, url, extra = {}) {
  process.stdout.write(`${READY_PREFIX}${JSON.stringify({ name, url, pid: process.pid, ...extra })}\n`);
}

/** Prints a log line on stderr with the peer's name, so interleaved logs stay readable. */
export function log(name, ...args) {
  const text = args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
  process.stderr.write(`[${new Date().toISOString()} ${name}] ${text}\n`);
}

/**
 * Parses `--key value` options; each option may also come from an environment variable
 * (`env` name in the spec). Returns strings; callers convert.
 */
export function options(spec) {
  const parseSpec = {};
  for (const [key, { short }] of Object.entries(spec)) {
    parseSpec[key] = { type: 'string', ...(short ? { short } : {}) };
  }
  const { values } = parseArgs({ options: parseSpec, strict: true, allowPositionals: false });
  const out = {};
  for (const [key, { env, default: dflt }] of Object.entries(spec)) {
    out[key] = values[key] ?? (env ? process.env[env] : undefined) ?? dflt;
  }
  return out;
}

/** Converts an option to a non-negative integer or exits with a clear message. */
export function intOption(name, value) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`invalid --${name}: ${JSON.stringify(value)} (expected a non-negative integer)\n`);
    process.exit(2);
  }
  return n;
}

/** Reads a request body (bounded) as a string. */
export async function readBody(req, limit = 1024 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads a JSON request body; an empty body is `{}`. */
export async function readJson(req) {
  const text = await readBody(req);
  if (text.trim() === '') return {};
  return JSON.parse(text);
}

/** Writes a JSON response. */
export function sendJson(res, status, value, headers = {}) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

/**
 * Exits on SIGTERM/SIGINT after running `cleanup`, so the harness can stop a peer by PID,
 * and also when the parent process goes away (a test process killed with SIGKILL runs no
 * destructor): a peer never outlives the test or bed that started it.
 * STAGEPASS_PEER_DETACHED=1 turns the parent watch off (for running a peer by hand).
 */
export function exitOnSignals(
  cleanup = () => {},
  { watchParent = process.env.STAGEPASS_PEER_DETACHED !== '1' } = {},
) {
  const stop = (why) => {
    try {
      if (why) process.stderr.write(`${why}; exiting\n`);
      cleanup();
    } finally {
      process.exit(0);
    }
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    process.on(sig, () => stop());
  }
  if (watchParent) {
    const parent = process.ppid;
    setInterval(() => {
      if (process.ppid !== parent) {
        // Nobody will read the log or state any more: the harness asks us to clean up.
        const dir = process.env.STAGEPASS_PEER_STATE_DIR;
        if (dir && process.env.STAGEPASS_PEER_REMOVE_STATE_ON_ORPHAN === '1') {
          rmSync(dir, { recursive: true, force: true });
        }
        stop(`parent process ${parent} is gone`);
      }
    }, 250).unref();
  }
}

/** Listens on 127.0.0.1 and resolves with the bound port (0 picks a free one). */
export function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}
