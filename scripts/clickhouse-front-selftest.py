#!/usr/bin/env python3
"""Self-test for scripts/clickhouse-http-front.py (test infrastructure).

Starts the front on a free port with a temporary data dir and checks it over real
HTTP, with the wire formats the Rust `clickhouse` crate (0.13/0.14) uses:
  - POST / with SQL in the body (+ database, compress=1, default_format params) for DDL;
  - the crate's insert-metadata query (system.columns) read as RowBinaryWithNamesAndTypes;
  - INSERT ... FORMAT RowBinary (and RowBinaryWithNamesAndTypes) in the `query` param,
    decompress=1, body = LZ4 native compressed blocks, Transfer-Encoding: chunked;
  - fetch as RowBinaryWithNamesAndTypes with compress=1 (LZ4 blocks, checksums checked);
  - error responses (status, X-ClickHouse-Exception-Code, "Code: N. DB::Exception:" body),
    including an INSERT the engine rejects (CHECK constraint, Code 469: no row stored);
  - authentication, and what the engine does and does not do with users/row policies;
  - persistence across a restart on the same data dir.
Exits non-zero on the first failure. Run with .stack/venv/bin/python.
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

HERE = os.path.dirname(os.path.abspath(__file__))
FRONT = os.path.join(HERE, "clickhouse-http-front.py")
UA = "clickhouse-rs/0.14.0 (lv:rust/1.79; os:linux)"
PASSED = []


def check(cond, what, detail=""):
    if not cond:
        sys.stderr.write("FAIL: %s %s\n" % (what, detail))
        sys.exit(1)
    PASSED.append(what)
    print("ok   %s" % what)


# ------------------------------------------------------------ native compressed blocks

def cityhash128_le(data):
    h = CityHash128(data)
    return struct.pack("<QQ", h >> 64, h & ((1 << 64) - 1))


def lz4_blocks(data):
    comp = lz4.block.compress(data, store_size=False)
    header = b"\x82" + struct.pack("<II", 9 + len(comp), len(data))
    return cityhash128_le(header + comp) + header + comp


def unlz4_blocks(buf):
    out, pos = [], 0
    while pos < len(buf):
        method = buf[pos + 16]
        csize, rsize = struct.unpack_from("<II", buf, pos + 17)
        block = buf[pos + 16: pos + 16 + csize]
        assert method == 0x82, "method 0x%02x" % method
        assert cityhash128_le(block) == buf[pos:pos + 16], "checksum mismatch"
        out.append(lz4.block.decompress(block[9:], uncompressed_size=rsize))
        pos += 16 + csize
    return b"".join(out)


# ------------------------------------------------------------ RowBinary

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rb_str(s):
    b = s.encode() if isinstance(s, str) else s
    return varint(len(b)) + b


def split_type_args(s):
    args, depth, cur = [], 0, ""
    for c in s:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        args.append(cur.strip())
    return args


def rb_encode(t, v):
    if t in ("String", "LowCardinality(String)"):
        return rb_str(v)
    if t == "UInt64":
        return struct.pack("<Q", v)
    if t == "UInt32":
        return struct.pack("<I", v)
    if t == "Float64":
        return struct.pack("<d", v)
    if t.startswith("DateTime64("):
        return struct.pack("<q", v)
    if t.startswith("Nullable("):
        return b"\x01" if v is None else b"\x00" + rb_encode(t[9:-1], v)
    if t.startswith("Array("):
        return varint(len(v)) + b"".join(rb_encode(t[6:-1], x) for x in v)
    if t.startswith("Map("):
        kt, vt = split_type_args(t[4:-1])
        return varint(len(v)) + b"".join(rb_encode(kt, k) + rb_encode(vt, x) for k, x in v.items())
    raise ValueError(t)


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        assert self.p + n <= len(self.b), "short read"
        r = self.b[self.p:self.p + n]
        self.p += n
        return r

    def varint(self):
        shift = n = 0
        while True:
            c = self.take(1)[0]
            n |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                return n

    def string(self):
        return self.take(self.varint()).decode()

    def value(self, t):
        if t in ("String", "LowCardinality(String)"):
            return self.string()
        if t == "UInt64":
            return struct.unpack("<Q", self.take(8))[0]
        if t in ("UInt32",):
            return struct.unpack("<I", self.take(4))[0]
        if t == "UInt8":
            return self.take(1)[0]
        if t == "Float64":
            return struct.unpack("<d", self.take(8))[0]
        if t.startswith("DateTime64("):
            return struct.unpack("<q", self.take(8))[0]
        if t.startswith("Nullable("):
            return None if self.take(1)[0] else self.value(t[9:-1])
        if t.startswith("Array("):
            return [self.value(t[6:-1]) for _ in range(self.varint())]
        if t.startswith("Map("):
            kt, vt = split_type_args(t[4:-1])
            return {self.value(kt): self.value(vt) for _ in range(self.varint())}
        raise ValueError(t)

    def done(self):
        return self.p == len(self.b)


def rbwnat_decode(b):
    r = Reader(b)
    n = r.varint()
    names = [r.string() for _ in range(n)]
    types = [r.string() for _ in range(n)]
    rows = []
    while not r.done():
        rows.append(tuple(r.value(t) for t in types))
    return names, types, rows


def rbwnat_header(names, types):
    return varint(len(names)) + b"".join(rb_str(n) for n in names) + b"".join(rb_str(t) for t in types)


# ------------------------------------------------------------ HTTP helpers

class Front:
    def __init__(self, data_dir, users_file):
        self.proc = subprocess.Popen(
            [sys.executable, FRONT, "--data", data_dir, "--port", "0", "--users", users_file, "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("READY port="):
            self.proc.kill()
            sys.stderr.write(line + self.proc.stderr.read())
            check(False, "front starts and prints READY")
        self.banner = line.strip()
        self.port = int(line.split()[1].split("=")[1])
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def request(self, method, params=None, body=None, headers=None, path="/", chunked_parts=None):
        url = path + ("?" + urlencode(params) if params else "")
        hdrs = {"User-Agent": UA}
        hdrs.update(headers or {})
        if chunked_parts is not None:
            hdrs["Transfer-Encoding"] = "chunked"
            self.conn.putrequest(method, url, skip_accept_encoding=True)
            for k, v in hdrs.items():
                self.conn.putheader(k, v)
            self.conn.endheaders()
            for part in chunked_parts:
                self.conn.send(b"%x\r\n%s\r\n" % (len(part), part))
            self.conn.send(b"0\r\n\r\n")
        else:
            self.conn.request(method, url, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data

    def query(self, sql, params=None, headers=None):
        """What `client.query(sql).execute()/fetch()` sends: POST, SQL in the body."""
        return self.request("POST", params, sql.encode(), headers)

    def stop(self):
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


USERS_XML = """<clickhouse>
  <users>
    <tenant_a>
      <password_sha256_hex>%s</password_sha256_hex>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile><quota>default</quota>
      <databases><app><events><filter>tenant_id = 'a'</filter></events></app></databases>
      <grants><query>GRANT SELECT ON app.*</query></grants>
    </tenant_a>
    <tenant_b>
      <password>pw-b</password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile><quota>default</quota>
      <databases><app><events><filter>tenant_id = 'b'</filter></events></app></databases>
      <grants><query>GRANT SELECT ON app.*</query></grants>
    </tenant_b>
  </users>
