//! The trail's bucket: deterministic keys, write-once PUTs under Object Lock, and reads.
//!
//! Key layout (`{prefix}` from `s3.prefix`):
//! `{prefix}/tenants/{tenant}/segments/{seq:016}.ndjson.gz`. One folder per tenant, so an
//! auditor can be given read access to exactly one tenant's trail (an IAM policy on the
//! prefix) and verify it without reading anyone else's events.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockMode,
    ObjectLockRetentionMode, ObjectLockRule, VersioningConfiguration,
};
use base64::Engine as _;
use md5::{Digest, Md5};

use crate::config::{RetentionMode, S3Settings};

#[derive(Clone)]
pub struct TrailStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    mode: RetentionMode,
    retention: Duration,
}

/// How a write-once PUT ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The key already exists (`412 Precondition Failed`): another writer got there first.
    AlreadyExists,
}

/// Object Lock state of one object.
#[derive(Debug, Clone)]
pub struct Retention {
    pub mode: Option<String>,
    pub retain_until: Option<SystemTime>,
}

/// Tenant ids are keys' path segments: safe ones are used as they are, others hex-encoded
/// behind a `~` so that no tenant id can escape its folder.
pub fn tenant_dir(tenant: &str) -> String {
    let safe = !tenant.is_empty()
        && !tenant.starts_with('.')
        && !tenant.starts_with('~')
        && tenant.len() <= 128
        && tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if safe {
        tenant.to_string()
    } else {
        format!("~{}", hex::encode(tenant.as_bytes()))
    }
}

pub fn tenant_from_dir(dir: &str) -> String {
    match dir.strip_prefix('~').and_then(|h| hex::decode(h).ok()).and_then(|b| String::from_utf8(b).ok()) {
        Some(t) => t,
        None => dir.to_string(),
    }
}

impl TrailStore {
    pub fn new(s: &S3Settings) -> anyhow::Result<TrailStore> {
        let key_id = s.access_key_id.clone().or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret = s.secret_access_key.clone().or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (Some(key_id), Some(secret)) = (key_id, secret) else {
            anyhow::bail!(
                "S3 credentials: set s3.access_key_id/secret_access_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .credentials_provider(Credentials::new(key_id, secret, None, None, "llama-mapper settings"))
            .force_path_style(s.force_path_style)
            // Content-MD5 is set on every PUT (Object Lock requires an integrity header); no
            // extra streaming checksums on top.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .http_client(http);
        if let Some(e) = &s.endpoint {
            b = b.endpoint_url(e);
        }
        Ok(TrailStore {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: s.bucket.clone(),
            prefix: s.prefix.trim_matches('/').to_string(),
            mode: s.retention_mode,
            retention: Duration::from_secs(u64::from(s.retention_days) * 86_400),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn retention_mode(&self) -> RetentionMode {
        self.mode
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    pub fn tenants_prefix(&self) -> String {
        format!("{}/tenants/", self.prefix)
    }

    pub fn segments_prefix(&self, tenant: &str) -> String {
        format!("{}/tenants/{}/segments/", self.prefix, tenant_dir(tenant))
    }

    pub fn segment_key(&self, tenant: &str, seq: u64) -> String {
        format!("{}{seq:016}.ndjson.gz", self.segments_prefix(tenant))
    }

    /// The sequence number a segment key claims.
    pub fn seq_of_key(key: &str) -> Option<u64> {
        key.rsplit('/').next()?.strip_suffix(".ndjson.gz")?.parse().ok()
    }

    /// Creates the bucket with Object Lock on (and so versioning), if it does not exist.
    pub async fn ensure_bucket(&self) -> anyhow::Result<bool> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(false);
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("creating bucket {}: {}", self.bucket, describe(&e)))?;
        let _ = self
            .client
            .put_bucket_versioning()
            .bucket(&self.bucket)
            .versioning_configuration(
                VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
            )
            .send()
            .await;
        Ok(true)
    }

    /// Whether the bucket has Object Lock enabled (writing evidence anywhere else is refused).
    pub async fn object_lock_enabled(&self) -> anyhow::Result<bool> {
        let out =
            self.client.get_object_lock_configuration().bucket(&self.bucket).send().await.map_err(|e| {
                anyhow::anyhow!("reading Object Lock configuration of {}: {}", self.bucket, describe(&e))
            })?;
        Ok(out
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled())
            .is_some_and(|e| *e == ObjectLockEnabled::Enabled))
    }

    /// Sets a default retention on the bucket too (belt and braces for objects put by hand).
    pub async fn set_default_retention(&self, days: i32) -> anyhow::Result<()> {
        let rule = ObjectLockRule::builder()
            .default_retention(DefaultRetention::builder().mode(lock_mode(self.mode)).days(days).build())
            .build();
        let conf =
            ObjectLockConfiguration::builder().object_lock_enabled(ObjectLockEnabled::Enabled).rule(rule).build();
        self.client
            .put_object_lock_configuration()
            .bucket(&self.bucket)
            .object_lock_configuration(conf)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("setting default retention: {}", describe(&e)))?;
        Ok(())
    }

    /// Writes `body` at `key` unless the key exists (`If-None-Match: *`), locked until now +
    /// the configured retention, with its Content-MD5.
    pub async fn put_once(&self, key: &str, body: Vec<u8>) -> anyhow::Result<PutOutcome> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let until = DateTime::from(SystemTime::now() + self.retention);
        let res = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_md5(md5)
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            .object_lock_mode(match self.mode {
                RetentionMode::Compliance => ObjectLockMode::Compliance,
                RetentionMode::Governance => ObjectLockMode::Governance,
            })
            .object_lock_retain_until_date(until)
            .body(ByteStream::from(body))
            .send()
            .await;
        match res {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if status(&e) == Some(412) || e.code() == Some("PreconditionFailed") => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(anyhow::anyhow!("PUT s3://{}/{key}: {}", self.bucket, describe(&e))),
        }
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET s3://{}/{key}: {}", self.bucket, describe(&e)))?;
        let bytes = out.body.collect().await.with_context(|| format!("reading s3://{}/{key}", self.bucket))?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// Every key under `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("LIST s3://{}/{prefix}: {}", self.bucket, describe(&e)))?;
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The tenants that have a trail.
    pub async fn tenants(&self) -> anyhow::Result<Vec<String>> {
        let prefix = self.tenants_prefix();
        let mut dirs: Vec<String> = self
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.split('/').next().map(str::to_string))
            .collect();
        dirs.dedup();
        Ok(dirs.iter().map(|d| tenant_from_dir(d)).collect())
    }

    /// How many versions a key has: more than one means it was overwritten after it was written.
    pub async fn versions(&self, key: &str) -> anyhow::Result<usize> {
        let out = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("listing versions of s3://{}/{key}: {}", self.bucket, describe(&e)))?;
        Ok(out.versions().iter().filter(|v| v.key() == Some(key)).count())
    }

