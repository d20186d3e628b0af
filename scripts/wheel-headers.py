#!/usr/bin/env python3
"""Unpacks the C headers (nvidia/*/include/*) of pinned PyPI wheels without
downloading the wheels.

The CUDA wheels are hundreds of MB of libraries around a few hundred KB of
headers. A wheel is a zip, so this reads only its end (the central directory)
and the bytes of the header members, with HTTP Range requests, and lets
zipfile check each member's CRC-32; each header's sha256 is then checked
against the wheel's RECORD, and the wheel's size against PyPI's. The whole
wheel's sha256, which PyPI publishes, cannot be checked without the whole
file: it is written to the marker, to say which file the headers came from.

The wheel is the py3-none manylinux x86_64 one for glibc 2.17 or older, the one
`pip download --platform manylinux2014_x86_64` picks. DEST/nvidia is replaced
by the new headers, and DEST/.done records the pins; a later run with the same
pins does nothing and needs no network.

Usage: scripts/wheel-headers.py DEST NAME==VERSION...   (standard library only)
"""

import base64
import csv
import fnmatch
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib

PYPI = "https://pypi.org/pypi"
MEMBERS = "nvidia/*/include/*"  # as unzip matches it: * also matches "/"
USAGE = "usage: scripts/wheel-headers.py DEST NAME==VERSION..."
MARKER = ".done"
TIMEOUT = 60  # seconds per HTTP request
ATTEMPTS = 5  # per HTTP request; waits 1, 2, 4, 8 s between them
TAIL = 64 * 1024 + 22  # the end-of-central-directory record and the longest zip comment
BLOCK = 64 * 1024  # least bytes fetched on a read outside what is already fetched
GAP = 256 * 1024  # wanted members closer than this are fetched in one request


class Error(Exception):
    """A failure to report in one sentence, without a traceback; code is the
    HTTP status where the server refused the request."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def fetch(url, headers=None):
    """Returns (response headers, body) of a GET, retrying on
    transient errors (no connection, timeouts, short bodies, HTTP 429 and 5xx)."""
    for attempt in range(ATTEMPTS):
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                if resp.status == 200 and headers and "Range" in headers:
                    raise Error("the server ignored the Range request")
                return resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            if e.code != 429 and e.code < 500:
                raise Error(f"HTTP {e.code}", e.code) from e
            last = f"HTTP {e.code}"
        except (OSError, http.client.HTTPException) as e:
            last = str(e) or type(e).__name__
        if attempt + 1 < ATTEMPTS:
            time.sleep(2**attempt)
    raise Error(f"{last} after {ATTEMPTS} attempts")


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches only the byte
    ranges it is asked for, for zipfile.ZipFile."""

    def __init__(self, url, size):
        self.url, self.size, self.pos = url, size, 0
        self.segments = []  # (start, bytes) already fetched
        self.fetched = 0  # bytes downloaded
        self.load(max(0, size - TAIL), size)

    def load(self, start, end):
        """Fetches bytes [start, end) and keeps them."""
        headers, body = fetch(self.url, {"Range": f"bytes={start}-{end - 1}"})
        total = re.fullmatch(r"bytes \d+-\d+/(\d+)", headers.get("Content-Range", ""))
        if not total or int(total.group(1)) != self.size:
            raise Error(f"the server says the wheel is {headers.get('Content-Range')!r}, PyPI says {self.size} bytes")
        if len(body) != end - start:
            raise Error(f"asked for {end - start} bytes at {start}, got {len(body)}")
        self.fetched += len(body)
        self.segments.append((start, body))

    def prefetch(self, spans):
        """Fetches the given [start, end) spans, those closer than GAP together."""
        merged = []
        for start, end in sorted(spans):
            if merged and start - merged[-1][1] < GAP:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        for start, end in merged:
            if not self.cached(start, end):
                self.load(start, end)

    def cached(self, start, end):
        """Returns the bytes [start, end) if one fetched segment holds them."""
        for s, body in self.segments:
            if s <= start and end <= s + len(body):
                return body[start - s : end - s]
        return None

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buf):
        end = min(self.pos + len(buf), self.size)
        if end <= self.pos:
            return 0
        data = self.cached(self.pos, end)
        if data is None:
            self.load(self.pos, min(max(end, self.pos + BLOCK), self.size))
            data = self.cached(self.pos, end)
        buf[: len(data)] = data
        self.pos = end
        return len(data)


def glibc(platform):
    """Returns the glibc version a manylinux x86_64 platform tag needs, or None."""
    legacy = {"manylinux1_x86_64": (2, 5), "manylinux2010_x86_64": (2, 12), "manylinux2014_x86_64": (2, 17)}
    if platform in legacy:
        return legacy[platform]
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    return (int(m.group(1)), int(m.group(2))) if m else None


