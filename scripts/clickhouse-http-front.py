#!/usr/bin/env python3
"""Test infrastructure: a minimal HTTP front for chdb (ClickHouse 26.9 in-process).

No ClickHouse server binary can be installed here, but the ClickHouse engine ships
on PyPI as an in-process library (chdb-core==26.9.0). This script puts the subset of
ClickHouse's HTTP interface that the Rust `clickhouse` crate (0.13/0.14) uses in
front of one chdb session, so the crate talks to the real engine over HTTP:

  * POST / with the SQL in the body (the crate's query/execute/fetch), or in the
    `query` URL parameter with the rows in the body (the crate's INSERT ... FORMAT
    RowBinary / RowBinaryWithNamesAndTypes); GET /?query=...; GET /ping -> "Ok.\\n".
  * `database`, `default_format`, `param_<name>` (server-side parameters), `role`,
    any other parameter as a ClickHouse setting (SET for this request, reset after;
    settings unknown to the engine are ignored, as are HTTP-only parameters).
  * `decompress=1`: request body in ClickHouse's native compressed-block format
    (16-byte CityHash128 v1.0.2 checksum, method byte 0x82 LZ4 / 0x02 none,
    u32 compressed size incl. the 9-byte header, u32 decompressed size, payload).
    `compress=1`: the response is encoded the same way (LZ4, 1 MiB blocks).
    Content-Encoding gzip/deflate/lz4 on requests and, with
    enable_http_compression=1, Accept-Encoding gzip/deflate on responses.
  * Transfer-Encoding: chunked request bodies (the crate streams INSERTs), HTTP/1.1
    keep-alive, Expect: 100-continue.
  * INSERT ... FORMAT F: the decoded body is written to a temporary file and run as
    `INSERT ... FROM INFILE '<tmp>' COMPRESSION 'none' FORMAT F` through session.query.
    Not chdb's streaming inserter (send_insert/append/finish): in chdb 26.9 it reports
    success (rows_written) for blocks the engine rejects, e.g. a violated CHECK
    constraint, and stores nothing. FROM INFILE raises the engine's error (returned like
    the server's, e.g. 500 "Code: 469 ... (VIOLATED_CONSTRAINT)"), stores all rows of
    the request or none, and fires materialized views like any INSERT.
  * Errors: the status ClickHouse maps the exception code to (404 unknown table,
    400 syntax, 403 auth, else 500), body "Code: N. DB::Exception: ...", header
    X-ClickHouse-Exception-Code.
  * Multi-statement queries are rejected like the real HTTP interface does
    (Code 62, "Multi-statements are not allowed") unless --allow-multi-statements.
  * Users: X-ClickHouse-User/X-ClickHouse-Key headers, HTTP basic auth, or
    `user`/`password` parameters; the password is checked against --users FILE
    (ClickHouse users.xml format; <password>, <password_sha256_hex>,
    <password_double_sha1_hex>, <no_password/>). Those users, and their
    <databases><db><table><filter> row policies, are loaded into the engine too.
    chdb 26.9 runs every query as 'default' (its LocalConnection authenticates
    'default'; EXECUTE AS needs access_control_improvements.allow_impersonate_user,
    which chdb never reads; there is no writable access storage, so CREATE USER /
    CREATE ROW POLICY fail with Code 514/511). A query authenticated as any other
    user is therefore REFUSED (Code 344), never run unfiltered as 'default'.
    Row policies still apply in the engine through SQL SECURITY DEFINER views whose
    DEFINER is the policy's user.

Usage: clickhouse-http-front.py --data DIR [--port 8123] [--users users.xml]
       [--allow-multi-statements] [--quiet]
Binds 127.0.0.1 only. --port 0 picks a free port. Prints "READY port=N" on stdout
once it accepts connections.
"""

import argparse
import base64
import gzip
import hashlib
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

try:
    import chdb
    from chdb import session as chdb_session
    import lz4.block
    import lz4.frame
    from clickhouse_cityhash.cityhash import CityHash128
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        "clickhouse-http-front: missing dependency (%s); run scripts/install-stack.sh and use "
        ".stack/venv/bin/python\n" % exc
    )
    sys.exit(2)

try:  # only needed for ZSTD native blocks (method 0x90), which the released crate never sends
    import zstandard  # type: ignore
except ImportError:  # pragma: no cover
    zstandard = None

M64 = (1 << 64) - 1
BLOCK_SIZE = 1 << 20  # ClickHouse's default max uncompressed block size on the HTTP path

