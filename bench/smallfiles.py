#!/usr/bin/env python3
"""Small-file helpers for bench/run.sh (python3 standard library only).

  smallfiles.py gen DIR COUNT SIZE_BYTES
      Writes COUNT files of SIZE_BYTES random bytes as DIR/fNNNNN.bin.

  smallfiles.py upload BASE_URL NS NAME VERSION DIR [TIMEOUT_S]
      Reads every file of DIR and its sha256 into memory first (not timed), then PUTs
      them one after another over ONE keep-alive HTTP/1.1 connection, each with
      X-Artifact-Digest. Prints "files=N seconds=S" on success; exits non-zero on the
      first non-2xx answer.

  smallfiles.py fsync-peer SRC_DIR DEST_DIR
      A durable per-file copy (write temp, fsync, rename, fsync dir), i.e. roughly
      what the server's blob store does per file, without HTTP or the index.
      Prints "files=N seconds=S".
"""

import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.parse


def gen(directory, count, size):
    os.makedirs(directory, exist_ok=True)
    for i in range(count):
        with open(os.path.join(directory, f"f{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(size))


def load(directory):
    files = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        files.append((name, data, "sha256:" + hashlib.sha256(data).hexdigest()))
    return files


def upload(base_url, ns, name, version, directory, timeout):
    url = urllib.parse.urlsplit(base_url)
    if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing non-loopback URL {base_url}")
    files = load(directory)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    prefix = "/v1/artifacts/" + "/".join(urllib.parse.quote(s, safe="") for s in (ns, name, version))
    headers = {"Content-Type": "application/octet-stream"}
    start = time.perf_counter()
    for fname, data, digest in files:
        headers["X-Artifact-Digest"] = digest
        # A bytes body goes out in the same send() as the headers (no Nagle stall).
        conn.request("PUT", f"{prefix}/{urllib.parse.quote(fname)}", body=data, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status not in (200, 201):
            sys.exit(f"PUT {fname}: HTTP {resp.status}: {body[:300]!r}")
        if resp.will_close:
            sys.exit(f"PUT {fname}: server closed the keep-alive connection")
    elapsed = time.perf_counter() - start
    conn.close()
    print(f"files={len(files)} seconds={elapsed:.6f}")


def fsync_peer(src, dest):
    os.makedirs(dest, exist_ok=True)
    names = sorted(n for n in os.listdir(src) if os.path.isfile(os.path.join(src, n)))
    dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    start = time.perf_counter()
    try:
        for n in names:
            with open(os.path.join(src, n), "rb") as f:
                data = f.read()
            tmp = os.path.join(dest, f".{n}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(dest, n))
            os.fsync(dfd)
    finally:
        os.close(dfd)
    elapsed = time.perf_counter() - start
    print(f"files={len(names)} seconds={elapsed:.6f}")


def main(argv):
    if len(argv) >= 2 and argv[1] == "gen" and len(argv) == 5:
        gen(argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) >= 2 and argv[1] == "upload" and len(argv) in (7, 8):
        upload(argv[2], argv[3], argv[4], argv[5], argv[6], float(argv[7]) if len(argv) == 8 else 60.0)
    elif len(argv) >= 2 and argv[1] == "fsync-peer" and len(argv) == 4:
        fsync_peer(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