def choose(files):
    """Returns the py3-none manylinux x86_64 wheel for glibc <= 2.17 with the
    newest glibc among PyPI's file entries, or None."""
    best, best_glibc = None, None
    for f in files:
        parts = f["filename"][: -len(".whl")].split("-") if f["filename"].endswith(".whl") else []
        if len(parts) < 5 or parts[-3] != "py3" or parts[-2] != "none":
            continue
        versions = [v for v in map(glibc, parts[-1].split(".")) if v and v <= (2, 17)]
        if versions and (best is None or max(versions) > best_glibc):
            best, best_glibc = f, max(versions)
    return best


def wheel_file(pin):
    """Returns PyPI's entry (filename, url, size, digests) for the wheel of
    pin. Falls back to the project document where a mirror does not serve the
    per-version one."""
    name, version = pin.split("==")
    url = f"{PYPI}/{name}/{version}/json"
    try:
        try:
            files = json.loads(fetch(url)[1])["urls"]
        except Error as e:
            if e.code != 404:
                raise
            url = f"{PYPI}/{name}/json"
            try:
                files = json.loads(fetch(url)[1])["releases"].get(version)
            except Error as e2:
                raise Error("PyPI has no such project" if e2.code == 404 else str(e2)) from e2
            if files is None:
                raise Error(f"PyPI has no version {version}")
    except (Error, ValueError, KeyError, AttributeError) as e:
        what = str(e) if isinstance(e, Error) else "PyPI's answer is not the JSON expected"
        raise Error(f"{what} ({url})") from e
    f = choose(files)
    if f is None:
        raise Error(f"PyPI lists no py3-none manylinux x86_64 wheel for glibc 2.17 or older ({url})")
    return dict(f, url=urllib.parse.urljoin(url, f["url"]))


def record(zf):
    """Returns the wheel's RECORD as {path: sha256 digest}."""
    names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
    if len(names) != 1:
        raise Error(f"the wheel has {len(names)} RECORD files, not 1")
    digests = {}
    for row in csv.reader(io.StringIO(zf.read(names[0]).decode())):
        if len(row) >= 2 and row[1].startswith("sha256="):
            b64 = row[1][len("sha256=") :]
            digests[row[0]] = b64 + "=" * (-len(b64) % 4)
    return digests


def extract(pin, dest):
    """Writes the header members of pin's wheel under dest and returns
    (marker line, headers written, bytes downloaded, wheel size)."""
    f = wheel_file(pin)
    try:
        rf = RangeFile(f["url"], f["size"])
        zf = zipfile.ZipFile(rf)
        infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
        ends = [i.header_offset for i in infos[1:]] + [zf.start_dir]
        wanted = [(i, end) for i, end in zip(infos, ends) if fnmatch.fnmatchcase(i.filename, MEMBERS) and not i.is_dir()]
        if not wanted:
            raise Error(f"the wheel has no {MEMBERS} members")
        digests = record(zf)
        rf.prefetch((i.header_offset, end) for i, end in wanted)
        for i, _ in wanted:
            parts = i.filename.split("/")
            if ".." in parts or i.filename.startswith("/"):
                raise Error(f"member {i.filename} points outside the destination")
            data = zf.read(i)  # raises BadZipFile on a CRC-32 mismatch
            if i.filename not in digests:
                raise Error(f"member {i.filename} is not in the wheel's RECORD")
            if hashlib.sha256(data).digest() != base64.urlsafe_b64decode(digests[i.filename]):
                raise Error(f"member {i.filename} does not match the sha256 in the wheel's RECORD")
            path = os.path.join(dest, *parts)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(data)
    except (Error, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise Error(f"{e} ({f['url']})") from e
    return f"{pin} {f['filename']} sha256={f['digests']['sha256']}", len(wanted), rf.fetched, f["size"]


def main(argv):
    if len(argv) < 2 or not all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9._+!-]+", p) for p in argv[1:]):
        print(USAGE, file=sys.stderr)
        return 2
    dest, pins = argv[0], sorted(argv[1:])
    marker = os.path.join(dest, MARKER)
    try:
        with open(marker) as m:
            if [line.split(" ")[0] for line in m.read().splitlines()] == pins:
                return 0
    except FileNotFoundError:
        pass
    os.makedirs(dest, exist_ok=True)
    if os.path.exists(marker):
        os.remove(marker)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=dest)
    try:
        lines, fetched, t0 = [], 0, time.monotonic()
        for pin in pins:
            try:
                line, n, got, size = extract(pin, tmp)
            except Error as e:
                print(f"wheel-headers: {pin}: {e}", file=sys.stderr)
                return 1
            print(f"wheel-headers: {pin}: {n} headers, {got / 1e6:.2f} MB read of {size / 1e6:.1f} MB")
            lines.append(line)
            fetched += got
        for top in os.listdir(tmp):
            shutil.rmtree(os.path.join(dest, top), ignore_errors=True)
            os.rename(os.path.join(tmp, top), os.path.join(dest, top))
        with open(marker, "w") as m:
            m.write("\n".join(lines) + "\n")
        print(f"wheel-headers: {fetched / 1e6:.2f} MB downloaded in {time.monotonic() - t0:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
