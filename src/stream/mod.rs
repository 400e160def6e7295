//! `mapper run`: consume detector events, map them, publish canonical + audit events, in
//! batches, exactly once.
//!
//! One loop owns offsets, transactions and rebalances; the mapping itself is the pure
//! [`Pipeline`]. Per batch, in exactly-once mode:
//!
//! 1. collect up to `batch_size` records (or what arrived within `batch_timeout_ms`);
//! 2. if a rebalance revoked partitions meanwhile, drop the batch uncommitted: the new owner
//!    (or we, after reassignment) re-reads it from the committed offsets;
//! 3. decode, map, validate; rejected inputs become dead letters;
//! 4. begin a transaction, produce every output and dead letter, add the batch's next
//!    offsets with the consumer group metadata (`send_offsets_to_transaction`), commit.
//!
//! A failed transaction is aborted and the consumer rewound to the batch start, then the batch
//! is retried with jittered backoff. The transactional id is `<group>-<instance_id>`, stable
//! across restarts, so a restarted instance fences its own zombie; the group metadata passed
//! with the offsets fences zombies across rebalances (KIP-447).
//!
//! At-least-once mode uses an idempotent producer and commits offsets only after every output
//! of the batch was acknowledged: nothing is lost, a crash can repeat a batch.

mod context;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use self::context::StreamContext;
use crate::config::{Guarantee, Settings};
use crate::ingest::dlq::{dead_letter, SourceCoords};
use crate::ingest::Decoder;
use crate::ops::{self, Metrics};
use crate::pipeline::Pipeline;
use crate::publish::{OutputRecord, Publisher};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until `shutdown` turns true; then finishes the open batch and leaves the group.
pub async fn run(settings: Settings, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(&settings)?;
    let metrics = Metrics::new();
    let addr: SocketAddr = settings.metrics_addr.parse().context("metrics_addr")?;
    let bound = ops::serve(addr, metrics.clone()).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(metrics = %bound, "metrics, /healthz and /readyz listening");

    let k = &settings.kafka;
    let instance = k.instance_id.clone().unwrap_or_else(hostname);
    let ctx = StreamContext { generation: Default::default(), metrics: metrics.clone() };
    let consumer: StreamConsumer<StreamContext> = client_config(&settings)
        .set("group.id", &k.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("statistics.interval.ms", "5000")
        // Bounded prefetch: backpressure instead of buffering the topic in memory.
        .set("queued.max.messages.kbytes", "16384")
        // librdkafka's 500 ms default long-poll shows up directly as latency at low rates.
        .set("fetch.wait.max.ms", "100")
        .extend_with(&k.client)
        .create_with_context(ctx)
        .context("creating the consumer")?;
    let mut producer_cfg = client_config(&settings);
    producer_cfg.set("linger.ms", "5").set("enable.idempotence", "true");
    if k.guarantee == Guarantee::ExactlyOnce {
        producer_cfg
            .set("transactional.id", format!("{}-{instance}", k.group))
            .set("transaction.timeout.ms", k.transaction_timeout_ms.to_string());
    }
    let producer: FutureProducer = producer_cfg.extend_with(&k.client).create().context("creating the producer")?;
    if k.guarantee == Guarantee::ExactlyOnce {
        (|| async { tokio::task::block_in_place(|| producer.init_transactions(TXN_TIMEOUT)) })
            .retry(backoff())
            .when(|e| !is_fatal(e))
            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "init_transactions failed"))
            .await
            .context("initialising transactions")?;
    }
    consumer.subscribe(&[k.input_topic.as_str()]).context("subscribing")?;
    tracing::info!(
        brokers = %k.brokers, group = %k.group, instance = %instance, input = %k.input_topic,
        guarantee = ?k.guarantee, "mapper run started"
    );

    let mut processor = Processor {
        pipeline: &pipeline,
        decoder: Decoder::new(&pipeline.contracts, &settings),
        publisher: Publisher::new(&settings),
        settings: &settings,
        metrics: &metrics,
        consumer: &consumer,
        producer: &producer,
    };
    let result = processor.run_loop(&mut shutdown).await;
    metrics.set_ready(false);
    // Leave the group now rather than after session.timeout.ms, so partitions move at once.
    consumer.unsubscribe();
    tracing::info!("mapper run stopped");
    result
}

struct Processor<'a> {
    pipeline: &'a Pipeline,
    decoder: Decoder<'a>,
    publisher: Publisher,
    settings: &'a Settings,
    metrics: &'a Metrics,
    consumer: &'a StreamConsumer<StreamContext>,
    producer: &'a FutureProducer,
}

