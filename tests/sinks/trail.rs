//! Input topic → `mapper run` → both sinks → ClickHouse rows and S3 segments; `verify` passes
//! and names every kind of tampering; `replay` rebuilds identical auditor answers.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

use crate::common::kafka::{MapperProcess, INPUT};
use crate::support::{mapped_events, rt, Stack};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// The auditors' questions (README), answered from the pre-aggregated tables and the rows.
fn auditor_answers(stack: &Stack) -> String {
    [
        "SELECT tenant_id, day, control, uniqExactMerge(events) FROM incidents_by_control_day \
         GROUP BY tenant_id, day, control ORDER BY tenant_id, day, control",
        "SELECT tenant_id, detector, uniqExactMerge(events), max(last_seen) FROM detector_coverage_day \
         GROUP BY tenant_id, detector ORDER BY tenant_id, detector",
        "SELECT tenant_id, event_id, ts, labels, controls, event FROM audit_events FINAL ORDER BY tenant_id, event_id",
    ]
    .iter()
    .map(|q| stack.ch.query(q))
    .collect::<Vec<_>>()
    .join("\n--\n")
}

fn gunzip(b: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(b).read_to_string(&mut s).unwrap();
    s
}

fn gzip(s: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(s.as_bytes()).unwrap();
    e.finish().unwrap()
}

