//! Operations surface of `mapper run`: Prometheus metrics, `/healthz`, `/readyz`.
//!
//! Metric labels are low-cardinality by construction (route, reason, outcome, partition):
//! never a tenant id, label text or event id, so a noisy tenant cannot blow up the series
//! count and no metric can carry content.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::model::ModelStats;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub events_in: IntCounter,
    /// Canonical events out, by the event's route.
    pub events_out: IntCounterVec,
    /// Labels decided, by route: the fallback ratio's numerator and denominator.
    pub labels: IntCounterVec,
    pub dlq: IntCounterVec,
    pub schema_valid: IntCounter,
    pub schema_invalid: IntCounter,
    pub schema_valid_ratio: Gauge,
    pub fallback_ratio: Gauge,
    pub batch_size: Histogram,
    pub latency: Histogram,
    pub transactions: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub ready: Arc<AtomicBool>,
    pub progress: Progress,
}

/// Whether the loop is making progress: `/healthz`'s answer. A batch starts when it is read
/// and ends when it commits; retries of the same batch do not restart the clock, so a record
/// that fails forever or a transaction that never completes shows as a stall.
#[derive(Clone, Default)]
pub struct Progress {
    /// Milliseconds since the epoch when the open batch was read; 0 when idle.
    busy_since_ms: Arc<AtomicI64>,
    stall_after_ms: Arc<AtomicU64>,
}

impl Progress {
    pub fn set_stall_timeout(&self, ms: u64) {
        self.stall_after_ms.store(ms, Ordering::Relaxed);
    }

