// The real OpenID provider the OIDC tests sign in at: the `oidc-provider` package (certified
// OpenID Provider) on a loopback port, with its development login form (any login, any
// password; the login becomes the subject) and consent granted for first-party clients.
//
//   PORT=<port> CLIENTS='[{"client_id": …, "client_secret": …, "redirect_uris": […], …}]' \
//     node tests/oidc/provider.mjs
//
// Besides the provider's own endpoints it answers one test switch, POST /__test/tamper with a
// JSON object of claims: the next ID token the token endpoint issues carries those claims
// instead (e.g. {"aud": "another-client"} or {"nonce": "…"}), still signed with the
// provider's own key — a provider that hands the gateway a token meant for someone else.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = process.env.ISSUER || `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.CLIENTS || '[]');

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

const configuration = {
  clients,
  // Scope claims (email, groups) in the ID token itself, as Keycloak, Entra ID and Google put
  // them: the gateway reads the ID token and does not call userinfo.
  conformIdTokenClaims: false,
  // The gateways under test listen on loopback addresses, which the provider's SSRF guard
  // refuses for back-channel logout calls: here, and only here, its dispatcher is dropped.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  jwks: { keys: [signingKey] },
  cookies: { keys: ['bffgate-test-provider-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // Logins become subjects; `unverified-…` logins have an email the provider did not verify.
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: `${sub.replace(/^unverified-/, '')}@example.com`,
          email_verified: !sub.startsWith('unverified-'),
          name: `Test ${sub}`,
          groups: ['staff', `group-${sub}`],
        };
      },
    };
  },
  // First-party clients: consent is granted without asking.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups']);
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (ctx, err, client) => console.error('backchannel.error', client.clientId, err));
provider.on('backchannel.success', (ctx, client) => console.error('backchannel.success', client.clientId));

let tamper = null;

const b64url = (data) => Buffer.from(data).toString('base64url');

// The next ID token from the token endpoint, re-signed with `tamper`'s claims.
provider.use(async (ctx, next) => {
  await next();
  if (tamper && ctx.path === '/token' && ctx.body && ctx.body.id_token) {
    const [header, payload] = ctx.body.id_token.split('.');
    const claims = { ...JSON.parse(Buffer.from(payload, 'base64url')), ...tamper };
    const input = `${header}.${b64url(JSON.stringify(claims))}`;
    const signature = crypto.sign('sha256', Buffer.from(input), privateKey);
    ctx.body = { ...ctx.body, id_token: `${input}.${b64url(signature)}` };
    tamper = null;
  }
});

const callback = provider.callback();
function handle(req, res) {
  if (req.method === 'POST' && req.url === '/__test/tamper') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      tamper = JSON.parse(body);
      res.writeHead(204).end();
    });
    return;
  }
  callback(req, res);
}

// `localhost` is both loopback addresses; IPv6 is optional.
for (const host of ['127.0.0.1', '::1']) {
  const server = http.createServer(handle);
  server.on('error', (err) => {
    if (host === '127.0.0.1') {
      throw err;
    }
  });
  server.listen(port, host, () => console.log(`oidc-provider listening on ${issuer} (${host})`));
}
