// The OIDC issuer of the vending tests, on oauth2-mock-server.
//
//   node issuer.mjs [PORT]     prints "issuer http://127.0.0.1:PORT" once it listens
//
// It serves discovery (/.well-known/openid-configuration) and a JWKS with one RS256,
// one ES256 and one EdDSA key (kids "rs256-key", "es256-key", "eddsa-key"). Tests
// get tokens from POST /token (form): grant_type=client_credentials, plus
//   claims=<JSON object>   set these claims (null removes one: {"aud": null})
//   alg=RS256|ES256|EdDSA  which key signs (default RS256)
//   header=<JSON object>   extra protected-header fields (e.g. {"kid": "other"})
import { OAuth2Server } from 'oauth2-mock-server';

const host = '127.0.0.1';
const server = new OAuth2Server();
const kids = { RS256: 'rs256-key', ES256: 'es256-key', EdDSA: 'eddsa-key' };
for (const [alg, kid] of Object.entries(kids)) {
  await server.issuer.keys.generate(alg, { kid });
}

function objectParam(text, name) {
  if (text === undefined || text === '') return {};
  const value = JSON.parse(text);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`${name} must be a JSON object`);
  }
  return value;
}

// The stock service picks signing keys in turn; pick the one the request names.
const service = server.service;
service.buildToken = async function (req, expiresIn, scopesOrTransform) {
  const alg = req.body?.alg ?? 'RS256';
  const kid = kids[alg];
  if (!kid) throw new Error(`unknown alg ${alg}`);
  this.issuer.once('beforeSigning', (token) => this.emit('beforeTokenSigning', token, req));
  return this.issuer.buildToken({ kid, scopesOrTransform, expiresIn });
};

service.on('beforeTokenSigning', (token, req) => {
  for (const [k, v] of Object.entries(objectParam(req.body?.claims, 'claims'))) {
    if (v === null) delete token.payload[k];
    else token.payload[k] = v;
  }
  for (const k of Object.keys(token.payload)) {
    if (token.payload[k] === undefined) delete token.payload[k];
  }
  Object.assign(token.header, objectParam(req.body?.header, 'header'));
});

await server.start(Number(process.argv[2] ?? 0), host);
// The library names any loopback issuer "localhost"; tokens and discovery must agree
// with the URL clients use.
server.issuer.url = `http://${host}:${server.address().port}`;
process.stdout.write(`issuer ${server.issuer.url}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, async () => {
    await server.stop().catch(() => {});
    process.exit(0);
  });
}
