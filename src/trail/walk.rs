//! Walking one tenant's chain from its first segment, checking every hash, link, signature,
//! event and (optionally) retention on the way. Shared by `mapper audit verify` (which reports)
//! and `mapper replay` (which also loads what checks out).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use ed25519_dalek::VerifyingKey;

use super::segment::{self, Header};
use super::store::TrailStore;
use crate::contracts::AuditEvent;

/// One problem, located as precisely as the evidence allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub tenant: String,
    pub object: Option<String>,
    /// `#index (event_id …)` within the object.
    pub event: Option<String>,
    pub problem: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tenant {}", self.tenant)?;
        if let Some(o) = &self.object {
            write!(f, ", {o}")?;
        }
        if let Some(e) = &self.event {
            write!(f, ", event {e}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// A segment as walked: its events are present only when the segment checked out.
#[derive(Debug, Clone)]
pub struct CheckedSegment {
    pub key: String,
    pub header: Option<Header>,
    pub events: Vec<AuditEvent>,
    pub clean: bool,
}

pub struct WalkOptions {
    /// Check each object's Object Lock retention (one more request per object).
    pub check_retention: bool,
    /// The least retention an object must have been written with.
    pub min_retention: Duration,
}

pub struct Walker<'a> {
    store: &'a TrailStore,
    key: &'a VerifyingKey,
    opts: &'a WalkOptions,
    tenant: String,
    keys: Vec<String>,
    next: usize,
    expected_seq: u64,
    /// Hash and running total of the previous segment, when it could be read.
    prev: Option<(String, u64)>,
    seen: HashSet<String>,
    pub findings: Vec<Finding>,
    pub segments: u64,
    pub events: u64,
    pub head: Option<Header>,
}

pub async fn walk_tenant<'a>(
    store: &'a TrailStore,
    key: &'a VerifyingKey,
    tenant: &str,
    opts: &'a WalkOptions,
) -> anyhow::Result<Walker<'a>> {
    let prefix = store.segments_prefix(tenant);
    let all = store.list(&prefix).await?;
    let mut findings = Vec::new();
    let mut keys = Vec::new();
    for k in all {
        if TrailStore::seq_of_key(&k).is_some() {
            keys.push(k);
        } else {
            findings.push(Finding {
                tenant: tenant.to_string(),
                object: Some(k),
                event: None,
                problem: "object that is not a segment in the trail".into(),
            });
        }
    }
    Ok(Walker {
        store,
        key,
        opts,
        tenant: tenant.to_string(),
        keys,
        next: 0,
        expected_seq: 1,
        prev: Some((segment::GENESIS.to_string(), 0)),
        seen: HashSet::new(),
        findings,
        segments: 0,
        events: 0,
        head: None,
    })
}

