//! Sinks killed mid-batch, ClickHouse and S3 down for a while: nothing lost, nothing doubled,
//! the chain unbroken.

use std::time::Duration;

use crate::support::Stack;

#[test]
fn killed_sinks_and_store_outages_lose_and_double_nothing() {
    let mut stack = Stack::start();
    let tenants = ["acme", "globex", "initech", "umbrella"];
    let mut total = 0;
    let mut ch = stack.sink("clickhouse");
    let mut s3 = stack.sink("s3");
    for round in 0..3 {
        stack.publish_events(&format!("k{round}"), 400, &tenants);
        total += 400;
        // Kill both sinks while they are busy with this round.
        std::thread::sleep(Duration::from_millis(300 + 300 * round as u64));
        ch.inner.kill9();
        s3.inner.kill9();
        ch = stack.sink("clickhouse");
        s3 = stack.sink("s3");
    }
    // ClickHouse down while events keep coming, then back on the same port and data.
    stack.ch.stop();
    stack.publish_events("ch-down", 300, &tenants);
    total += 300;
    std::thread::sleep(Duration::from_secs(4));
    stack.ch.resume();
    // S3 down likewise.
    stack.s3.stop();
    stack.publish_events("s3-down", 300, &tenants);
    total += 300;
    std::thread::sleep(Duration::from_secs(4));
    stack.s3.resume();

    stack.wait_ch("audit_events", total, Duration::from_secs(120), &[&ch]);
    stack.wait_ch("canonical_events", total, Duration::from_secs(120), &[&ch]);
    assert_eq!(stack.ch.query("SELECT count() FROM audit_events FINAL").trim(), total.to_string());
    let report = stack.wait_trail(total, Duration::from_secs(120));
    let (ok, report2) = stack.verify(&[]);
    assert!(ok, "chain intact, no duplicates, counts match ClickHouse:\n{report2}\n{report}");
    let in_trail = crate::support::trail_events(&report2);
    assert_eq!(in_trail, total, "exactly once in the trail:\n{report2}");
    assert!(s3.log().contains("retrying") || ch.log().contains("retrying"), "an outage was actually seen");
}
