use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::*;
use crate::common::kafka::{Broker, MapperProcess, CANONICAL, INPUT};

const EVENTS: usize = 20_000;

/// Two instances in one group split the partitions; one is stopped halfway (SIGTERM, a clean
/// leave) and the other takes its partitions over. Together they map every event exactly once.
#[test]
fn two_instances_share_the_work_and_survive_one_stopping() {
    let _heavy = crate::common::kafka::heavy();
    let broker = Broker::start();
    let events: Vec<Value> = numbered_events("scale", 0..EVENTS, 12);
    let inputs = keyed(&events);
    let mut a = MapperProcess::start(&broker, "a", &[]);
    let b = MapperProcess::start(&broker, "b", &[]);
    // The work arrives only once both hold partitions: produced earlier, the first to join
    // mapped all of it before the second's join (one CI run: `a` never got a partition).
    // The second to join is assigned only in the group's new generation, in which the first
    // has its share too (eager rebalancing), so its line means both have partitions.
    wait_joined(&[&a, &b]);
    broker.produce(INPUT, &inputs[..EVENTS / 2]);
    wait_inputs_committed(&broker, EVENTS as i64 / 4, Duration::from_secs(300), &[&a, &b]);
    assert!(a.terminate().success(), "SIGTERM ends the instance cleanly:\n{}", a.log_text());
    assert!(a.log_text().contains("mapper run stopped"));
    broker.produce(INPUT, &inputs[EVENTS / 2..]);
    wait_inputs_committed(&broker, EVENTS as i64, Duration::from_secs(300), &[&b]);
    let canonical = wait_committed(&broker, CANONICAL, EVENTS, Duration::from_secs(60), &[&b]);

    let counts = count_ids(&canonical);
    assert_eq!(counts.len(), EVENTS, "every event mapped");
    assert!(counts.values().all(|&c| c == 1), "none twice");
    // Both instances committed transactions under their own transactional ids.
    let ids: BTreeSet<String> = broker.transactions().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2, "both instances produced: {ids:?}");
    let la = a.log_text();
    assert!(la.contains("partitions assigned"), "{la}");
    assert!(b.log_text().matches("partitions assigned").count() >= 2, "b was reassigned a's partitions");
}

/// Two instances started with one `--instance-id` share one transactional id: the second's
/// start fences the first, whose next transaction fails; it stops with the remedy in its log,
/// and the survivor maps every event, none twice (the fenced one can write nothing more).
#[test]
fn a_second_instance_with_the_same_id_fences_the_first() {
    let broker = Broker::start();
    let events: Vec<Value> = numbered_events("fence", 0..4_000, 12);
    let inputs = keyed(&events);
    broker.produce(INPUT, &inputs[..2_000]);
    let mut first = MapperProcess::start(&broker, "same", &[]);
    wait_inputs_committed(&broker, 2_000, Duration::from_secs(120), &[&first]);
    let second = MapperProcess::start(&broker, "same", &[]);
    wait_joined(&[&second]);
    // Work for both: the first meets the fence on its next transaction.
    broker.produce(INPUT, &inputs[2_000..]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = first.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the fenced instance is still running:\n{}", logs(&[&first, &second]));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success(), "a fenced instance exits with an error");
    assert!(
        first.log_text().contains("fenced: another instance runs with this one's transactional id"),
        "{}",
        first.log_text()
    );
    wait_inputs_committed(&broker, 4_000, Duration::from_secs(120), &[&second]);
    let counts = count_ids(&wait_committed(&broker, CANONICAL, 4_000, Duration::from_secs(60), &[&second]));
    assert_eq!(counts.len(), 4_000, "every event mapped");
    assert!(counts.values().all(|&c| c == 1), "none twice");
}

/// A rebalance while a batch is being collected: the half-built batch is dropped (never
/// committed across the rebalance) and read again, by whichever instance owns each partition
/// afterwards. The first instance lingers 8 s per batch (closing a batch on an idle stream
/// is off), so the second one's join lands inside a batch; records keep arriving throughout. Every event is mapped once.
#[test]
fn a_rebalance_mid_batch_drops_the_batch_and_loses_nothing() {
    let broker = Broker::start();
    const N: usize = 1_200;
    let events: Vec<Value> = numbered_events("rebal", 0..N, 12);
    let inputs = keyed(&events);
    let env = [
        ("LLAMA_MAPPER_KAFKA__BATCH_TIMEOUT_MS", "8000"),
        ("LLAMA_MAPPER_KAFKA__BATCH_IDLE_MS", "0"),
        ("LLAMA_MAPPER_KAFKA__BATCH_SIZE", "100000"),
    ];
    let first = MapperProcess::start(&broker, "linger-a", &env);
    wait_joined(&[&first]);
    // A first batch commits, so every partition has a committed offset: a partition without
    // one is resumed at its beginning by another path (`offsets::resume`), which drops the
    // batch as well and would hide the one under test.
    broker.produce(INPUT, &inputs[..120]);
    wait_inputs_committed(&broker, 120, Duration::from_secs(60), &[&first]);
    let trickle = {
        let (brokers, topic, recs) = (broker.brokers(), broker.name(INPUT), inputs[120..].to_vec());
        std::thread::spawn(move || {
            for chunk in recs.chunks(40) {
                crate::common::kafka::produce_to(&brokers, &topic, chunk);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let second = MapperProcess::start(&broker, "linger-b", &env);
    trickle.join().unwrap();
    wait_inputs_committed(&broker, N as i64, Duration::from_secs(120), &[&first, &second]);
    let dropped: Vec<u64> = first
        .log_text()
        .lines()
        // Either path drops it: the revocation seen between records, or a newly assigned
        // partition librdkafka could not continue (every partition is then re-assigned).
        .filter(|l| {
            l.contains("rebalance while collecting") || l.contains("could not continue: starting the batch again")
        })
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["fields"]["dropped"].as_u64())
        .collect();
    assert!(dropped.iter().any(|&d| d > 0), "no batch was dropped at the rebalance: {dropped:?}\n{}", first.log_text());
    let counts = count_ids(&wait_committed(&broker, CANONICAL, N, Duration::from_secs(60), &[&first, &second]));
    assert_eq!(counts.len(), N, "every event mapped");
    assert!(counts.values().all(|&c| c == 1), "none twice");
}
