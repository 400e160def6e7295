//! `mapper sink s3`: the WORM audit trail. Each batch of audit events becomes, per tenant,
//! one segment appended to that tenant's hash chain (see `crate::trail`), written once under
//! Object Lock; offsets are committed only after every segment of the batch is durable.
//!
//! Exactly once across crashes and rebalances: a segment's key is its tenant and sequence
//! number, written with `If-None-Match: *`. Each header carries the highest source offset per
//! partition in the chain (watermarks), so events re-delivered after a crash that the trail
//! already holds are dropped, and a writer that lost the race for segment N (a zombie, or a
//! stale cached head after a rebalance) re-reads the head and continues after it.

use std::collections::{BTreeMap, HashMap};

use backon::{BackoffBuilder, Retryable};
use ed25519_dalek::SigningKey;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::watch;

use crate::config::Settings;
use crate::contracts::{AuditEvent, Contract};
use crate::sinks::{backoff, decode, SinkDlq, SinkSource};
use crate::trail::segment::{self, HeaderBody};
use crate::trail::{load_head, ChainHead, PutOutcome, TrailStore};

/// One tenant's events of a batch, in offset order, with their source coordinates.
struct Pending {
    events: Vec<(String, i64, AuditEvent)>,
}

pub struct TrailWriter {
    store: TrailStore,
    key: SigningKey,
    heads: HashMap<String, ChainHead>,
}

impl TrailWriter {
    pub fn new(store: TrailStore, key: SigningKey) -> TrailWriter {
        TrailWriter { store, key, heads: HashMap::new() }
    }

    pub fn store(&self) -> &TrailStore {
        &self.store
    }

    async fn head(&mut self, tenant: &str) -> anyhow::Result<ChainHead> {
        if let Some(h) = self.heads.get(tenant) {
            return Ok(h.clone());
        }
        let h = load_head(&self.store, tenant, &self.key.verifying_key()).await?;
        self.heads.insert(tenant.to_string(), h.clone());
        Ok(h)
    }

    /// Appends `events` (source `topic/partition`, offset, event) to `tenant`'s chain unless
    /// the chain already holds them. Returns how many were written.
    pub async fn append(&mut self, tenant: &str, events: &[(String, i64, AuditEvent)]) -> anyhow::Result<usize> {
        loop {
            let head = self.head(tenant).await?;
            let fresh: Vec<&(String, i64, AuditEvent)> =
                events.iter().filter(|(tp, off, _)| head.watermarks.get(tp).is_none_or(|w| off > w)).collect();
            if fresh.is_empty() {
                return Ok(0);
            }
            let lines: Vec<String> =
                fresh.iter().map(|(_, _, e)| serde_json::to_string(e).expect("audit events serialize")).collect();
            let leaves: Vec<[u8; 32]> = lines.iter().map(|l| segment::leaf_hash(l.as_bytes())).collect();
            let mut watermarks = head.watermarks.clone();
            for (tp, off, _) in &fresh {
                let w = watermarks.entry(tp.clone()).or_insert(*off);
                *w = (*w).max(*off);
            }
            let body = HeaderBody {
                format: segment::FORMAT.into(),
                tenant_id: tenant.to_string(),
                seq: head.seq + 1,
                prev_hash: head.hash.clone(),
                events: lines.len() as u64,
                events_total: head.events_total + lines.len() as u64,
                merkle_root: hex::encode(segment::merkle_root(&leaves)),
                event_digests: leaves.iter().map(segment::digest_of).collect(),
                first_ts: fresh.iter().map(|(_, _, e)| e.ts.as_str()).min().unwrap_or_default().to_string(),
                last_ts: fresh.iter().map(|(_, _, e)| e.ts.as_str()).max().unwrap_or_default().to_string(),
                watermarks,
                created_at: now_rfc3339(),
                key_id: segment::key_id(&self.key.verifying_key()),
            };
            let header = segment::seal(body, &self.key);
            let object = segment::encode(&header, &lines);
            let key = self.store.segment_key(tenant, header.body.seq);
            match self.store.put_once(&key, object).await? {
                PutOutcome::Written => {
                    self.heads.insert(tenant.to_string(), ChainHead::of(&header));
                    return Ok(lines.len());
                }
                PutOutcome::AlreadyExists => {
                    tracing::info!(tenant, key, "segment already written by another writer; re-reading the chain head");
                    self.heads.remove(tenant);
                }
            }
        }
    }

    /// Forgets cached heads (after a failure the bucket is the only truth).
    pub fn forget_heads(&mut self) {
        self.heads.clear();
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub async fn run(settings: Settings, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let key_file =
        settings.s3.signing_key_file.clone().ok_or_else(|| {
            anyhow::anyhow!("s3.signing_key_file is required (create one with `mapper audit keygen`)")
        })?;
    let key = crate::trail::read_signing_key(&key_file)?;
    let store = TrailStore::new(&settings.s3)?;
    let locked = (|| store.object_lock_enabled())
        .retry(backoff().with_max_times(8))
        .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "S3 not reachable yet"))
        .await?;
    anyhow::ensure!(
        locked,
        "bucket {} does not have Object Lock enabled: refusing to write audit evidence there",
        store.bucket()
    );
    let mut writer = TrailWriter::new(store, key);
    let source = SinkSource::new(&settings, &settings.sink.s3_group, &[settings.kafka.audit_topic.as_str()])?;
    let dlq = SinkDlq::new(&settings, "s3")?;
    tracing::info!(bucket = %settings.s3.bucket, prefix = %settings.s3.prefix, "S3 trail sink started");
    let mut written_total = 0u64;
    loop {
        let batch = source.next_batch(&mut shutdown).await?;
        if batch.is_empty() {
            break;
        }
        let mut by_tenant: BTreeMap<String, Pending> = BTreeMap::new();
        let mut dead: Vec<(&OwnedMessage, String)> = Vec::new();
        for m in &batch {
            match decode::<AuditEvent>(Contract::AuditEvent, m.payload()) {
                Ok(e) => by_tenant
                    .entry(e.tenant_id.clone())
                    .or_insert_with(|| Pending { events: Vec::new() })
                    .events
                    .push((format!("{}/{}", m.topic(), m.partition()), m.offset(), e)),
                Err(reason) => dead.push((m, format!("undecodable audit event: {reason}"))),
            }
        }
        for (tenant, p) in &by_tenant {
            let mut delays = backoff().build();
            let appended = loop {
                let stopped = || {
                    dlq.flush();
                    tracing::info!(written_total, "S3 trail sink stopped mid-batch; the batch will be re-read");
                };
                let r = tokio::select! {
                    r = writer.append(tenant, &p.events) => r,
                    _ = shutdown.wait_for(|s| *s) => { stopped(); return Ok(()); }
                };
                match r {
                    Ok(n) => break n,
                    Err(e) => {
                        writer.forget_heads();
                        let wait = delays.next().unwrap_or(std::time::Duration::from_secs(10));
                        tracing::warn!(tenant, error = %format!("{e:#}"), retry_in = ?wait, "writing a trail segment failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.wait_for(|s| *s) => { stopped(); return Ok(()); }
                        }
                    }
                }
            };
            written_total += appended as u64;
        }
        if !dead.is_empty() {
            dlq.send_all(&dead).await?;
        }
        source.commit(&batch)?;
        tracing::debug!(batch = batch.len(), tenants = by_tenant.len(), written_total, "batch sealed into the trail");
    }
    dlq.flush();
    tracing::info!(written_total, "S3 trail sink stopped");
    Ok(())
}
