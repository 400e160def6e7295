//! The model path: labels no pack and no alias knows go to an in-process LLM (`engine`),
//! behind a decision cache, a timeout and a kill-switch, so the stream never waits on it for
//! long and never stops because of it.
//!
//! Failure isolation: a model that fails to load, errors or times out answers nothing; the
//! engine's `finish` then maps those labels by the rules (`OTHER.Unknown`, confidence 0), and
//! the event says so (route `fallback`). Only real answers are cached, so a recovered model
//! gets the next chance.

pub mod cache;
pub mod engine;
pub mod eval;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::ModelSettings;
use crate::mapping::{LabelQuery, ModelDecision};
use cache::DecisionCache;

/// Counters for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub cache_hits: AtomicU64,
    pub model_answers: AtomicU64,
    pub model_failures: AtomicU64,
    pub timeouts: AtomicU64,
}

pub struct ModelRuntime {
    engine: Option<Arc<engine::Engine>>,
    cache: DecisionCache,
    timeout: Duration,
    identity: String,
    pub stats: Arc<ModelStats>,
}

impl ModelRuntime {
    /// Loads the model when `model.enabled`; on a load failure, logs it and runs rules-only.
    pub fn load(s: &ModelSettings, labels: Vec<String>) -> ModelRuntime {
        let engine = if !s.enabled {
            tracing::debug!("model path disabled (model.enabled = false): mapping with the rules alone");
            None
        } else {
            match engine::Engine::load(s, labels) {
                Ok(e) => {
                    tracing::info!(model = %e.identity(), "model loaded");
                    Some(Arc::new(e))
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "model failed to load: mapping with the rules alone");
                    None
                }
            }
        };
        ModelRuntime {
            engine,
            cache: DecisionCache::new(s.cache_capacity),
            timeout: Duration::from_millis(s.timeout_ms.max(1)),
            identity: s.identity(),
            stats: Arc::default(),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.engine.is_some()
    }

    /// `name+adapter_version`: what events decided by this model record.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Answers for `queries` (same order): cached decisions, then one concurrent round of the
    /// engine for the rest, bounded by the timeout.
    pub async fn decide(&self, queries: &[LabelQuery]) -> Vec<Option<ModelDecision>> {
        let Some(engine) = &self.engine else { return vec![None; queries.len()] };
        let mut out: Vec<Option<ModelDecision>> = Vec::with_capacity(queries.len());
        let mut misses: Vec<(usize, LabelQuery)> = Vec::new();
        for (i, q) in queries.iter().enumerate() {
            match self.cache.get(q, &self.identity) {
                Some(d) => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    out.push(Some(d));
                }
                None => {
                    out.push(None);
                    misses.push((i, q.clone()));
                }
            }
        }
        if misses.is_empty() {
            return out;
        }
        let asked: Vec<LabelQuery> = misses.iter().map(|(_, q)| q.clone()).collect();
        match tokio::time::timeout(self.timeout, engine.classify_many(&asked)).await {
            Ok(answers) => {
                for ((i, q), a) in misses.into_iter().zip(answers) {
                    match a {
                        Ok(d) => {
                            self.stats.model_answers.fetch_add(1, Ordering::Relaxed);
                            self.cache.put(&q, &self.identity, d.clone());
                            out[i] = Some(d);
                        }
                        Err(e) => {
                            self.stats.model_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(detector = %q.detector, error = %format!("{e:#}"), "model answer failed; the rules map this label");
                        }
                    }
                }
            }
            Err(_) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(labels = misses.len(), timeout = ?self.timeout, "model timed out; the rules map this batch's unknown labels");
            }
        }
        out
    }
}
