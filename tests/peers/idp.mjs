// The test IdP: a real OpenID provider (`oidc-provider` 9.x) on 127.0.0.1 with the grants
// stagepass uses (device flow, refresh with rotation, client_credentials, RFC 8693 token
// exchange), JWT access tokens per resource, and test-only control routes under /__test/
// (headless device approval, call counters, fault modes, grant revocation).
//
// Usage: node idp.mjs [--port N] [--access-ttl S] [--refresh-ttl S] [--device-ttl S]
//                     [--client-secret SECRET]
// Each option can also come from STAGEPASS_IDP_<NAME> (e.g. STAGEPASS_IDP_ACCESS_TTL).
// See README.md in this folder for the contract.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';
import { createLocalJWKSet, jwtVerify } from 'jose';

import {
  announceReady, exitOnSignals, intOption, listen, log, options, readBody, readJson, sendJson,
} from './lib/common.mjs';

const NAME = 'idp';

const opts = options({
  port: { env: 'STAGEPASS_IDP_PORT', default: '0' },
  'access-ttl': { env: 'STAGEPASS_IDP_ACCESS_TTL', default: '300' },
  'refresh-ttl': { env: 'STAGEPASS_IDP_REFRESH_TTL', default: '86400' },
  'device-ttl': { env: 'STAGEPASS_IDP_DEVICE_TTL', default: '600' },
  'client-secret': { env: 'STAGEPASS_IDP_CLIENT_SECRET', default: 'stagepass-ci-secret' },
  // "1": the device page works in a browser (oidc-provider's development login and consent
  // pages: any user name, no password). For the sandbox; tests approve through /__test/.
  'browser-login': { env: 'STAGEPASS_IDP_BROWSER_LOGIN', default: '0' },
});

/** Token lifetimes in seconds; mutable at run time through POST /__test/ttl. */
const ttl = {
  access: intOption('access-ttl', opts['access-ttl']),
  refresh: intOption('refresh-ttl', opts['refresh-ttl']),
  device: intOption('device-ttl', opts['device-ttl']),
};

const GRANT_DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';
const GRANT_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TOKEN_TYPE_ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';

/**
 * Resource servers the IdP mints JWT access tokens for: identifier (an absolute URI, as
 * resource indicators must be) -> the token's `aud` and the scopes the resource knows.
 */
const RESOURCES = {
  'urn:stagepass:backstage': { audience: 'urn:stagepass:backstage', scope: 'catalog:read catalog:write' },
  'urn:stagepass:git': { audience: 'urn:stagepass:git', scope: 'git:read git:write' },
  'urn:stagepass:aws': { audience: 'sts.amazonaws.com', scope: 'aws' },
};

/**
 * The resource identifier for a requested `resource` or `audience` value: an identifier
 * itself, or a resource's audience (so `audience=sts.amazonaws.com`, which is no URI and
 * cannot be a resource indicator, still gets a JWT for STS). Unknown values pass through
 * (the provider then answers invalid_target).
 */
function resourceFor(value) {
  if (RESOURCES[value]) return value;
  const hit = Object.entries(RESOURCES).find(([, r]) => r.audience === value);
  return hit ? hit[0] : value;
}

// One EC P-256 signing key per process; published at jwks_uri.
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomBytes(8).toString('hex'),
  alg: 'ES256',
  use: 'sig',
};
const { d: _private, ...publicJwk } = signingJwk;
const localJwks = createLocalJWKSet({ keys: [publicJwk] });

// Bind first: the issuer URL must contain the port.
const server = http.createServer();
const port = await listen(server, intOption('port', opts.port));
const issuer = `http://127.0.0.1:${port}`;

/** User codes of the last device authorizations, for GET /__test/device/pending. */
const recentUserCodes = [];
/** When set, every new device authorization is approved for this subject at once. */
let autoApproveSubject = null;
/** Subject of each grant approved through /__test/device/approve, for /__test/revoke. */
const grantsBySubject = new Map();
/** Opaque external subject tokens (e.g. a GITHUB_TOKEN stand-in) accepted by token exchange. */
const trustedSubjectTokens = new Map();
/** The `act` claim of tokens minted by token exchange (keyed by token object). */
const exchangeActs = new WeakMap();

