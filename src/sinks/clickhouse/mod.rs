//! `mapper sink clickhouse`: the auditors' projection. Audit and canonical events from the
//! output topics become rows of `audit_events` / `canonical_events` (whose materialized views
//! keep the per-control and coverage aggregates current).
//!
//! Inserts are batched (one INSERT per table per batch, LZ4-compressed RowBinary). A batch the
//! server refuses because of a row's *data* is bisected down to the offending rows, which go to
//! the sink dead-letter topic with ClickHouse's message; everything else is written. Any other
//! failure (server down, overloaded, table missing) is retried with backoff until it works,
//! and offsets are committed only after that, so an outage costs lag, never rows.

pub mod migrate;
pub mod rows;
pub mod tenant;

use std::future::Future;
use std::pin::Pin;

use backon::Retryable;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{ClickHouseSettings, Settings};
use crate::contracts::{AuditEvent, CanonicalEvent, Contract};
use crate::sinks::{backoff, decode, SinkDlq, SinkSource};
use rows::{AuditRow, CanonicalRow};

pub fn client(s: &ClickHouseSettings) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&s.url)
        .with_database(&s.database)
        .with_user(&s.user)
        .with_password(&s.password)
}

/// ClickHouse's exception code, from the `Code: N.` its HTTP interface answers with.
pub fn error_code(e: &clickhouse::error::Error) -> Option<u32> {
    let clickhouse::error::Error::BadResponse(msg) = e else { return None };
    let rest = &msg[msg.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Codes that blame the rows, not the server: retrying cannot help, so the rows are isolated
/// and dead-lettered. A missing table or column is *not* here: that is a deployment error the
/// sink waits out (run `mapper clickhouse migrate`), keeping every row.
fn is_data_error(code: u32) -> bool {
    matches!(code, 6 | 27 | 33 | 38 | 41 | 53 | 69 | 70 | 72 | 117 | 131 | 190 | 469)
}

fn refused_by_data(e: &clickhouse::error::Error) -> bool {
    error_code(e).is_some_and(is_data_error)
}

async fn insert<R>(client: &clickhouse::Client, table: &str, rows: &[(usize, R)]) -> clickhouse::error::Result<()>
where
    R: clickhouse::Row + clickhouse::RowWrite + Serialize + for<'a> clickhouse::Row<Value<'a> = R>,
{
    let mut ins = client.insert::<R>(table).await?;
    for (_, r) in rows {
        ins.write(r).await?;
    }
    ins.end().await
}

type Refused = Vec<(usize, String)>;

/// Inserts `rows`; when ClickHouse refuses the batch for its data, splits it until the refused
/// rows are found. Returns those (index into the source batch, reason). Errors are transient.
fn insert_isolating<'a, R>(
    client: &'a clickhouse::Client,
    table: &'a str,
    rows: &'a [(usize, R)],
) -> Pin<Box<dyn Future<Output = clickhouse::error::Result<Refused>> + Send + 'a>>
where
    R: clickhouse::Row + clickhouse::RowWrite + Serialize + Send + Sync + for<'b> clickhouse::Row<Value<'b> = R>,
{
    Box::pin(async move {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match insert(client, table, rows).await {
            Ok(()) => Ok(Vec::new()),
            Err(e) if refused_by_data(&e) => {
                if rows.len() == 1 {
                    return Ok(vec![(rows[0].0, format!("clickhouse refused the row for {table}: {e}"))]);
                }
                let (a, b) = rows.split_at(rows.len() / 2);
                let mut refused = insert_isolating(client, table, a).await?;
                refused.extend(insert_isolating(client, table, b).await?);
                Ok(refused)
            }
            Err(e) => Err(e),
        }
    })
}

/// Retries `insert_isolating` until it succeeds; `None` when shutdown was requested first.
async fn write_table<R>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[(usize, R)],
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Refused>
where
    R: clickhouse::Row + clickhouse::RowWrite + Serialize + Send + Sync + for<'b> clickhouse::Row<Value<'b> = R>,
{
    let attempt = || insert_isolating(client, table, rows);
    let retried = attempt
        .retry(backoff())
        .notify(|e, wait| tracing::warn!(table, error = %e, retry_in = ?wait, "ClickHouse insert failed; retrying"));
    tokio::select! {
        r = retried => Some(r.expect("retried without limit")),
        _ = shutdown.wait_for(|s| *s) => None,
    }
}

/// Rows of one source batch, split by table, plus the records that could not become rows.
#[derive(Default)]
pub struct BatchRows {
    pub audit: Vec<(usize, AuditRow)>,
    pub canonical: Vec<(usize, CanonicalRow)>,
    pub undecodable: Refused,
}

pub fn rows_of(settings: &Settings, batch: &[OwnedMessage]) -> BatchRows {
    let mut out = BatchRows::default();
    for (i, m) in batch.iter().enumerate() {
        if m.topic() == settings.kafka.audit_topic {
            match decode::<AuditEvent>(Contract::AuditEvent, m.payload()).and_then(|e| AuditRow::from_event(&e)) {
                Ok(r) => out.audit.push((i, r)),
                Err(reason) => out.undecodable.push((i, format!("undecodable audit event: {reason}"))),
            }
        } else {
            match decode::<CanonicalEvent>(Contract::CanonicalEvent, m.payload())
                .and_then(|e| CanonicalRow::from_event(&e))
            {
                Ok(r) => out.canonical.push((i, r)),
                Err(reason) => out.undecodable.push((i, format!("undecodable canonical event: {reason}"))),
            }
        }
    }
    out
}

pub async fn run(settings: Settings, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client = client(&settings.clickhouse);
    let topics = [settings.kafka.audit_topic.as_str(), settings.kafka.canonical_topic.as_str()];
    let source = SinkSource::new(&settings, &settings.sink.clickhouse_group, &topics)?;
    let dlq = SinkDlq::new(&settings, "clickhouse")?;
    tracing::info!(url = %settings.clickhouse.url, database = %settings.clickhouse.database, ?topics, "ClickHouse sink started");
    let (mut rows_total, mut refused_total) = (0u64, 0u64);
    loop {
        let batch = source.next_batch(&mut shutdown).await?;
        if batch.is_empty() {
            break;
        }
        let rows = rows_of(&settings, &batch);
        let Some(mut refused) = write_table(&client, "audit_events", &rows.audit, &mut shutdown).await else { break };
        let Some(more) = write_table(&client, "canonical_events", &rows.canonical, &mut shutdown).await else { break };
        refused.extend(more);
        refused.extend(rows.undecodable);
        let dead: Vec<(&OwnedMessage, String)> = refused.into_iter().map(|(i, reason)| (&batch[i], reason)).collect();
        if !dead.is_empty() {
            dlq.send_all(&dead).await?;
        }
        source.commit(&batch)?;
        rows_total += (rows.audit.len() + rows.canonical.len()) as u64;
        refused_total += dead.len() as u64;
        tracing::debug!(batch = batch.len(), rows_total, refused_total, "batch written to ClickHouse");
    }
    dlq.flush();
    tracing::info!(rows_total, refused_total, "ClickHouse sink stopped (rows_total includes refused rows)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_are_read_from_the_response() {
        let e = clickhouse::error::Error::BadResponse(
            "Code: 469. DB::Exception: Constraint `ts_plausible` for table default.audit_events is violated".into(),
        );
        assert_eq!(error_code(&e), Some(469));
        assert!(refused_by_data(&e));
        let e = clickhouse::error::Error::BadResponse("Code: 60. DB::Exception: Unknown table".into());
        assert!(!refused_by_data(&e), "a missing table is waited out, not dead-lettered");
        assert_eq!(error_code(&clickhouse::error::Error::TimedOut), None);
    }
}