    /// A batch is in progress (no-op while one already is).
    pub fn busy(&self) {
        let _ = self.busy_since_ms.compare_exchange(0, now_millis().max(1), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The open batch committed (or was handed to another instance).
    pub fn done(&self) {
        self.busy_since_ms.store(0, Ordering::SeqCst);
    }

    /// `Some(how long)` when the open batch has been in progress for longer than allowed.
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        let since = self.busy_since_ms.load(Ordering::SeqCst);
        let limit = self.stall_after_ms.load(Ordering::Relaxed);
        let busy = (now_millis() - since).max(0) as u64;
        (since > 0 && limit > 0 && busy > limit).then(|| std::time::Duration::from_millis(busy))
    }
}

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("mapper".into()), None).expect("valid prefix");
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone())).expect("metric registers once");
                m
            }};
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        Metrics {
            events_in: reg!(IntCounter::new("events_in_total", "Input records consumed").unwrap()),
            events_out: reg!(counter_vec("events_out_total", "Canonical events published, by route", &["route"])),
            labels: reg!(counter_vec("labels_total", "Raw labels decided, by route", &["route"])),
            dlq: reg!(counter_vec("dlq_total", "Records sent to the dead-letter topic, by reason", &["reason"])),
            schema_valid: reg!(IntCounter::new("schema_valid_total", "Outputs that passed their schema").unwrap()),
            schema_invalid: reg!(IntCounter::new(
                "schema_invalid_total",
                "Outputs that failed their schema (a bug; they are not emitted)"
            )
            .unwrap()),
            schema_valid_ratio: reg!(Gauge::new("schema_valid_ratio", "schema_valid / all outputs checked").unwrap()),
            fallback_ratio: reg!(Gauge::new("fallback_ratio", "Labels decided by the fallback / all labels").unwrap()),
            batch_size: reg!(Histogram::with_opts(
                HistogramOpts::new("batch_size", "Input records per batch")
                    .buckets(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0])
            )
            .unwrap()),
            latency: reg!(Histogram::with_opts(
                HistogramOpts::new("end_to_end_latency_seconds", "Input record timestamp to output commit")
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            )
            .unwrap()),
            transactions: reg!(counter_vec("transactions_total", "Kafka transactions, by outcome", &["outcome"])),
            consumer_lag: reg!(IntGaugeVec::new(
                Opts::new("consumer_lag", "Records behind the high watermark, as the broker reports it"),
                &["partition"]
            )
            .unwrap()),
            ready: Arc::new(AtomicBool::new(false)),
            progress: Progress::default(),
            registry,
        }
    }

    pub fn update_ratios(&self) {
        let valid = self.schema_valid.get() as f64;
        let all = valid + self.schema_invalid.get() as f64;
        if all > 0.0 {
            self.schema_valid_ratio.set(valid / all);
        }
        let total: u64 =
            ["pack", "alias", "model", "fallback"].iter().map(|r| self.labels.with_label_values(&[r]).get()).sum();
        if total > 0 {
            self.fallback_ratio.set(self.labels.with_label_values(&["fallback"]).get() as f64 / total as f64);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Exports the model path's own counters (read at scrape time from `stats`, which the
    /// runtime updates without knowing about Prometheus): `model_loaded`,
    /// `model_labels_total{outcome=cache_hit|answered|failed}` and `model_timeouts_total`
    /// (batches whose unknown labels went to the rules because the model was too slow).
    pub fn watch_model(&self, stats: Arc<ModelStats>, loaded: bool) -> prometheus::Result<()> {
        let c = ModelCollector {
            stats,
            labels: IntCounterVec::new(
                Opts::new("model_labels_total", "Unknown labels asked of the model path, by outcome"),
                &["outcome"],
            )?,
            timeouts: IntCounter::new("model_timeouts_total", "Batches the model did not answer in model.timeout_ms")?,
            loaded: IntGauge::new("model_loaded", "1 when the model is loaded, 0 when mapping is rules-only")?,
        };
        c.loaded.set(i64::from(loaded));
        self.registry.register(Box::new(c))
    }
}

struct ModelCollector {
    stats: Arc<ModelStats>,
    labels: IntCounterVec,
    timeouts: IntCounter,
    loaded: IntGauge,
}

impl Collector for ModelCollector {
    fn desc(&self) -> Vec<&Desc> {
        [self.labels.desc(), self.timeouts.desc(), self.loaded.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        for (outcome, v) in
            [("cache_hit", &s.cache_hits), ("answered", &s.model_answers), ("failed", &s.model_failures)]
        {
            let c = self.labels.with_label_values(&[outcome]);
            c.reset();
            c.inc_by(v.load(Ordering::Relaxed));
        }
        self.timeouts.reset();
        self.timeouts.inc_by(s.timeouts.load(Ordering::Relaxed));
        [self.labels.collect(), self.timeouts.collect(), self.loaded.collect()].concat()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `/metrics`, `/healthz` (the loop is not stalled: see [`Progress`]) and `/readyz`
/// (joined the group and the producer is initialised) until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(|State(m): State<Metrics>| async move { m.render() }))
        .route(
            "/healthz",
            get(|State(m): State<Metrics>| async move {
                match m.progress.stalled_for() {
                    None => (StatusCode::OK, "ok\n".to_string()),
                    Some(d) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("stalled: one batch in progress for {} s without committing\n", d.as_secs()),
                    ),
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(m): State<Metrics>| async move {
                if m.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_in_progress_for_longer_than_the_stall_timeout_is_a_stall_until_it_commits() {
        let p = Progress::default();
        p.set_stall_timeout(20);
        assert_eq!(p.stalled_for(), None, "idle is healthy");
        p.busy();
        assert_eq!(p.stalled_for(), None, "just started");
        std::thread::sleep(std::time::Duration::from_millis(40));
        p.busy(); // a retry of the same batch does not restart the clock
        assert!(p.stalled_for().is_some());
        p.done();
        assert_eq!(p.stalled_for(), None);
        p.set_stall_timeout(0);
        p.busy();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(p.stalled_for(), None, "0 disables the check");
    }

    #[test]
    fn model_counters_are_read_at_scrape_time() {
        let m = Metrics::new();
        let stats = Arc::new(ModelStats::default());
        m.watch_model(Arc::clone(&stats), true).unwrap();
        stats.cache_hits.fetch_add(3, Ordering::Relaxed);
        stats.timeouts.fetch_add(1, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("mapper_model_labels_total{outcome=\"cache_hit\"} 3"), "{text}");
        assert!(text.contains("mapper_model_timeouts_total 1"), "{text}");
        assert!(text.contains("mapper_model_loaded 1"), "{text}");
        stats.cache_hits.fetch_add(2, Ordering::Relaxed);
        assert!(m.render().contains("mapper_model_labels_total{outcome=\"cache_hit\"} 5"));
    }
}