#[test]
fn events_flow_to_clickhouse_and_a_verifiable_trail_that_replays_and_exposes_tampering() {
    let stack = Stack::start();
    let env = stack.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _mapper = MapperProcess::start(&stack.broker, "e2e", &env_refs);
    let ch_sink = stack.sink("clickhouse");
    let s3_sink = stack.sink("s3");

    // Three rounds, so that each tenant's chain has several segments.
    let mut total = 0;
    for round in 0..3 {
        let (canonical, _) = mapped_events(&format!("r{round}"), 120, &TENANTS);
        let inputs: Vec<(String, Vec<u8>)> = (0..120)
            .map(|i| {
                let (det, output) = &crate::common::pack_cases()[i % crate::common::pack_cases().len()];
                let mut e = crate::common::event_json(&format!("r{round}-{i}"), det, output.clone());
                e["tenant_id"] = Value::from(TENANTS[i % 3]);
                e["ts"] = canonical[i]["provenance"]["ts"].clone();
                (TENANTS[i % 3].to_string(), serde_json::to_vec(&e).unwrap())
            })
            .collect();
        stack.broker.produce(INPUT, &inputs);
        total += inputs.len();
        stack.wait_trail(total, Duration::from_secs(120));
    }
    stack.wait_ch("audit_events", total, Duration::from_secs(60), &[&ch_sink]);
    stack.wait_ch("canonical_events", total, Duration::from_secs(60), &[&ch_sink]);

    let (ok, report) = stack.verify(&[]);
    assert!(ok, "verify with ClickHouse cross-check and retention:\n{report}");
    for t in TENANTS {
        assert!(report.contains(&format!("OK tenant {t}: ")), "{report}");
        assert!(stack.segment_keys(t).len() >= 3, "{t}: one segment per round at least");
    }
    assert!(report.contains(&format!("ClickHouse {}", total / 3)), "cross-check counted: {report}");
    assert!(
        !ch_sink.log().contains("ERROR") && !s3_sink.log().contains("ERROR"),
        "{}\n{}",
        ch_sink.log(),
        s3_sink.log()
    );

    // Event sourcing: drop the projection, rebuild it from the trail alone, same answers.
    let before = auditor_answers(&stack);
    assert!(before.contains("SOC2:"), "the auditor queries have something to compare: {before}");
    drop(ch_sink);
    let out = stack.mapper(&["replay", "--truncate", "--no-progress"]);
    assert!(out.status.success(), "{}", crate::support::text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("replayed {total} events")));
    assert_eq!(auditor_answers(&stack), before, "replay reproduces the auditors' answers");

    // A one-byte edit inside one event of acme's second segment.
    let acme = stack.segment_keys("acme");
    let text = gunzip(&stack.get(&acme[1]));
    let victim_line = text.lines().nth(3).unwrap().to_string();
    let victim_id = serde_json::from_str::<Value>(&victim_line).unwrap()["event_id"].as_str().unwrap().to_string();
    let edited =
        text.replacen(&victim_line, &victim_line.replacen("\"tenant_id\":\"acme\"", "\"tenant_id\":\"acmf\"", 1), 1);
    assert_ne!(edited, text);
    stack.overwrite(&acme[1], gzip(&edited));

    // globex: delete the middle segment (every version, bypassing governance retention).
    let globex = stack.segment_keys("globex");
    let c = stack.s3_client();
    rt().block_on(async {
        let versions = c.list_object_versions().bucket(&stack.bucket).prefix(&globex[1]).send().await.unwrap();
        for v in versions.versions() {
            c.delete_object()
                .bucket(&stack.bucket)
                .key(&globex[1])
                .version_id(v.version_id().unwrap())
                .bypass_governance_retention(true)
                .send()
                .await
                .unwrap_or_else(|e| panic!("governance delete: {e:?}"));
        }
    });

    // initech: swap the first two segments.
    let initech = stack.segment_keys("initech");
    let (a, b) = (stack.get(&initech[0]), stack.get(&initech[1]));
    stack.overwrite(&initech[0], b);
    stack.overwrite(&initech[1], a);

    let (ok, report) = stack.verify(&["--no-clickhouse"]);
    assert!(!ok, "tampering must fail verification:\n{report}");
    let line_of =
        |needle: &str| report.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in:\n{report}"));
    let edit = line_of(&format!("event_id {victim_id}"));
    assert!(edit.contains(&acme[1]) && edit.contains("altered"), "{edit}");
    // Overwrites are visible: exactly the three overwritten keys are reported as such.
    let overwritten: Vec<&str> = report.lines().filter(|l| l.contains("more than one version")).collect();
    assert_eq!(overwritten.len(), 3, "{report}");
    for key in [&acme[1], &initech[0], &initech[1]] {
        assert!(overwritten.iter().any(|l| l.contains(key.as_str())), "{key} not reported overwritten:\n{report}");
    }
    let gap = line_of("missing");
    assert!(gap.contains(&globex[2]) && gap.contains("segments 2..=2 are missing"), "{gap}");
    let swapped = line_of("reordered");
    assert!(swapped.contains(&initech[0]) && swapped.contains("header says seq 2"), "{swapped}");

    // One tenant's auditor verifies only that tenant, and a clean tenant still passes alone.
    let (ok, report) = stack.verify(&["--tenant", "acme", "--no-clickhouse"]);
    assert!(!ok && !report.contains("globex") && !report.contains("initech"), "{report}");
    assert!(
        report.contains(&format!("event_id {victim_id}")) && report.contains("altered"),
        "acme's fault named: {report}"
    );
    // The ClickHouse cross-check names what the trail lost.
    let (_, report) = stack.verify(&["--tenant", "globex"]);
    assert!(report.contains("only in ClickHouse: ") && !report.contains("only in ClickHouse: none"), "{report}");

    // Replay refuses what does not verify, and says so.
    let out = stack.mapper(&["replay", "--truncate", "--no-progress"]);
    assert!(!out.status.success(), "{}", crate::support::text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("segments skipped"));
}