impl Processor<'_> {
    async fn run_loop(&mut self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        while !*shutdown.borrow() {
            let generation = self.consumer.context().generation.load(Ordering::SeqCst);
            let batch = self.next_batch(shutdown).await?;
            if batch.is_empty() {
                continue;
            }
            if self.consumer.context().generation.load(Ordering::SeqCst) != generation {
                tracing::info!(records = batch.len(), "rebalance during batch: dropped uncommitted, will be re-read");
                self.rewind(&batch);
                continue;
            }
            let started = Instant::now();
            let records = self.process(&batch);
            let mapped_in = started.elapsed();
            let offsets = next_offsets(&batch)?;
            // Retry the same records until they commit: the consumer position already sits
            // past the batch, and the batch's offsets only commit with its outputs.
            let mut delays = backoff().build();
            loop {
                match self.deliver(&records, &offsets).await {
                    Ok(()) => break,
                    Err(e) if is_fatal(&e) => {
                        return Err(anyhow::Error::new(e).context("fatal Kafka error (fenced by a newer instance?)"))
                    }
                    Err(e) => {
                        let wait = delays.next().unwrap_or(Duration::from_secs(10));
                        tracing::warn!(error = %e, retry_in = ?wait, "batch delivery failed; retrying");
                        tokio::time::sleep(wait).await;
                        if self.consumer.context().generation.load(Ordering::SeqCst) != generation {
                            // Our partitions may be someone else's now: the batch is theirs to redo,
                            // from the committed offsets; what we still own we re-read ourselves.
                            tracing::info!("rebalance while retrying: batch dropped uncommitted");
                            self.rewind(&batch);
                            break;
                        }
                    }
                }
            }
            self.metrics.batch_size.observe(batch.len() as f64);
            for m in &batch {
                if let Some(ts) = m.timestamp().to_millis() {
                    let age = now_millis().saturating_sub(ts) as f64 / 1000.0;
                    self.metrics.latency.observe(age.max(0.0));
                }
            }
            self.metrics.update_ratios();
            tracing::debug!(records = batch.len(), mapping = ?mapped_in, total = ?started.elapsed(), "batch committed");
        }
        Ok(())
    }

    async fn next_batch(&self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<Vec<OwnedMessage>> {
        let k = &self.settings.kafka;
        let mut batch = Vec::with_capacity(k.batch_size);
        let first = tokio::select! {
            m = self.consumer.recv() => m,
            _ = shutdown.changed() => return Ok(batch),
        };
        match first {
            Ok(m) => batch.push(m.detach()),
            Err(e) => {
                tracing::warn!(error = %e, "consume error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(batch);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(k.batch_timeout_ms);
        while batch.len() < k.batch_size {
            tokio::select! {
                m = self.consumer.recv() => match m {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => { tracing::warn!(error = %e, "consume error"); break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(batch)
    }

    /// Decode, map and encode one batch: the outputs of every input, in input order.
    fn process(&self, batch: &[OwnedMessage]) -> Vec<OutputRecord> {
        let m = self.metrics;
        m.events_in.inc_by(batch.len() as u64);
        let mut slots: Vec<Option<Vec<OutputRecord>>> = vec![None; batch.len()];
        let mut events = Vec::with_capacity(batch.len());
        let mut event_slots = Vec::with_capacity(batch.len());
        for (i, msg) in batch.iter().enumerate() {
            let payload = msg.payload().unwrap_or_default();
            match self.decoder.decode(payload) {
                Ok(ev) => {
                    events.push(ev);
                    event_slots.push(i);
                }
                Err(rej) => {
                    let src = coords(msg);
                    tracing::warn!(
                        reason = rej.reason.as_str(), error = %rej.detail,
                        topic = %src.topic, partition = src.partition, offset = src.offset,
                        "input rejected to the dead-letter topic"
                    );
                    m.dlq.with_label_values(&[rej.reason.as_str()]).inc();
                    slots[i] = Some(vec![self.dlq_record(msg, dead_letter(&rej, payload, &src))]);
                }
            }
        }
        for (result, &i) in self.pipeline.map_batch(&events).into_iter().zip(&event_slots) {
            let msg = &batch[i];
            let src = coords(msg);
            let recs = match result.map_err(|v| v.to_string()).and_then(|mapped| {
                m.schema_valid.inc_by(2);
                for l in &mapped.canonical.lineage {
                    m.labels.with_label_values(&[l.route.as_str()]).inc();
                }
                m.events_out.with_label_values(&[mapped.canonical.provenance.route.as_str()]).inc();
                tracing::debug!(
                    tenant = %mapped.canonical.provenance.tenant_id, detector = %mapped.canonical.provenance.detector,
                    labels = ?mapped.canonical.taxonomy, partition = src.partition, offset = src.offset, "mapped"
                );
                self.publisher.records(&mapped, &src).map(Vec::from).map_err(|e| e.to_string())
            }) {
                Ok(r) => r,
                Err(bug) => {
                    // An output that fails its schema is a bug: it is not emitted, the input is
                    // parked in the DLQ so nothing is lost.
                    m.schema_invalid.inc();
                    m.dlq.with_label_values(&["output_invalid"]).inc();
                    tracing::error!(error = %bug, partition = src.partition, offset = src.offset, "output failed its schema");
                    let rej = crate::ingest::Rejected::new(crate::ingest::RejectReason::SchemaInvalid, bug);
                    let mut dl = dead_letter(&rej, msg.payload().unwrap_or_default(), &src);
                    dl.headers[0].1 = "output_invalid".into();
                    vec![self.dlq_record(msg, dl)]
                }
            };
            slots[i] = Some(recs);
        }
        slots.into_iter().flatten().flatten().collect()
    }

    /// Puts the partitions of a dropped batch that we still own back at the batch's first
    /// offset. Needed because records fetched *after* a reassignment (which restarts at the
    /// committed offset) may be in the dropped batch: without the seek they would be skipped.
    /// Every record of a batch is at or past the committed offset, so this never re-reads
    /// committed work; seeks on partitions we lost simply fail.
    fn rewind(&self, batch: &[OwnedMessage]) {
        let mut first: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            let e = first.entry((m.topic(), m.partition())).or_insert(m.offset());
            *e = (*e).min(m.offset());
        }
        let assigned = self.consumer.assignment().unwrap_or_default();
        for ((topic, partition), offset) in first {
            if assigned.find_partition(topic, partition).is_none() {
                continue;
            }
            if let Err(e) = self.consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
                tracing::warn!(error = %e, partition, offset, "seek after a dropped batch failed");
            }
        }
    }

    fn dlq_record(&self, msg: &OwnedMessage, dl: crate::ingest::dlq::DeadLetter) -> OutputRecord {
        OutputRecord {
            topic: self.settings.kafka.dlq_topic.clone(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            payload: dl.value,
            headers: dl.headers,
        }
    }

    async fn deliver(&self, records: &[OutputRecord], offsets: &TopicPartitionList) -> Result<(), KafkaError> {
        match self.settings.kafka.guarantee {
            Guarantee::ExactlyOnce => {
                self.producer.begin_transaction()?;
                let sent = self.send_all(records);
                let result = match sent {
                    Ok(_futures) => {
                        let cgm = self.consumer.group_metadata().ok_or(KafkaError::NoMessageReceived)?;
                        tokio::task::block_in_place(|| {
                            self.producer.send_offsets_to_transaction(offsets, &cgm, TXN_TIMEOUT)?;
                            self.producer.commit_transaction(TXN_TIMEOUT)
                        })
                    }
                    Err(e) => Err(e),
                };
                match &result {
                    Ok(()) => self.metrics.transactions.with_label_values(&["commit"]).inc(),
                    Err(e) => {
                        self.metrics.transactions.with_label_values(&["abort"]).inc();
                        if !is_fatal(e) {
                            if let Err(abort) =
                                tokio::task::block_in_place(|| self.producer.abort_transaction(TXN_TIMEOUT))
                            {
                                tracing::warn!(error = %abort, "abort_transaction failed");
                                return Err(abort);
                            }
                        }
                    }
                }
                result
            }
            Guarantee::AtLeastOnce => {
                let futures = self.send_all(records)?;
                for f in futures {
                    match f.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => return Err(e),
                        Err(_) => return Err(KafkaError::Canceled),
                    }
                }
                self.consumer.commit(offsets, CommitMode::Sync)
            }
        }
    }

    fn send_all(&self, records: &[OutputRecord]) -> Result<Vec<rdkafka::producer::DeliveryFuture>, KafkaError> {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&r.topic).key(r.key.as_str()).headers(headers);
            if let Some(p) = &r.payload {
                rec = rec.payload(p.as_slice());
            }
            loop {
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        futures.push(f);
                        break;
                    }
                    // Local queue full: let librdkafka drain, then retry (backpressure).
                    Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        self.producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        Ok(futures)
    }
}

fn client_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.kafka.brokers);
    c.set("client.id", "llama-mapper");
    c
}

/// The user's `kafka.client` properties, applied last so they can override our defaults.
trait ExtendWith {
    fn extend_with(&mut self, extra: &BTreeMap<String, String>) -> &mut Self;
}

impl ExtendWith for ClientConfig {
    fn extend_with(&mut self, extra: &BTreeMap<String, String>) -> &mut Self {
        for (k, v) in extra {
            self.set(k, v);
        }
        self
    }
}

fn coords(m: &OwnedMessage) -> SourceCoords {
    SourceCoords { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset() }
}

fn next_offsets_map(batch: &[OwnedMessage]) -> BTreeMap<(String, i32), i64> {
    let mut out: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = out.entry((m.topic().to_string(), m.partition())).or_insert(m.offset() + 1);
        *e = (*e).max(m.offset() + 1);
    }
    out
}

/// The offsets to commit for a batch: one past the last record of each partition.
fn next_offsets(batch: &[OwnedMessage]) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in next_offsets_map(batch) {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(next))?;
    }
    Ok(tpl)
}

fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(r) => r.is_fatal(),
        _ => e.rdkafka_error_code().is_some_and(|c| {
            matches!(
                c,
                rdkafka::types::RDKafkaErrorCode::Fenced
                    | rdkafka::types::RDKafkaErrorCode::ProducerFenced
                    | rdkafka::types::RDKafkaErrorCode::InvalidProducerEpoch
                    | rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            )
        }),
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(20)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "mapper".into())
}

pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutdown requested: finishing the open batch");
        let _ = tx.send(true);
    });
    rx
}
