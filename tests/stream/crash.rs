use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::support::*;
use crate::common::kafka::{Broker, MapperProcess, AUDIT, CANONICAL, INPUT};

const EVENTS: usize = 100_000;

/// 100k events stream in while the processor is `kill -9`ed again and again. After the last
/// restart, every input event_id is in the committed canonical (and audit) output exactly
/// once. "Committed" is decided from the transaction markers in the log (see
/// `common/rawlog.rs`): tansu's read_committed fetch would also return aborted records.
#[test]
fn kill_dash_nine_repeatedly_loses_nothing_and_duplicates_nothing() {
    let broker = Broker::start();
    let mix = pack_events();
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let mut e = mix[i % mix.len()].clone();
            e["event_id"] = json!(format!("crash-{i}"));
            e
        })
        .collect();
    let inputs = keyed(&events);
    // Stream the input in while the processor runs and dies.
    let producer = {
        let port = broker.port;
        std::thread::spawn(move || {
            let b = BrokerRef(port);
            for chunk in inputs.chunks(10_000) {
                b.produce(chunk);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let mut kills = 0;
    let mut mapper = MapperProcess::start(&broker, "crash", &[]);
    let start = Instant::now();
    while kills < 4 {
        std::thread::sleep(Duration::from_millis(3500 + 700 * kills as u64));
        mapper.kill9();
        kills += 1;
        mapper = MapperProcess::start(&broker, "crash", &[]);
    }
    producer.join().unwrap();
    wait_inputs_committed(&broker, EVENTS as i64, Duration::from_secs(600), &[&mapper]);
    let canonical = committed(&broker, CANONICAL, 6);
    let audit = committed(&broker, AUDIT, 6);
    let aborted: usize =
        (0..6).map(|p| crate::common::rawlog::read_partition(broker.port, CANONICAL, p).aborted.len()).sum();
    println!(
        "{kills} kills, {:?}; committed canonical {}, aborted (leaked by read_committed) {aborted}",
        start.elapsed(),
        canonical.len()
    );

    for (name, recs) in [("canonical", &canonical), ("audit", &audit)] {
        let counts = count_ids(recs);
        let dup: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).take(5).collect();
        assert!(dup.is_empty(), "{name}: duplicated event_ids, e.g. {dup:?}");
        let missing: Vec<_> =
            (0..EVENTS).map(|i| format!("crash-{i}")).filter(|id| !counts.contains_key(id)).take(5).collect();
        assert!(missing.is_empty(), "{name}: lost event_ids, e.g. {missing:?}");
        assert_eq!(counts.len(), EVENTS);
    }
}

/// A producer handle that does not own the broker.
struct BrokerRef(u16);

impl BrokerRef {
    fn produce(&self, records: &[(String, Vec<u8>)]) {
        crate::common::kafka::produce_to(&format!("127.0.0.1:{}", self.0), INPUT, records);
    }
}
