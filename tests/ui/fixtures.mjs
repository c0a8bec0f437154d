// What the tests publish: a conformance run's reports in a few versions, made here so
// nothing is fetched. The Markdown and the HTML report carry attempts to escape their
// preview; a canary is what they would steal.

import { deflateSync } from "node:zlib";
import { randomBytes } from "node:crypto";

export const CANARY = "canary-3f9c1e7a";

export function summary(passed, failed) {
  return `# CMIS TCK summary

Run of the **OpenCMIS TCK** against the \`browser\` binding — *${passed} passed*, ~~none skipped~~.

## Results

| group | passed | failed |
|---|---:|---:|
| basics | ${passed - 10} | 0 |
| versioning | 10 | ${failed} |

- [x] repository info
- [ ] change log
  - nested item with \`code\`

1. first
2. second

> Details are in [the build log](../logs/build.log) and the [spec](https://docs.oasis-open.org/cmis/CMIS/v1.1/CMIS-v1.1.html).

\`\`\`sh
artifactstore get ci/open-cmis-tck@latest -o out
\`\`\`

<script>document.title = "owned"</script>
[click me](javascript:alert(1)) and ![tracker](https://tracker.example/pixel.png)
<img src=x onerror="alert(1)">
`;
}

/** An HTML report whose script tries to read the page's token, storage and cookies
 * and to send them away, and writes what it found into itself. */
export function report(title) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${title}</title>
<style>body{font-family:sans-serif;margin:2rem}h1{color:#1f5fa8}.pass{color:green}</style></head>
<body><h1>${title}</h1>
<p class="pass">412 tests passed.</p>
<ul><li>basics: ok</li><li>versioning: ok</li></ul>
<pre id="stolen">nothing read</pre>
<script>
  var found = [];
  try { found.push("session:" + JSON.stringify(sessionStorage)); } catch (e) { found.push("session blocked"); }
  try { found.push("local:" + JSON.stringify(localStorage)); } catch (e) { found.push("local blocked"); }
  try { found.push("cookie:" + document.cookie); } catch (e) { found.push("cookie blocked"); }
  try { found.push("parent:" + JSON.stringify(parent.sessionStorage)); } catch (e) { found.push("parent blocked"); }
  document.getElementById("stolen").textContent = found.join("\\n");
  try { fetch("/v1/artifacts?leak=" + encodeURIComponent(found.join("|"))); } catch (e) {}
</script>
</body></html>`;
}

export function buildLog(lines) {
  const out = [];
  for (let i = 1; i <= lines; i++) out.push(`\u001b[32m[${String(i).padStart(4, "0")}]\u001b[0m step ${i}: ok`);
  return `${out.join("\n")}\nBUILD SUCCESSFUL\n`;
}

export function results(passed) {
  return JSON.stringify({ suite: "cmis", passed, failed: 0, groups: { basics: passed - 10, versioning: 10 } });
}

/** A small PNG: a blue-to-green gradient. */
export function png(width = 96, height = 48) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0;
    for (let x = 0; x < width; x++) {
      const o = y * (width * 3 + 1) + 1 + x * 3;
      raw[o] = 30;
      raw[o + 1] = Math.round((255 * x) / width);
      raw[o + 2] = Math.round(255 - (200 * y) / height);
    }
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

export const binary = randomBytes(70_000);

/** The files of run `n` of the conformance suite: each run changes some files, adds
 * one and drops one, so two runs differ in every way a comparison shows. */
export function run(n) {
  const files = {
    "reports/cmis-summary.md": [summary(400 + n, n % 2), "text/markdown"],
    "reports/index.html": [report(`CMIS TCK report, run ${n}`), "text/html"],
    "logs/build.log": [buildLog(40 + n), "text/plain"],
    "results.json": [results(400 + n), "application/json"],
    "screenshots/start.png": [png(), "image/png"],
    "bundle/app.bin": [binary, "application/octet-stream"],
  };
  files[`logs/extra-${n}.log`] = [`extra log of run ${n}\n`, "text/plain"];
  return files;
}
