//! `mapper audit verify`: walk the trail (all tenants or one), check every hash, link,
//! signature and retention, and cross-check the event counts with ClickHouse.

use std::collections::BTreeSet;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use super::walk::{walk_tenant, Finding, WalkOptions};
use super::TrailStore;
use crate::sinks::rfc3339_millis;

pub struct VerifyOptions {
    pub tenant: Option<String>,
    /// Inclusive lower / exclusive upper bound on event `ts` (ms) for counts and the
    /// ClickHouse cross-check. The chain itself is always checked from its first segment:
    /// a link can only be trusted from the start.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub check_retention: bool,
    pub min_retention: Duration,
    /// ClickHouse to cross-check, with its hot retention in days (older events are only in S3).
    pub clickhouse: Option<(clickhouse::Client, u32)>,
}

#[derive(Debug, Clone)]
pub struct TenantReport {
    pub tenant: String,
    pub segments: u64,
    pub events: u64,
    pub events_in_range: u64,
    pub head_seq: u64,
    pub head_hash: Option<String>,
    pub clickhouse_events: Option<u64>,
    pub findings: Vec<Finding>,
}

pub async fn verify(store: &TrailStore, key: &VerifyingKey, opts: &VerifyOptions) -> anyhow::Result<Vec<TenantReport>> {
    let tenants = match &opts.tenant {
        Some(t) => vec![t.clone()],
        None => store.tenants().await?,
    };
    let walk_opts = WalkOptions { check_retention: opts.check_retention, min_retention: opts.min_retention };
    let mut reports = Vec::new();
    for tenant in tenants {
        let mut w = walk_tenant(store, key, &tenant, &walk_opts).await?;
        let hot_from = opts.clickhouse.as_ref().map(|(_, days)| now_ms() - i64::from(*days) * 86_400_000);
        let lower = opts.since_ms.into_iter().chain(hot_from).max();
        let mut in_range = 0u64;
        let mut hot_ids: BTreeSet<String> = BTreeSet::new();
        while let Some(seg) = w.next().await? {
            for e in &seg.events {
                let Ok(ts) = rfc3339_millis(&e.ts) else { continue };
                let within = opts.since_ms.is_none_or(|s| ts >= s) && opts.until_ms.is_none_or(|u| ts < u);
                in_range += u64::from(within);
                if lower.is_none_or(|l| ts >= l) && opts.until_ms.is_none_or(|u| ts < u) {
                    hot_ids.insert(e.event_id.clone());
                }
            }
        }
        let mut findings = std::mem::take(&mut w.findings);
        if w.segments == 0 {
            findings.push(Finding {
                tenant: tenant.clone(),
                object: None,
                event: None,
                problem: "no trail for this tenant".into(),
            });
        }
        let mut ch_events = None;
        if let Some((client, _)) = &opts.clickhouse {
            let ids = clickhouse_ids(client, &tenant, lower, opts.until_ms).await?;
            ch_events = Some(ids.len() as u64);
            let only_ch: Vec<&String> = ids.difference(&hot_ids).collect();
            let only_s3: Vec<&String> = hot_ids.difference(&ids).collect();
            if !only_ch.is_empty() || !only_s3.is_empty() {
                findings.push(Finding {
                    tenant: tenant.clone(),
                    object: None,
                    event: None,
                    problem: format!(
                        "ClickHouse holds {} events in range, the trail {}; only in ClickHouse: {}; only in the trail: {}",
                        ids.len(),
                        hot_ids.len(),
                        sample(&only_ch),
                        sample(&only_s3)
                    ),
                });
            }
        }
        reports.push(TenantReport {
            tenant,
            segments: w.segments,
            events: w.events,
            events_in_range: in_range,
            head_seq: w.head.as_ref().map(|h| h.body.seq).unwrap_or(0),
            head_hash: w.head.as_ref().map(|h| h.segment_hash.clone()),
            clickhouse_events: ch_events,
            findings,
        });
    }
    Ok(reports)
}

fn sample(ids: &[&String]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    let shown: Vec<&str> = ids.iter().take(5).map(|s| s.as_str()).collect();
    if ids.len() > 5 {
        format!("{} and {} more", shown.join(", "), ids.len() - 5)
    } else {
        shown.join(", ")
    }
}

async fn clickhouse_ids(
    client: &clickhouse::Client,
    tenant: &str,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> anyhow::Result<BTreeSet<String>> {
    let ids: Vec<String> = client
        .query(
            "SELECT DISTINCT event_id FROM audit_events WHERE tenant_id = ? \
             AND toUnixTimestamp64Milli(ts) >= ? AND toUnixTimestamp64Milli(ts) < ?",
        )
        .bind(tenant)
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(until_ms.unwrap_or(i64::MAX))
        .fetch_all()
        .await
        .map_err(|e| anyhow::anyhow!("ClickHouse cross-check for tenant {tenant}: {e}"))?;
    Ok(ids.into_iter().collect())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