#[test]
fn compliance_mode_objects_cannot_be_deleted_or_shortened() {
    let stack = Stack::start();
    stack.publish_events("c", 20, &["acme"]);
    let _sink = crate::support::SinkProcess::start(&stack, "s3", &[("LLAMA_MAPPER_S3__RETENTION_MODE", "COMPLIANCE")]);
    stack.wait_trail(20, Duration::from_secs(60));
    let key = stack.segment_keys("acme")[0].clone();
    let c = stack.s3_client();
    rt().block_on(async {
        let v = c.list_object_versions().bucket(&stack.bucket).prefix(&key).send().await.unwrap();
        let version = v.versions()[0].version_id().unwrap().to_string();
        let r = c.get_object_retention().bucket(&stack.bucket).key(&key).send().await.unwrap();
        assert_eq!(r.retention().unwrap().mode().unwrap().as_str(), "COMPLIANCE");
        let del = c
            .delete_object()
            .bucket(&stack.bucket)
            .key(&key)
            .version_id(&version)
            .bypass_governance_retention(true)
            .send()
            .await;
        assert!(del.is_err(), "a COMPLIANCE object version cannot be deleted, even with bypass");
        let still = c.get_object().bucket(&stack.bucket).key(&key).version_id(&version).send().await;
        assert!(still.is_ok(), "the version is still there after the refused delete: {still:?}");
        let sooner = aws_sdk_s3::primitives::DateTime::from(std::time::SystemTime::now() + Duration::from_secs(60));
        let shorten = c
            .put_object_retention()
            .bucket(&stack.bucket)
            .key(&key)
            .retention(
                aws_sdk_s3::types::ObjectLockRetention::builder()
                    .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
                    .retain_until_date(sooner)
                    .build(),
            )
            .bypass_governance_retention(true)
            .send()
            .await;
        assert!(shorten.is_err(), "a COMPLIANCE retention cannot be shortened");
        let after = c.get_object_retention().bucket(&stack.bucket).key(&key).send().await.unwrap();
        assert_eq!(
            after.retention().unwrap().retain_until_date(),
            r.retention().unwrap().retain_until_date(),
            "the retention date is what it was"
        );
    });
    // The write-once PUT the sink relies on: a second writer of the same key loses, and the
    // object keeps the first writer's bytes.
    let settings = stack.s3_settings();
    let store = llama_mapper::trail::TrailStore::new(&settings).unwrap();
    let original = stack.get(&key);
    let outcome = rt().block_on(store.put_once(&key, b"a second writer".to_vec())).unwrap();
    assert_eq!(outcome, llama_mapper::trail::PutOutcome::AlreadyExists);
    assert_eq!(stack.get(&key), original);
    let fresh = "probe/write-once".to_string();
    assert_eq!(rt().block_on(store.put_once(&fresh, b"x".to_vec())).unwrap(), llama_mapper::trail::PutOutcome::Written);
    let (ok, report) = stack.verify(&["--no-clickhouse"]);
    // The stack's verifier expects GOVERNANCE (its settings); the object says COMPLIANCE.
    assert!(!ok && report.contains("retention mode COMPLIANCE, expected GOVERNANCE"), "{report}");
}

/// A zombie and its successor on one tenant's chain, against the real store: the successor
/// (a fresh writer after a rebalance) gets the zombie's batch re-delivered and the next one;
/// the zombie, its cached head now stale, then tries to write that next batch too. Its PUT of
/// segment 2 loses to the successor's (`If-None-Match: *`), it re-reads the head, finds every
/// event already in the chain and writes nothing; its next batch goes on after the
/// successor's segment. `verify` sees one unbroken chain, each event once.
#[test]
fn a_zombie_writer_and_its_successor_keep_one_chain() {
    use llama_mapper::contracts::AuditEvent;
    use llama_mapper::sinks::s3_worm::TrailWriter;

    let stack = Stack::start();
    let (_, audit) = crate::support::mapped_events("z", 30, &["acme"]);
    let events: Vec<(String, i64, AuditEvent)> = audit
        .iter()
        .enumerate()
        .map(|(i, a)| ("audit/0".to_string(), i as i64, serde_json::from_value(a.clone()).unwrap()))
        .collect();
    let (b1, b2, b3) = (&events[..10], &events[10..20], &events[20..]);
    let settings = stack.s3_settings();
    let key = || llama_mapper::trail::read_signing_key(&stack.key_file()).unwrap();
    let writer = || TrailWriter::new(llama_mapper::trail::TrailStore::new(&settings).unwrap(), key());
    let rt = rt();
    let (mut zombie, mut successor) = (writer(), writer());
    assert_eq!(rt.block_on(zombie.append("acme", b1)).unwrap(), 10);
    assert_eq!(rt.block_on(successor.append("acme", b1)).unwrap(), 0, "re-delivered: already in the chain");
    assert_eq!(rt.block_on(successor.append("acme", b2)).unwrap(), 10);
    assert_eq!(rt.block_on(zombie.append("acme", b2)).unwrap(), 0, "the zombie lost segment 2 and wrote nothing");
    assert_eq!(rt.block_on(zombie.append("acme", b3)).unwrap(), 10);
    assert_eq!(stack.segment_keys("acme").len(), 3, "segments 1, 2, 3 and no other");
    let (ok, report) = stack.verify(&["--no-clickhouse", "--no-retention"]);
    assert!(ok, "{report}");
    assert_eq!(crate::support::trail_events(&report), 30, "each event once:\n{report}");
}
