//! The sink dead-letter topic: records a store refused for good, with the reason.
//!
//! Output-topic records carry no raw detector content (that never leaves the mapper), so the
//! payload is kept as it was: fixing the cause and re-producing the record is a replay.

use std::time::Duration;

use anyhow::Context;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::config::Settings;
use crate::stream::{client_config, ExtendWith};

pub struct SinkDlq {
    producer: FutureProducer,
    topic: String,
    sink: &'static str,
}

impl SinkDlq {
    pub fn new(settings: &Settings, sink: &'static str) -> anyhow::Result<SinkDlq> {
        let mut c = client_config(settings);
        c.set("client.id", "llama-mapper-sink-dlq")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .extend_with(&settings.kafka.client);
        Ok(SinkDlq {
            producer: c.create().context("creating the sink DLQ producer")?,
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
            .retry(super::backoff().with_max_times(10))
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
            let headers = OwnedHeaders::new()
                .insert(Header { key: "mapper.sink", value: Some(self.sink) })
                .insert(Header { key: "mapper.reason", value: Some(reason.as_str()) })
                .insert(Header { key: "mapper.source.topic", value: Some(m.topic()) })
                .insert(Header { key: "mapper.source.partition", value: Some(partition.as_str()) })
                .insert(Header { key: "mapper.source.offset", value: Some(offset.as_str()) });
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(p) = m.payload() {
                rec = rec.payload(p);
            }
            pending.push(crate::publish::enqueue(&self.producer, rec)?);
        }
        for f in pending {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!("sink DLQ delivery failed: {e}"),
                Err(_) => anyhow::bail!("sink DLQ delivery cancelled"),
            }
        }
        Ok(())
    }

    pub fn flush(&self) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}
