// The OIDC issuer of the vending tests, on oauth2-mock-server.
//
//   node issuer.mjs [PORT] [--x5c]   prints "issuer http://127.0.0.1:PORT" once it listens
//
// It serves discovery (/.well-known/openid-configuration) and a JWKS with one RS256,
// one ES256 and one EdDSA key (kids "rs256-key", "es256-key", "eddsa-key"). With --x5c
// the JWKS holds only the RS256 key, and it carries a self-signed certificate in `x5c`
// (made with the openssl command): Ceph RGW refuses a key set with any key without
// one. Tests
// get tokens from POST /token (form): grant_type=client_credentials, plus
//   claims=<JSON object>   set these claims (null removes one: {"aud": null})
//   alg=RS256|ES256|EdDSA  which key signs (default RS256)
//   header=<JSON object>   extra protected-header fields (e.g. {"kid": "other"})
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OAuth2Server } from 'oauth2-mock-server';

const host = '127.0.0.1';
const args = process.argv.slice(2);
const x5c = args.includes('--x5c');
const port = Number(args.find((a) => !a.startsWith('--')) ?? 0);
const server = new OAuth2Server();
const kids = x5c
  ? { RS256: 'rs256-key' }
  : { RS256: 'rs256-key', ES256: 'es256-key', EdDSA: 'eddsa-key' };

// An RSA key and a self-signed certificate for it, as a private JWK with `x5c`.
function rsaKeyWithCertificate(kid) {
  const dir = mkdtempSync(join(tmpdir(), 'issuer-x5c-'));
  try {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
      '-days', '2', '-subj', '/CN=artifactstore test issuer',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    const jwk = createPrivateKey(readFileSync(key)).export({ format: 'jwk' });
    const der = new X509Certificate(readFileSync(cert)).raw.toString('base64');
    return { ...jwk, kid, alg: 'RS256', use: 'sig', x5c: [der] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const [alg, kid] of Object.entries(kids)) {
  if (x5c) await server.issuer.keys.add(rsaKeyWithCertificate(kid));
  else await server.issuer.keys.generate(alg, { kid });
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

await server.start(port, host);
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
