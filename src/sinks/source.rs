//! The consuming half every sink shares: batches from a consumer group, committed only when
//! the sink says the batch is durable.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use tokio::sync::watch;

use crate::config::Settings;
use crate::stream::{client_config, next_offsets, ExtendWith};

pub struct SinkSource {
    consumer: StreamConsumer,
    batch_size: usize,
    batch_timeout: Duration,
}

impl SinkSource {
    pub fn new(settings: &Settings, group: &str, topics: &[&str]) -> anyhow::Result<SinkSource> {
        let mut c = client_config(settings);
        c.set("client.id", "llama-mapper-sink")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // Only what the mapper committed: aborted transactions never reach a projection.
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", settings.kafka.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (settings.kafka.session_timeout_ms / 3).max(100).to_string())
            .extend_with(&settings.kafka.client);
        let consumer: StreamConsumer = c.create().context("creating the sink's Kafka consumer")?;
        consumer.subscribe(topics).context("subscribing to the output topics")?;
        Ok(SinkSource {
            consumer,
            batch_size: settings.sink.batch_size.max(1),
            batch_timeout: Duration::from_millis(settings.sink.batch_timeout_ms.max(1)),
        })
    }

    /// Waits for at least one record, then collects up to `batch_size` within `batch_timeout`.
    /// Returns an empty batch when shutdown is requested while waiting.
    pub async fn next_batch(&self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<Vec<OwnedMessage>> {
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                m = self.consumer.recv() => m,
                _ = shutdown.wait_for(|s| *s) => return Ok(batch),
            };
            match first {
                Ok(m) => {
                    batch.push(m.detach());
                    break;
                }
                // Broker hiccups surface here; librdkafka reconnects by itself.
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka read error; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let deadline = Instant::now() + self.batch_timeout;
        while batch.len() < self.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka read error; writing what arrived so far");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Commits one past the last record of each partition in `batch`. A commit refused because
    /// the partitions moved to another instance is not an error: that instance re-reads the
    /// batch and the sink's idempotent writes absorb it.
    pub fn commit(&self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let tpl = next_offsets(batch)?;
        if let Err(e) = tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync)) {
            tracing::warn!(error = %e, "offset commit refused (rebalance?); the batch will be re-read and deduplicated");
        }
        Ok(())
    }
}
