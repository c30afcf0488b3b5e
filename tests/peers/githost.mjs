// The test git host: bare repositories served over HTTP by the real `git http-backend`
// (CGI) behind this small server, so clone/fetch/push are real git. A repository may
// require a token: HTTP Basic with the token as password, or Bearer, validated as a JWT
// against the IdP's JWKS (issuer = the IdP, audience urn:stagepass:git). Raw files of a
// branch are public at /raw/<repo>/<branch>/<path> so Backstage can read `url` locations.
//
// Usage: node githost.mjs [--port N] [--issuer URL] [--root DIR]
//   --issuer  the IdP (its JWKS is <issuer>/jwks); without it token repos refuse everyone.
//   --root    where bare repos live (default: $STAGEPASS_PEER_STATE_DIR/repos or a temp dir).
// See README.md in this folder for the routes.

import { spawn, execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';

import {
  announceReady, exitOnSignals, intOption, listen, log, options, readJson, sendJson,
} from './lib/common.mjs';

const NAME = 'git';
const AUDIENCE = 'urn:stagepass:git';
const REPO_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const run = promisify(execFile);

const opts = options({
  port: { env: 'STAGEPASS_GIT_PORT', default: '0' },
  issuer: { env: 'STAGEPASS_GIT_ISSUER' },
  root: { env: 'STAGEPASS_GIT_ROOT' },
});

const stateDir = process.env.STAGEPASS_PEER_STATE_DIR;
let ownRoot = false;
let root = opts.root;
if (!root) {
  root = stateDir ? path.join(stateDir, 'repos') : fs.mkdtempSync(path.join(os.tmpdir(), 'stagepass-git-'));
  ownRoot = !stateDir;
}
fs.mkdirSync(root, { recursive: true, mode: 0o700 });

const issuer = opts.issuer?.replace(/\/$/, '');
const jwks = issuer ? createRemoteJWKSet(new URL(`${issuer}/jwks`)) : undefined;

/** Per-repo auth mode: 'none' or 'token'. */
const repoAuth = new Map();
/** Revoked token ids (jti) and raw tokens; tokens issued before `revokedBefore` are refused. */
const revokedJtis = new Set();
const revokedTokens = new Set();
let revokedBefore = 0;
/** Ids of every valid token presented so far, so "revoke all" is exact within a second. */
const seenJtis = new Set();

function emptyStats() {
  return { requests: 0, unauthorized: 0, authorized: 0, pushes: 0, raw: 0 };
}
let stats = emptyStats();

function repoDir(name) {
  return path.join(root, `${name}.git`);
}

async function createRepo(name, auth) {
  if (!REPO_NAME.test(name) || name.endsWith('.git')) {
    throw Object.assign(new Error(`invalid repository name ${JSON.stringify(name)}`), { status: 400 });
  }
  if (!['none', 'token'].includes(auth)) {
    throw Object.assign(new Error('auth must be "none" or "token"'), { status: 400 });
  }
  const dir = repoDir(name);
  if (fs.existsSync(dir)) {
    throw Object.assign(new Error(`repository ${name} exists`), { status: 409 });
  }
  await run('git', ['init', '--quiet', '--bare', '--initial-branch=main', dir]);
  // Anonymous push is allowed by http-backend only with http.receivepack; our own auth
  // layer decides who gets that far.
  await run('git', ['--git-dir', dir, 'config', 'http.receivepack', 'true']);
  repoAuth.set(name, auth);
  log(NAME, `created repository ${name} (auth ${auth})`);
  return { name, auth, url: `${baseUrl}/git/${name}.git` };
}

/** Extracts the presented token from Basic (password) or Bearer; undefined if none. */
function presentedToken(req) {
  const header = req.headers.authorization;
  if (!header) return undefined;
  const [scheme, value = ''] = header.split(' ', 2);
  if (/^bearer$/i.test(scheme)) return value.trim();
  if (/^basic$/i.test(scheme)) {
    const decoded = Buffer.from(value.trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : undefined;
  }
  return undefined;
}

/** Returns the token's subject when it is acceptable, else a reason string in `error`. */
async function checkToken(token) {
  if (!token) return { error: 'no credentials' };
  if (!jwks) return { error: 'no issuer configured' };
  if (revokedTokens.has(token)) return { error: 'token revoked' };
  try {
    const { payload } = await jwtVerify(token, jwks, { issuer, audience: AUDIENCE });
    if (payload.jti && revokedJtis.has(payload.jti)) return { error: 'token revoked' };
    if ((payload.iat ?? 0) < revokedBefore) return { error: 'token issued before revocation' };
    if (payload.jti) seenJtis.add(payload.jti);
    return { subject: payload.sub ?? 'unknown' };
  } catch (err) {
    return { error: `invalid token (${err.code ?? err.message})` };
  }
}

function unauthorized(res, reason) {
  stats.unauthorized += 1;
  res.writeHead(401, {
    'content-type': 'text/plain',
    'www-authenticate': ['Basic realm="stagepass-git"', 'Bearer realm="stagepass-git"'],
  });
  res.end(`unauthorized: ${reason}\n`);
}

/** Runs `git http-backend` as a CGI for one request and streams its answer. */
function httpBackend(req, res, pathInfo, query, remoteUser) {
  const env = {
    PATH: process.env.PATH,
    GIT_PROJECT_ROOT: root,
    GIT_HTTP_EXPORT_ALL: '1',
    GATEWAY_INTERFACE: 'CGI/1.1',
    REQUEST_METHOD: req.method,
    PATH_INFO: pathInfo,
    QUERY_STRING: query,
    REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    ...(req.headers['content-type'] ? { CONTENT_TYPE: req.headers['content-type'] } : {}),
    ...(req.headers['content-length'] ? { CONTENT_LENGTH: req.headers['content-length'] } : {}),
    ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
    ...(req.headers['git-protocol'] ? { GIT_PROTOCOL: req.headers['git-protocol'] } : {}),
    ...(remoteUser ? { REMOTE_USER: remoteUser } : {}),
  };
  const child = spawn('git', ['http-backend'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  req.pipe(child.stdin);
  child.stdin.on('error', () => {});
  child.stderr.on('data', (d) => log(NAME, `http-backend: ${d.toString().trimEnd()}`));

  let head = Buffer.alloc(0);
  let headerDone = false;
  child.stdout.on('data', (chunk) => {
    if (headerDone) {
      res.write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    let sep = head.indexOf('\r\n\r\n');
    let sepLen = 4;
    if (sep < 0) {
      sep = head.indexOf('\n\n');
      sepLen = 2;
    }
    if (sep < 0) return;
    headerDone = true;
    const headerText = head.subarray(0, sep).toString('utf8');
    const rest = head.subarray(sep + sepLen);
    let status = 200;
    const headers = {};
    for (const line of headerText.split(/\r?\n/)) {
      const i = line.indexOf(':');
      if (i < 0) continue;
      const key = line.slice(0, i).trim();
      const value = line.slice(i + 1).trim();
      if (key.toLowerCase() === 'status') status = parseInt(value, 10) || 500;
      else headers[key] = value;
    }
    res.writeHead(status, headers);
    res.write(rest);
  });
  child.on('close', (code) => {
    if (!headerDone) {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`git http-backend failed (exit ${code})\n`);
      return;
    }
    res.end();
  });
  child.on('error', (err) => {
    log(NAME, `cannot run git http-backend: ${err.message}`);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end();
  });
}

async function serveGit(req, res, url) {
  // /git/<repo>.git/<rest>
  const m = /^\/git\/([^/]+)\.git(\/.*)?$/.exec(url.pathname);
  if (!m) {
    sendJson(res, 404, { error: 'not_found' });
    return;
  }
  const [, name, rest = '/'] = m;
  const auth = repoAuth.get(name);
  if (auth === undefined || !fs.existsSync(repoDir(name))) {
    sendJson(res, 404, { error: 'not_found', message: `no repository ${name}` });
    return;
  }
  let remoteUser;
  if (auth === 'token') {
    const verdict = await checkToken(presentedToken(req));
    if (verdict.error) {
      req.resume();
      unauthorized(res, verdict.error);
      return;
    }
    stats.authorized += 1;
    remoteUser = verdict.subject;
  }
  if (rest.endsWith('/git-receive-pack')) stats.pushes += 1;
  httpBackend(req, res, `/${name}.git${rest}`, url.search.replace(/^\?/, ''), remoteUser);
}

async function serveRaw(res, url) {
  // /raw/<repo>/<branch>/<path...>; the branch may not contain '/'.
  const m = /^\/raw\/([^/]+)\/([^/]+)\/(.+)$/.exec(url.pathname);
  if (!m) {
    sendJson(res, 404, { error: 'not_found' });
    return;
  }
  const [name, branch, file] = m.slice(1).map(decodeURIComponent);
  stats.raw += 1;
  if (!repoAuth.has(name) || branch.startsWith('-') || file.split('/').includes('..')) {
    sendJson(res, 404, { error: 'not_found' });
    return;
  }
  try {
    const { stdout } = await run(
      'git',
      ['--git-dir', repoDir(name), 'show', `refs/heads/${branch}:${file}`],
      { encoding: 'buffer', maxBuffer: 16 * 1024 * 1024 },
    );
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': stdout.length });
    res.end(stdout);
  } catch {
    sendJson(res, 404, { error: 'not_found', message: `${branch}:${file} not in ${name}` });
  }
}

async function control(req, res, p) {
  try {
    const body = req.method === 'POST' ? await readJson(req) : {};
    switch (`${req.method} ${p}`) {
      case 'GET /__test/health':
        sendJson(res, 200, { ok: true });
        return;
      case 'POST /__test/repos':
        sendJson(res, 201, await createRepo(String(body.name ?? ''), body.auth ?? 'none'));
        return;
      case 'GET /__test/stats':
        sendJson(res, 200, stats);
        return;
      case 'POST /__test/stats/reset':
        stats = emptyStats();
        sendJson(res, 200, stats);
        return;
      case 'POST /__test/revoke': {
        if (body.token) {
          revokedTokens.add(String(body.token));
          try {
            const { jti } = decodeJwt(String(body.token));
            if (jti) revokedJtis.add(jti);
          } catch { /* opaque token: revoked by value only */ }
        }
        if (body.jti) revokedJtis.add(String(body.jti));
        if (body.before !== undefined) {
          if (!Number.isInteger(body.before)) throw new Error('before must be an integer (epoch seconds)');
          revokedBefore = Math.max(revokedBefore, body.before);
        } else if (!body.token && !body.jti) {
          // Revoke all: every token seen so far, and every token issued in an earlier second.
          seenJtis.forEach((j) => revokedJtis.add(j));
          revokedBefore = Math.max(revokedBefore, Math.floor(Date.now() / 1000));
        }
        sendJson(res, 200, { revoked_before: revokedBefore, revoked_jtis: revokedJtis.size });
        return;
      }
      default:
        sendJson(res, 404, { error: 'not_found', message: `no control route ${req.method} ${p}` });
    }
  } catch (err) {
    sendJson(res, err.status ?? 400, { error: 'invalid_request', message: err.message });
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, baseUrl);
  try {
    if (url.pathname.startsWith('/__test/')) {
      await control(req, res, url.pathname);
      return;
    }
    stats.requests += 1;
    if (url.pathname.startsWith('/git/')) {
      await serveGit(req, res, url);
    } else if (url.pathname.startsWith('/raw/') && req.method === 'GET') {
      await serveRaw(res, url);
    } else {
      sendJson(res, 404, { error: 'not_found' });
    }
  } catch (err) {
    log(NAME, 'request failed', err.stack ?? String(err));
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.end();
  }
});

const port = await listen(server, intOption('port', opts.port));
const baseUrl = `http://127.0.0.1:${port}`;
exitOnSignals(() => {
  server.close();
  if (ownRoot) fs.rmSync(root, { recursive: true, force: true });
});
log(NAME, `serving ${root}; issuer ${issuer ?? '(none: token repos refuse everyone)'}`);
announceReady(NAME, baseUrl, { root, issuer: issuer ?? null });
