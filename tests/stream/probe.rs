use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::common::kafka::Broker;
use crate::common::rawlog;

/// The marker reader sees what the broker wrote: one committed and one aborted transaction.
#[test]
fn raw_log_reader_resolves_commit_and_abort_markers() {
    let b = Broker::start();
    b.create_topic("probe", 1);
    let p: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", b.brokers()).set("transactional.id", "probe-tx").create().unwrap();
    p.init_transactions(Duration::from_secs(10)).unwrap();
    for (n, commit) in [(3, true), (2, false), (4, true)] {
        p.begin_transaction().unwrap();
        for i in 0..n {
            p.send(BaseRecord::to("probe").key("k").payload(&format!("{commit}-{i}"))).unwrap();
        }
        p.flush(Duration::from_secs(10)).unwrap();
        if commit {
            p.commit_transaction(Duration::from_secs(10)).unwrap();
        } else {
            p.abort_transaction(Duration::from_secs(10)).unwrap();
        }
    }
    let r = rawlog::read_partition(b.port, "probe", 0);
    assert_eq!((r.commit_markers, r.abort_markers), (2, 1));
    assert_eq!(r.committed.len(), 7);
    assert_eq!(r.aborted.len(), 2);
    assert!(r.aborted.iter().all(|x| x.value.as_deref().unwrap().starts_with(b"false")));
    // And the broker bug this reader works around: read_committed still returns aborted records.
    let leaked = b.read("probe", 9, Duration::from_secs(5)).len();
    println!("read_committed returned {leaked} records (7 committed, 2 aborted)");
}
