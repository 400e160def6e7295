//! End-to-end: events/s and p50/p99 latency through `mapper run` on Apache Kafka (one local
//! broker, started by the harness unless `MAPPER_TEST_KAFKA` names one),
//! beside the raw broker's own consume+produce rate for the same messages in the same run.
//!
//! Run: `cargo bench --bench e2e` (after `scripts/install-stack.sh`); `-- --events N`;
//! `-- --guarantee at-least-once` for the other mode.
//!
//! Throughput: N events are produced first; the clock runs from the first committed batch to
//! the last (so the consumer-group join is not counted). Baseline: one rdkafka consumer reads
//! the same N records and an idempotent producer writes each payload twice, to two scratch
//! topics (the mapper writes a canonical and an audit record per input), awaiting every
//! delivery — the floor any Kafka processor pays, with no mapping and no transactions.
//! Latency: a second phase paces events into the running processor at 1 000, 5 000 and
//! 20 000 events/s offered (`-- --rates 1000,5000`), 3 s each, and measures input-produce →
//! committed canonical record seen by a read_committed consumer.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::kafka::{Broker, MapperProcess, CANONICAL, INPUT};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

fn main() {
    let n = common::events_arg(50_000);
    let broker = Broker::start();
    let mix = mix();
    let inputs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let mut e = mix[i % mix.len()].clone();
            e["event_id"] = json!(format!("bench-{i}"));
            e["tenant_id"] = json!(format!("tenant-{}", i % 24));
            (e["tenant_id"].as_str().unwrap().to_string(), e.to_string().into_bytes())
        })
        .collect();
    let bytes: usize = inputs.iter().map(|(_, v)| v.len()).sum();
    broker.produce(INPUT, &inputs);
    println!(
        "{n} events ({:.1} MB) of {} real-format examples, 6 partitions, Apache Kafka 4.4 on loopback",
        bytes as f64 / 1e6,
        mix.len()
    );

    let raw = raw_consume_produce(&broker, n);
    println!("raw broker consume+produce (rdkafka, no mapping):   {raw:>9.0} events/s");

    let guarantee = if std::env::args().any(|a| a == "at-least-once") { "at-least-once" } else { "exactly-once" };
    let mapper =
        MapperProcess::start(&broker, "bench", &[("RUST_LOG", "warn"), ("LLAMA_MAPPER_KAFKA__GUARANTEE", guarantee)]);
    let (first_at, first_n) = wait_committed(&broker, 1, Duration::from_secs(120));
    let (done_at, _) = wait_committed(&broker, n as i64, Duration::from_secs(1800));
    let mapped = (n as i64 - first_n) as f64 / done_at.duration_since(first_at).as_secs_f64();
    println!("mapper run, {guarantee:<13} (map+validate+publish): {mapped:>9.0} events/s");
    println!("ratio mapper / raw broker:                          {:>9.2}", mapped / raw);

    // Latency: paced input into the running processor, 3 s per rate.
    let args: Vec<String> = std::env::args().collect();
    let rates: Vec<u64> = args
        .iter()
        .position(|a| a == "--rates")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| vec![1_000, 5_000, 20_000], |s| s.split(',').filter_map(|r| r.parse().ok()).collect());
    for rate in rates {
        let paced = (rate * 3) as usize;
        let (p50, p99, max, seen) = paced_latency(&broker, &mix, paced, rate);
        println!(
            "latency at {rate:>6} events/s offered ({paced} events, {seen} seen): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
        );
    }
    println!("mapper RSS after the run: {} MB", mapper.rss_mb());
    drop(mapper);
}

fn mix() -> Vec<Value> {
    common::pack_cases()
        .into_iter()
        .map(|(det, output)| {
            let mut e = common::event_json("x", &det, output);
            e["content"] = json!("raw text the detector looked at, in memory only");
            e
        })
        .collect()
}

fn consumer(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap()
}

fn assign_all(c: &BaseConsumer, topic: &str, offset: Offset) {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), offset).unwrap();
    }
    c.assign(&tpl).unwrap();
}

fn raw_consume_produce(broker: &Broker, n: usize) -> f64 {
    broker.create_topic("bench.raw", 6);
    broker.create_topic("bench.raw2", 6);
    let (raw_topic, raw2) = (broker.name("bench.raw"), broker.name("bench.raw2"));
    let c = consumer(&broker.brokers(), &broker.name("bench-raw"));
    assign_all(&c, &broker.name(INPUT), Offset::Beginning);
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t = Instant::now();
    rt.block_on(async {
        let mut pending = Vec::new();
        let mut seen = 0;
        while seen < n {
            let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else { continue };
            seen += 1;
            for topic in [&raw_topic, &raw2] {
                let rec =
                    FutureRecord::to(topic).key(m.key().unwrap_or_default()).payload(m.payload().unwrap_or_default());
                pending.push(p.send_result(rec).map_err(|(e, _)| e).unwrap());
            }
            if pending.len() >= 10_000 {
                for f in pending.drain(..) {
                    f.await.unwrap().unwrap();
                }
            }
        }
        for f in pending {
            f.await.unwrap().unwrap();
        }
    });
    n as f64 / t.elapsed().as_secs_f64()
}

/// Polls the mapper group's committed input offsets until they reach `n`.
fn wait_committed(broker: &Broker, n: i64, timeout: Duration) -> (Instant, i64) {
    let deadline = Instant::now() + timeout;
    loop {
        let sum = broker.committed_inputs();
        if sum >= n {
            return (Instant::now(), sum);
        }
        assert!(Instant::now() < deadline, "mapper did not reach {n} committed inputs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// p50, p99 and max latency in ms, and how many of the `count` events were seen.
fn paced_latency(broker: &Broker, mix: &[Value], count: usize, rate: u64) -> (f64, f64, f64, usize) {
    let c = consumer(&broker.brokers(), &broker.name("bench-latency"));
    assign_all(&c, &broker.name(CANONICAL), Offset::End);
    let input = broker.name(INPUT);
    std::thread::sleep(Duration::from_secs(1));
    let p: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", broker.brokers()).set("linger.ms", "0").create().unwrap();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut next = 0usize;
    let deadline = start + Duration::from_secs(count as u64 / rate + 60);
    while lat.len() < count && Instant::now() < deadline {
        while next < count && start + interval * next as u32 <= Instant::now() {
            let mut e = mix[next % mix.len()].clone();
            let id = format!("lat-{rate}-{next}");
            let tenant = format!("tenant-{}", next % 24);
            e["event_id"] = json!(id);
            e["tenant_id"] = json!(tenant);
            let payload = e.to_string();
            // Delivery is observed through the output topic; the future itself is not needed.
            drop(p.send_result(FutureRecord::to(&input).key(&tenant).payload(&payload)).map_err(|(e, _)| e).unwrap());
            sent.insert(id, Instant::now());
            next += 1;
        }
        while let Some(Ok(m)) = c.poll(Duration::ZERO) {
            let id = m
                .headers()
                .and_then(|h| h.iter().find(|x| x.key == "mapper.event-id").and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).into_owned());
            if let Some(t) = id.and_then(|id| sent.get(&id)) {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    lat.sort_by(f64::total_cmp);
    let q = |x: f64| lat[((lat.len() as f64 - 1.0) * x) as usize];
    (q(0.5), q(0.99), *lat.last().unwrap(), lat.len())
}
