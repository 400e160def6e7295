//! Apache Kafka for the tests, and `mapper run` as a child process.
//!
//! One broker serves a whole test run (`scripts/test.sh` starts it and exports
//! `MAPPER_TEST_KAFKA=host:port`; without it, the first test of a process starts one that dies
//! with the process). Each test gets its own topics and consumer groups: a [`Broker`] is a
//! *lane* on a server, and every topic name a test passes (`INPUT`, `CANONICAL`, ...) is
//! prefixed with the lane's id. Tests that stop, freeze or restart the broker take a
//! [`Broker::dedicated`] server of their own.
//!
//! What reached the topics is read with Kafka's own console consumer (`read_committed`), a
//! client we did not write; only producing test input and polling committed offsets use
//! librdkafka.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;

use super::root;

pub const INPUT: &str = "detector.events.v1";
pub const CANONICAL: &str = "mapper.canonical.v1";
pub const AUDIT: &str = "mapper.audit.v1";
pub const DLQ: &str = "mapper.dlq.v1";
pub const SINK_DLQ: &str = "mapper.sink.dlq.v1";
/// The mapper's consumer group (prefixed per lane like a topic).
pub const GROUP: &str = "llama-mapper";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free port below the kernel's ephemeral range (32768–60999 by default), for a server that
/// is stopped and started again on the same port: no outgoing connection of the machine can
/// take it meanwhile, as one could a port the OS handed out from that range.
pub fn stable_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as usize;
    let start = (std::process::id() as usize * 7_919 + nanos + NEXT.fetch_add(97, Ordering::SeqCst)) % 22_000;
    (0..22_000)
        .map(|i| 10_000 + ((start + i) % 22_000) as u16)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 10000-31999")
}

/// Tests that load the machine (thousands of events, kills, broker faults) run one at a
/// time within a test binary: on two cores, several at once would time each other out.
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// One Apache Kafka server started by `scripts/start-kafka.sh`.
struct Server {
    port: u16,
    dir: PathBuf,
    /// Ours to stop and wipe (not the run's shared server).
    owned: bool,
}

impl Server {
    fn start(port: u16, dir: &std::path::Path, fresh: bool) {
        let out = Command::new(root().join("scripts/start-kafka.sh"))
            .env("KAFKA_PORT", port.to_string())
            .env("KAFKA_CONTROLLER_PORT", free_port().to_string())
            .env("KAFKA_DIR", dir)
            .env("KAFKA_HEAP", "384m")
            .env("KAFKA_FRESH", if fresh { "1" } else { "0" })
            .env("KAFKA_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("scripts/start-kafka.sh runs");
        assert!(
            out.status.success(),
            "kafka did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("kafka.pid")).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("kill").args(["-9", &self.pid().to_string()]).status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn shared_server() -> Arc<Server> {
    static SHARED: OnceLock<Arc<Server>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Ok(addr) = std::env::var("MAPPER_TEST_KAFKA") {
                let port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("MAPPER_TEST_KAFKA=host:port");
                return Arc::new(Server { port, dir: PathBuf::new(), owned: false });
            }
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("mapper-test-kafka-{}-{port}", std::process::id()));
            Server::start(port, &dir, true);
            // Not owned: it serves every test of this process, and its watcher stops it when the
            // process ends.
            Arc::new(Server { port, dir, owned: false })
        })
        .clone()
}

/// A lane on a Kafka server: this test's topics and groups.
pub struct Broker {
    server: Arc<Server>,
    pub prefix: String,
}

impl Broker {
    /// A lane on the run's shared server, with the mapper's four topics created.
    pub fn start() -> Broker {
        let b = Broker::start_empty();
        b.create_mapper_topics();
        b
    }

    /// A lane on the shared server with no topics yet.
    pub fn start_empty() -> Broker {
        Broker::lane(shared_server())
    }

    /// A server of this test's own (it may stop, freeze and restart it), with the four topics.
    pub fn dedicated() -> Broker {
        let port = stable_port();
        let dir = std::env::temp_dir().join(format!("mapper-test-kafka-{}-{port}", std::process::id()));
        Server::start(port, &dir, true);
        let b = Broker::lane(Arc::new(Server { port, dir, owned: true }));
        b.create_mapper_topics();
        b
    }

