use std::collections::BTreeMap;
use std::time::Duration;

use llama_mapper::ingest::avro_wire;
use serde_json::{json, Value};

use super::support::*;
use crate::common::kafka::{Broker, MapperProcess, AUDIT, CANONICAL, DLQ, INPUT};

/// Every real-format event of the 16 packs in → exactly the canonical and audit events that
/// the mapping core produces for it; bad inputs → DLQ with the right reason; no raw content
/// anywhere (topics, logs, metrics).
#[test]
fn every_pack_event_maps_exactly_once_and_bad_input_goes_to_the_dlq() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("settings.yaml");
    std::fs::write(
        &cfg,
        "ingest:\n  known_tenants_only: true\n  max_event_bytes: 65536\ntenants:\n  acme: {}\n  globex: {}\n  initech: {}\n",
    )
    .unwrap();
    let events = pack_events();
    let mut inputs = keyed(&events);
    // Four Avro-encoded events (Confluent framing, schema id 1 = schemas/detector-event.avsc).
    let avro_events: Vec<Value> = events
        .iter()
        .take(4)
        .map(|e| {
            let mut e = e.clone();
            e["event_id"] = json!(format!("avro-{}", e["event_id"].as_str().unwrap()));
            e
        })
        .collect();
    for e in &avro_events {
        inputs.push((e["tenant_id"].as_str().unwrap().into(), avro_wire::encode_detector_event(e, 1).unwrap()));
    }
    // Bad inputs, each with the canary inside.
    let mut unknown_tenant = events[0].clone();
    unknown_tenant["tenant_id"] = json!("umbrella");
    unknown_tenant["event_id"] = json!("bad-tenant");
    let mut schema_invalid = events[1].clone();
    schema_invalid["event_id"] = json!("bad-schema");
    schema_invalid.as_object_mut().unwrap().remove("ts");
    let mut oversized = events[2].clone();
    oversized["event_id"] = json!("bad-size");
    oversized["content"] = json!(format!("{CANARY} {}", "x".repeat(70_000)));
    let bad = vec![
        ("acme".to_string(), format!("{{\"content\": \"{CANARY}\", not json").into_bytes()),
        ("umbrella".to_string(), unknown_tenant.to_string().into_bytes()),
        ("acme".to_string(), schema_invalid.to_string().into_bytes()),
        ("acme".to_string(), oversized.to_string().into_bytes()),
    ];
    inputs.extend(bad);
    broker.produce(INPUT, &inputs);

    let cfg_s = cfg.to_str().unwrap();
    let mapper = MapperProcess::start(&broker, "e2e", &[("LLAMA_MAPPER_CONFIG", cfg_s), ("RUST_LOG", "trace")]);
    let n = events.len() + avro_events.len();
    wait_inputs_committed(&broker, inputs.len() as i64, Duration::from_secs(120), &[&mapper]);
    let canonical = wait_committed(&broker, CANONICAL, n, Duration::from_secs(30), &[&mapper]);
    let audit = wait_committed(&broker, AUDIT, n, Duration::from_secs(30), &[&mapper]);
    let dlq = wait_committed(&broker, DLQ, 4, Duration::from_secs(30), &[&mapper]);
    let input_records = broker.read_all(INPUT);
    assert_eq!(input_records.len(), inputs.len());
    assert_eq!(dlq.len(), 4, "one dead letter per bad input, none twice");

    // Exactly the outputs of the mapping core, once each.
    let pipeline = crate::common::pipeline();
    let mut expected: BTreeMap<String, (Value, Value)> = BTreeMap::new();
    for e in events.iter().chain(&avro_events) {
        let ev = serde_json::from_value(e.clone()).unwrap();
        let m = pipeline.map_batch(&[ev]).pop().unwrap().unwrap();
        expected.insert(e["event_id"].as_str().unwrap().to_string(), (m.canonical_json, m.audit_json));
    }
    assert_eq!(canonical.len(), n, "one canonical event per valid input");
    assert_eq!(audit.len(), n, "one audit event per valid input");
    for r in &canonical {
        let v = r.json();
        let id = v["event_id"].as_str().unwrap();
        assert_eq!(&v, &expected[id].0, "canonical event of {id}");
        assert_eq!(r.key.as_deref(), Some(v["provenance"]["tenant_id"].as_str().unwrap()), "keyed by tenant");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["mapper.schema"], "canonical-event/1.0");
    }
    for r in &audit {
        let v = r.json();
        assert_eq!(&v, &expected[v["event_id"].as_str().unwrap()].1);
    }
    let audit_ids: std::collections::BTreeSet<String> =
        audit.iter().map(|r| r.json()["event_id"].as_str().unwrap().to_string()).collect();
    assert!(audit_ids.iter().eq(expected.keys()), "one audit event per input, none missing, none twice");
    assert!(count_ids(&canonical).values().all(|&c| c == 1));

    // Dead letters: each reason once, with source coordinates, and no raw content.
    let reasons: BTreeMap<String, &crate::common::kafka::Record> =
        dlq.iter().map(|r| (r.headers["mapper.dlq.reason"].clone(), r)).collect();
    assert_eq!(
        reasons.keys().map(String::as_str).collect::<Vec<_>>(),
        ["oversized", "schema_invalid", "undecodable", "unknown_tenant"]
    );
    // Each dead letter points at its input and proves which one it was: source coordinates,
    // the payload's size and SHA-256 (computed here from what Kafka's consumer read back),
    // and the input's key.
    let input_log: BTreeMap<(i32, i64), &crate::common::kafka::Record> =
        input_records.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for r in &dlq {
        assert_eq!(r.headers["mapper.source.topic"], broker.name(INPUT));
        let at =
            (r.headers["mapper.source.partition"].parse().unwrap(), r.headers["mapper.source.offset"].parse().unwrap());
        let src = input_log.get(&at).unwrap_or_else(|| panic!("no input at {at:?}"));
        let payload = src.value.as_deref().unwrap_or_default();
        assert_eq!(r.headers["mapper.payload.bytes"], payload.len().to_string());
        use sha2::Digest as _;
        assert_eq!(r.headers["mapper.payload.sha256"], hex::encode(sha2::Sha256::digest(payload)));
        assert_eq!(r.key, src.key, "keyed as it came");
    }
    let schema_bad = reasons["schema_invalid"].json();
    assert_eq!(schema_bad["event_id"], "bad-schema", "a parseable reject keeps its fields");
    assert!(schema_bad.get("content").is_none(), "but not its content");
    assert!(reasons["schema_invalid"].headers["mapper.dlq.error"].contains("ts"));
    assert!(reasons["undecodable"].value.is_none());

    // Canary: no topic, log line or metric carries raw content.
    for topic in [CANONICAL, AUDIT, DLQ] {
        for r in broker.read_uncommitted(topic) {
            let text = format!("{:?}{:?}", String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()), r.headers);
            assert!(!text.contains(CANARY) && !text.contains("078-05-1120"), "raw content in {topic}: {text}");
        }
    }
    let ready = crate::common::kafka::http_get(mapper.port(), "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready\n"), "joined, so ready: {ready}");
    let metrics = mapper.metrics();
    assert!(!metrics.contains(CANARY));
    assert_eq!(metric(&metrics, "mapper_events_in_total"), inputs.len() as f64, "{metrics}");
    assert_eq!(metric(&metrics, "mapper_events_out_total"), n as f64, "canonical events over all routes");
    for reason in ["oversized", "schema_invalid", "undecodable", "unknown_tenant"] {
        assert_eq!(metric(&metrics, &format!("mapper_dlq_total{{reason=\"{reason}\"}}")), 1.0, "{metrics}");
    }
    assert_eq!(metric(&metrics, "mapper_dlq_total"), 4.0, "{metrics}");
    assert!(metric(&metrics, "mapper_transactions_total{outcome=\"commit\"}") >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "mapper_transactions_total{outcome=\"abort\"}"), 0.0, "{metrics}");
    // Rules-only here (the model path is off by default), and the scrape says so.
    assert!(metrics.contains("mapper_model_loaded 0"), "{metrics}");
    assert!(metrics.contains("mapper_model_labels_total{outcome=\"answered\"} 0"), "{metrics}");
    let log = mapper.log_text();
    assert!(log.contains("\"offset\""), "logs carry offsets");
    // Every level was on (the canary check below means something): the per-batch debug
    // line and trace lines of the libraries the records pass through.
    assert!(log.contains("\"batch committed\""), "debug lines in the log");
    let trace = log.lines().filter(|l| l.contains("\"level\":\"TRACE\"")).count();
    assert!(trace > 0, "trace lines in the log");
    println!("log at trace: {} lines, {trace} of them trace", log.lines().count());
    assert!(!log.contains(CANARY), "raw content in the log");
}

/// The sum of the samples of a Prometheus text exposition whose name (with labels, when
/// `series` has them) is `series`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| *name == series || (!series.contains('{') && name.split('{').next() == Some(series)))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}