</clickhouse>
""" % sha256_hex("pw-a")

COLUMNS = [
    ("id", "UInt64"),
    ("tenant_id", "LowCardinality(String)"),
    ("name", "String"),
    ("score", "Float64"),
    ("ts", "DateTime64(3)"),
    ("tags", "Array(String)"),
    ("metrics", "Map(String, Float64)"),
    ("note", "Nullable(String)"),
    ("version", "UInt64"),
]

DDL = [
    "CREATE DATABASE IF NOT EXISTS app",
    """CREATE TABLE IF NOT EXISTS app.events
       (id UInt64, tenant_id LowCardinality(String), name String, score Float64,
        ts DateTime64(3), tags Array(String), metrics Map(String, Float64),
        version UInt64)
       ENGINE = ReplacingMergeTree(version)
       ORDER BY (tenant_id, id)
       TTL toDateTime(ts) + INTERVAL 3650 DAY""",
    """CREATE TABLE IF NOT EXISTS app.tenant_counts (tenant_id String, n UInt64)
       ENGINE = SummingMergeTree ORDER BY tenant_id""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS app.tenant_counts_mv TO app.tenant_counts AS
       SELECT tenant_id, count() AS n FROM app.events GROUP BY tenant_id""",
    "ALTER TABLE app.events ADD COLUMN IF NOT EXISTS note Nullable(String) AFTER metrics",
]

GUARDED_DDL = [
    """CREATE TABLE IF NOT EXISTS app.guarded (id UInt64, ts DateTime64(3, 'UTC'),
       CONSTRAINT ts_sane CHECK ts >= toDateTime64('2000-01-01 00:00:00', 3, 'UTC'))
       ENGINE = MergeTree ORDER BY id""",
    "CREATE TABLE IF NOT EXISTS app.guarded_ids (id UInt64) ENGINE = MergeTree ORDER BY id",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS app.guarded_mv TO app.guarded_ids AS
       SELECT id FROM app.guarded""",
]