impl Walker<'_> {
    pub fn total_segments(&self) -> usize {
        self.keys.len()
    }

    fn find(&mut self, object: &str, event: Option<String>, problem: impl Into<String>) {
        self.findings.push(Finding {
            tenant: self.tenant.clone(),
            object: Some(object.to_string()),
            event,
            problem: problem.into(),
        });
    }

    /// Reads and checks the next segment; `None` at the end of the chain.
    pub async fn next(&mut self) -> anyhow::Result<Option<CheckedSegment>> {
        let Some(key) = self.keys.get(self.next).cloned() else { return Ok(None) };
        self.next += 1;
        self.segments += 1;
        let before = self.findings.len();
        let seq = TrailStore::seq_of_key(&key).expect("filtered");
        if seq != self.expected_seq {
            let missing = if seq > self.expected_seq {
                format!("segments {}..={} are missing", self.expected_seq, seq - 1)
            } else {
                format!("out of sequence (expected seq {})", self.expected_seq)
            };
            self.find(&key, None, format!("chain broken before this object: {missing}"));
            self.prev = None;
        }
        self.expected_seq = seq + 1;
        let body = self.store.get(&key).await?;
        if self.store.versions(&key).await? > 1 {
            self.find(&key, None, "object was overwritten after it was written (more than one version)");
        }
        let decoded = segment::decode(&body);
        if self.opts.check_retention {
            let created = decoded.as_ref().ok().map(|r| r.header.body.created_at.clone());
            self.check_retention(&key, created.as_deref()).await?;
        }
        let raw = match decoded {
            Ok(r) => r,
            Err(e) => {
                self.find(&key, None, e);
                self.prev = None;
                return Ok(Some(CheckedSegment { key, header: None, events: Vec::new(), clean: false }));
            }
        };
        let h = &raw.header;
        let b = &h.body;
        if b.format != segment::FORMAT {
            self.find(&key, None, format!("unknown format {:?}", b.format));
        }
        if b.tenant_id != self.tenant {
            self.find(&key, None, format!("segment belongs to tenant {:?}", b.tenant_id));
        }
        if b.seq != seq {
            self.find(
                &key,
                None,
                format!("header says seq {} but the key says {seq}: segments reordered or renamed", b.seq),
            );
        }
        if b.hash() != h.segment_hash {
            self.find(&key, None, "header was altered: it does not match its segment_hash");
        }
        if !segment::signature_ok(h, self.key) {
            self.find(
                &key,
                None,
                format!("signature does not verify with the trusted key (signed by key id {})", b.key_id),
            );
        }
        if let Some((prev_hash, prev_total)) = &self.prev {
            if &b.prev_hash != prev_hash {
                self.find(&key, None, "chain broken: prev_hash is not the hash of the previous segment");
            } else if b.events_total != prev_total + b.events {
                self.find(
                    &key,
                    None,
                    format!("events_total {} ≠ {} before + {} here", b.events_total, prev_total, b.events),
                );
            }
        }
        if b.events as usize != raw.lines.len() || b.event_digests.len() != raw.lines.len() {
            self.find(
                &key,
                None,
                format!(
                    "header lists {} events ({} digests), the object holds {}",
                    b.events,
                    b.event_digests.len(),
                    raw.lines.len()
                ),
            );
        }
        let mut leaves = Vec::with_capacity(raw.lines.len());
        let mut events = Vec::with_capacity(raw.lines.len());
        let mut altered = false;
        for (i, line) in raw.lines.iter().enumerate() {
            let leaf = segment::leaf_hash(line.as_bytes());
            leaves.push(leaf);
            let parsed: Result<AuditEvent, _> = serde_json::from_str(line);
            let id = parsed.as_ref().map(|e| e.event_id.clone()).unwrap_or_else(|_| "?".into());
            let label = Some(format!("#{i} (event_id {id})"));
            if b.event_digests.get(i) != Some(&segment::digest_of(&leaf)) {
                altered = true;
                self.find(&key, label.clone(), "event was altered, removed or moved: it does not match its digest");
            }
            match parsed {
                Ok(e) => {
                    if e.tenant_id != self.tenant {
                        self.find(
                            &key,
                            label.clone(),
                            format!("event of tenant {:?} in this tenant's trail", e.tenant_id),
                        );
                    }
                    if !self.seen.insert(e.event_id.clone()) {
                        self.find(&key, label, "event_id already in the trail (duplicate)");
                    }
                    events.push(e);
                }
                Err(err) => self.find(&key, label, format!("not an audit event: {err}")),
            }
        }
        if hex::encode(segment::merkle_root(&leaves)) != b.merkle_root && !altered {
            self.find(&key, None, "events do not match the header's Merkle root");
        }
        self.events += raw.lines.len() as u64;
        self.prev = Some((h.segment_hash.clone(), b.events_total));
        self.head = Some(h.clone());
        let clean = self.findings.len() == before;
        Ok(Some(CheckedSegment { key, header: Some(raw.header), events, clean }))
    }

    async fn check_retention(&mut self, key: &str, created_at: Option<&str>) -> anyhow::Result<()> {
        let r = match self.store.retention_of(key).await {
            Ok(r) => r,
            Err(e) => {
                self.find(key, None, format!("no Object Lock retention readable: {e:#}"));
                return Ok(());
            }
        };
        let expected = self.store.retention_mode().as_str();
        match r.mode.as_deref() {
            Some(m) if m == expected => {}
            Some(m) => self.find(key, None, format!("retention mode {m}, expected {expected}")),
            None => self.find(key, None, "object has no Object Lock retention"),
        }
        let Some(until) = r.retain_until else {
            self.find(key, None, "object has no retain-until date");
            return Ok(());
        };
        // The lock must reach the configured period past the segment's creation (a minute of
        // slack for clocks); an earlier date means it was written, or shortened, below policy.
        let created = created_at
            .and_then(|c| crate::sinks::rfc3339_millis(c).ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
        if let Some(created) = created {
            if until + Duration::from_secs(60) < created + self.opts.min_retention {
                let days = until.duration_since(created).map(|d| d.as_secs() / 86_400).unwrap_or(0);
                self.find(
                    key,
                    None,
                    format!(
                        "retained {days} days from creation, policy is {} days",
                        self.opts.min_retention.as_secs() / 86_400
                    ),
                );
            }
        }
        Ok(())
    }
}
