// The shared test bed: starts the IdP, the git host (trusting the IdP) and Backstage
// (trusting the IdP, reading from the git host) once per test run, writes their URLs to a
// bed file, and supervises them until stopped.
//
// Usage: node bed.mjs --out FILE [--log-dir DIR] [--watch-pid PID] [--processing-interval S]
//   --out        the bed file (JSON, written atomically once all peers are ready; removed
//                at stop). Tests find it through STAGEPASS_TEST_BED_FILE.
//   --log-dir    where each peer's log goes (<name>.log); default: next to the bed file.
//   --watch-pid  stop when this process is gone (tests/run passes its own PID), so a
//                killed test run leaves nothing behind. Default: the parent process.
//
// Stop it with SIGTERM to its PID: it stops every peer (by process group) and exits.
// If a peer dies, the bed stops the others and exits non-zero.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { READY_PREFIX, announceReady, exitOnSignals, intOption, log, options } from './lib/common.mjs';

const NAME = 'bed';
const here = path.dirname(fileURLToPath(import.meta.url));

const opts = options({
  out: {},
  'log-dir': {},
  'watch-pid': {},
  'processing-interval': { default: '5' },
});
if (!opts.out) {
  log(NAME, '--out FILE is required');
  process.exit(2);
}
const out = path.resolve(opts.out);
const logDir = path.resolve(opts['log-dir'] ?? path.dirname(out));
fs.mkdirSync(logDir, { recursive: true, mode: 0o700 });
const interval = intOption('processing-interval', opts['processing-interval']);

/** Running peers, stopped in reverse order. */
const children = [];
let stopping = false;

function stopAll(code) {
  if (stopping) return;
  stopping = true;
  for (const { name, child } of [...children].reverse()) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch (err) {
        log(NAME, `stopping ${name}: ${err.message}`);
      }
    }
  }
  const deadline = Date.now() + 5000;
  const check = () => {
    const alive = children.filter(({ child }) => child.exitCode === null && child.signalCode === null);
    if (alive.length === 0 || Date.now() > deadline) {
      for (const { child } of alive) {
        try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
      }
      fs.rmSync(out, { force: true });
      process.exit(code);
    }
    setTimeout(check, 50);
  };
  check();
}

/** Spawns `script` in its own process group; resolves with its READY JSON. */
function startPeer(name, script, args, timeoutMs) {
  return new Promise((resolve, reject) => {
    const logPath = path.join(logDir, `${name}.log`);
    const logFd = fs.openSync(logPath, 'a', 0o600);
    const stateDir = path.join(logDir, `${name}.state`);
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const child = spawn(process.execPath, [path.join(here, script), ...args], {
      cwd: here,
      detached: true,
      stdio: ['ignore', 'pipe', logFd],
      env: { ...process.env, STAGEPASS_PEER_STATE_DIR: stateDir, STAGEPASS_PEER_DETACHED: '0' },
    });
    children.push({ name, child });
    let ready = false;
    let buffered = '';
    const timer = setTimeout(() => {
      if (!ready) reject(new Error(`${name} not ready after ${timeoutMs / 1000}s (log: ${logPath})`));
    }, timeoutMs);
    child.stdout.on('data', (chunk) => {
      fs.writeSync(logFd, chunk);
      if (ready) return;
      buffered += chunk.toString('utf8');
      const line = buffered.split('\n').find((l) => l.startsWith(READY_PREFIX));
      if (line) {
        ready = true;
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line.slice(READY_PREFIX.length)));
        } catch (err) {
          reject(new Error(`${name} printed a malformed READY line: ${err.message}`));
        }
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (!ready) {
        reject(Object.assign(
          new Error(`${name} exited before it was ready (${signal ?? code}); log: ${logPath}`),
          { exitCode: code },
        ));
      } else if (!stopping) {
        log(NAME, `${name} exited unexpectedly (${signal ?? code}); stopping the bed (log: ${logPath})`);
        stopAll(1);
      }
    });
  });
}

exitOnSignals(() => {}, { watchParent: !opts['watch-pid'] });
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.removeAllListeners(sig);
  process.on(sig, () => stopAll(0));
}
if (opts['watch-pid']) {
  const watched = intOption('watch-pid', opts['watch-pid']);
  setInterval(() => {
    try {
      process.kill(watched, 0);
    } catch {
      log(NAME, `watched process ${watched} is gone; stopping`);
      stopAll(0);
    }
  }, 250).unref();
}

try {
  const idp = await startPeer('idp', 'idp.mjs', [], 30_000);
  const git = await startPeer('git', 'githost.mjs', ['--issuer', idp.url], 30_000);
  let backstage;
  for (let attempt = 1; !backstage; attempt += 1) {
    try {
      backstage = await startPeer('backstage', 'backstage.mjs', [
        '--issuer', idp.url,
        '--git-host', new URL(git.url).host,
        '--processing-interval', String(interval),
      ], 180_000);
    } catch (err) {
      // Exit code 3: its port was taken between choosing and binding; try another.
      if (err.exitCode !== 3 || attempt >= 3) throw err;
      log(NAME, `backstage lost its port (attempt ${attempt}); retrying`);
    }
  }
  const bed = {
    version: 1,
    pid: process.pid,
    log_dir: logDir,
    idp: { url: idp.url, pid: idp.pid, control_url: idp.control_url },
    git: { url: git.url, pid: git.pid },
    backstage: {
      url: backstage.url,
      pid: backstage.pid,
      static_token: backstage.static_token,
      auth_issuer: backstage.auth_issuer,
      oauth_clients: backstage.oauth_clients,
      client_metadata_template: backstage.client_metadata_template,
    },
  };
  const tmp = `${out}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(bed, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, out);
  log(NAME, `bed ready: ${out}`);
  announceReady(NAME, `file://${out}`, { file: out, log_dir: logDir });
} catch (err) {
  log(NAME, `bed failed to start: ${err.message}`);
  stopAll(1);
}
