//! Topics as code: `topics/*.yaml` and `mapper topics apply|check`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Spanned;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde::Deserialize;

use crate::catalog::source::{read_yaml, ConfigError, ConfigErrors};
use crate::config::KafkaSettings;
use crate::kafka::admin;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    name: Spanned<String>,
    partitions: Spanned<i32>,
    replication_factor: Spanned<i32>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub file: PathBuf,
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: BTreeMap<String, String>,
}

pub fn load(dir: &Path) -> Result<Vec<TopicSpec>, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, format!("cannot read topics directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    for p in paths {
        match read_yaml::<TopicFile>(&p) {
            Ok(t) => {
                if *t.partitions < 1 {
                    errors.push(ConfigError::at(&p, &t.partitions, "partitions must be >= 1"));
                }
                if *t.replication_factor < 1 {
                    errors.push(ConfigError::at(&p, &t.replication_factor, "replication_factor must be >= 1"));
                }
                out.push(TopicSpec {
                    file: p.clone(),
                    name: t.name.to_string(),
                    partitions: *t.partitions,
                    replication_factor: *t.replication_factor,
                    config: t.config,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    errors.into_result(out)
}

/// A topic to create: its spec, effective replication factor and configs.
type Prepared<'a> = (&'a TopicSpec, i32, Vec<(&'a str, String)>);

/// `min.insync.replicas` no larger than the replication factor.
fn capped_min_isr(value: &str, rf: i32) -> String {
    match value.parse::<i32>() {
        Ok(m) if m > rf => rf.to_string(),
        _ => value.to_string(),
    }
}

/// Creates the missing topics. `replication_override` caps the replication factor (a one-broker
/// dev stack cannot hold 3 replicas). Returns the names created.
pub async fn apply(
    specs: &[TopicSpec],
    kafka: &KafkaSettings,
    replication_override: Option<i32>,
) -> anyhow::Result<Vec<String>> {
    let client = admin(kafka)?;
    let existing = existing(&client)?;
    let missing: Vec<&TopicSpec> = specs.iter().filter(|s| !existing.contains_key(&s.name)).collect();
    if missing.is_empty() {
        return Ok(vec![]);
    }
    let prepared: Vec<Prepared<'_>> = missing
        .into_iter()
        .map(|s| {
            let rf = replication_override.unwrap_or(s.replication_factor);
            let config: Vec<(&str, String)> = s
                .config
                .iter()
                .map(|(k, v)| {
                    // min.insync.replicas above the replication factor would refuse every acks=all
                    // write (a dev stack with --replication-factor 1).
                    let v = if k == "min.insync.replicas" { capped_min_isr(v, rf) } else { v.clone() };
                    (k.as_str(), v)
                })
                .collect();
            (s, rf, config)
        })
        .collect();
    let new: Vec<NewTopic<'_>> = prepared
        .iter()
        .map(|(s, rf, config)| {
            config
                .iter()
                .fold(NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(*rf)), |t, (k, v)| t.set(k, v))
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut created = Vec::new();
    for r in client.create_topics(&new, &opts).await? {
        match r {
            Ok(name) => created.push(name),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(%name, "already exists")
            }
            Err((name, code)) => anyhow::bail!("creating {name}: {code}"),
        }
    }
    Ok(created)
}

/// Differences between the definitions and the cluster: missing topics, partition counts,
/// and every config key the definition sets (retention, cleanup policy, ...). A broker that
/// cannot describe configs gets a warning (second list), not a failure.
pub async fn check(
    specs: &[TopicSpec],
    kafka: &KafkaSettings,
    replication_override: Option<i32>,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let client = admin(kafka)?;
    let existing = existing(&client)?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut present = Vec::new();
    for s in specs {
        match existing.get(&s.name) {
            None => problems.push(format!("{}: topic {} does not exist", s.file.display(), s.name)),
            Some(&n) if n != s.partitions as usize => problems.push(format!(
                "{}: topic {} has {n} partitions, the definition says {}",
                s.file.display(),
                s.name,
                s.partitions
            )),
            Some(_) => {}
        }
        if existing.contains_key(&s.name) && !s.config.is_empty() {
            present.push(s);
        }
    }
    if present.is_empty() {
        return Ok((problems, warnings));
    }
    let resources: Vec<ResourceSpecifier<'_>> = present.iter().map(|s| ResourceSpecifier::Topic(&s.name)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    match client.describe_configs(&resources, &opts).await {
        Ok(results) => {
            for (s, r) in present.iter().zip(results) {
                let resource = match r {
                    Ok(r) => r,
                    Err(e) => {
                        warnings.push(format!("{}: configs of {} not readable: {e}", s.file.display(), s.name));
                        continue;
                    }
                };
                for (key, want) in &s.config {
                    let want = match replication_override {
                        Some(rf) if key == "min.insync.replicas" => capped_min_isr(want, rf),
                        _ => want.clone(),
                    };
                    match resource.get(key).and_then(|e| e.value.as_deref()) {
                        Some(got) if got == want => {}
                        Some(got) => problems.push(format!(
                            "{}: topic {} has {key}={got}, the definition says {want}",
                            s.file.display(),
                            s.name
                        )),
                        None => warnings.push(format!("{}: broker reports no {key} for {}", s.file.display(), s.name)),
                    }
                }
            }
        }
        Err(e) => warnings.push(format!("topic configs not verifiable on this broker: {e}")),
    }
    Ok((problems, warnings))
}

fn existing(client: &AdminClient<DefaultClientContext>) -> anyhow::Result<BTreeMap<String, usize>> {
    let md = client.inner().fetch_metadata(None, Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}
