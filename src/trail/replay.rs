//! `mapper replay`: rebuild the ClickHouse audit projection from the S3 trail alone, checking
//! the chain as it goes. Only segments that verify are loaded; every finding is reported.

use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::walk::{walk_tenant, Finding, WalkOptions};
use super::TrailStore;
use crate::sinks::clickhouse::migrate::AUDIT_TABLES;
use crate::sinks::clickhouse::rows::AuditRow;

pub struct ReplayOptions {
    pub tenant: Option<String>,
    /// Empty the audit tables first (all of them, or the tenant's rows).
    pub truncate: bool,
    pub progress: bool,
    pub insert_batch: usize,
}

#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub tenants: usize,
    pub segments: u64,
    pub events: u64,
    pub skipped_segments: u64,
    pub findings: Vec<Finding>,
}

pub async fn replay(
    store: &TrailStore,
    key: &VerifyingKey,
    client: &clickhouse::Client,
    opts: &ReplayOptions,
) -> anyhow::Result<ReplaySummary> {
    let tenants = match &opts.tenant {
        Some(t) => vec![t.clone()],
        None => store.tenants().await?,
    };
    if opts.truncate {
        for t in AUDIT_TABLES {
            let sql = match &opts.tenant {
                None => format!("TRUNCATE TABLE IF EXISTS {t}"),
                Some(_) => format!("DELETE FROM {t} WHERE tenant_id = ?"),
            };
            let mut q = client.query(&sql);
            if let Some(tenant) = &opts.tenant {
                q = q.bind(tenant.as_str());
            }
            q.execute().await.map_err(|e| anyhow::anyhow!("emptying {t}: {e}"))?;
        }
    }
    let walk_opts = WalkOptions { check_retention: false, min_retention: std::time::Duration::ZERO };
    let bar = if opts.progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} segments, {msg}")
            .expect("static template"),
    );
    let mut summary = ReplaySummary { tenants: tenants.len(), ..Default::default() };
    for tenant in &tenants {
        let mut w = walk_tenant(store, key, tenant, &walk_opts).await?;
        bar.inc_length(w.total_segments() as u64);
        let mut rows: Vec<AuditRow> = Vec::new();
        while let Some(seg) = w.next().await? {
            summary.segments += 1;
            bar.inc(1);
            if !seg.clean {
                summary.skipped_segments += 1;
                continue;
            }
            for e in &seg.events {
                rows.push(AuditRow::from_event(e).map_err(|err| anyhow::anyhow!("{}: {err}", seg.key))?);
            }
            if rows.len() >= opts.insert_batch {
                summary.events += flush(client, &mut rows).await?;
                bar.set_message(format!("{} events", summary.events));
            }
        }
        summary.events += flush(client, &mut rows).await?;
        bar.set_message(format!("{} events", summary.events));
        summary.findings.extend(w.findings);
    }
    bar.finish();
    Ok(summary)
}

async fn flush(client: &clickhouse::Client, rows: &mut Vec<AuditRow>) -> anyhow::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ins = client.insert::<AuditRow>("audit_events").await?;
    for r in rows.iter() {
        ins.write(r).await?;
    }
    ins.end().await.map_err(|e| anyhow::anyhow!("inserting replayed events: {e}"))?;
    let n = rows.len() as u64;
    rows.clear();
    Ok(n)
}
