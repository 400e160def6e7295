//! librdkafka callbacks: rebalances (so a half-built batch is never committed across one)
//! and statistics (consumer lag as the broker reports it).

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::Statistics;

use crate::ops::Metrics;

pub struct StreamContext {
    /// Bumped on every revocation: a batch that saw it change is discarded, not committed.
    pub generation: AtomicU64,
    pub metrics: Metrics,
}

impl ClientContext for StreamContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::log_client_error(&error, reason);
    }

    fn stats(&self, stats: Statistics) {
        for topic in stats.topics.values() {
            for (p, part) in &topic.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.consumer_lag.with_label_values(&[&p.to_string()]).set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for StreamContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.metrics.set_ready(false);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    /// At-least-once commits are asynchronous: a failure repeats work after a restart (the
    /// next commit supersedes it), which that mode allows, but it is worth a line.
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &rdkafka::TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed; the next one supersedes it");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.metrics.set_ready(true);
        }
    }
}
