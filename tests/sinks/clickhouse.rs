//! The ClickHouse projection: idempotent under redelivery, refused rows dead-lettered with
//! ClickHouse's reason, tenant users that see only their tenant.

use std::time::Duration;

use serde_json::json;

use crate::common::kafka::AUDIT;
use crate::common::stores::ClickHouse;
use crate::support::{mapped_events, text, Stack, SINK_DLQ};

#[test]
fn redelivered_events_never_count_twice_and_the_views_agree_with_the_rows() {
    let stack = Stack::start();
    let audit = stack.publish_events("dup", 200, &["acme", "globex"]);
    // The same events again, as a producer retry or a re-run would deliver them.
    let again: Vec<(String, Vec<u8>)> =
        audit.iter().map(|a| (a["tenant_id"].as_str().unwrap().to_string(), serde_json::to_vec(a).unwrap())).collect();
    stack.broker.produce(AUDIT, &again);
    let sink = stack.sink("clickhouse");
    stack.wait_ch("audit_events", 200, Duration::from_secs(60), &[&sink]);
    stack.wait_ch("canonical_events", 200, Duration::from_secs(60), &[&sink]);
    // The second copies went through the sink too: it committed past all 400 records.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stack.broker.committed("llama-mapper-sink-clickhouse", AUDIT, 6) < 400 {
        assert!(std::time::Instant::now() < deadline, "the sink did not consume the copies:\n{}", sink.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let raw: usize = stack.ch.query("SELECT count() FROM audit_events").trim().parse().unwrap();
    assert!((200..=400).contains(&raw), "{raw} rows before merges");
    assert_eq!(stack.ch.query("SELECT count() FROM audit_events FINAL").trim(), "200");
    assert_eq!(stack.ch.query("SELECT uniqExact(event_id) FROM audit_events").trim(), "200");
    let from_rows = stack.ch.query(
        "SELECT tenant_id, control, uniqExact(event_id) FROM audit_events ARRAY JOIN incident_controls AS control \
         GROUP BY tenant_id, control ORDER BY tenant_id, control",
    );
    let from_view = stack.ch.query(
        "SELECT tenant_id, control, uniqExactMerge(events) FROM incidents_by_control_day \
         GROUP BY tenant_id, control ORDER BY tenant_id, control",
    );
    assert!(!from_rows.trim().is_empty());
    assert_eq!(from_view, from_rows, "the per-control view counts each event once");
    let coverage = stack.ch.query(
        "SELECT sum(n) FROM (SELECT tenant_id, detector, uniqExactMerge(events) AS n FROM detector_coverage_day \
         GROUP BY tenant_id, detector)",
    );
    assert_eq!(coverage.trim(), "200");

    // A second `clickhouse migrate` (every deploy runs it) applies nothing and keeps the rows.
    let again = stack.mapper(&["clickhouse", "migrate"]);
    assert!(again.status.success(), "{}", text(&again));
    let known = llama_mapper::sinks::clickhouse::migrate::MIGRATIONS.len();
    assert!(text(&again).contains(&format!("{known} migrations known, 0 applied now")), "{}", text(&again));
    assert_eq!(
        stack.ch.query("SELECT count(), uniqExact(version) FROM mapper_schema_migrations").trim(),
        format!("{known}\t{known}")
    );
    assert_eq!(stack.ch.query("SELECT count() FROM audit_events FINAL").trim(), "200");
}

#[test]
fn rows_clickhouse_refuses_go_to_the_sink_dead_letter_topic_with_the_reason() {
    let stack = Stack::start();
    let (_, mut audit) = mapped_events("dlq", 30, &["acme"]);
    // Schema-valid, but older than the table's ts_plausible constraint allows.
    audit[7]["ts"] = json!("1999-12-31T23:59:59Z");
    let mut recs: Vec<(String, Vec<u8>)> =
        audit.iter().map(|a| ("acme".to_string(), serde_json::to_vec(a).unwrap())).collect();
    recs.insert(12, ("acme".into(), b"{not json".to_vec()));
    stack.broker.produce(AUDIT, &recs);
    let sink = stack.sink("clickhouse");
    stack.wait_ch("audit_events", 29, Duration::from_secs(60), &[&sink]);
    let dead = stack.broker.read(SINK_DLQ, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "{}", sink.log());
    let refused = dead.iter().find(|d| d.value.as_deref() == Some(serde_json::to_vec(&audit[7]).unwrap().as_slice()));
    let refused = refused.expect("the refused row, payload unchanged");
    assert!(refused.headers["mapper.reason"].contains("469"), "ClickHouse's own code: {:?}", refused.headers);
    assert!(refused.headers["mapper.reason"].contains("ts_plausible"), "{:?}", refused.headers);
    assert_eq!(refused.headers["mapper.sink"], "clickhouse");
    assert_eq!(refused.headers["mapper.source.topic"], stack.broker.name(AUDIT));
    let garbage = dead.iter().find(|d| d.value.as_deref() == Some(b"{not json".as_slice())).expect("undecodable");
    assert!(garbage.headers["mapper.reason"].starts_with("undecodable audit event"), "{:?}", garbage.headers);
    assert_eq!(stack.ch.query("SELECT count() FROM audit_events WHERE event_id = 'dlq-7'").trim(), "0");
    assert_eq!(stack.ch_count("audit_events"), 29, "every other row written");
}

#[test]
fn a_tenant_user_reads_none_of_another_tenants_rows() {
    let stack = Stack::start();
    let users = stack.dir.path().join("users.xml");
    for (tenant, user, pw) in
        [("acme", "auditor_acme", "acme-secret-123"), ("globex", "auditor_globex", "globex-secret-456")]
    {
        let out = stack.mapper_with(
            &["clickhouse", "tenant-user", "--tenant", tenant, "--user", user, "--users-xml", users.to_str().unwrap()],
            &[("MAPPER_TENANT_PASSWORD", pw)],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let short = stack.mapper_with(
        &["clickhouse", "tenant-user", "--tenant", "x", "--user", "u"],
        &[("MAPPER_TENANT_PASSWORD", "short")],
    );
    assert!(!short.status.success() && text(&short).contains("shorter than 12"), "{}", text(&short));
    let sql = stack.mapper_with(
        &["clickhouse", "tenant-user", "--tenant", "acme", "--user", "auditor_acme", "--print-sql"],
        &[("MAPPER_TENANT_PASSWORD", "acme-secret-123")],
    );
    assert!(String::from_utf8_lossy(&sql.stdout).contains("CREATE ROW POLICY"), "{}", text(&sql));

    // A server configured with those users; the projection filled by the sink.
    let ch = ClickHouse::start_with_users(Some(&users));
    let url = ch.url();
    let with_url = [("LLAMA_MAPPER_CLICKHOUSE__URL", url.as_str())];
    assert!(stack.mapper_with(&["clickhouse", "migrate"], &with_url).status.success());
    stack.publish_events("iso", 90, &["acme", "globex", "initech"]);
    let _sink = crate::support::SinkProcess::start(&stack, "clickhouse", &with_url);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let both =
        "SELECT (SELECT uniqExact(event_id) FROM audit_events), (SELECT uniqExact(event_id) FROM canonical_events)";
    while ch.query(both).trim() != "90\t90" {
        assert!(std::time::Instant::now() < deadline, "rows did not arrive");
        std::thread::sleep(Duration::from_millis(250));
    }
    // The engine applies each user's row policies to queries it runs as that user.
    for (tenant, user) in [("acme", "auditor_acme"), ("globex", "auditor_globex")] {
        for table in ["audit_events", "canonical_events", "incidents_by_control_day", "detector_coverage_day"] {
            ch.query(&format!(
                "CREATE VIEW IF NOT EXISTS {user}_{table} DEFINER = {user} SQL SECURITY DEFINER AS \
                 SELECT DISTINCT tenant_id FROM {table}"
            ));
            let seen = ch.query(&format!("SELECT * FROM {user}_{table}"));
            assert_eq!(seen.trim(), tenant, "{user} on {table} sees only {tenant}");
        }
    }
    // The password check is real: a wrong password fails authentication (Code 516, 403),
    // while the right one authenticates and only then meets the front's refusal to run a
    // query as another user (Code 344), never run unfiltered as default. A wrong hash in the
    // generated users.xml, or `<no_password/>`, turns the first answer into the second.
    let sql = "SELECT count() FROM audit_events";
    let (status, body) = ch.try_query_as(sql, "auditor_acme", "wrong");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Code: 516"), "a wrong password is an authentication failure: {body}");
    let (status, body) = ch.try_query_as(sql, "auditor_acme", "acme-secret-123");
    assert_ne!(status, 200, "the test front refuses (never widens) queries as other users: {body}");
    assert!(
        body.contains("Code: 344") && body.contains("authenticated") && !body.contains("Code: 516"),
        "the right password authenticates: {body}"
    );
}
