#!/usr/bin/env bash
# Regenerates docs/compatibility.md: `artifactstore storage compat --markdown` against every
# S3-compatible store that runs here (scripts/s3-fixture.sh: Garage, Ceph RGW, s3s-fs, moto
# in auth mode, and RustFS when its binary is cached), with each store's version and the
# date, and a summary table across them.
#
#   scripts/compat-matrix.sh           write docs/compatibility.md
#   scripts/compat-matrix.sh --check   regenerate into a temporary file and compare it with
#                                      docs/compatibility.md, dates aside; exit 1 on a
#                                      difference (what CI runs)
#
# A store that cannot be started fails the run, except RustFS without its cached binary:
# its section is then carried over from the current file, marked with the date it was
# measured, and not compared.
set -euo pipefail
cd "$(dirname "$0")/.."

doc=docs/compatibility.md
bin=${ARTIFACTSTORE_BIN:-target/debug/artifactstore}
stores=(garage ceph s3s moto rustfs)

# Inside a fixture: probe its store and write the section to $1.
if [ "${1:-}" = --probe ]; then
  out=$2
  args=(--markdown)
  [ -n "${ARTIFACTSTORE_FIXTURE_VIRTUAL_HOST_DOMAIN:-}" ] \
    && args+=(--virtual-host-domain "$ARTIFACTSTORE_FIXTURE_VIRTUAL_HOST_DOMAIN")
  [ -n "${ARTIFACTSTORE_FIXTURE_STS_URL:-}" ] && args+=(--sts-endpoint "$ARTIFACTSTORE_FIXTURE_STS_URL")
  [ -n "${ARTIFACTSTORE_FIXTURE_ROLE_ARN:-}" ] && args+=(--role-arn "$ARTIFACTSTORE_FIXTURE_ROLE_ARN")
  {
    echo "version=$ARTIFACTSTORE_FIXTURE_SERVER_VERSION"
    ARTIFACTSTORE_BACKEND=s3 ARTIFACTSTORE_S3_CREDENTIALS_SOURCE=static "$bin" storage compat "${args[@]}"
  } >"$out"
  exit 0
fi

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [ -z "${ARTIFACTSTORE_BIN:-}" ]; then
  cargo build --locked -q -p artifactstore --bin artifactstore
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/compat-matrix.XXXXXX")
trap 'rm -rf "$work"' EXIT

for store in "${stores[@]}"; do
  echo "compat-matrix: $store" >&2
  rc=0
  ARTIFACTSTORE_FIXTURE_PORT=${ARTIFACTSTORE_FIXTURE_PORT:-19500} \
    scripts/s3-fixture.sh "$store" -- "$0" --probe "$work/$store.md" || rc=$?
  if [ "$rc" = 77 ] && [ "$store" = rustfs ]; then
    echo "compat-matrix: RustFS is not cached: its section is carried over, not measured" >&2
    continue
  fi
  [ "$rc" = 0 ] || { echo "compat-matrix: $store failed ($rc)" >&2; exit 1; }
done

python3 - "$work" "$doc" "$(date -u +%Y-%m-%d)" >"$work/compatibility.md" <<'PY'
import os, re, sys

work, doc, today = sys.argv[1:4]
names = {"garage": "Garage", "ceph": "Ceph RGW", "s3s": "s3s-fs", "moto": "moto (auth mode)",
         "rustfs": "RustFS"}
notes = {
    "garage": "single node, `replication_factor = 1`, `root_domain` set for virtual-host requests.",
    "ceph": "Debian's packages: one monitor, one bluestore OSD, radosgw (beast) with STS on "
            "and `rgw dns name` set; the key's user may CreateRole; a role it may assume.",
    "s3s": "the in-process test store of the S3 suites, run as a server "
           "(crates/blob/examples/s3s_fs_server.rs).",
    "moto": "`moto.server` with `INITIAL_NO_AUTH_ACTION_COUNT`: signatures checked after "
            "the bootstrap calls; an IAM user, its key and a role it may assume.",
    "rustfs": "single node, static root keys.",
}