    pub async fn retention_of(&self, key: &str) -> anyhow::Result<Retention> {
        let out = self
            .client
            .get_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("reading retention of s3://{}/{key}: {}", self.bucket, describe(&e)))?;
        let r = out.retention();
        Ok(Retention {
            mode: r.and_then(|r| r.mode()).map(|m| m.as_str().to_string()),
            retain_until: r.and_then(|r| r.retain_until_date()).and_then(|d| SystemTime::try_from(*d).ok()),
        })
    }

    /// The raw client, for tests and tools that need an operation this type does not wrap.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }
}

fn lock_mode(m: RetentionMode) -> ObjectLockRetentionMode {
    match m {
        RetentionMode::Compliance => ObjectLockRetentionMode::Compliance,
        RetentionMode::Governance => ObjectLockRetentionMode::Governance,
    }
}

fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// An SDK error with the service's code and message when there is one.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!("{} ({})", err.message().unwrap_or("no message"), err.code().unwrap_or("no code"))
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_cannot_escape_their_folder_and_round_trip() {
        for t in ["acme", "acme-eu.1", "../other", "a/b", "~x", ".hidden", "Ünïcode", ""] {
            let d = tenant_dir(t);
            assert!(!d.contains('/') && d != ".." && !d.is_empty() || t.is_empty(), "{t:?} → {d:?}");
            assert_eq!(tenant_from_dir(&d), t, "{t:?} → {d:?}");
        }
        assert_eq!(tenant_dir("acme"), "acme");
        assert!(tenant_dir("../other").starts_with('~'));
    }

    #[test]
    fn segment_keys_sort_by_sequence() {
        // S3 lists keys in byte order; the chain is walked in that order.
        let store = TrailStore::new(&crate::config::S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: "b".into(),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        })
        .unwrap();
        // Sixteen digits: ten quadrillion segments per tenant before the order would break.
        let seqs = [0, 1, 9, 10, 99, 100, 65_535, u64::from(u32::MAX) + 1, 9_999_999_999_999_999];
        let keys: Vec<String> = seqs.iter().map(|&s| store.segment_key("acme", s)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys, "byte order is sequence order");
        for (k, &s) in keys.iter().zip(&seqs) {
            assert_eq!(TrailStore::seq_of_key(k), Some(s), "{k}");
            assert!(k.starts_with(&store.segments_prefix("acme")), "{k}");
        }
        assert_eq!(TrailStore::seq_of_key("trail/tenants/acme/segments/notes.txt"), None);
    }
}
