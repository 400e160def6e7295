//! The consuming half every sink shares: batches from a consumer group, committed only when
//! the sink says the batch is durable.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;

use crate::config::Settings;
use crate::kafka::{self, BatchLimits, Shutdown};

pub struct SinkSource {
    consumer: StreamConsumer<kafka::Logged>,
    limits: BatchLimits,
}

impl SinkSource {
    pub fn new(settings: &Settings, group: &str, topics: &[&str]) -> anyhow::Result<SinkSource> {
        // read_committed (the default of every group consumer): aborted transactions never
        // reach a projection.
        let consumer: StreamConsumer<kafka::Logged> =
            kafka::group_consumer(&settings.kafka, "llama-mapper-sink", group, &[], kafka::Logged)?;
        anyhow::Context::context(consumer.subscribe(topics), "subscribing to the output topics")?;
        Ok(SinkSource {
            consumer,
            limits: BatchLimits {
                max_records: settings.sink.batch_size.max(1),
                linger: Duration::from_millis(settings.sink.batch_timeout_ms.max(1)),
                // Sinks want large inserts and segments more than latency.
                idle: None,
            },
        })
    }

    /// Waits for at least one record, then collects up to `batch_size` within `batch_timeout`.
    /// Returns an empty batch when shutdown is requested while waiting.
    pub async fn next_batch(&self, shutdown: &mut Shutdown) -> anyhow::Result<Vec<OwnedMessage>> {
        // A sink's writes are idempotent, so a batch that spans a rebalance is harmless: no epoch.
        Ok(kafka::collect(&self.consumer, self.limits, shutdown, || 0).await?.records)
    }

    /// Commits one past the last record of each partition in `batch`. A commit refused because
    /// the partitions moved to another instance is not an error: that instance re-reads the
    /// batch and the sink's idempotent writes absorb it.
    pub fn commit(&self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let tpl = kafka::next_offsets(batch)?;
        if let Err(e) = tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync)) {
            tracing::warn!(error = %e, "offset commit refused (rebalance?); the batch will be re-read and deduplicated");
        }
        Ok(())
    }
}
