// The real `artifactstore serve`, started on port 0 in a fresh data directory, and the
// HTTP calls that seed it. Nothing here builds the binary: ARTIFACTSTORE_BIN names it.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, openSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = resolve(repo, process.env.ARTIFACTSTORE_BIN || "target/debug/artifactstore");

/** Starts a server; `config` is the text of a TOML config file, if any. Resolves to
 * `{url, origin, stop(), logs()}` once the server has printed its address. */
export async function startServer({ config, args = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "artifactstore-ui-"));
  const log = join(dir, "server.log");
  const argv = ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), ...args];
  if (config) {
    writeFileSync(join(dir, "serve.toml"), config);
    argv.push("--config", join(dir, "serve.toml"));
  }
  // Only what the test gives: no ARTIFACTSTORE_* setting of the caller's shell.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ARTIFACTSTORE_")));
  const child = spawn(BIN, argv, { env, stdio: ["ignore", "pipe", openSync(log, "a")] });
  const logs = () => readFileSync(log, "utf8");
  const url = await new Promise((ok, fail) => {
    const lines = createInterface({ input: child.stdout });
    lines.once("line", (line) => {
      const m = /^artifactstore listening on (http:\/\/\S+)$/.exec(line.trim());
      if (m) ok(m[1]);
      else fail(new Error(`unexpected first line ${JSON.stringify(line)}; log:\n${logs()}`));
    });
    child.once("exit", (code) => fail(new Error(`${BIN} exited (${code}) before listening; log:\n${logs()}`)));
    child.once("error", (e) => fail(new Error(`cannot start ${BIN}: ${e.message} (build it, or set ARTIFACTSTORE_BIN)`)));
  });
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((ok) => child.once("exit", ok));
      child.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { url, origin: new URL(url).origin, stop, logs, dir };
}

/** A static token and the line of `[[auth.tokens]]` the server keeps of it (its hash). */
export function newToken(name, namespaces, permissions) {
  const token = `ast_${createHash("sha256").update(`${name}-${Math.random()}`).digest("hex")}`;
  const sha256 = createHash("sha256").update(token).digest("hex");
  const list = (xs) => `[${xs.map((x) => JSON.stringify(x)).join(", ")}]`;
  return {
    token,
    config: `[[auth.tokens]]\nname = "${name}"\nsha256 = "${sha256}"\nnamespaces = ${list(namespaces)}\npermissions = ${list(permissions)}\n`,
  };
}

export function client(server, token) {
  const auth = token ? { Authorization: `Bearer ${token}` } : {};
  const call = async (method, path, body, headers = {}) => {
    const resp = await fetch(server.url + path, { method, body, headers: { ...auth, ...headers } });
    if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${await resp.text()}`);
    return resp;
  };
  return {
    put: (target, body, type = "application/octet-stream") =>
      call("PUT", `/v1/artifacts/${target}`, body, { "Content-Type": type }),
    complete: (version, labels = {}) =>
      call("POST", `/v1/artifacts/${version}/complete`, JSON.stringify({ labels }), { "Content-Type": "application/json" }),
    /** Uploads `files` ({path: [body, type]}) to `version` (NS/NAME/VERSION) and completes it. */
    publish: async (version, files, labels) => {
      for (const [path, [body, type]] of Object.entries(files)) await call("PUT", `/v1/artifacts/${version}/${path}`, body, { "Content-Type": type });
      await call("POST", `/v1/artifacts/${version}/complete`, JSON.stringify({ labels }), { "Content-Type": "application/json" });
    },
  };
}
