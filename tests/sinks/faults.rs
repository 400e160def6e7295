//! Sinks killed mid-batch, ClickHouse and S3 down for a while: nothing lost, nothing doubled,
//! the chain unbroken.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::kafka::AUDIT;
use crate::support::{SinkProcess, Stack};

const ROUND: usize = 1_200;
/// Small batches, so a round takes the sinks many of them and a kill lands inside it.
const BATCH: &str = "40";

/// Records of the audit topic `group` has committed (every sink reads it; six partitions).
fn committed(stack: &Stack, group: &str) -> i64 {
    stack.broker.committed(group, AUDIT, 6)
}

/// Kills `sink` when its progress `n` is inside the round (past `before`, short of `after`),
/// and returns `n`; `None` while the round has not reached it yet. Panics when the round
/// finished unseen: the kill would not have landed mid-batch.
fn kill_inside(sink: &mut SinkProcess, what: &str, n: i64, before: i64, after: i64) -> Option<i64> {
    assert!(n < after, "{what}: the round finished ({n} of {after}) before a kill could land in it");
    (n > before).then(|| {
        sink.inner.kill9();
        n
    })
}

/// Waits until `progress()` passes `from`: a restarted sink carries on.
fn wait_past(what: &str, from: i64, progress: impl Fn() -> i64, sink: &SinkProcess) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress() <= from {
        assert!(Instant::now() < deadline, "{what}: no progress past {from}:\n{}", sink.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `sink`'s log holds `line` exactly: the outage was seen where it matters.
fn wait_log(sink: &SinkProcess, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sink.log().contains(line) {
        assert!(Instant::now() < deadline, "no {line:?} in 60 s:\n{}", sink.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killed_sinks_and_store_outages_lose_and_double_nothing() {
    let mut stack = Stack::start();
    let tenants = ["acme", "globex", "initech", "umbrella"];
    let (ch_group, s3_group) = ("llama-mapper-sink-clickhouse", "llama-mapper-sink-s3");
    let sink =
        |stack: &Stack, which: &str| SinkProcess::start(stack, which, &[("LLAMA_MAPPER_SINK__BATCH_SIZE", BATCH)]);
    let rows = |stack: &Stack| stack.ch_count("audit_events") as i64;
    let mut ids = BTreeSet::new();
    let mut ch = sink(&stack, "clickhouse");
    let mut s3 = sink(&stack, "s3");
    for round in 0..3 {
        let before = ids.len() as i64;
        let audit = stack.publish_events(&format!("k{round}"), ROUND, &tenants);
        ids.extend(audit.iter().map(|a| a["event_id"].as_str().unwrap().to_string()));
        let after = ids.len() as i64;
        // Each sink is killed while it is inside the round: some of it written, not all.
        let (mut at, mut at_s3) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while at.is_none() || at_s3.is_none() {
            if at.is_none() {
                at = kill_inside(&mut ch, "clickhouse", rows(&stack), before, after);
            }
            if at_s3.is_none() {
                at_s3 = kill_inside(&mut s3, "s3", committed(&stack, s3_group), before, after);
            }
            assert!(Instant::now() < deadline, "no progress into round {round}:\n{}\n{}", ch.log(), s3.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let (at, at_s3) = (at.unwrap(), at_s3.unwrap());
        println!("round {round}: clickhouse killed at {at} rows, s3 at {at_s3} committed, of {after}");
        ch = sink(&stack, "clickhouse");
        s3 = sink(&stack, "s3");
        // The new incarnations carry on from there.
        wait_past("clickhouse after restart", at, || rows(&stack), &ch);
        wait_past("s3 after restart", at_s3, || committed(&stack, s3_group), &s3);
    }
    // ClickHouse down while events keep coming, and back once its sink has failed on it.
    stack.ch.stop();
    let audit = stack.publish_events("ch-down", 300, &tenants);
    ids.extend(audit.iter().map(|a| a["event_id"].as_str().unwrap().to_string()));
    wait_log(&ch, "ClickHouse insert failed; retrying");
    stack.ch.resume();
    // S3 likewise.
    stack.s3.stop();
    let audit = stack.publish_events("s3-down", 300, &tenants);
    ids.extend(audit.iter().map(|a| a["event_id"].as_str().unwrap().to_string()));
    wait_log(&s3, "writing a trail segment failed; retrying");
    stack.s3.resume();
    let total = ids.len();

    stack.wait_ch("audit_events", total, Duration::from_secs(120), &[&ch]);
    stack.wait_ch("canonical_events", total, Duration::from_secs(120), &[&ch]);
    // Both sinks consumed everything (the audit topic holds each event once).
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&stack, ch_group) < total as i64 || committed(&stack, s3_group) < total as i64 {
        assert!(Instant::now() < deadline, "sinks did not commit all {total}:\n{}\n{}", ch.log(), s3.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    // The rows are exactly the events: the same set of ids, and one row per id once
    // ReplacingMergeTree has collapsed the copies a kill re-delivers (plain count() holds those
    // copies until a merge; FINAL is how every documented query reads the table).
    let in_ch: BTreeSet<String> = stack
        .ch
        .query("SELECT DISTINCT event_id FROM audit_events ORDER BY event_id")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(in_ch, ids, "ClickHouse holds exactly the published events");
    assert_eq!(stack.ch.query("SELECT count() FROM audit_events FINAL").trim(), total.to_string());
    assert_eq!(stack.ch.query("SELECT count() FROM canonical_events FINAL").trim(), total.to_string());
    let raw: usize = stack.ch.query("SELECT count() FROM audit_events").trim().parse().unwrap();
    // Copies a killed sink wrote twice are expected here (ReplacingMergeTree collapses them,
    // which FINAL above shows); the figure is printed, not asserted: `raw >= total` followed
    // from the FINAL count already.
    println!("audit_events: {raw} rows before merges for {total} events");

    let report = stack.wait_trail(total, Duration::from_secs(120));
    let (ok, report2) = stack.verify(&[]);
    // verify fails on an event id that appears twice in a tenant's chain.
    assert!(ok, "chain intact, no duplicates, counts match ClickHouse:\n{report2}\n{report}");
    let in_trail = crate::support::trail_events(&report2);
    assert_eq!(in_trail, total, "exactly once in the trail:\n{report2}");
}