def rows_for(ids, tenant):
    out = []
    for i in ids:
        out.append((
            i, tenant, "n%d-é" % i, i * 1.5, 1700000000123 + i,
            ["x", "y%d" % i][: i % 3], {"p50": i / 2.0, "p99": float(i)}, None if i % 2 else "note%d" % i,
            1,
        ))
    return out


def main():
    t0 = time.monotonic()
    # 0. The codec against the crate's own test vector (src/compression/lz4.rs it_compresses).
    src = bytes([1, 0, 2, 255, 255, 255, 255, 0, 1, 1, 1, 115, 6, 83, 116, 114, 105, 110, 103, 3, 97, 98, 99])
    expected = bytes([245, 5, 222, 235, 225, 158, 59, 108, 225, 31, 65, 215, 66, 66, 36, 92, 130, 34, 0, 0, 0,
                      23, 0, 0, 0, 240, 8, 1, 0, 2, 255, 255, 255, 255, 0, 1, 1, 1, 115, 6, 83, 116, 114, 105,
                      110, 103, 3, 97, 98, 99])
    check(lz4_blocks(src) == expected, "LZ4 native block + CityHash128 == clickhouse-rs test vector")

    tmp = tempfile.mkdtemp(prefix="chfront-")
    data_dir = os.path.join(tmp, "data")
    users_file = os.path.join(tmp, "users.xml")
    with open(users_file, "w") as f:
        f.write(USERS_XML)
    front = Front(data_dir, users_file)
    try:
        print("     " + front.banner)
        st, _, body = front.request("GET", path="/ping")
        check(st == 200 and body == b"Ok.\n", "GET /ping -> Ok.")

        base = {"database": "default", "compress": "1"}
        auth = {"X-ClickHouse-User": "default"}
        for stmt in DDL:
            st, hd, body = front.query(stmt, base, auth)
            check(st == 200 and body == b"", "DDL: " + " ".join(stmt.split())[:60], body[:300])

        st, hd, body = front.query("CREATE TABLE app.x (a UInt8) ENGINE = Memory; DROP TABLE app.x", base, auth)
        check(st == 400 and hd.get("x-clickhouse-exception-code") == "62"
              and b"Multi-statements are not allowed" in body,
              "multi-statement request rejected like the real HTTP interface", body[:200])

        # 0.14 insert validation: SELECT name, type, default_kind FROM system.columns (RBWNAT, LZ4).
        meta_sql = ("SELECT name, type, default_kind FROM system.columns "
                    "WHERE database = 'app' AND table = 'events'")
        st, hd, body = front.query(meta_sql, dict(base, default_format="RowBinaryWithNamesAndTypes"), auth)
        check(st == 200, "insert-metadata query", body[:300])
        names, types, meta = rbwnat_decode(unlz4_blocks(body))
        check(names == ["name", "type", "default_kind"] and types == ["String"] * 3,
              "metadata RBWNAT header", repr((names, types)))
        check([(m[0], m[1]) for m in meta] == COLUMNS, "schema (incl. ALTER ADD COLUMN) as created", repr(meta))

        col_names = [c for c, _ in COLUMNS]
        col_types = [t for _, t in COLUMNS]
        fields = ",".join("`%s`" % c for c in col_names)

        def insert(rows, fmt="RowBinary", split=True):
            payload = b"".join(b"".join(rb_encode(t, v) for t, v in zip(col_types, r)) for r in rows)
            if fmt == "RowBinaryWithNamesAndTypes":
                payload = rbwnat_header(col_names, col_types) + payload
            half = len(payload) // 2 if split else len(payload)
            blocks = lz4_blocks(payload[:half]) + (lz4_blocks(payload[half:]) if split else b"")
            parts = [blocks[:7], blocks[7:40], blocks[40:]]  # chunk boundaries inside headers
            params = {"database": "app", "query": "INSERT INTO events(%s) FORMAT %s" % (fields, fmt),
                      "decompress": "1"}
            return front.request("POST", params, headers={"X-ClickHouse-User": "default",
                                                          "X-ClickHouse-Key": ""}, chunked_parts=parts)

        rows_a = rows_for(range(1, 6), "a")
        rows_b = rows_for(range(6, 9), "b")
        st, hd, body = insert(rows_a)
        check(st == 200 and body == b"", "INSERT FORMAT RowBinary, LZ4 blocks, chunked body", body[:300])
        summary = json.loads(hd.get("x-clickhouse-summary", "{}"))
        check(int(summary.get("written_rows", 0)) >= 5, "X-ClickHouse-Summary (written_rows counts the MV too)",
              repr(summary))
        st, hd, body = insert(rows_b, "RowBinaryWithNamesAndTypes", split=False)
        check(st == 200 and body == b"", "INSERT FORMAT RowBinaryWithNamesAndTypes (0.14 validated insert)",
              body[:300])

        sel = "SELECT %s FROM app.events FINAL ORDER BY id" % ", ".join("`%s`" % c for c in col_names)
        st, hd, body = front.query(sel, dict(base, default_format="RowBinaryWithNamesAndTypes"), auth)
        check(st == 200, "fetch RowBinaryWithNamesAndTypes with compress=1", body[:300])
        names, types, got = rbwnat_decode(unlz4_blocks(body))
        check(names == col_names and types == col_types, "fetched RBWNAT header", repr((names, types)))
        check(got == rows_a + rows_b, "round trip of String, UInt64, Float64, DateTime64(3), Array(String), "
              "Map(String, Float64), LowCardinality(String), Nullable(String)", repr(got[:2]))

        st, hd, body = front.query("SELECT id FROM app.events WHERE id < 3 ORDER BY id",
                                   {"database": "app", "default_format": "RowBinary"}, auth)
        check(st == 200 and body == struct.pack("<QQ", 1, 2), "fetch RowBinary without compression", body)

        st, hd, body = front.query("SELECT tenant_id, sum(n) FROM app.tenant_counts GROUP BY tenant_id "
                                   "ORDER BY tenant_id", {"database": "app"}, auth)
        check(st == 200 and body == b"a\t5\nb\t3\n", "materialized view fed by the inserts", body)

        st, hd, body = front.query("SELECT {n:UInt32} + 1, getSetting('max_threads'), currentDatabase()",
                                   {"database": "app", "param_n": "41", "max_threads": "1",
                                    "no_such_setting_xyz": "1"}, auth)
        check(st == 200 and body == b"42\t1\tapp\n", "param_*, settings applied, unknown setting ignored", body)
        st, hd, body = front.query("SELECT getSetting('max_threads') != 1, currentDatabase()", None, auth)
        check(st == 200 and body == b"1\tdefault\n", "settings and database reset after the request", body)

        # Errors, as the crate reads them.
        st, hd, body = front.query("SELECT * FROM app.nosuch", dict(base, default_format="RowBinaryWithNamesAndTypes"),
                                   auth)
        check(st == 404 and hd.get("x-clickhouse-exception-code") == "60"
              and body.startswith(b"Code: 60. DB::Exception:") and b"UNKNOWN_TABLE" in body,
              "unknown table -> 404, X-ClickHouse-Exception-Code: 60, Code: 60. DB::Exception", body[:200])
        st, hd, body = front.query("SELEC 1", base, auth)
        check(st == 400 and hd.get("x-clickhouse-exception-code") == "62", "syntax error -> 400, code 62")
        st, hd, body = front.request("POST", {"database": "app", "query": "INSERT INTO events(`id`) FORMAT RowBinary",
                                              "decompress": "1"}, body=lz4_blocks(b"\x01\x02"), headers=auth)
        check(st != 200 and hd.get("x-clickhouse-exception-code") == "33", "truncated RowBinary insert -> code 33",
              body[:200])
        check(body.startswith(b"Code: 33. DB::Exception: Cannot read all data") and b"in file/uri" not in body
              and b"parsed from file" not in body, "insert format error reads like the server's", body[:300])

        # Engine-rejected rows: chdb's streaming inserter reported success and stored nothing;
        # the front must answer like the server (500, Code 469) and store none of the request.
        for stmt in GUARDED_DDL:
            st, hd, body = front.query(stmt, base, auth)
            check(st == 200, "DDL: " + " ".join(stmt.split())[:60], body[:300])

        def insert_guarded(rows, settings=""):
            payload = b"".join(struct.pack("<Qq", i, ts) for i, ts in rows)
            params = {"database": "app", "decompress": "1",
                      "query": "INSERT INTO guarded(`id`,`ts`)%s FORMAT RowBinary" % settings}
            blocks = lz4_blocks(payload)
            return front.request("POST", params, headers=auth, chunked_parts=[blocks[:20], blocks[20:]])

        def guarded_counts():
            st, hd, body = front.query("SELECT (SELECT count() FROM app.guarded), "
                                       "(SELECT groupArray(id) FROM (SELECT id FROM app.guarded_ids ORDER BY id))",
                                       None, auth)
            return body

        now_ms = int(time.time() * 1000)
        st, hd, body = insert_guarded([(1, now_ms), (2, 915148800000), (3, now_ms)])
        check(st == 500 and hd.get("x-clickhouse-exception-code") == "469"
              and body.startswith(b"Code: 469. DB::Exception: Constraint `ts_sane`")
              and b"VIOLATED_CONSTRAINT" in body,
              "INSERT RowBinary with a constraint-violating row -> 500, Code: 469", body[:300])
        counts = guarded_counts()
        check(counts == b"0\t[]\n", "rejected insert stored no row (table and MV target empty)", counts)
        st, hd, body = insert_guarded([(1, now_ms), (2, now_ms + 1)])
        check(st == 200 and body == b"", "valid INSERT RowBinary into a table with a CHECK constraint", body[:300])
        st, hd, body = insert_guarded([(3, now_ms + 2)], " SETTINGS max_threads = 1")
        check(st == 200 and body == b"", "INSERT ... SETTINGS k = v FORMAT RowBinary", body[:300])
        counts = guarded_counts()
        check(counts == b"3\t[1,2,3]\n", "valid inserts stored, materialized view TO table got the rows", counts)

        bad = bytearray(lz4_blocks(b"\x01" * 8))
        bad[0] ^= 1
        st, hd, body = front.request("POST", {"database": "app", "query": "INSERT INTO events(`id`) FORMAT RowBinary",
                                              "decompress": "1"}, body=bytes(bad), headers=auth)
        check(st == 500 and hd.get("x-clickhouse-exception-code") == "40", "bad block checksum -> code 40")

        # Users and row policies.
        st, hd, body = front.query("SELECT 1", None, {"X-ClickHouse-User": "tenant_a", "X-ClickHouse-Key": "nope"})
        check(st == 403 and hd.get("x-clickhouse-exception-code") == "516", "wrong password -> 403, code 516")
        basic = "Basic " + base64.b64encode(b"nobody:x").decode()
        st, hd, body = front.query("SELECT 1", None, {"Authorization": basic})
        check(st == 403 and hd.get("x-clickhouse-exception-code") == "516", "unknown user (basic auth) -> 403")
        st, hd, body = front.query("SELECT count() FROM app.events", None,
                                   {"X-ClickHouse-User": "tenant_a", "X-ClickHouse-Key": "pw-a"})
        check(st == 500 and hd.get("x-clickhouse-exception-code") == "344",
              "authenticated non-default user refused (chdb cannot run as another user)", body[:200])
        st, hd, body = front.request("POST", {"user": "tenant_b", "password": "pw-b"}, b"SELECT 1")
        check(hd.get("x-clickhouse-exception-code") == "344", "user/password URL params authenticate too")

        st, hd, body = front.query("CREATE USER IF NOT EXISTS t_c IDENTIFIED BY 'x'", None, auth)
        check(st != 200 and hd.get("x-clickhouse-exception-code") == "514",
              "CREATE USER fails in chdb (no writable access storage) -> code 514", body[:200])
        st, hd, body = front.query("SELECT short_name, select_filter FROM system.row_policies "
                                   "WHERE database = 'app' ORDER BY short_name", None, auth)
        check(st == 200 and b"tenant_a\ttenant_id = \\'a\\'" in body and b"tenant_b\ttenant_id = \\'b\\'" in body,
              "row policies from --users are real engine entities (system.row_policies)", body)
        for t in ("a", "b"):
            st, hd, body = front.query(
                "CREATE VIEW IF NOT EXISTS app.events_%s DEFINER = tenant_%s SQL SECURITY DEFINER AS "
                "SELECT id, tenant_id FROM app.events" % (t, t), None, auth)
            check(st == 200, "SQL SECURITY DEFINER view for tenant_%s" % t, body[:200])
        st, hd, body = front.query("SELECT groupArray(id), groupUniqArray(tenant_id) FROM app.events_a", None, auth)
        check(body == b"[1,2,3,4,5]\t['a']\n", "engine applies tenant_a's row policy through its definer view", body)
        st, hd, body = front.query("SELECT groupArray(id), groupUniqArray(tenant_id) FROM app.events_b", None, auth)
        check(body == b"[6,7,8]\t['b']\n", "engine applies tenant_b's row policy through its definer view", body)
    finally:
        front.stop()

    # Persistence: same data dir, new process.
    front = Front(data_dir, users_file)
    try:
        st, hd, body = front.query("SELECT count() FROM app.events FINAL", None, {})
        check(st == 200 and body == b"8\n", "data survives a restart on the same --data dir", body)
    finally:
        front.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, 0 failed" % len(PASSED))
    print("selftest time: %.1f s" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
