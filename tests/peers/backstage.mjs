// The test Backstage: the real catalog backend (new backend system, in-memory sqlite) on
// 127.0.0.1, trusting JWT access tokens of the test IdP for audience urn:stagepass:backstage
// (`backend.auth.externalAccess` of type jwks), reading `url` locations from the git host.
//
// Usage: node backstage.mjs --issuer URL [--git-host HOST:PORT]... [--port N]
//                           [--processing-interval SECONDS] [--static-token TOKEN]
//                           [--github-host HOST:PORT --github-raw-base URL]
//   --issuer               the IdP; its JWKS is <issuer>/jwks.
//   --git-host             host:port Backstage may read url locations from (repeatable
//                          as a comma-separated list).
//   --processing-interval  catalog.processingInterval in seconds (default 5).
//   --github-host          a GitHub (Enterprise) integration for this host: Backstage then
//                          reads GitHub-shaped URLs on it (`/OWNER/REPO/blob/REF/PATH`,
//                          `/tree/`) through its GitHub reader, which fetches
//                          <github-raw-base>/OWNER/REPO/REF/PATH (no API, no token).
//   --static-token         an extra externalAccess static token (subject stagepass-test-admin)
//                          for tests that need catalog access without the IdP; random
//                          when absent, printed in the READY line.
//
// Backstage's own OAuth 2.0 / OIDC authorization server (`@backstage/plugin-auth-backend`)
// runs under /api/auth with offline access (rotating refresh tokens) and static clients
// `stagepass` and `stagepass-ws2` (a second workspace of the same user), plus one per test
// area that signs in agents as alice or bob at the same time as the sign-in tests
// (`stagepass-catalog`, `stagepass-mcp`, `stagepass-container` for the real dev container:
// Backstage keeps one session per user and client, so sharing a client would end another
// test's session), each allowing loopback redirects `http://127.0.0.1:PORT/callback` on a few ports picked at start and
// printed in the READY line. Users sign in through the `stagepass-test` proxy provider
// with a test IdP token (lib/backstage-auth.mjs); alice (team-a) and bob (team-b) are
// catalog entities; the permission policy lets a user refresh only entities they own.
//
// Clients per workspace (issue 22): Client ID Metadata Documents are on, and a second
// listener ("the admin's host", `client_metadata_template` in the READY line) serves
// `/stagepass/clients/<id>.json` for any id of 1-64 letters, digits, - and _, echoing the URL
// as `client_id` (Backstage requires the document's client_id to equal the URL it fetched),
// with the loopback redirect `http://127.0.0.1/callback` (any port matches for such clients).
// `allowedClientIdPatterns` allows that path with a wildcard. Backstage accepts an
// `http://127.0.0.1` client_id (and skips its private-address check) only when
// NODE_ENV=development; this script sets that once the backend is ready, so only the
// request-time checks see it (error responses keep their production shape).
//
// Catalog rules allow Component, API, System, Domain, Resource, Group, User and Location,
// and NOT Template: tests register a Template to prove a forbidden kind is caught.
//
// A failed start does not exit Backstage by itself: this script watches backend.start(),
// polls /.backstage/health/v1/readiness with a hang guard, and exits non-zero (3 for
// EADDRINUSE, so the harness can retry on another port) instead of hanging.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import defaults from '@backstage/backend-defaults';
import rootConfig from '@backstage/backend-defaults/rootConfig';
import authPlugin from '@backstage/plugin-auth-backend';
import catalogPlugin from '@backstage/plugin-catalog-backend';
import permissionPlugin from '@backstage/plugin-permission-backend';

import { USERS, policyModule, signInModule, writeOrg } from './lib/backstage-auth.mjs';

import { announceReady, exitOnSignals, intOption, log, options } from './lib/common.mjs';

const NAME = 'backstage';
const AUDIENCE = 'urn:stagepass:backstage';
const READY_TIMEOUT_MS = 120_000;

const opts = options({
  port: { env: 'STAGEPASS_BACKSTAGE_PORT', default: '0' },
  issuer: { env: 'STAGEPASS_BACKSTAGE_ISSUER' },
  'git-host': { env: 'STAGEPASS_BACKSTAGE_GIT_HOST', default: '' },
  'processing-interval': { env: 'STAGEPASS_BACKSTAGE_PROCESSING_INTERVAL', default: '5' },
  'static-token': { env: 'STAGEPASS_BACKSTAGE_STATIC_TOKEN' },
  'github-host': { env: 'STAGEPASS_BACKSTAGE_GITHUB_HOST' },
  'github-raw-base': { env: 'STAGEPASS_BACKSTAGE_GITHUB_RAW_BASE' },
});
if (!opts['github-host'] !== !opts['github-raw-base']) {
  log(NAME, '--github-host and --github-raw-base go together');
  process.exit(2);
}