const clients = [
  {
    // Public client of the agent: device login, refresh, token exchange.
    client_id: 'stagepass-cli',
    token_endpoint_auth_method: 'none',
    grant_types: [GRANT_DEVICE, 'refresh_token', GRANT_EXCHANGE],
    response_types: [],
    redirect_uris: [],
  },
  {
    // Confidential client: client_credentials, and (for oidc-agent benchmarks) device/refresh.
    client_id: 'stagepass-ci',
    client_secret: opts['client-secret'],
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials', GRANT_DEVICE, 'refresh_token', GRANT_EXCHANGE],
    response_types: [],
    redirect_uris: [],
  },
  {
    // Same as stagepass-ci, for tools that send the secret in the form body.
    client_id: 'stagepass-ci-post',
    client_secret: opts['client-secret'],
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['client_credentials', GRANT_DEVICE, 'refresh_token', GRANT_EXCHANGE],
    response_types: [],
    redirect_uris: [],
  },
];

function resourceServerInfo(resource) {
  const known = RESOURCES[resourceFor(resource)];
  if (known === undefined) {
    throw new errors.InvalidTarget(`unknown resource ${resource}`);
  }
  return {
    scope: known.scope,
    audience: known.audience,
    accessTokenTTL: ttl.access,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'ES256' } },
  };
}

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  features: {
    devInteractions: { enabled: opts['browser-login'] === '1' },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => (oneOf ? oneOf[0] : undefined),
      getResourceServerInfo: (_ctx, resource) => resourceServerInfo(resource),
      useGrantedResource: () => true,
    },
  },
  rotateRefreshToken: () => true,
  extraTokenClaims: (_ctx, token) => {
    const act = exchangeActs.get(token);
    return act ? { act } : undefined;
  },
  ttl: {
    AccessToken: () => ttl.access,
    ClientCredentials: () => ttl.access,
    RefreshToken: () => ttl.refresh,
    DeviceCode: () => ttl.device,
    Grant: () => 30 * 24 * 3600,
    IdToken: () => 3600,
    Interaction: () => 3600,
    Session: () => 24 * 3600,
  },
});
provider.on('server_error', (_ctx, err) => log(NAME, 'server_error', err.stack ?? String(err)));

// ---------------------------------------------------------------------------------------
// RFC 8693 token exchange: subject_token = one of our JWT access tokens (or a trusted opaque
// token registered by a test); the result is a JWT for the requested resource/audience whose
// `act` claim names the client that asked (nested when the subject token had one).

const EXCHANGE_PARAMS = [
  'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
  'requested_token_type', 'resource', 'audience', 'scope',
];

async function exchangeHandler(ctx) {
  const p = ctx.oidc.params;
  const { client } = ctx.oidc;
  if (!p.subject_token) throw new errors.InvalidRequest('missing required parameter subject_token');
  if (!p.subject_token_type) throw new errors.InvalidRequest('missing required parameter subject_token_type');
  if (![TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT].includes(p.subject_token_type)) {
    throw new errors.InvalidRequest('unsupported subject_token_type');
  }
  if (p.requested_token_type && ![TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT].includes(p.requested_token_type)) {
    throw new errors.InvalidRequest('unsupported requested_token_type');
  }

  let subject;
  let priorAct;
  const trusted = trustedSubjectTokens.get(p.subject_token);
  if (trusted !== undefined) {
    subject = trusted;
  } else {
    try {
      const { payload } = await jwtVerify(p.subject_token, localJwks, { issuer });
      subject = payload.sub;
      priorAct = payload.act;
    } catch (err) {
      throw new errors.InvalidGrant(`subject_token is invalid or expired (${err.code ?? 'invalid'})`);
    }
  }
  if (typeof subject !== 'string' || subject === '') {
    throw new errors.InvalidGrant('subject_token has no subject');
  }

  const requestedTarget = p.resource ?? p.audience;
  if (!requestedTarget) throw new errors.InvalidTarget('resource or audience is required');
  const target = resourceFor(requestedTarget);
  const info = resourceServerInfo(target);
  const allowed = new Set(info.scope.split(' '));
  const scope = (p.scope ?? '').split(' ').filter((s) => allowed.has(s)).join(' ');

  const at = new provider.AccessToken({
    accountId: subject,
    client,
    gty: 'token_exchange',
    scope: scope || undefined,
  });
  at.resourceServer = new provider.ResourceServer(target, info);
  exchangeActs.set(at, { sub: client.clientId, ...(priorAct ? { act: priorAct } : {}) });
  const value = await at.save();
  ctx.body = {
    access_token: value,
    issued_token_type: TOKEN_TYPE_ACCESS,
    token_type: 'Bearer',
    expires_in: at.expiration,
    ...(scope ? { scope } : {}),
  };
}
provider.registerGrantType(GRANT_EXCHANGE, exchangeHandler, EXCHANGE_PARAMS);