    fn lane(server: Arc<Server>) -> Broker {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!("t{}-{}.", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        Broker { server, prefix }
    }

    fn create_mapper_topics(&self) {
        for (t, p) in [(INPUT, 6), (CANONICAL, 6), (AUDIT, 6), (DLQ, 3)] {
            self.create_topic(t, p);
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// This lane's name for a topic or group.
    pub fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// The settings that point a mapper process at this lane.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LLAMA_MAPPER_KAFKA__BROKERS", self.brokers()),
            ("LLAMA_MAPPER_KAFKA__GROUP", self.name(GROUP)),
            ("LLAMA_MAPPER_KAFKA__INPUT_TOPIC", self.name(INPUT)),
            ("LLAMA_MAPPER_KAFKA__CANONICAL_TOPIC", self.name(CANONICAL)),
            ("LLAMA_MAPPER_KAFKA__AUDIT_TOPIC", self.name(AUDIT)),
            ("LLAMA_MAPPER_KAFKA__DLQ_TOPIC", self.name(DLQ)),
            ("LLAMA_MAPPER_SINK__DLQ_TOPIC", self.name(SINK_DLQ)),
            ("LLAMA_MAPPER_SINK__CLICKHOUSE_GROUP", self.name("llama-mapper-sink-clickhouse")),
            ("LLAMA_MAPPER_SINK__S3_GROUP", self.name("llama-mapper-sink-s3")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, &[]);
    }

    pub fn create_topic_with(&self, name: &str, partitions: i32, config: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.brokers()).create().unwrap();
        let full = self.name(name);
        let topic =
            config.iter().fold(NewTopic::new(&full, partitions, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let res = rt.block_on(admin.create_topics([&topic], &opts)).unwrap();
        for r in res {
            r.unwrap_or_else(|(n, e)| panic!("creating topic {n}: {e}"));
        }
    }

    pub fn produce(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        produce_to(&self.brokers(), &self.name(topic), records);
    }

    /// Everything committed in `topic`, read by Kafka's console consumer (`read_committed`)
    /// until it saw nothing new for a few seconds.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        self.console_read(topic, "read_committed")
    }

    /// Everything in `topic`, aborted transactions included (`read_uncommitted`).
    pub fn read_uncommitted(&self, topic: &str) -> Vec<Record> {
        self.console_read(topic, "read_uncommitted")
    }

    /// Reads `topic` (committed only) until at least `want` records arrived or `timeout`
    /// passed, and returns *everything* committed: never capped at `want` (with
    /// `--max-messages want` an extra copy past the first `want` records was invisible, and
    /// every "exactly N, none twice" check built on this could not fail).
    pub fn read(&self, topic: &str, want: usize, timeout: Duration) -> Vec<Record> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.console_read(topic, "read_committed");
            if got.len() >= want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn console_read(&self, topic: &str, isolation: &str) -> Vec<Record> {
        let full = self.name(topic);
        let mut args: Vec<String> = [
            "--bootstrap-server",
            &self.brokers(),
            "--topic",
            &full,
            "--from-beginning",
            "--isolation-level",
            isolation,
            "--timeout-ms",
            "4000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for p in [
            "print.partition=true",
            "print.offset=true",
            "print.key=true",
            "print.headers=true",
            "key.separator=\u{1f}",
            "headers.separator=\u{1e}",
            // Values as bytes: Kafka prints them with non-printables (and `\`) as `\xHH`, so
            // binary Avro comes back exact.
            "value.deserializer=org.apache.kafka.common.serialization.BytesDeserializer",
            "null.literal=<null>",
        ] {
            args.extend(["--formatter-property".into(), p.into()]);
        }
        let out = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer", &args);
        String::from_utf8_lossy(&out.stdout).lines().filter_map(Record::parse).collect()
    }

    /// `TransactionsCommand list`: (transactional id, state) of every transaction the
    /// coordinator knows whose id starts with this lane's group.
    pub fn transactions(&self) -> Vec<(String, String)> {
        let out =
            kafka_tool("org.apache.kafka.tools.TransactionsCommand", &["--bootstrap-server", &self.brokers(), "list"]);
        let group = self.name(GROUP);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[0].starts_with(&group)).then(|| (f[0].to_string(), f[3].to_string()))
            })
            .collect()
    }

    /// `ConsumerGroupCommand --describe`: the group's committed offset per partition of `topic`
    /// as Kafka's own tool reports it.
    pub fn group_offsets(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        let out = kafka_tool(
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            &["--bootstrap-server", &self.brokers(), "--describe", "--group", &self.name(group), "--offsets"],
        );
        let full = self.name(topic);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() >= 4 && f[1] == full {
                    Some((f[2].parse().ok()?, f[3].parse().ok()?))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Sum of the mapper group's committed offsets over the input topic (0 when none).
    pub fn committed_inputs(&self) -> i64 {
        committed_offsets(&self.brokers(), &self.name(GROUP), &self.name(INPUT), 6)
    }

    /// Sum of `group`'s committed offsets over this lane's `topic` (0 when none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> i64 {
        committed_offsets(&self.brokers(), &self.name(group), &self.name(topic), partitions)
    }

    // Faults, for a dedicated server only.

    fn own(&self) -> &Server {
        assert!(self.server.owned, "broker faults need Broker::dedicated()");
        &self.server
    }

    /// Freezes the broker process (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        let _ = Command::new("kill").args(["-STOP", &self.own().pid().to_string()]).status();
    }

    pub fn thaw(&self) {
        let _ = Command::new("kill").args(["-CONT", &self.own().pid().to_string()]).status();
    }

    /// Stops the broker abruptly (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&self) {
        let s = self.own();
        let pid = s.pid();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(s.dir.join("kafka.pid"));
        Server::start(s.port, &s.dir, false);
    }
}