def old_section(store):
    """The section of `store` in the current document, kept when it was not measured."""
    try:
        text = open(doc).read()
    except FileNotFoundError:
        return None
    m = re.search(r"(?ms)^## %s .*?(?=^## |\Z)" % re.escape(names[store]), text)
    if not m or "(not measured)" in m.group(0).splitlines()[0]:
        return None
    return m.group(0).rstrip() + "\n"

sections, summary = [], {}
order = ["garage", "ceph", "s3s", "moto", "rustfs"]
for store in order:
    path = os.path.join(work, store + ".md")
    if os.path.exists(path):
        lines = open(path).read().splitlines()
        version = lines[0].removeprefix("version=")
        table = "\n".join(lines[1:]) + "\n"
        title = "%s %s" % (names[store], version)
        sections.append("## %s (measured %s)\n\n%s\n\n%s" % (title, today, notes[store], table))
    else:
        old = old_section(store)
        if old is None:
            sections.append("## %s (not measured)\n\nIts binary is not cached on the machine "
                            "that generated this file: `ARTIFACTSTORE_FIXTURE_BUILD_RUSTFS=1 "
                            "scripts/s3-fixture.sh rustfs -- true` builds it (about 70 minutes "
                            "on 2 cores), then run this script again.\n" % names[store])
            continue
        sections.append(old)
        title = old.splitlines()[0][3:].split(" (measured")[0]
        table = old
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 5 and cells[2].startswith("`"):
            rows[cells[2].strip("`")] = (cells[0], cells[1], cells[3])
    summary[title] = rows

titles = list(summary)
ids = []
for rows in summary.values():
    for i in rows:
        if i not in ids:
            ids.append(i)
out = []
out.append("""# S3 compatibility matrix

What each S3-compatible store that runs here answered to `artifactstore storage compat`,
regenerated by `scripts/compat-matrix.sh` (CI checks that this file is what the script
produces today, dates aside). Run the same command against your own endpoint:

```sh
ARTIFACTSTORE_BACKEND=s3 ARTIFACTSTORE_S3_ENDPOINT_URL=https://s3.example \\
ARTIFACTSTORE_S3_BUCKET=artifacts ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF=file:/etc/as/ak \\
ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF=file:/etc/as/sk \\
  artifactstore storage compat [--sts-endpoint URL] [--role-arn ARN] [--json | --markdown]
```

**pass**: behaves as S3 specifies. **fail**: answers, but wrongly (other bytes, a wrong
status, a missing value, a refusal S3 makes that the store skips where that is unsafe).
**unsupported**: refuses the feature or ignores it. **skipped**: not probed from that
configuration (the evidence says why). `storage verify` is the gate for artifact-store
itself: it uses only what passes on every store here, and takes its fallbacks (conditional
create, `Content-Length: 0` on UploadPartCopy) from what it probed.

MinIO and its maintained fork pgsty/silo cannot run here: they are supported as
operator-verified stores (docs/OPERATOR.md) — run the command above against them.

## Summary

""")
out.append("| id | " + " | ".join(titles) + " |\n")
out.append("|---|" + "---|" * len(titles) + "\n")
for i in ids:
    out.append("| `%s` | " % i + " | ".join(summary[t].get(i, ("", "", "—"))[2] for t in titles) + " |\n")
out.append("\n")
out.append("\n".join(sections))
sys.stdout.write("".join(out))
PY

if [ "$check" = 1 ]; then
  strip() { sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2}/DATE/g' "$1"; }
  if ! diff -u <(strip "$doc") <(strip "$work/compatibility.md"); then
    echo "compat-matrix: $doc is not what the stores answer today; run scripts/compat-matrix.sh" >&2
    exit 1
  fi
  echo "compat-matrix: $doc matches what the stores answer" >&2
else
  cp "$work/compatibility.md" "$doc"
  echo "compat-matrix: wrote $doc" >&2
fi