// ---------------------------------------------------------------------------------------
// Counters of token-endpoint calls per grant_type and outcome. `requests` counts every call
// that arrived (faulted ones included), `ok`/`errors` the ones the provider answered,
// `faulted` the ones a fault mode answered instead (a `slow` call is answered by the provider).

function emptyStats() {
  return { token: { requests: 0, by_grant: {} }, device_authorization: { requests: 0 }, faulted: 0 };
}
let stats = emptyStats();

function grantStats(grantType) {
  const key = grantType || 'unknown';
  stats.token.by_grant[key] ??= { requests: 0, ok: 0, errors: {}, faulted: 0 };
  return stats.token.by_grant[key];
}

// ---------------------------------------------------------------------------------------
// The refresh log: every refresh_token grant the provider answered, in order, with the
// fingerprints (first 12 hex chars of SHA-256, as stagepass's Secret::fingerprint) of the
// refresh token presented and of the one issued. A test that SIGKILLs a client mid-refresh
// compares it with what the client's store holds to tell an unavoidable re-login (the IdP
// rotated the stored token while the client died before persisting the new one) from an
// avoidable one. `in_flight` counts token requests that arrived and are not answered yet
// (the provider keeps working after its client dies), so a test can wait for quiet.

const REFRESH_LOG_MAX = 20_000;
let refreshLog = [];
let refreshSeq = 0;
let tokenInFlight = 0;

function fingerprint(value) {
  return crypto.createHash('sha256').update(String(value)).digest('hex').slice(0, 12);
}

/** Marks a token request as answered (once), however its handling ended. */
function tokenRequestDone(req) {
  if (req.tokenInFlight) {
    req.tokenInFlight = false;
    tokenInFlight -= 1;
  }
}

