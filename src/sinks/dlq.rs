//! The sink dead-letter topic: records a store refused for good, with the reason.
//!
//! Output-topic records carry no raw detector content (that never leaves the mapper), so the
//! payload is kept as it was: fixing the cause and re-producing the record is a replay.

use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::config::Settings;
use crate::kafka::{self, Delivery};

pub struct SinkDlq {
    producer: FutureProducer,
    topic: String,
    sink: &'static str,
}

impl SinkDlq {
    pub fn new(settings: &Settings, sink: &'static str) -> anyhow::Result<SinkDlq> {
        Ok(SinkDlq {
            producer: kafka::producer(&settings.kafka, "llama-mapper-sink-dlq", &[])?,
            topic: settings.sink.dlq_topic.clone(),
            sink,
        })
    }

    /// Sends every `(record, reason)` and waits until all are acknowledged: the caller commits
    /// the source offsets next, so a record must be safe here before its offset moves on.
    /// Retried with backoff for about a minute; after that the error ends the sink, whose
    /// restart re-reads the uncommitted batch.
    pub async fn send_all(&self, rejected: &[(&OwnedMessage, String)]) -> anyhow::Result<()> {
        use backon::Retryable;
        (|| self.try_send_all(rejected))
            .retry(kafka::backoff(Duration::from_millis(200)).with_max_times(10))
            .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "sink DLQ delivery failed; retrying"))
            .await
    }

    async fn try_send_all(&self, rejected: &[(&OwnedMessage, String)]) -> anyhow::Result<()> {
        let mut pending = Vec::with_capacity(rejected.len());
        for (m, reason) in rejected {
            tracing::warn!(sink = self.sink, topic = m.topic(), partition = m.partition(), offset = m.offset(),
                reason = %reason, "record refused by the sink; sent to the sink dead-letter topic");
            let partition = m.partition().to_string();
            let offset = m.offset().to_string();
            let headers = kafka::headers(
                [
                    ("mapper.sink", self.sink.as_bytes()),
                    ("mapper.reason", reason.as_bytes()),
                    ("mapper.source.topic", m.topic().as_bytes()),
                    ("mapper.source.partition", partition.as_bytes()),
                    ("mapper.source.offset", offset.as_bytes()),
                ]
                .into_iter(),
            );
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(p) = m.payload() {
                rec = rec.payload(p);
            }
            pending.push(kafka::enqueue(&self.producer, rec)?);
        }
        match kafka::await_all(pending, None, None).await {
            Delivery::Delivered => Ok(()),
            Delivery::Failed(_, e) => anyhow::bail!("sink DLQ delivery failed: {e}"),
            Delivery::Interrupted => anyhow::bail!("sink DLQ delivery interrupted"),
        }
    }

    pub fn flush(&self) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}
