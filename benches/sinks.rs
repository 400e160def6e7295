//! The sinks' throughput on this machine: rows/s into ClickHouse and events/s sealed into S3
//! trail segments, first through the library (the store alone), then through the sink
//! processes (`mapper sink clickhouse|s3`: Kafka in, store out, offsets committed).
//!
//! Run: `cargo bench --bench sinks` (after `scripts/install-stack.sh`); `-- --events N`.
//! The stores are the test stack's: chdb behind the HTTP test front, SeaweedFS on loopback.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/sinks/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use llama_mapper::contracts::AuditEvent;
use llama_mapper::sinks::clickhouse::rows::AuditRow;
use llama_mapper::sinks::s3_worm::TrailWriter;
use llama_mapper::trail::TrailStore;

use common::kafka::AUDIT;
use support::{mapped_events, Stack};

fn main() {
    let n = common::events_arg(50_000);
    let tenants: Vec<String> = (0..24).map(|i| format!("tenant-{i}")).collect();
    let tenant_refs: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let stack = Stack::start();
    let (_, audit_json) = mapped_events("bench", n, &tenant_refs);
    let audit: Vec<AuditEvent> = audit_json.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
    let bytes: usize = audit_json.iter().map(|v| v.to_string().len()).sum();
    println!("{n} audit events ({:.1} MB as JSON), 24 tenants, stores on loopback", bytes as f64 / 1e6);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    // ClickHouse through the library: batches of 5000 rows, LZ4 RowBinary.
    let settings = llama_mapper::config::ClickHouseSettings { url: stack.ch.url(), ..Default::default() };
    let client = llama_mapper::sinks::clickhouse::client(&settings);
    let rows: Vec<AuditRow> = audit.iter().map(|e| AuditRow::from_event(e).unwrap()).collect();
    let t = Instant::now();
    rt.block_on(async {
        for chunk in rows.chunks(5000) {
            let mut ins = client.insert::<AuditRow>("audit_events").await.unwrap();
            for r in chunk {
                ins.write(r).await.unwrap();
            }
            ins.end().await.unwrap();
        }
    });
    let ch_lib = n as f64 / t.elapsed().as_secs_f64();
    println!("ClickHouse insert (library, 5000-row batches):       {ch_lib:>9.0} rows/s");
    stack.ch.query("TRUNCATE TABLE audit_events");

    // The trail through the library: per batch of 5000 events, one segment per tenant.
    let s3 = llama_mapper::config::S3Settings { prefix: "libbench".into(), ..stack.s3_settings() };
    let key = llama_mapper::trail::read_signing_key(&stack.key_file()).unwrap();
    let mut writer = TrailWriter::new(TrailStore::new(&s3).unwrap(), key);
    let t = Instant::now();
    let mut segments = 0;
    rt.block_on(async {
        for (b, chunk) in audit.chunks(5000).enumerate() {
            let mut by_tenant: BTreeMap<&str, Vec<(String, i64, AuditEvent)>> = BTreeMap::new();
            for (i, e) in chunk.iter().enumerate() {
                by_tenant.entry(e.tenant_id.as_str()).or_default().push((
                    "bench/0".into(),
                    (b * 5000 + i) as i64,
                    e.clone(),
                ));
            }
            for (tenant, events) in &by_tenant {
                writer.append(tenant, events).await.unwrap();
                segments += 1;
            }
        }
    });
    let s3_lib = n as f64 / t.elapsed().as_secs_f64();
    println!("S3 trail (library, {segments} signed segments, Object Lock): {s3_lib:>9.0} events/s");

    // Through the sink processes: Kafka → store, offsets committed after each batch.
    let recs: Vec<(String, Vec<u8>)> =
        audit_json.iter().map(|v| (v["tenant_id"].as_str().unwrap().to_string(), v.to_string().into_bytes())).collect();
    stack.broker.produce(AUDIT, &recs);
    let big_batches = [("LLAMA_MAPPER_SINK__BATCH_SIZE", "5000"), ("RUST_LOG", "warn")];
    for (which, group) in [("clickhouse", "llama-mapper-sink-clickhouse"), ("s3", "llama-mapper-sink-s3")] {
        let t = Instant::now();
        let sink = support::SinkProcess::start(&stack, which, &big_batches);
        let (first_at, first_n) = wait_committed(&stack, group, 1, &sink);
        let end = wait_committed(&stack, group, n as i64, &sink).0;
        let total = n as f64 / (end - t).as_secs_f64();
        let steady = (n as i64 - first_n) as f64 / (end - first_at).as_secs_f64();
        println!(
            "mapper sink {which:<10} (Kafka → store, committed): {steady:>9.0} events/s steady, {total:.0} incl. start and group join"
        );
    }
    let report = stack.wait_trail(n, Duration::from_secs(60));
    assert!(report.contains("0 problems"), "{report}");
}

/// Waits until `group` has committed at least `want` audit-topic offsets; returns when, and how many.
fn wait_committed(stack: &Stack, group: &str, want: i64, sink: &support::SinkProcess) -> (Instant, i64) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let got = stack.broker.committed(group, AUDIT, 6);
        if got >= want {
            return (Instant::now(), got);
        }
        assert!(Instant::now() < deadline, "{group} committed {got} of {want}:\n{}", sink.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}