# ClickHouse error codes used by the front itself.
CHECKSUM_DOESNT_MATCH = 40
UNKNOWN_COMPRESSION_METHOD = 89
SYNTAX_ERROR = 62
CANNOT_DECOMPRESS = 271
SUPPORT_IS_DISABLED = 344
AUTHENTICATION_FAILED = 516
UNKNOWN_SETTING = 115
UNKNOWN_EXCEPTION = 1002

# HTTP status for an exception code, as ClickHouse's HTTPHandler maps them.
_BAD_REQUEST = {6, 25, 26, 27, 38, 41, 72, 62, 117, 53, 167, 168, 36, 69}
_NOT_FOUND = {60, 46, 47, 50, 56, 81, 115, 63, 73, 336}
_FORBIDDEN = {192, 193, 516}


def http_status_for(code):
    if code == 194:
        return 401
    if code in _FORBIDDEN:
        return 403
    if code in _BAD_REQUEST:
        return 400
    if code in _NOT_FOUND:
        return 404
    if code == 48:
        return 501
    if code == 209:
        return 503
    return 500


# Parameters that are part of the HTTP protocol, not engine settings.
HTTP_ONLY_PARAMS = {
    "query", "database", "default_format", "compress", "decompress", "user", "password",
    "query_id", "session_id", "session_timeout", "session_check", "quota_key",
    "enable_http_compression", "http_zlib_compression_level", "wait_end_of_query",
    "buffer_size", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "http_response_buffer_size", "add_http_cors_header", "stacktrace", "role",
    "http_wait_end_of_query", "http_native_compression_disable_checksumming_on_decompress",
    # The crate (<=0.13) sends readonly=1 with fetches; a session-wide SET readonly=1 would
    # lock the shared chdb session, so it is accepted and not enforced.
    "readonly",
}

SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
INSERT_FORMAT_RE = re.compile(
    rb"^(\s*INSERT\s+INTO\s+.*?)\s+FORMAT\s+([A-Za-z][A-Za-z0-9_]*)", re.IGNORECASE | re.DOTALL
)


class ClickHouseError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = int(code)
        self.message = message

    def body(self):
        text = self.message.strip()
        if not text.startswith("Code: "):
            text = "Code: %d. DB::Exception: %s" % (self.code, text)
        return (text + "\n").encode("utf-8", "replace")


def engine_error(exc):
    """Turn a chdb exception into a ClickHouseError with the engine's own text."""
    text = str(exc)
    idx = text.find("Code: ")
    if idx >= 0:
        text = text[idx:]
        m = re.match(r"Code: (\d+)", text)
        return ClickHouseError(int(m.group(1)), text)
    return ClickHouseError(UNKNOWN_EXCEPTION, text)


# ---------------------------------------------------------------- native compressed blocks

def checksum(data):
    """CityHash128 (v1.0.2, as ClickHouse uses it) in the byte order ClickHouse writes."""
    h = CityHash128(data)
    return struct.pack("<QQ", h >> 64, h & M64)


def decode_native_blocks(buf):
    out = []
    pos = 0
    n = len(buf)
    while pos < n:
        if n - pos < 25:
            raise ClickHouseError(CANNOT_DECOMPRESS, "Cannot decompress: truncated compressed block header")
        method = buf[pos + 16]
        comp_size, raw_size = struct.unpack_from("<II", buf, pos + 17)
        end = pos + 16 + comp_size
        if comp_size < 9 or end > n:
            raise ClickHouseError(CANNOT_DECOMPRESS, "Cannot decompress: truncated compressed block")
        block = bytes(buf[pos + 16:end])
        if checksum(block) != bytes(buf[pos:pos + 16]):
            raise ClickHouseError(
                CHECKSUM_DOESNT_MATCH,
                "Checksum doesn't match: corrupted data. Reference: %s. Actual: %s. Size of compressed block: %d"
                % (bytes(buf[pos:pos + 16]).hex(), checksum(block).hex(), comp_size),
            )
        payload = block[9:]
        if method == 0x82:
            try:
                out.append(lz4.block.decompress(payload, uncompressed_size=raw_size))
            except Exception as exc:  # noqa: BLE001
                raise ClickHouseError(CANNOT_DECOMPRESS, "Cannot decompress LZ4-encoded data: %s" % exc)
        elif method == 0x02:
            out.append(payload)
        elif method == 0x90 and zstandard is not None:
            out.append(zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_size))
        else:
            raise ClickHouseError(
                UNKNOWN_COMPRESSION_METHOD, "Unknown compression method: 0x%02x" % method
            )
        pos = end
    return b"".join(out)


