//! Failure paths that used to lose, stall or hang the loop, each reproduced here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::support::*;
use crate::common::kafka::{heavy, Broker, MapperProcess, AUDIT, CANONICAL, DLQ, GROUP, INPUT};

/// An unpacked detector's output with `n` labels of 64 characters each: the longest a label
/// no rule knows may be and still be recorded as it is (`labels::is_label_like`), so the
/// outputs are as large as such labels can make them (160 labels: a 35 kB canonical record;
/// 250: 54 kB).
fn wide_event(id: &str, n: usize) -> Value {
    let output: serde_json::Map<String, Value> =
        (0..n).map(|i| (format!("label_{i:03}_{}", "x".repeat(54)), json!(0.9))).collect();
    let mut e = crate::common::event_json(id, "inhouse-judge", Value::Object(output));
    e["tenant_id"] = json!("acme");
    e
}

/// One partition of 1,000 events with three poison records among them: one with more labels
/// than an event may carry, one whose canonical output is over the producer's
/// `message.max.bytes`, one whose output the broker refuses (over the topic's
/// `max.message.bytes`). The rest of the partition commits within seconds, each poison is in
/// the dead-letter topic once with its reason, and nothing else is.
#[test]
fn poison_records_go_to_the_dlq_and_the_rest_of_the_partition_commits() {
    let _heavy = heavy();
    let broker = Broker::start_empty();
    broker.create_topic(INPUT, 1);
    // The broker's own limit on the canonical topic: 30 kB per record batch.
    broker.create_topic_with(CANONICAL, 1, &[("max.message.bytes", "30000")]);
    broker.create_topic(crate::common::kafka::AUDIT, 1);
    broker.create_topic(DLQ, 1);
    let mix = pack_events();
    let poison: BTreeMap<i64, (&str, usize)> =
        [(300, ("too_many_labels", 300)), (600, ("output_too_large", 250)), (800, ("output_rejected", 160))].into();
    let events: Vec<Value> = (0..1000i64)
        .map(|i| match poison.get(&i) {
            Some((_, labels)) => wide_event(&format!("poison-{i}"), *labels),
            None => {
                let mut e = mix[i as usize % mix.len()].clone();
                e["event_id"] = json!(format!("ok-{i}"));
                e["tenant_id"] = json!("acme");
                e
            }
        })
        .collect();
    broker.produce(INPUT, &keyed(&events));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("settings.yaml");
    // The producer may send 50 kB records, in batches of 10 kB (so ordinary batches stay under
    // the topic's 30 kB): 160 labels (~40 kB) pass the producer and are refused by the broker.
    std::fs::write(&cfg, "kafka:\n  client:\n    message.max.bytes: \"50000\"\n    batch.size: \"10000\"\n").unwrap();
    let started = Instant::now();
    let mapper = MapperProcess::start(&broker, "poison", &[("LLAMA_MAPPER_CONFIG", cfg.to_str().unwrap())]);
    wait_inputs_committed(&broker, 1000, Duration::from_secs(60), &[&mapper]);
    println!("1000 inputs with 3 poison records committed {:?} after start", started.elapsed());

    let dlq = broker.read(DLQ, 3, Duration::from_secs(20));
    let got: BTreeMap<i64, String> =
        dlq.iter().map(|r| (r.source().1, r.headers["mapper.dlq.reason"].clone())).collect();
    let want: BTreeMap<i64, String> = poison.iter().map(|(o, (reason, _))| (*o, reason.to_string())).collect();
    assert_eq!(dlq.len(), 3, "one dead letter per poison record: {got:?}");
    assert_eq!(got, want);
    for r in &dlq {
        let (reason, error) = (&r.headers["mapper.dlq.reason"], &r.headers["mapper.dlq.error"]);
        let want = match reason.as_str() {
            "too_many_labels" => "the detector output holds 300 labels; at most 256 are mapped per event",
            "output_too_large" => "record would be",
            _ => "the broker refused the",
        };
        assert!(error.contains(want), "{reason}: {error}");
    }
    let canonical = broker.read(CANONICAL, 997, Duration::from_secs(20));
    let sources: Vec<i64> = canonical.iter().map(|r| r.source().1).collect();
    let expected: Vec<i64> = (0..1000).filter(|o| !poison.contains_key(o)).collect();
    assert_eq!(sources, expected, "every other record once, in order");
    let metrics = mapper.metrics();
    for reason in ["too_many_labels", "output_too_large", "output_rejected"] {
        let line = format!("mapper_dlq_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "{reason}:\n{metrics}");
    }
}

/// The broker process frozen (SIGSTOP) for 40 s in the middle of a wave: the loop does not
/// hang (every record commits once after the thaw), `/healthz` turns 503 while the batch
/// cannot commit, and a SIGTERM during a second freeze ends the process promptly.
#[test]
fn a_frozen_broker_neither_hangs_the_loop_nor_blocks_sigterm() {
    let _heavy = heavy();
    let broker = Broker::dedicated();
    let wave = |from: usize, n: usize| -> Vec<(String, Vec<u8>)> {
        let events: Vec<Value> = numbered_events("frozen", from..from + n, 12);
        keyed(&events)
    };
    const FIRST: usize = 20_000;
    let env = [("LLAMA_MAPPER_KAFKA__STALL_TIMEOUT_MS", "10000"), ("LLAMA_MAPPER_KAFKA__BATCH_SIZE", "500")];
    let mut mapper = MapperProcess::start(&broker, "frozen", &env);
    let producer = {
        let (brokers, topic, recs) = (broker.brokers(), broker.name(INPUT), wave(0, FIRST));
        std::thread::spawn(move || {
            for chunk in recs.chunks(2_000) {
                crate::common::kafka::produce_to(&brokers, &topic, chunk);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    wait_inputs_committed(&broker, 4_000, Duration::from_secs(120), &[&mapper]);
    producer.join().unwrap();
    broker.freeze();
    let frozen = Instant::now();
    let mut unhealthy = None;
    while frozen.elapsed() < Duration::from_secs(40) {
        if let Some((503, body)) = mapper.health() {
            unhealthy.get_or_insert((frozen.elapsed(), body));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    broker.thaw();
    let (after, body) = unhealthy.expect("/healthz stayed 200 through a 40 s freeze with work in flight");
    assert!(body.contains("stalled"), "{body}");
    println!("/healthz 503 {after:?} into the freeze: {}", body.trim());
    let thawed = Instant::now();
    // Within the transaction timeout (60 s) plus the wave itself at debug-build speed. When
    // the freeze caught `send_offsets_to_transaction`, librdkafka may never return from it
    // (confluentinc/librdkafka#5456): the mapper then exits with that reason after the
    // transaction timeout, as an orchestrator would see it, and its restart finishes the work.
    // Any other exit fails the test.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut restarts = 0;
    while broker.committed_inputs() < FIRST as i64 {
        if let Some(status) = mapper.child.try_wait().unwrap() {
            let log = mapper.log_text();
            assert!(
                !status.success() && log.contains("librdkafka is stuck in it"),
                "the mapper stopped after the thaw for another reason:\n{log}"
            );
            restarts += 1;
            assert!(restarts <= 2, "stuck again after {restarts} restarts:\n{log}");
            mapper = MapperProcess::start(&broker, "frozen", &env);
        }
        assert!(Instant::now() < deadline, "not all {FIRST} committed 240 s after the thaw\n{}", logs(&[&mapper]));
        std::thread::sleep(Duration::from_millis(300));
    }
    println!("all {FIRST} committed {:?} after the thaw ({restarts} restarts of a stuck process)", thawed.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    while mapper.health().map(|h| h.0) != Some(200) {
        assert!(Instant::now() < deadline, "/healthz did not recover after the thaw");
        std::thread::sleep(Duration::from_millis(200));
    }
    let canonical = broker.read(CANONICAL, FIRST, Duration::from_secs(30));
    let counts = count_ids(&canonical);
    assert_eq!(counts.len(), FIRST, "every event mapped");
    assert!(counts.values().all(|&c| c == 1), "none twice");

    // A second wave, the broker frozen under it, and SIGTERM while the loop waits on it.
    broker.produce(INPUT, &wave(FIRST, 5_000));
    std::thread::sleep(Duration::from_millis(300));
    broker.freeze();
    std::thread::sleep(Duration::from_secs(5));
    let asked = Instant::now();
    let exited = mapper.terminate_within(Duration::from_secs(20));
    let took = asked.elapsed();
    broker.thaw();
    assert!(exited.is_some(), "SIGTERM ignored for 20 s while the broker was frozen:\n{}", logs(&[&mapper]));
    assert!(exited.unwrap().success(), "a SIGTERM stop is a clean exit:\n{}", logs(&[&mapper]));
    println!("SIGTERM during a freeze: exited in {took:?}");
}

/// The group committed offset 4 000 on partition 0 of an input whose partition 0 holds a
/// few dozen records (a re-created topic, or records an unclean leader election dropped; the
/// checker once saw librdkafka go back to offset 0 after a broker restart). With librdkafka's
/// `auto.offset.reset=earliest` the mapper published those records again; now it stops with
/// what to do, nothing of partition 0 published and its committed offset untouched.
#[test]
fn librdkafka_never_moves_a_committed_partition_back_by_itself() {
    let broker = Broker::start_empty();
    broker.create_topic(INPUT, 2);
    broker.create_topic(CANONICAL, 1);
    broker.create_topic(crate::common::kafka::AUDIT, 1);
    broker.create_topic(DLQ, 1);
    let events: Vec<Value> = numbered_events("reset", 0..60, 7);
    broker.produce(INPUT, &keyed(&events));
    let input = broker.read_all(INPUT);
    let on_0 = input.iter().filter(|r| r.partition == 0).count();
    assert!(on_0 > 0, "some keys land on partition 0");
    // What the group committed before: partition 0 far past the log's end, partition 1 never.
    {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .set("group.id", broker.name(GROUP))
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&broker.name(INPUT), 0, Offset::Offset(4_000)).unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let mut mapper = MapperProcess::start(&broker, "reset", &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = mapper.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still running after 90 s:\n{}", logs(&[&mapper]));
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = mapper.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("past the end of its log (") && log.contains("--reset-offsets"), "{log}");
    let from_0 = broker.read_all(CANONICAL).iter().filter(|r| r.source().0 == 0).count();
    assert_eq!(from_0, 0, "partition 0's records were published again ({from_0} of {on_0})");
    let offsets = broker.group_offsets(GROUP, INPUT);
    assert_eq!(offsets.get(&0), Some(&4_000), "the committed offset stays where the group left it: {offsets:?}");
}

/// SIGTERM while a batch's deliveries hang: the mapper aborts the batch's transaction before
/// it exits. It used to leave it open, and Kafka then holds every `read_committed` reader of
/// the partitions that transaction touched at its first record until
/// `transaction.timeout.ms` (60 s): a rolling restart froze analytics and the sinks behind
/// records the partitions' next owner had already committed (CI saw it as 11 000 of 20 000
/// canonical records readable a minute after a clean scale-in).
///
/// The deliveries hang because the canonical topic does not exist yet (the broker creates
/// none on its own): librdkafka holds those records for `topic.metadata.propagation.max.ms`
/// (30 s), while the audit topic's records of the same transaction are written. (Two
/// in-sync replicas asked of a one-broker cluster do not hang it: Kafka 4 counts at most the
/// replication factor.)
#[test]
fn sigterm_mid_batch_aborts_the_transaction_so_readers_are_not_held() {
    let broker = Broker::start_empty();
    broker.create_topic(INPUT, 1);
    broker.create_topic(AUDIT, 1);
    broker.create_topic(DLQ, 1);
    const N: usize = 40;
    let events: Vec<Value> = numbered_events("held", 0..N, 0);
    broker.produce(INPUT, &keyed(&events));
    let mut first = MapperProcess::start(&broker, "first", &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let id = loop {
        if let Some((id, _)) = broker.transactions().into_iter().find(|(_, s)| s == "Ongoing") {
            break id;
        }
        assert!(Instant::now() < deadline, "no transaction went Ongoing:\n{}", logs(&[&first]));
        std::thread::sleep(Duration::from_millis(300));
    };
    // The audit records are written and the canonical ones refused: the batch is stuck.
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.read_uncommitted(AUDIT).len() < N {
        assert!(Instant::now() < deadline, "the transaction's audit records were never written");
    }
    assert!(first.terminate_within(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", first.log_text());
    let state = broker.transactions().into_iter().find(|(t, _)| *t == id).map(|(_, s)| s);
    assert!(
        matches!(state.as_deref(), Some("CompleteAbort" | "PrepareAbort")),
        "{id} left {state:?} after a clean stop"
    );
    assert!(first.log_text().contains("the batch in flight was aborted"), "{}", first.log_text());

    // The topic appears; the next instance maps the batch, and readers see it at once.
    broker.create_topic(CANONICAL, 1);
    let second = MapperProcess::start(&broker, "second", &[]);
    wait_inputs_committed(&broker, N as i64, Duration::from_secs(90), &[&second]);
    let committed = Instant::now();
    // Well inside the 60 s the broker would take to time the first transaction out.
    let audit = broker.read(AUDIT, N, Duration::from_secs(15));
    assert_eq!(
        audit.len(),
        N,
        "read_committed held {:?} after the commit:\n{}",
        committed.elapsed(),
        second.log_text()
    );
    assert_eq!(count_ids(&broker.read(CANONICAL, N, Duration::from_secs(15))).len(), N);
}