if (!opts.issuer) {
  log(NAME, '--issuer is required (the IdP whose JWKS Backstage trusts)');
  process.exit(2);
}
const issuer = opts.issuer.replace(/\/$/, '');
const staticToken = opts['static-token'] ?? crypto.randomBytes(24).toString('base64url');
const interval = intOption('processing-interval', opts['processing-interval']);

/** Finds a free port by binding 0 (Backstage needs the port in its config up front). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const port = Number(opts.port) || await freePort();
const baseUrl = `http://127.0.0.1:${port}`;

/** Static OAuth clients (one per workspace, and one for tokens the harness fetches itself) and the redirect ports each allows. */
const CLIENTS = ['stagepass', 'stagepass-ws2', 'stagepass-tests', 'stagepass-catalog', 'stagepass-mcp',
  'stagepass-container'];
const PORTS_PER_CLIENT = 12;

/** Distinct ports that are free now, below the ephemeral range (so no outgoing connection takes them). */
async function redirectPorts(count) {
  const picked = new Set();
  while (picked.size < count) {
    const p = 20000 + crypto.randomInt(10000);
    if (picked.has(p)) continue;
    const free = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) picked.add(p);
  }
  return [...picked];
}
const ports = await redirectPorts(CLIENTS.length * PORTS_PER_CLIENT);
const oauthClients = CLIENTS.map((clientId, i) => ({
  client_id: clientId,
  redirect_uris: ports
    .slice(i * PORTS_PER_CLIENT, (i + 1) * PORTS_PER_CLIENT)
    .map((p) => `http://127.0.0.1:${p}/callback`),
}));

/** The admin's host of per-workspace client metadata documents: one rule, any id. */
const CLIENT_DOC_PATH = /^\/stagepass\/clients\/([A-Za-z0-9_-]{1,64})\.json$/;
const clientDocs = http.createServer((req, res) => {
  const id = req.method === 'GET' ? CLIENT_DOC_PATH.exec(req.url ?? '')?.[1] : undefined;
  if (!id) {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"not_found"}');
    return;
  }
  const body = JSON.stringify({
    client_id: `${clientDocsUrl}/stagepass/clients/${id}.json`,
    client_name: `stagepass (${id})`,
    redirect_uris: ['http://127.0.0.1/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    scope: 'openid offline_access',
  });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
await new Promise((resolve, reject) => {
  clientDocs.once('error', reject);
  clientDocs.listen(0, '127.0.0.1', resolve);
});
const clientDocsUrl = `http://127.0.0.1:${clientDocs.address().port}`;
const clientMetadataTemplate = `${clientDocsUrl}/stagepass/clients/{workspace}.json`;

const ownStateDir = !process.env.STAGEPASS_PEER_STATE_DIR;
const stateDir = process.env.STAGEPASS_PEER_STATE_DIR
  ?? fs.mkdtempSync(path.join(os.tmpdir(), 'stagepass-backstage-'));
const orgFile = writeOrg(stateDir);

// The key plugins sign their service-to-service tokens with, from files instead of Backstage's
// default database key store. With SQLite the catalog has one database connection; the first
// permission check (a user's refresh, issue 22) makes the catalog create that key and store it
// through the same connection, and when that happened while a catalog transaction held it the
// backend stalled until knex's acquire timeout (60 s; seen as a test's request timing out after
// "Created new signing key"). A static key is never written, so nothing waits on that.
const pluginKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pluginKeyFiles = {
  publicKeyFile: path.join(stateDir, 'plugin-key.pub.pem'),
  privateKeyFile: path.join(stateDir, 'plugin-key.pem'),
};
fs.writeFileSync(pluginKeyFiles.publicKeyFile, pluginKey.publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o600 });
fs.writeFileSync(pluginKeyFiles.privateKeyFile, pluginKey.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });

const config = {
  app: { baseUrl },
  auth: {
    environment: 'development',
    experimentalRefreshToken: { enabled: true },
    staticClients: oauthClients.map((c) => ({
      clientId: c.client_id,
      clientName: c.client_id,
      redirectUris: c.redirect_uris,
    })),
    providers: { 'stagepass-test': { development: {} } },
    clientIdMetadataDocuments: {
      enabled: true,
      allowedClientIdPatterns: [`${clientDocsUrl}/stagepass/clients/*`],
    },
  },
  permission: { enabled: true },
  backend: {
    baseUrl,
    listen: { host: '127.0.0.1', port },
    database: { client: 'better-sqlite3', connection: ':memory:' },
    reading: {
      allow: opts['git-host'].split(',').map((h) => h.trim()).filter(Boolean).map((host) => ({ host })),
    },
    auth: {
      pluginKeyStore: {
        type: 'static',
        static: { keys: [{ ...pluginKeyFiles, keyId: 'stagepass-test-plugin-key' }] },
      },
      externalAccess: [
        {
          type: 'jwks',
          options: {
            url: `${issuer}/jwks`,
            issuer,
            algorithm: 'ES256',
            audience: AUDIENCE,
          },
        },
        {
          type: 'static',
          options: { token: staticToken, subject: 'stagepass-test-admin' },
        },
      ],
    },
  },
  integrations: opts['github-host']
    ? { github: [{ host: opts['github-host'], rawBaseUrl: opts['github-raw-base'] }] }
    : {},
  catalog: {
    processingInterval: { seconds: interval },
    rules: [
      { allow: ['Component', 'API', 'System', 'Domain', 'Resource', 'Group', 'User', 'Location'] },
    ],
    locations: [{ type: 'file', target: orgFile, rules: [{ allow: ['User', 'Group'] }] }],
  },
};

const configPath = path.join(stateDir, 'app-config.yaml');
// JSON is YAML; the file stays for whoever debugs a failed test.
fs.writeFileSync(configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
log(NAME, `config ${configPath}; processing interval ${interval}s; reading allowed: ${opts['git-host'] || '(none)'}`);

function fail(code, why) {
  log(NAME, `Backend startup failed: ${why}`);
  if (ownStateDir) fs.rmSync(stateDir, { recursive: true, force: true });
  process.exit(code);
}

// Backstage logs the real cause of a failed start itself; catch EADDRINUSE wherever it surfaces.
process.on('uncaughtException', (err) => {
  fail(err?.code === 'EADDRINUSE' ? 3 : 1, err?.stack ?? String(err));
});
process.on('unhandledRejection', (err) => {
  fail(err?.code === 'EADDRINUSE' ? 3 : 1, err?.stack ?? String(err));
});

const backend = defaults.createBackend();
backend.add(rootConfig.rootConfigServiceFactory({ argv: ['--config', configPath] }));
backend.add(catalogPlugin.default ?? catalogPlugin);
backend.add(authPlugin.default ?? authPlugin);
backend.add(signInModule({ issuer, audience: AUDIENCE }));
backend.add(permissionPlugin.default ?? permissionPlugin);
backend.add(policyModule);

exitOnSignals(() => {
  if (ownStateDir) fs.rmSync(stateDir, { recursive: true, force: true });
});

backend.start().catch((err) => {
  const inUse = err?.code === 'EADDRINUSE' || /EADDRINUSE/.test(String(err?.stack ?? err));
  fail(inUse ? 3 : 1, err?.stack ?? String(err));
});

const started = Date.now();
for (;;) {
  try {
    const res = await fetch(`${baseUrl}/.backstage/health/v1/readiness`);
    if (res.status === 200) break;
  } catch {
    // not listening yet
  }
  if (Date.now() - started > READY_TIMEOUT_MS) fail(1, `not ready after ${READY_TIMEOUT_MS / 1000}s`);
  await new Promise((resolve) => { setTimeout(resolve, 100); });
}
// The users must be in the catalog before anyone can sign in as them.
for (const user of Object.keys(USERS)) {
  for (;;) {
    const res = await fetch(`${baseUrl}/api/catalog/entities/by-name/user/default/${user}`, {
      headers: { authorization: `Bearer ${staticToken}` },
    }).catch(() => undefined);
    if (res?.status === 200) {
      const entity = await res.json();
      if (entity.relations?.some((r) => r.type === 'memberOf')) break;
    }
    if (Date.now() - started > READY_TIMEOUT_MS) fail(1, `user ${user} not in the catalog after ${READY_TIMEOUT_MS / 1000}s`);
    await new Promise((resolve) => { setTimeout(resolve, 100); });
  }
}
// Request-time only from here: lets Backstage accept the http://127.0.0.1 metadata URLs above.
process.env.NODE_ENV = 'development';
log(NAME, `ready after ${Date.now() - started} ms`);
announceReady(NAME, baseUrl, {
  static_token: staticToken,
  audience: AUDIENCE,
  issuer,
  auth_issuer: `${baseUrl}/api/auth`,
  oauth_clients: oauthClients,
  client_metadata_template: clientMetadataTemplate,
});