def encode_native_blocks(data):
    out = []
    for start in range(0, len(data), BLOCK_SIZE):
        chunk = data[start:start + BLOCK_SIZE]
        comp = lz4.block.compress(chunk, store_size=False)
        header = b"\x82" + struct.pack("<II", 9 + len(comp), len(chunk))
        out.append(checksum(header + comp) + header + comp)
    return b"".join(out)


# ---------------------------------------------------------------- SQL helpers

def split_statements(sql):
    """Split on top-level ';' outside quotes and comments; drop empty statements."""
    stmts, cur, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            cur.append(sql[i:j + 1])
            i = j + 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            cur.append(" ")
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            cur.append(" ")
            i = j
        elif c == ";":
            stmts.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    stmts.append("".join(cur))
    return [s for s in stmts if s.strip()]


def sql_string(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def backquote(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def match_insert_format(raw):
    """(statement without FORMAT, format name, rest) for `INSERT INTO ... FORMAT Name<data>`."""
    m = INSERT_FORMAT_RE.match(raw)
    if not m:
        return None
    head = re.sub(rb"`[^`]*`|'(?:[^'\\]|\\.)*'", b"", m.group(1))
    if re.search(rb"\b(VALUES|SELECT|WITH)\b", head, re.IGNORECASE):
        return None
    return m.group(1).decode(), m.group(2).decode(), skip_to_data(raw[m.end():])


def skip_to_data(raw):
    """Inline INSERT data starts after spaces/tabs and at most one newline."""
    i = 0
    while i < len(raw) and raw[i:i + 1] in (b" ", b"\t"):
        i += 1
    if raw[i:i + 2] == b"\r\n":
        i += 2
    elif raw[i:i + 1] == b"\n":
        i += 1
    return raw[i:]


# ---------------------------------------------------------------- users

DEFAULT_USER_XML = """
    <default>
      <password></password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
      <named_collection_control>1</named_collection_control>
    </default>"""


def write_engine_config(conf_dir, users_file):
    """Write the config.xml/users.xml chdb loads; return {user: element} for password checks."""
    os.makedirs(conf_dir, exist_ok=True)
    users, profiles, quotas = {}, [], []
    if users_file:
        root = ET.parse(users_file).getroot()
        for section, sink in (("profiles", profiles), ("quotas", quotas)):
            node = root.find(section)
            if node is not None:
                sink.extend(child for child in node if child.tag != "default")
        node = root.find("users")
        if node is not None:
            for child in node:
                if child.tag == "default":
                    sys.stderr.write(
                        "clickhouse-http-front: ignoring <default> in %s: chdb always runs as a "
                        "password-less 'default'\n" % users_file
                    )
                    continue
                users[child.tag] = child
    parts = ["<clickhouse>\n  <profiles><default/>"]
    parts += [ET.tostring(p, encoding="unicode") for p in profiles]
    parts.append("</profiles>\n  <quotas><default/>")
    parts += [ET.tostring(q, encoding="unicode") for q in quotas]
    parts.append("</quotas>\n  <users>" + DEFAULT_USER_XML)
    parts += [ET.tostring(u, encoding="unicode") for u in users.values()]
    parts.append("\n  </users>\n</clickhouse>\n")
    with open(os.path.join(conf_dir, "users.xml"), "w", encoding="utf-8") as f:
        f.write("".join(parts))
    with open(os.path.join(conf_dir, "config.xml"), "w", encoding="utf-8") as f:
        # Absolute: chdb resolves a relative users_config against the cwd, not the config's dir.
        f.write("<clickhouse>\n  <users_config>%s</users_config>\n</clickhouse>\n"
                % os.path.join(os.path.abspath(conf_dir), "users.xml"))
    return users


def password_ok(user_elem, password):
    if user_elem is None:
        return password == ""
    if user_elem.find("no_password") is not None:
        return True
    node = user_elem.find("password_sha256_hex")
    if node is not None:
        return hashlib.sha256(password.encode()).hexdigest() == (node.text or "").strip().lower()
    node = user_elem.find("password_double_sha1_hex")
    if node is not None:
        twice = hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest()
        return twice == (node.text or "").strip().lower()
    node = user_elem.find("password")
    if node is not None:
        return password == (node.text or "")
    return password == ""


# ---------------------------------------------------------------- engine

class Engine:
    def __init__(self, data_dir, users_file):
        data_dir = os.path.abspath(data_dir)
        os.makedirs(data_dir, exist_ok=True)
        conf_dir = os.path.join(data_dir, "front-config")
        self.users = write_engine_config(conf_dir, users_file)
        conn = "file:%s?config-file=%s" % (data_dir, os.path.join(conf_dir, "config.xml"))
        self.session = chdb_session.Session(conn)
        self.lock = threading.Lock()
        # INSERT bodies (see _insert) live under the data directory: a front killed by its
        # test leaves nothing behind in the system temp directory.
        self.tmp_dir = tempfile.mkdtemp(prefix="front-insert-", dir=data_dir)
        self.timezone = self.session.query("SELECT timezone()", "TSVRaw").bytes().decode().strip()
        self.version = self.session.query("SELECT version()", "TSVRaw").bytes().decode().strip()

    def close(self):
        with self.lock:
            self.session.close()
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _q(self, sql, fmt="TSV", params=None):
        try:
            return self.session.query(sql, fmt, params=params or None)
        except Exception as exc:  # noqa: BLE001 - chdb raises ChdbError/RuntimeError
            raise engine_error(exc)

    def run(self, database, settings, params, roles, sql, fmt, insert):
        """Execute under the session lock; returns (body bytes, summary dict)."""
        with self.lock:
            applied = []
            try:
                self._q("USE " + backquote(database or "default"))
                for name, value in settings:
                    try:
                        self._q("SET %s = %s" % (name, sql_string(value)))
                        applied.append(name)
                    except ClickHouseError as err:
                        if err.code != UNKNOWN_SETTING:
                            raise
                if roles:
                    self._q("SET ROLE " + ", ".join(backquote(r) for r in roles))
                    applied.append(None)
                if insert is not None:
                    query, in_fmt, data = insert
                    return self._insert(query, in_fmt, data)
                res = self._q(sql, fmt, params)
                body = res.bytes()
                return body, {
                    "read_rows": res.rows_read(), "read_bytes": res.bytes_read(),
                    "written_rows": 0, "written_bytes": 0,
                    "result_rows": 0, "result_bytes": len(body),
                    "elapsed_ns": int(res.elapsed() * 1e9),
                }
            finally:
                for name in applied:
                    try:
                        self._q("SET ROLE DEFAULT" if name is None else "SET %s = DEFAULT" % name)
                    except ClickHouseError:
                        pass

    def _insert(self, query, in_fmt, data):
        """INSERT the request's (already decoded) rows: `<query> FROM INFILE <tmp> FORMAT <fmt>`.

        Not chdb's streaming inserter (session.send_insert/append/finish): in chdb 26.9 its
        finish() reports success with rows_written even when the engine rejects the block
        (e.g. a CHECK constraint, Code 469) and stores nothing. FROM INFILE is an ordinary
        session.query, so the engine parses the column list and the format itself (header
        checks of RowBinaryWithNamesAndTypes included), fires materialized views, commits all
        rows or none, and raises its own "Code: N. DB::Exception" on failure.
        """
        fd, path = tempfile.mkstemp(prefix="insert-", suffix=".bin", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # FROM INFILE goes before an inline SETTINGS clause (INSERT ... SETTINGS k=v FORMAT f):
            # find the keyword outside quotes and parentheses (blanked, keeping offsets).
            blank = lambda m: " " * len(m.group())  # noqa: E731
            masked = re.sub(r"`[^`]*`|'(?:[^'\\]|\\.)*'", blank, query)
            while True:
                unnested = re.sub(r"\([^()]*\)", blank, masked)
                if unnested == masked:
                    break
                masked = unnested
            m = re.search(r"\bSETTINGS\b", masked, re.IGNORECASE)
            cut = m.start() if m else len(query)
            sql = "%s FROM INFILE %s COMPRESSION 'none' %s FORMAT %s" % (
                query[:cut].rstrip(), sql_string(path), query[cut:].strip(), in_fmt)
            try:
                res = self.session.query(sql, "TSV")
            except Exception as exc:  # noqa: BLE001
                raise engine_error(unwrap_infile_error(str(exc), path))
        finally:
            os.unlink(path)
        return b"", {
            "read_rows": 0, "read_bytes": 0,
            "written_rows": res.rows_written(), "written_bytes": res.bytes_written(),
            "result_rows": res.rows_written(), "result_bytes": res.bytes_written(),
            "elapsed_ns": int(res.elapsed() * 1e9),
        }


def unwrap_infile_error(text, path):
    """Strip what FROM INFILE adds to a format error, so it reads like the server's.

    "Code: 33. DB::Exception: Code: 33. DB::Exception: <msg>: (in file/uri PATH): While
    executing X: While executing File: data for INSERT was parsed from file. (NAME)
    (version V). (NAME)" -> "Code: 33. DB::Exception: <msg>: While executing X. (NAME) (version V)"
    """
    m = re.search(r"Code: (\d+)\. DB::Exception: (Code: \1\. DB::Exception: .*)\. \([A-Z_]+\)\s*$",
                  text, re.DOTALL)
    if m:
        text = m.group(2)
    return (text.replace(": (in file/uri %s)" % path, "")
            .replace(": While executing File: data for INSERT was parsed from file", ""))


# ---------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-http-front"
    sys_version = ""

    def log_message(self, fmt, *args):  # noqa: A003 - http.server API
        if not self.server.quiet:
            sys.stderr.write("front: " + (fmt % args) + "\n")

    # -- body -----------------------------------------------------------
    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("connection closed inside a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def decode_content_encoding(self, body):
        enc = self.headers.get("Content-Encoding", "").strip().lower()
        if not enc or enc == "identity" or not body:
            return body
        try:
            if enc == "gzip":
                return gzip.decompress(body)
            if enc == "deflate":
                return zlib.decompress(body)
            if enc == "lz4":
                return lz4.frame.decompress(body)
            if enc == "zstd" and zstandard is not None:
                return zstandard.ZstdDecompressor().decompressobj().decompress(body)
        except Exception as exc:  # noqa: BLE001
            raise ClickHouseError(CANNOT_DECOMPRESS, "Cannot decompress %s body: %s" % (enc, exc))
        raise ClickHouseError(UNKNOWN_COMPRESSION_METHOD, "Unknown Content-Encoding: %s" % enc)

    # -- responses --------------------------------------------------------
    def send_bytes(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error_response(self, err, query_id):
        self.send_bytes(
            http_status_for(err.code),
            err.body(),
            [
                ("Content-Type", "text/plain; charset=UTF-8"),
                ("X-ClickHouse-Query-Id", query_id),
                ("X-ClickHouse-Timezone", self.server.engine.timezone),
                ("X-ClickHouse-Exception-Code", str(err.code)),
            ],
        )

    # -- auth -------------------------------------------------------------
    def credentials(self, params):
        user = self.headers.get("X-ClickHouse-User")
        password = self.headers.get("X-ClickHouse-Key")
        auth = self.headers.get("Authorization", "")
        if user is None and auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except Exception:  # noqa: BLE001
                raise ClickHouseError(AUTHENTICATION_FAILED, "Invalid Authorization header")
        if user is None:
            user = params.get("user")
        if password is None:
            password = params.get("password", "")
        return (user or "default"), (password or "")

    def authenticate(self, params):
        user, password = self.credentials(params)
        users = self.server.engine.users
        known = user == "default" or user in users
        if not known or not password_ok(users.get(user), password):
            raise ClickHouseError(
                AUTHENTICATION_FAILED,
                "Code: 516. DB::Exception: %s: Authentication failed: password is incorrect, or there "
                "is no user with such name. (AUTHENTICATION_FAILED)" % user,
            )
        if user != "default":
            raise ClickHouseError(
                SUPPORT_IS_DISABLED,
                "Code: 344. DB::Exception: clickhouse-http-front: user %s authenticated, but chdb %s "
                "executes every query as 'default' (no impersonation: EXECUTE AS needs "
                "access_control_improvements.allow_impersonate_user, which chdb does not read). "
                "Refusing rather than running the query without %s's row policies. Use a SQL SECURITY "
                "DEFINER view with DEFINER = %s to apply its row policies. (SUPPORT_IS_DISABLED)"
                % (user, self.server.engine.version, user, user),
            )
        return user

    # -- verbs ------------------------------------------------------------
    def do_GET(self):  # noqa: N802
        self.handle_request()

    def do_POST(self):  # noqa: N802
        self.handle_request()

    def handle_request(self):
        started = time.monotonic()
        split = urlsplit(self.path)
        params_list = parse_qsl(split.query, keep_blank_values=True)
        params = dict(params_list)
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            raw_body = self.read_body()
        except (ConnectionError, ValueError) as exc:
            self.close_connection = True
            self.log_message("bad request body: %s", exc)
            return
        if split.path in ("/ping", "/replicas_status") or (
            split.path == "/" and self.command == "GET" and "query" not in params
        ):
            self.send_bytes(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
            return
        if split.path != "/":
            self.send_bytes(404, b"There is no handle " + split.path.encode() + b"\n")
            return
        try:
            self.authenticate(params)
            body = self.decode_content_encoding(raw_body)
            if params.get("decompress") in ("1", "true"):
                body = decode_native_blocks(body)
            out, summary, fmt = self.execute(params, params_list, body)
        except ClickHouseError as err:
            self.send_error_response(err, query_id)
            return
        except Exception as exc:  # noqa: BLE001 - keep serving; report like the server would
            self.send_error_response(ClickHouseError(UNKNOWN_EXCEPTION, repr(exc)), query_id)
            return
        headers = [
            ("Content-Type", content_type(fmt)),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Format", fmt),
            ("X-ClickHouse-Timezone", self.server.engine.timezone),
            ("X-ClickHouse-Server-Display-Name", "chdb-http-front"),
            ("X-ClickHouse-Summary", "{" + ",".join(
                '"%s":"%d"' % (k, v) for k, v in summary.items()) + "}"),
        ]
        if params.get("compress") in ("1", "true"):
            out = encode_native_blocks(out)
        if params.get("enable_http_compression") in ("1", "true") and out:
            accept = self.headers.get("Accept-Encoding", "").lower()
            if "gzip" in accept:
                out = gzip.compress(out)
                headers.append(("Content-Encoding", "gzip"))
            elif "deflate" in accept:
                out = zlib.compress(out)
                headers.append(("Content-Encoding", "deflate"))
        self.send_bytes(200, out, headers)
        if not self.server.quiet:
            sys.stderr.write("front: %.1f ms\n" % ((time.monotonic() - started) * 1000))

    def execute(self, params, params_list, body):
        fmt = params.get("default_format") or "TabSeparated"
        settings, qparams, roles = [], {}, []
        for name, value in params_list:
            if name.startswith("param_"):
                qparams[name[6:]] = value
            elif name == "role":
                roles.append(value)
            elif name not in HTTP_ONLY_PARAMS and SETTING_NAME_RE.match(name):
                settings.append((name, value))
        url_query = params.get("query")
        insert = None
        sql = None
        if url_query is not None:
            found = match_insert_format(url_query.encode())
            if found:
                insert = (found[0], found[1], found[2] + body)
            else:
                sql = url_query + ("\n" + body.decode("utf-8", "replace") if body else "")
        else:
            insert = match_insert_format(body)
            if insert is None:
                sql = body.decode("utf-8", "replace")
        if insert is None:
            stmts = split_statements(sql)
            if not stmts:
                raise ClickHouseError(SYNTAX_ERROR, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
            if len(stmts) > 1 and not self.server.allow_multi:
                raise ClickHouseError(
                    SYNTAX_ERROR,
                    "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed): failed at "
                    "position %d (end of query): %s. (SYNTAX_ERROR)"
                    % (len(stmts[0]) + 1, stmts[1].strip()[:100]),
                )
        out, summary = self.server.engine.run(
            params.get("database"), settings, qparams, roles, sql, fmt, insert
        )
        return out, summary, fmt


def content_type(fmt):
    if fmt.startswith("RowBinary") or fmt in ("Native", "Parquet", "Arrow", "ArrowStream"):
        return "application/octet-stream"
    if fmt in ("TabSeparated", "TSV", "TSVRaw", "TabSeparatedRaw"):
        return "text/tab-separated-values; charset=UTF-8"
    return "text/plain; charset=UTF-8"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--data", required=True, help="persistent chdb data directory")
    ap.add_argument("--port", type=int, default=8123, help="TCP port on 127.0.0.1 (0 = free port)")
    ap.add_argument("--users", help="ClickHouse users.xml with extra users and row-policy filters")
    ap.add_argument("--allow-multi-statements", action="store_true",
                    help="accept 'a; b' in one request (the real HTTP interface rejects it)")
    ap.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    args = ap.parse_args(argv)

    engine = Engine(args.data, args.users)
    server = Server(("127.0.0.1", args.port), Handler)
    server.engine = engine
    server.quiet = args.quiet
    server.allow_multi = args.allow_multi_statements

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY port=%d engine=ClickHouse %s (chdb %s) data=%s"
          % (server.server_address[1], engine.version, chdb.__version__, os.path.abspath(args.data)),
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
