//! A real Kafka-protocol broker (tansu) per test, and `mapper run` as a child process.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::root;

pub const INPUT: &str = "detector.events.v1";
pub const CANONICAL: &str = "mapper.canonical.v1";
pub const AUDIT: &str = "mapper.audit.v1";
pub const DLQ: &str = "mapper.dlq.v1";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let p = root().join(".stack/bin/tansu");
    if !p.exists() {
        let ok = Command::new(root().join("scripts/install-stack.sh")).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok && p.exists(), "tansu missing: run scripts/install-stack.sh");
    }
    p
}

/// One tansu broker with in-memory storage on a free loopback port; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
}

impl Broker {
    pub fn start() -> Broker {
        let b = Broker::start_empty();
        for (t, p) in [(INPUT, 6), (CANONICAL, 6), (AUDIT, 6), (DLQ, 3)] {
            b.create_topic(t, p);
        }
        b
    }

    /// A broker with no topics.
    pub fn start_empty() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { port, child }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let st = Command::new(tansu_bin())
            .args(["topic", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string(), name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "creating topic {name}");
    }

    pub fn produce(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        produce_to(&self.brokers(), topic, records);
    }

    /// Reads `topic` from the start until `want` records arrived or `timeout` passed.
    pub fn read(&self, topic: &str, want: usize, timeout: Duration) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
        out
    }
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
                llama_mapper::publish::enqueue(&producer, rec).unwrap_or_else(|e| panic!("producing to {topic}: {e}"));
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

/// Sum of `group`'s committed offsets over the input topic's partitions (0 when none).
pub fn committed_inputs(brokers: &str, group: &str) -> i64 {
    committed_offsets(brokers, group, INPUT, 6)
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

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().expect("a value")).expect("JSON value")
    }
}

/// `mapper run` as a child process; killed (SIGKILL) on drop unless stopped.
pub struct MapperProcess {
    pub child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl MapperProcess {
    pub fn start(broker: &Broker, instance: &str, extra: &[(&str, &str)]) -> MapperProcess {
        let metrics_port = free_port();
        let log = std::env::temp_dir().join(format!("mapper-{instance}-{}-{metrics_port}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(super::mapper_bin());
        cmd.args(["run", "--brokers", &broker.brokers(), "--instance-id", instance])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .current_dir(root())
            .env_remove("LLAMA_MAPPER_CONFIG")
            .env("RUST_LOG", "info")
            .env("LLAMA_MAPPER_LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        MapperProcess { child: cmd.spawn().unwrap(), log, metrics_port }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "mapper did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MapperProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
