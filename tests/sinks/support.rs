//! A whole deployment per test: broker, S3, ClickHouse, a signing key, and `mapper` commands
//! and sink processes pointed at them. (Also compiled into `benches/sinks.rs`, which uses part of it.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use crate::common::kafka::SINK_DLQ;
use crate::common::kafka::{free_port, Broker, MapperProcess, AUDIT, CANONICAL};
use crate::common::mapper_command;
use crate::common::stores::{ClickHouse, S3Server, S3_KEY, S3_SECRET};

pub struct Stack {
    pub broker: Broker,
    pub s3: S3Server,
    pub ch: ClickHouse,
    pub dir: tempfile::TempDir,
    pub bucket: String,
}

impl Stack {
    pub fn start() -> Stack {
        let broker = Broker::start();
        broker.create_topic(SINK_DLQ, 3);
        let stack = Stack {
            broker,
            s3: S3Server::start(),
            ch: ClickHouse::start(),
            dir: tempfile::tempdir().unwrap(),
            bucket: format!("trail-{}", free_port()),
        };
        let out = stack.mapper(&["audit", "keygen", "--out", stack.key_file().to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        stack.init_bucket();
        let out = stack.mapper(&["clickhouse", "migrate"]);
        assert!(out.status.success(), "{}", text(&out));
        stack
    }

    fn init_bucket(&self) {
        // SeaweedFS takes a moment after its port opens before its S3 API answers.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.mapper(&["audit", "init-bucket"]);
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "init-bucket: {}", text(&out));
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("trail.key")
    }

    /// Settings for every mapper process of this stack, as environment variables.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.broker.env();
        env.extend(
            [
                ("LLAMA_MAPPER_CLICKHOUSE__URL", self.ch.url()),
                ("LLAMA_MAPPER_S3__ENDPOINT", self.s3.endpoint()),
                ("LLAMA_MAPPER_S3__BUCKET", self.bucket.clone()),
                ("LLAMA_MAPPER_S3__SIGNING_KEY_FILE", self.key_file().display().to_string()),
                // Governance, so the tests can delete a segment (with bypass) to prove verify sees it.
                ("LLAMA_MAPPER_S3__RETENTION_MODE", "GOVERNANCE".into()),
                ("LLAMA_MAPPER_S3__RETENTION_DAYS", "1".into()),
                ("LLAMA_MAPPER_SINK__BATCH_TIMEOUT_MS", "300".into()),
                ("AWS_ACCESS_KEY_ID", S3_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
        );
        env
    }

    pub fn mapper(&self, args: &[&str]) -> Output {
        self.mapper_with(args, &[])
    }

    pub fn mapper_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut cmd = mapper_command();
        cmd.args(args).env("RUST_LOG", "warn");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    }

    pub fn sink(&self, which: &str) -> SinkProcess {
        SinkProcess::start(self, which, &[])
    }

    pub fn verify(&self, args: &[&str]) -> (bool, String) {
        let mut a = vec!["audit", "verify"];
        a.extend_from_slice(args);
        let out = self.mapper(&a);
        (out.status.success(), text(&out))
    }

    /// Audit events (and their canonical events) for `n` detector runs spread over tenants,
    /// published to the output topics as `mapper run` would.
    pub fn publish_events(&self, prefix: &str, n: usize, tenants: &[&str]) -> Vec<Value> {
        let (canonical, audit) = mapped_events(prefix, n, tenants);
        let key = |v: &Value| v["tenant_id"].as_str().or(v["provenance"]["tenant_id"].as_str()).unwrap().to_string();
        let recs = |vs: &[Value]| -> Vec<(String, Vec<u8>)> {
            vs.iter().map(|v| (key(v), serde_json::to_vec(v).unwrap())).collect()
        };
        self.broker.produce(CANONICAL, &recs(&canonical));
        self.broker.produce(AUDIT, &recs(&audit));
        audit
    }

    /// Rows in audit_events (distinct event_id), per the answer ClickHouse gives now.
    pub fn ch_count(&self, table: &str) -> usize {
        self.ch.query(&format!("SELECT uniqExact(event_id) FROM {table}")).trim().parse().unwrap()
    }

    pub fn wait_ch(&self, table: &str, n: usize, timeout: Duration, sinks: &[&SinkProcess]) {
        let deadline = Instant::now() + timeout;
        while self.ch_count(table) < n {
            if Instant::now() > deadline {
                let logs: Vec<String> = sinks.iter().map(|s| s.log()).collect();
                panic!("{table}: {} of {n} rows after {timeout:?}\n{}", self.ch_count(table), logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `verify` reports `n` trail events over all tenants.
    pub fn wait_trail(&self, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, out) = self.verify(&["--no-clickhouse", "--no-retention"]);
            let total = trail_events(&out);
            if total >= n {
                return out;
            }
            assert!(Instant::now() < deadline, "trail holds {total} of {n} events:\n{out}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The stack's S3 settings as the sinks get them (GOVERNANCE, one day), for the library.
    pub fn s3_settings(&self) -> llama_mapper::config::S3Settings {
        llama_mapper::config::S3Settings {
            endpoint: Some(self.s3.endpoint()),
            bucket: self.bucket.clone(),
            access_key_id: Some(S3_KEY.into()),
            secret_access_key: Some(S3_SECRET.into()),
            retention_mode: llama_mapper::config::RetentionMode::Governance,
            retention_days: 1,
            ..Default::default()
        }
    }

    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        llama_mapper::trail::TrailStore::new(&self.s3_settings()).unwrap().client().clone()
    }

    pub fn segment_keys(&self, tenant: &str) -> Vec<String> {
        let rt = rt();
        let c = self.s3_client();
        rt.block_on(async {
            let out = c
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("trail/tenants/{tenant}/segments/"))
                .send()
                .await
                .unwrap();
            let mut keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
            keys.sort();
            keys
        })
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let c = self.s3_client();
        rt().block_on(async {
            c.get_object().bucket(&self.bucket).key(key).send().await.unwrap().body.collect().await.unwrap().to_vec()
        })
    }

    /// Overwrites `key` with a new version, as someone with write access to the bucket could.
    pub fn overwrite(&self, key: &str, body: Vec<u8>) {
        use base64::Engine as _;
        use md5::Digest as _;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let c = self.s3_client();
        rt().block_on(async {
            c.put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_md5(md5)
                .body(body.into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("overwriting {key}: {e:?}"));
        });
    }
}

/// Events in the trail over all tenants, from a `mapper audit verify` report.
pub fn trail_events(report: &str) -> usize {
    report.lines().filter_map(|l| l.split(" segments, ").nth(1)?.split(' ').next()?.parse::<usize>().ok()).sum()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Maps `n` synthetic detector runs through the real pipeline; timestamps are recent (the
/// ClickHouse projection keeps 90 days).
pub fn mapped_events(prefix: &str, n: usize, tenants: &[&str]) -> (Vec<Value>, Vec<Value>) {
    let pipeline = crate::common::pipeline();
    let cases = crate::common::pack_cases();
    let now = time::OffsetDateTime::now_utc();
    let events: Vec<llama_mapper::contracts::DetectorEvent> = (0..n)
        .map(|i| {
            let (det, output) = &cases[i % cases.len()];
            let ts = now - time::Duration::seconds(i as i64);
            let mut e = crate::common::event_json(&format!("{prefix}-{i}"), det, output.clone());
            e["tenant_id"] = json!(tenants[i % tenants.len()]);
            e["ts"] = json!(ts.format(&time::format_description::well_known::Rfc3339).unwrap());
            serde_json::from_value(e).unwrap()
        })
        .collect();
    let mut canonical = Vec::new();
    let mut audit = Vec::new();
    for m in pipeline.map_batch(&events) {
        let m = m.expect("pack cases map");
        canonical.push(m.canonical_json);
        audit.push(m.audit_json);
    }
    (canonical, audit)
}

/// `mapper sink clickhouse|s3` as a child process; killed (SIGKILL) on drop.
pub struct SinkProcess {
    pub inner: MapperProcess,
}

impl SinkProcess {
    pub fn start(stack: &Stack, which: &str, extra: &[(&str, &str)]) -> SinkProcess {
        let log = stack.dir.path().join(format!("sink-{which}-{}.log", free_port()));
        let mut cmd = mapper_command();
        cmd.args(["sink", which]).env("RUST_LOG", "info");
        for (k, v) in stack.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        SinkProcess {
            inner: MapperProcess { child: cmd.spawn().unwrap(), log, metrics_port: std::sync::OnceLock::from(0) },
        }
    }

    pub fn log(&self) -> String {
        self.inner.log_text()
    }
}