/// Runs one of Kafka's command-line tools from the installed jars.
pub fn kafka_tool<S: AsRef<std::ffi::OsStr>>(class: &str, args: &[S]) -> std::process::Output {
    let libs = root().join(".stack/kafka/libs");
    assert!(libs.is_dir(), "Apache Kafka is not installed: run scripts/install-stack.sh");
    Command::new("java")
        .arg(format!("-Dlog4j2.configurationFile={}", root().join("scripts/kafka/tools-log4j2.yaml").display()))
        .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp"])
        .arg(format!("{}/*", libs.display()))
        .arg(class)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {class}: {e}"))
}

pub fn produce_to(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut pending = Vec::new();
        for (k, v) in records {
            let rec = FutureRecord::to(topic).key(k.as_str()).payload(v.as_slice());
            let f =
                llama_mapper::kafka::enqueue(&producer, rec).unwrap_or_else(|e| panic!("producing to {topic}: {e}"));
            pending.push(f);
            if pending.len() > 5000 {
                for f in pending.drain(..) {
                    f.await.unwrap().unwrap();
                }
            }
        }
        for f in pending {
            f.await.unwrap().unwrap();
        }
    });
}

/// Sum of `group`'s committed offsets over `topic`'s partitions (0 when none).
pub fn committed_offsets(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .map(|c| c.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    /// One line of the console consumer: `Partition:P␟Offset:O␟headers␟key␟value`, headers as
    /// `k:v␞k:v` (or `NO_HEADERS`; our header names hold no `:`), null as `<null>`, the value `\xHH`-escaped.
    fn parse(line: &str) -> Option<Record> {
        let mut f = line.splitn(5, '\u{1f}');
        let partition = f.next()?.strip_prefix("Partition:")?.parse().ok()?;
        let offset = f.next()?.strip_prefix("Offset:")?.parse().ok()?;
        let headers_text = f.next()?;
        let key = f.next()?;
        let value = f.next()?;
        let mut headers = BTreeMap::new();
        if headers_text != "NO_HEADERS" {
            for h in headers_text.split('\u{1e}') {
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.to_string(), v.to_string());
                }
            }
        }
        // No record of ours has the text `<null>` as its key or value (not JSON, not Avro framing).
        let nullable = |s: &str| (s != "<null>").then(|| s.to_string());
        Some(Record { partition, offset, key: nullable(key), value: nullable(value).map(|v| unescape(&v)), headers })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().expect("a value")).expect("JSON value")
    }

    /// The input record this output came from: (partition, offset).
    pub fn source(&self) -> (i32, i64) {
        (
            self.headers["mapper.source.partition"].parse().unwrap(),
            self.headers["mapper.source.offset"].parse().unwrap(),
        )
    }
}

/// Undoes `org.apache.kafka.common.utils.Bytes.toString`: `\xHH` is a byte, the rest ASCII.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// `mapper run` as a child process; killed (SIGKILL) on drop unless stopped.
pub struct MapperProcess {
    pub child: Child,
    pub log: PathBuf,
    /// The port the process's metrics server bound (it is given port 0 and logs the one it
    /// got), read from the log on first use.
    pub metrics_port: OnceLock<u16>,
}

impl MapperProcess {
    pub fn start(broker: &Broker, instance: &str, extra: &[(&str, &str)]) -> MapperProcess {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let log = std::env::temp_dir().join(format!("mapper-{instance}-{}-{n}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = super::mapper_command();
        cmd.args(["run", "--instance-id", instance])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("LLAMA_MAPPER_LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in broker.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        MapperProcess { child: cmd.spawn().unwrap(), log, metrics_port: OnceLock::new() }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `within` for the exit.
    pub fn terminate_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(30)).expect("mapper did not stop on SIGTERM within 30 s")
    }

    /// The metrics server's port, from the log line that reports it (waits for it, 60 s).
    pub fn port(&self) -> u16 {
        *self.metrics_port.get_or_init(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let log = self.log_text();
                let line = log.lines().find(|l| l.contains("metrics, /healthz and /readyz listening"));
                if let Some(port) = line
                    .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .and_then(|v| v["fields"]["metrics"].as_str()?.rsplit(':').next()?.parse().ok())
                {
                    return port;
                }
                assert!(Instant::now() < deadline, "no metrics address in the log:\n{log}");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    pub fn metrics(&self) -> String {
        http_get(self.port(), "/metrics")
    }

    /// `/healthz`: (HTTP status, body), or `None` when nothing answers.
    pub fn health(&self) -> Option<(u16, String)> {
        let resp = http_get(self.port(), "/healthz");
        let code = resp.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident set now (VmRSS), in MB; the benches print it.
    #[allow(dead_code)]
    pub fn rss_mb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        kb / 1024
    }
}

impl Drop for MapperProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
