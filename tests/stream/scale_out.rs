use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::support::*;
use crate::common::kafka::{Broker, MapperProcess, CANONICAL, INPUT};

const EVENTS: usize = 20_000;

/// Two instances in one group split the partitions; one is stopped halfway (SIGTERM, a clean
/// leave) and the other takes its partitions over. Together they map every event exactly once.
#[test]
fn two_instances_share_the_work_and_survive_one_stopping() {
    let _heavy = crate::common::kafka::heavy();
    let broker = Broker::start();
    let mix = pack_events();
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let mut e = mix[i % mix.len()].clone();
            e["event_id"] = json!(format!("scale-{i}"));
            e["tenant_id"] = json!(format!("tenant-{}", i % 12));
            e
        })
        .collect();
    let inputs = keyed(&events);
    broker.produce(INPUT, &inputs[..EVENTS / 2]);
    let mut a = MapperProcess::start(&broker, "a", &[]);
    let b = MapperProcess::start(&broker, "b", &[]);
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
    let mix = pack_events();
    let events: Vec<Value> = (0..4_000)
        .map(|i| {
            let mut e = mix[i % mix.len()].clone();
            e["event_id"] = json!(format!("fence-{i}"));
            e["tenant_id"] = json!(format!("tenant-{}", i % 12));
            e
        })
        .collect();
    let inputs = keyed(&events);
    broker.produce(INPUT, &inputs[..2_000]);
    let mut first = MapperProcess::start(&broker, "same", &[]);
    wait_inputs_committed(&broker, 2_000, Duration::from_secs(120), &[&first]);
    let second = MapperProcess::start(&broker, "same", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !second.log_text().contains("partitions assigned") {
        assert!(Instant::now() < deadline, "the second instance never joined:\n{}", second.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
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
