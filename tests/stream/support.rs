//! Helpers shared by the stream tests: realistic input, and waiting for committed work.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::kafka::{Broker, MapperProcess, Record};

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

/// Waits until `topic` holds at least `n` committed records (read by Kafka's console
/// consumer), and returns them all.
pub fn wait_committed(
    broker: &Broker,
    topic: &str,
    n: usize,
    timeout: Duration,
    who: &[&MapperProcess],
) -> Vec<Record> {
    let got = broker.read(topic, n, timeout);
    if got.len() < n {
        panic!("{topic}: {} of {n} committed records after {timeout:?}\n{}", got.len(), logs(who));
    }
    got
}

pub fn logs(who: &[&MapperProcess]) -> String {
    who.iter().map(|m| tail(&m.log_text(), 3000)).collect::<Vec<_>>().join("\n---\n")
}

fn tail(s: &str, n: usize) -> String {
    s.chars().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect()
}

/// event_id → number of committed copies.
pub fn count_ids(records: &[Record]) -> BTreeMap<String, usize> {
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
        let done = broker.committed_inputs();
        if done >= n {
            return;
        }
        if Instant::now() > deadline {
            panic!("{done} of {n} input records committed after {timeout:?}\n{}", logs(who));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until every one of `who` has logged "partitions assigned" (joined its group and
/// was given partitions), at most 60 s.
pub fn wait_joined(who: &[&MapperProcess]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !who.iter().all(|m| m.log_text().contains("partitions assigned")) {
        assert!(Instant::now() < deadline, "not every instance joined within 60 s:\n{}", logs(who));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pack events, repeated: ids `{prefix}-{i}` for `i` in `ids`, tenant `tenant-{i % tenants}`
/// (the pack event's own tenant when `tenants` is 0).
pub fn numbered_events(prefix: &str, ids: std::ops::Range<usize>, tenants: usize) -> Vec<Value> {
    let mix = pack_events();
    ids.map(|i| {
        let mut e = mix[i % mix.len()].clone();
        e["event_id"] = json!(format!("{prefix}-{i}"));
        if tenants > 0 {
            e["tenant_id"] = json!(format!("tenant-{}", i % tenants));
        }
        e
    })
    .collect()
}
