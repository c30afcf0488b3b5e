// The test Backstage's sign-in and permission pieces, as backend modules:
//
// - a proxy sign-in provider `stagepass-test` that trusts JWTs of the test IdP (audience
//   urn:stagepass:backstage, verified against the IdP's JWKS) and resolves their `sub` to a
//   User entity of the catalog. A test signs in as alice with
//   `GET /api/auth/stagepass-test/refresh` and `Authorization: Bearer <IdP token for alice>`,
//   and gets alice's Backstage token: the one the Backstage app would hold in a browser, and
//   what `POST /api/auth/v1/sessions/:id/approve` needs.
// - the permission policy: a user may refresh only entities one of their ownership refs owns
//   (`catalog.entity.refresh`, conditional on IS_ENTITY_OWNER, as Backstage documents it);
//   everything else is allowed. Location entities have no owner, so users may not refresh
//   them: the agent then pushes a file through the changed entity, whose refresh re-reads the
//   file through its Location ancestors. Service principals (the IdP-token path) never reach
//   the policy: Backstage decides for them from their externalAccess accessRestrictions.
//   Registration (`catalog.location.create`) is a basic permission with no entity to check
//   ownership against, so it stays allowed.
// - the org: groups team-a and team-b, users alice and carol (team-a), bob and dave
//   (team-b), written to a file that `catalog.locations` names. Backstage keeps one offline
//   session per user and client, so tests that run at once sign in as different users.

import * as fs from 'node:fs';
import * as path from 'node:path';

import { coreServices, createBackendModule } from '@backstage/backend-plugin-api';
import {
  authProvidersExtensionPoint,
  createProxyAuthProviderFactory,
  createProxyAuthenticator,
} from '@backstage/plugin-auth-node';
import { AuthorizeResult, isPermission } from '@backstage/plugin-permission-common';
import { policyExtensionPoint } from '@backstage/plugin-permission-node/alpha';
import { catalogEntityRefreshPermission } from '@backstage/plugin-catalog-common/alpha';
import { catalogConditions, createCatalogConditionalDecision } from '@backstage/plugin-catalog-backend/alpha';
import { createRemoteJWKSet, jwtVerify } from 'jose';

/** Users and the group each belongs to. */
export const USERS = { alice: 'team-a', bob: 'team-b', carol: 'team-a', dave: 'team-b', erin: 'team-a' };

/** Writes the org file (groups and users) and returns its path. */
export function writeOrg(dir) {
  const docs = [];
  for (const group of new Set(Object.values(USERS))) {
    docs.push({
      apiVersion: 'backstage.io/v1alpha1',
      kind: 'Group',
      metadata: { name: group },
      spec: { type: 'team', children: [] },
    });
  }
  for (const [user, group] of Object.entries(USERS)) {
    docs.push({
      apiVersion: 'backstage.io/v1alpha1',
      kind: 'User',
      metadata: { name: user },
      spec: { profile: { email: `${user}@example.test` }, memberOf: [group] },
    });
  }
  const file = path.join(dir, 'org.yaml');
  // JSON documents are YAML documents.
  fs.writeFileSync(file, docs.map((d) => `---\n${JSON.stringify(d)}\n`).join(''), { mode: 0o600 });
  return file;
}

/** The proxy sign-in provider trusting the test IdP's tokens for `audience`. */
export function signInModule({ issuer, audience }) {
  const jwks = createRemoteJWKSet(new URL(`${issuer}/jwks`));
  const authenticator = createProxyAuthenticator({
    defaultProfileTransform: async (result) => ({ profile: { displayName: result.sub } }),
    initialize: () => ({}),
    async authenticate({ req }) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      if (!m) throw new Error('stagepass-test sign-in needs a Bearer token of the test IdP');
      const { payload } = await jwtVerify(m[1], jwks, { issuer, audience });
      return { result: { sub: String(payload.sub) } };
    },
  });
  return createBackendModule({
    pluginId: 'auth',
    moduleId: 'stagepass-test-provider',
    register(reg) {
      reg.registerInit({
        deps: { providers: authProvidersExtensionPoint },
        async init({ providers }) {
          providers.registerProvider({
            providerId: 'stagepass-test',
            factory: createProxyAuthProviderFactory({
              authenticator,
              async signInResolver({ result }, ctx) {
                return ctx.signInWithCatalogUser({ entityRef: { name: result.sub } });
              },
            }),
          });
        },
      });
    },
  });
}

/** Owners may refresh their entities; nobody else may. */
class OwnersRefreshPolicy {
  async handle(request, user) {
    if (isPermission(request.permission, catalogEntityRefreshPermission)) {
      const claims = user?.info?.ownershipEntityRefs ?? user?.identity?.ownershipEntityRefs ?? [];
      return createCatalogConditionalDecision(
        request.permission,
        catalogConditions.isEntityOwner({ claims }),
      );
    }
    return { result: AuthorizeResult.ALLOW };
  }
}

export const policyModule = createBackendModule({
  pluginId: 'permission',
  moduleId: 'stagepass-test-policy',
  register(reg) {
    reg.registerInit({
      deps: { policy: policyExtensionPoint, logger: coreServices.logger },
      async init({ policy }) {
        policy.setPolicy(new OwnersRefreshPolicy());
      },
    });
  },
});