provider.use(async (ctx, next) => {
  try {
    await next();
  } finally {
    tokenRequestDone(ctx.req);
  }
  if (ctx.path === '/token' && ctx.method === 'POST') {
    const g = grantStats(ctx.oidc?.params?.grant_type);
    stats.token.requests += 1;
    g.requests += 1;
    if (ctx.oidc?.params?.grant_type === 'refresh_token' && ctx.oidc.params.refresh_token) {
      refreshSeq += 1;
      refreshLog.push({
        seq: refreshSeq,
        presented: fingerprint(ctx.oidc.params.refresh_token),
        issued: ctx.status === 200 && ctx.body?.refresh_token ? fingerprint(ctx.body.refresh_token) : null,
        error: ctx.status === 200 ? null : (ctx.body?.error ?? `http_${ctx.status}`),
      });
      if (refreshLog.length > REFRESH_LOG_MAX) refreshLog.shift();
    }
    if (ctx.status === 200) {
      g.ok += 1;
    } else {
      const code = ctx.body?.error ?? `http_${ctx.status}`;
      g.errors[code] = (g.errors[code] ?? 0) + 1;
    }
  } else if (ctx.path === '/device/auth' && ctx.method === 'POST') {
    stats.device_authorization.requests += 1;
    if (ctx.status === 200 && ctx.body?.user_code) {
      recentUserCodes.push(ctx.body.user_code);
      if (recentUserCodes.length > 100) recentUserCodes.shift();
      if (autoApproveSubject) {
        const [status, result] = await approve({ user_code: ctx.body.user_code, subject: autoApproveSubject });
        if (status !== 200) log(NAME, 'auto-approve failed', result);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------
// Fault modes, applied before the provider sees a request. /__test/ is never faulted.

const FAULT_MODES = ['none', 'down', 'refuse', 'slow', '5xx', '429', 'malformed'];
let fault = { mode: 'none' };

function parseFault(body) {
  const mode = body.mode ?? 'none';
  if (!FAULT_MODES.includes(mode)) throw new Error(`unknown fault mode ${mode}; one of ${FAULT_MODES.join(', ')}`);
  const scope = body.scope ?? 'token';
  if (!['token', 'all'].includes(scope)) throw new Error('scope must be "token" or "all"');
  const f = { mode, scope };
  if (mode === 'slow') f.ms = Number(body.ms ?? 1000);
  if (mode === '5xx') f.status = Number(body.status ?? 503);
  if (mode === '429') f.retry_after = Number(body.retry_after ?? 1);
  if (body.times !== undefined && body.times !== null) {
    if (mode === 'refuse') throw new Error('times cannot be used with refuse (no request arrives to count)');
    f.times = Number(body.times);
  }
  if (mode === 'refuse' && scope !== 'all') throw new Error('refuse closes the whole port: use scope "all"');
  for (const k of ['ms', 'status', 'retry_after', 'times']) {
    if (k in f && (!Number.isInteger(f[k]) || f[k] < 0)) throw new Error(`${k} must be a non-negative integer`);
  }
  if (mode === '5xx' && (f.status < 500 || f.status > 599)) throw new Error('status must be 5xx');
  return f;
}

/** Applies the current fault to a request; returns true when the request was consumed. */
/**
 * Switches the fault. `refuse` closes the IdP's listening socket (and drops its open
 * connections), so clients get ECONNREFUSED; any other mode re-opens the same port. The
 * control routes stay reachable on the separate control port (`control_url`).
 */
async function setFault(next) {
  const wasRefused = fault.mode === 'refuse';
  fault = next;
  log(NAME, 'fault', fault);
  if (next.mode === 'refuse' && !wasRefused) {
    await new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  } else if (next.mode !== 'refuse' && wasRefused) {
    await listen(server, port);
  }
  return fault;
}

async function applyFault(req, res, path) {
  if (fault.mode === 'none') return false;
  if (fault.scope === 'token' && path !== '/token') return false;
  const f = fault;
  if (f.times !== undefined) {
    f.times -= 1;
    if (f.times <= 0) fault = { mode: 'none' };
  }
  stats.faulted += 1;
  if (f.mode === 'slow') {
    await new Promise((resolve) => { setTimeout(resolve, f.ms); });
    return false;
  }
  if (path === '/token') {
    const g = grantStats(req.grantType);
    stats.token.requests += 1;
    g.requests += 1;
    g.faulted += 1;
  }
  switch (f.mode) {
    case 'down':
      req.socket.destroy();
      break;
    case '5xx':
      res.writeHead(f.status, { 'content-type': 'text/html' });
      res.end(`<html><body>${f.status} injected fault</body></html>`);
      break;
    case '429':
      res.writeHead(429, { 'content-type': 'text/plain', 'retry-after': String(f.retry_after) });
      res.end('Too Many Requests');
      break;
    case 'malformed':
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"access_token": "trunc');
      break;
    default:
      break;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Test-only control routes.

function normalizeUserCode(input) {
  return String(input).toUpperCase().replace(/\W/g, '');
}

async function findDeviceCode(userCode) {
  const dc = await provider.DeviceCode.findByUserCode(normalizeUserCode(userCode), { ignoreExpiration: true });
  if (!dc) return [404, { error: 'not_found', message: `no device code with user_code ${userCode}` }];
  if (dc.isExpired) return [410, { error: 'expired', message: 'device code expired' }];
  if (dc.accountId || dc.error || dc.consumed) {
    return [409, { error: 'already_decided', message: 'device code already approved, denied or used' }];
  }
  return [200, dc];
}

async function approve(body) {
  const { user_code: userCode, subject } = body;
  if (!userCode || !subject) return [400, { error: 'invalid_request', message: 'user_code and subject are required' }];
  const [status, dc] = await findDeviceCode(userCode);
  if (status !== 200) return [status, dc];

  const requested = new Set(String(body.scope ?? dc.params.scope ?? '').split(' ').filter(Boolean));
  const oidcScopes = ['openid', 'offline_access', 'profile', 'email'].filter((s) => requested.has(s));
  const rawResources = dc.params.resource;
  const resources = [rawResources ?? []].flat().map(resourceFor);

  const grant = new provider.Grant({ accountId: subject, clientId: dc.clientId });
  if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
  const granted = new Set(oidcScopes);
  for (const resource of resources) {
    const allowed = (RESOURCES[resource]?.scope ?? '').split(' ');
    const scopes = allowed.filter((s) => requested.has(s));
    grant.addResourceScope(resource, scopes.join(' '));
    scopes.forEach((s) => granted.add(s));
  }
  const grantId = await grant.save();

  if (!grantsBySubject.has(subject)) grantsBySubject.set(subject, new Set());
  grantsBySubject.get(subject).add(grantId);

  Object.assign(dc, {
    accountId: subject,
    grantId,
    scope: [...granted].join(' '),
    authTime: Math.floor(Date.now() / 1000),
  });
  if (resources.length === 1) [dc.resource] = resources;
  else if (resources.length > 1) dc.resource = resources;
  await dc.save();
  log(NAME, `device code ${dc.userCode} approved for ${subject} (grant ${grantId})`);
  return [200, { approved: true, grant_id: grantId, scope: dc.scope, resource: resources }];
}

/** User codes still waiting for a decision, oldest first. */
async function pendingUserCodes() {
  const pending = [];
  for (const userCode of recentUserCodes) {
    const [status] = await findDeviceCode(userCode);
    if (status === 200) pending.push(userCode);
  }
  return pending;
}

async function deny(body) {
  if (!body.user_code) return [400, { error: 'invalid_request', message: 'user_code is required' }];
  const [status, dc] = await findDeviceCode(body.user_code);
  if (status !== 200) return [status, dc];
  dc.error = 'access_denied';
  dc.errorDescription = 'End-User aborted interaction';
  await dc.save();
  return [200, { denied: true }];
}

async function revokeSubject(body) {
  if (!body.subject) return [400, { error: 'invalid_request', message: 'subject is required' }];
  const grantIds = [...(grantsBySubject.get(body.subject) ?? [])];
  for (const id of grantIds) {
    await Promise.all([
      provider.AccessToken.revokeByGrantId(id),
      provider.RefreshToken.revokeByGrantId(id),
      provider.DeviceCode.revokeByGrantId(id),
      provider.Grant.adapter.destroy(id),
    ]);
  }
  grantsBySubject.delete(body.subject);
  log(NAME, `revoked ${grantIds.length} grant(s) of ${body.subject}`);
  return [200, { revoked_grants: grantIds.length }];
}

/**
 * Mints a JWT access token through the provider's own AccessToken model (same key, same
 * claims as the grants produce) with a per-token lifetime, so tests on a shared IdP can get
 * a short-lived token without changing everyone's TTL.
 */
async function mint(body) {
  const { subject, resource } = body;
  const clientId = body.client_id ?? 'stagepass-cli';
  const ttlSecs = body.ttl ?? ttl.access;
  if (!subject || !resource) return [400, { error: 'invalid_request', message: 'subject and resource are required' }];
  if (!Number.isInteger(ttlSecs) || ttlSecs < 1) return [400, { error: 'invalid_request', message: 'ttl must be a positive integer' }];
  const client = await provider.Client.find(clientId);
  if (!client) return [404, { error: 'not_found', message: `no client ${clientId}` }];
  let info;
  try {
    info = resourceServerInfo(resource);
  } catch (err) {
    return [400, { error: 'invalid_target', message: err.message }];
  }
  const identifier = resourceFor(resource);
  const allowed = new Set(info.scope.split(' '));
  const scope = String(body.scope ?? '').split(' ').filter((x) => allowed.has(x)).join(' ');
  const at = new provider.AccessToken({
    accountId: String(subject), client, gty: 'test_mint', scope: scope || undefined, expiresIn: ttlSecs,
  });
  at.resourceServer = new provider.ResourceServer(identifier, { ...info, accessTokenTTL: ttlSecs });
  const value = await at.save();
  return [200, { access_token: value, token_type: 'Bearer', expires_in: ttlSecs }];
}

async function setTtl(body) {
  for (const k of ['access', 'refresh', 'device']) {
    if (body[k] !== undefined) {
      if (!Number.isInteger(body[k]) || body[k] < 1) return [400, { error: 'invalid_request', message: `${k} must be a positive integer` }];
      ttl[k] = body[k];
    }
  }
  return [200, { ...ttl }];
}

async function control(req, res, path, viaControlPort) {
  try {
    const body = req.method === 'POST' ? await readJson(req) : {};
    if (path === '/__test/fault' && body.mode === 'refuse' && !viaControlPort) {
      // Closing the port would cut this very request: refuse is for the control port.
      sendJson(res, 400, { error: 'invalid_request', message: 'send mode "refuse" to control_url' });
      return;
    }
    let result;
    switch (`${req.method} ${path}`) {
      case 'GET /__test/health': result = [200, { ok: true }]; break;
      case 'GET /__test/stats': result = [200, stats]; break;
      case 'POST /__test/stats/reset': stats = emptyStats(); refreshLog = []; result = [200, stats]; break;
      case 'GET /__test/refresh-log': result = [200, { in_flight: tokenInFlight, entries: refreshLog }]; break;
      case 'GET /__test/fault': result = [200, fault]; break;
      case 'POST /__test/fault': result = [200, await setFault(parseFault(body))]; break;
      case 'POST /__test/device/approve': result = await approve(body); break;
      case 'POST /__test/device/deny': result = await deny(body); break;
      case 'GET /__test/device/pending': result = [200, { user_codes: await pendingUserCodes() }]; break;
      case 'POST /__test/device/auto-approve':
        autoApproveSubject = body.subject ? String(body.subject) : null;
        result = [200, { subject: autoApproveSubject }];
        break;
      case 'POST /__test/revoke': result = await revokeSubject(body); break;
      case 'GET /__test/ttl': result = [200, { ...ttl }]; break;
      case 'GET /__test/clock':
      case 'POST /__test/clock':
        // The skewable clock of lib/clock.cjs (only when the IdP was started with it).
        if (!globalThis.stagepassPeerClock) {
          result = [409, { error: 'no_clock', message: 'start the IdP with the lib/clock.cjs preload (IdpOptions::clock_offset_secs)' }];
          break;
        }
        if (req.method === 'POST') globalThis.stagepassPeerClock.set(body.offset_s);
        result = [200, { offset_s: globalThis.stagepassPeerClock.offsetSecs, now: Math.floor(Date.now() / 1000) }];
        break;
      case 'POST /__test/mint': result = await mint(body); break;
      case 'POST /__test/ttl': result = await setTtl(body); break;
      case 'POST /__test/exchange/trust':
        if (!body.token || !body.subject) {
          result = [400, { error: 'invalid_request', message: 'token and subject are required' }];
        } else {
          trustedSubjectTokens.set(String(body.token), String(body.subject));
          result = [200, { trusted: true }];
        }
        break;
      default: result = [404, { error: 'not_found', message: `no control route ${req.method} ${path}` }];
    }
    sendJson(res, result[0], result[1]);
  } catch (err) {
    sendJson(res, 400, { error: 'invalid_request', message: err.message });
  }
}

// ---------------------------------------------------------------------------------------

// The control routes also answer on a port of their own, which stays open while the IdP's
// port is closed by the `refuse` fault.
const controlServer = http.createServer(async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path.startsWith('/__test/')) {
    await control(req, res, path, true);
  } else {
    sendJson(res, 404, { error: 'not_found', message: 'control port: only /__test/ routes' });
  }
});
const controlPort = await listen(controlServer, 0);
const controlUrl = `http://127.0.0.1:${controlPort}`;

/**
 * Reads a token or device-authorization form and maps `audience` (and audience-valued
 * `resource`) to resource identifiers, so clients that name the audience (as the RFC 8693
 * `audience` parameter does, or for a non-URI audience such as sts.amazonaws.com) get a JWT
 * for it. The provider then reads the rewritten form from `req.body`.
 */
async function normalizeTargets(req) {
  const raw = await readBody(req, 56 * 1024);
  const params = new URLSearchParams(raw);
  req.grantType = params.get('grant_type');
  if (!String(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
    req.body = raw;
    return;
  }
  const resources = params.getAll('resource');
  const audiences = params.getAll('audience');
  if (resources.length || audiences.length) {
    const targets = resources.length ? resources : audiences;
    params.delete('resource');
    params.delete('audience');
    for (const t of targets) params.append('resource', resourceFor(t));
  }
  req.body = params.toString();
}

const providerCallback = provider.callback();
server.on('request', async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  try {
    if (path.startsWith('/__test/')) {
      await control(req, res, path, false);
      return;
    }
    if (req.method === 'POST' && path === '/token') {
      req.tokenInFlight = true;
      tokenInFlight += 1;
    }
    if (req.method === 'POST' && (path === '/token' || path === '/device/auth')) {
      await normalizeTargets(req);
    }
    if (await applyFault(req, res, path)) {
      tokenRequestDone(req);
      return;
    }
    providerCallback(req, res);
  } catch (err) {
    tokenRequestDone(req);
    log(NAME, 'request failed', err.stack ?? String(err));
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
  }
});

exitOnSignals(() => {
  server.close();
  controlServer.close();
});
log(NAME, `issuer ${issuer}; ttl access=${ttl.access}s refresh=${ttl.refresh}s device=${ttl.device}s`);
announceReady(NAME, issuer, { issuer, jwks_uri: `${issuer}/jwks`, control_url: controlUrl });
