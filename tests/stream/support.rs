//! Helpers shared by the stream tests: realistic input, and reading what was committed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::kafka::{Broker, MapperProcess};
use crate::common::rawlog::{self, RawRecord};

pub const CANARY: &str = "CANARY-5d1e-raw-content";

/// Every real-format example of every pack, as detector events with a canary in `content`.
pub fn pack_events() -> Vec<Value> {
    let dir = crate::common::root().join("tests/packs");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let det = doc["detector"].as_str().unwrap().to_string();
        for (i, c) in doc["cases"].as_array().unwrap().iter().enumerate() {
            let n = out.len();
            let mut e = crate::common::event_json(&format!("{det}-{i}"), &det, c["output"].clone());
            e["tenant_id"] = json!(["acme", "globex", "initech"][n % 3]);
            e["content"] = json!(format!("user text {CANARY} 078-05-1120"));
            out.push(e);
        }
    }
    out
}

/// Committed records of every partition of `topic`, resolved from the transaction markers.
pub fn committed(broker: &Broker, topic: &str, partitions: i32) -> Vec<RawRecord> {
    (0..partitions).flat_map(|p| rawlog::read_partition(broker.port, topic, p).committed).collect()
}

pub fn all_raw(broker: &Broker, topic: &str, partitions: i32) -> Vec<RawRecord> {
    (0..partitions)
        .flat_map(|p| {
            let r = rawlog::read_partition(broker.port, topic, p);
            r.committed.into_iter().chain(r.aborted).chain(r.open)
        })
        .collect()
}

/// Waits until `topic` holds at least `n` committed records.
pub fn wait_committed(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    n: usize,
    timeout: Duration,
    who: &[&MapperProcess],
) -> Vec<RawRecord> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = committed(broker, topic, partitions);
        if got.len() >= n {
            return got;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = who.iter().map(|m| tail(&m.log_text(), 3000)).collect();
            panic!("{topic}: {} of {n} committed records after {timeout:?}\n{}", got.len(), logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tail(s: &str, n: usize) -> String {
    s.chars().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect()
}

pub fn value_json(r: &RawRecord) -> Value {
    serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON")
}

/// event_id → number of committed copies.
pub fn count_ids(records: &[RawRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.headers.get("mapper.event-id").cloned().unwrap_or_default()).or_insert(0) += 1;
    }
    m
}

pub fn keyed(events: &[Value]) -> Vec<(String, Vec<u8>)> {
    events.iter().map(|e| (e["tenant_id"].as_str().unwrap().to_string(), e.to_string().into_bytes())).collect()
}

/// Waits until the mapper group's committed offsets on the input topic add up to `n`: every
/// input record is then processed and its transaction committed. Cheap enough to poll (the
/// outputs themselves are read once, afterwards).
pub fn wait_inputs_committed(broker: &Broker, n: i64, timeout: Duration, who: &[&MapperProcess]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "llama-mapper")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(crate::common::kafka::INPUT, p);
    }
    let deadline = Instant::now() + timeout;
    let mut last = 0;
    loop {
        if let Ok(c) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            last = c.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum::<i64>();
            if last >= n {
                return;
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = who.iter().map(|m| tail(&m.log_text(), 3000)).collect();
            panic!("{last} of {n} input records committed after {timeout:?}\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
