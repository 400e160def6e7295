//! Helpers shared by the stream tests: realistic input, and reading what was committed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::kafka::{Broker, MapperProcess};
use crate::common::rawlog::{self, RawRecord};

pub const CANARY: &str = "CANARY-5d1e-raw-content";

/// Every real-format example of every pack, as detector events with a canary in `content`.
pub fn pack_events() -> Vec<Value> {
    let cases = crate::common::pack_cases();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    cases
        .into_iter()
        .enumerate()
        .map(|(n, (det, output))| {
            let i = seen.entry(det.clone()).or_default();
            let mut e = crate::common::event_json(&format!("{det}-{i}"), &det, output);
            *i += 1;
            e["tenant_id"] = json!(["acme", "globex", "initech"][n % 3]);
            e["content"] = json!(format!("user text {CANARY} 078-05-1120"));
            e
        })
        .collect()
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
    let deadline = Instant::now() + timeout;
    loop {
        let done = crate::common::kafka::committed_inputs(&broker.brokers(), "llama-mapper");
        if done >= n {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = who.iter().map(|m| tail(&m.log_text(), 3000)).collect();
            panic!("{done} of {n} input records committed after {timeout:?}\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
