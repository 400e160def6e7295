//! Operations surface of `mapper run`: Prometheus metrics, `/healthz`, `/readyz`.
//!
//! Metric labels are low-cardinality by construction (route, reason, outcome, partition):
//! never a tenant id, label text or event id, so a noisy tenant cannot blow up the series
//! count and no metric can carry content.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Serves `/metrics`, `/healthz` (the process runs) and `/readyz` (joined the group and the
/// producer is initialised) until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(|State(m): State<Metrics>| async move { m.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
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
