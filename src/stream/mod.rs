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
//! A batch that does not commit (a failed transaction is aborted) is read again from the
//! committed offsets after a jittered backoff: through `recv()`, so a pending rebalance runs. The transactional id is `<group>-<instance_id>`, stable
//! across restarts, so a restarted instance fences its own zombie; the group metadata passed
//! with the offsets fences zombies across rebalances (KIP-447).
//!
//! At-least-once mode uses an idempotent producer and commits offsets only after every output
//! of the batch was acknowledged: nothing is lost, a crash can repeat a batch.

mod context;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
use crate::ingest::{Decoder, RejectReason};
use crate::model::ModelRuntime;
use crate::ops::{self, Metrics};
use crate::pipeline::Pipeline;
use crate::publish::{OutputRecord, Publisher};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What one batch produced, counted for the metrics once it is committed.
#[derive(Default)]
struct Processed {
    records: Vec<OutputRecord>,
    routes: BTreeMap<&'static str, u64>,
    labels: BTreeMap<&'static str, u64>,
    dlq: BTreeMap<&'static str, u64>,
    valid: u64,
    invalid: u64,
}

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Kafka(KafkaError),
    #[error("{0}")]
    Transient(String),
}

/// Runs until `shutdown` turns true; then finishes the open batch and leaves the group.
pub async fn run(settings: Settings, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(&settings)?;
    // Loading blocks for as long as the weights take to read; a failure leaves rules-only
    // mapping (logged), never a processor that does not start.
    let labels: Vec<String> = pipeline.catalog().taxonomy.labels().map(|l| l.name.clone()).collect();
    let model_settings = settings.model.clone();
    let model = tokio::task::spawn_blocking(move || ModelRuntime::load(&model_settings, labels))
        .await
        .context("loading the model")?;
    let metrics = Metrics::new();
    metrics.watch_model(Arc::clone(&model.stats), model.is_loaded()).context("registering model metrics")?;
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
            .retry(backoff().with_max_times(20))
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
        model: &model,
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
    model: &'a ModelRuntime,
    decoder: Decoder<'a>,
    publisher: Publisher,
    settings: &'a Settings,
    metrics: &'a Metrics,
    consumer: &'a StreamConsumer<StreamContext>,
    producer: &'a FutureProducer,
}

impl Processor<'_> {
    async fn run_loop(&mut self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        // Backoff for consecutive failed batches; reset by the next commit.
        let mut delays = backoff().build();
        while !*shutdown.borrow() {
            let generation = self.consumer.context().generation.load(Ordering::SeqCst);
            let batch = self.next_batch(shutdown).await?;
            if batch.is_empty() {
                continue;
            }
            if self.consumer.context().generation.load(Ordering::SeqCst) != generation {
                tracing::info!(records = batch.len(), "rebalance during batch: dropped uncommitted, will be re-read");
                self.rewind();
                continue;
            }
            let started = Instant::now();
            // Decoding may fetch a schema from the registry: blocking I/O, off the async workers.
            let processed = tokio::task::block_in_place(|| self.process(&batch));
            let mapped_in = started.elapsed();
            let outcome = match processed {
                Ok(out) => {
                    self.deliver(&out.records, &next_offsets(&batch)?).await.map(|()| out).map_err(Failure::Kafka)
                }
                Err(transient) => Err(Failure::Transient(transient)),
            };
            match outcome {
                Ok(out) => {
                    delays = backoff().build();
                    self.record_committed(&batch, &out);
                    tracing::debug!(records = batch.len(), mapping = ?mapped_in, total = ?started.elapsed(), "batch committed");
                }
                Err(Failure::Kafka(e)) if is_fatal(&e) => {
                    return Err(anyhow::Error::new(e).context(
                        "fatal Kafka error: fenced by another instance with the same transactional id? \
                         (give every instance its own --instance-id)",
                    ));
                }
                Err(failure) => {
                    // Nothing of the batch is committed. Go back to the committed offsets and
                    // read it again through `recv()`, which also lets a pending rebalance run.
                    let wait = delays.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(error = %failure, retry_in = ?wait, "batch not committed; re-reading it");
                    self.rewind();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Metrics of a committed batch (only committed work is counted as out).
    fn record_committed(&self, batch: &[OwnedMessage], out: &Processed) {
        let m = self.metrics;
        m.events_in.inc_by(batch.len() as u64);
        m.batch_size.observe(batch.len() as f64);
        for (route, n) in &out.routes {
            m.events_out.with_label_values(&[route]).inc_by(*n);
        }
        for (route, n) in &out.labels {
            m.labels.with_label_values(&[route]).inc_by(*n);
        }
        for (reason, n) in &out.dlq {
            m.dlq.with_label_values(&[reason]).inc_by(*n);
        }
        m.schema_valid.inc_by(out.valid);
        m.schema_invalid.inc_by(out.invalid);
        let now = now_millis();
        for msg in batch {
            if let Some(ts) = msg.timestamp().to_millis() {
                m.latency.observe((now.saturating_sub(ts) as f64 / 1000.0).max(0.0));
            }
        }
        m.update_ratios();
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

    /// Decode, map and encode one batch: the outputs of every input, in input order. `Err`
    /// only for a transient problem (the schema registry unreachable): the batch is retried.
    fn process(&self, batch: &[OwnedMessage]) -> Result<Processed, String> {
        let mut out = Processed::default();
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
                Err(rej) if rej.reason == RejectReason::Unavailable => return Err(rej.to_string()),
                Err(rej) => {
                    let src = coords(msg);
                    tracing::warn!(
                        reason = rej.reason.as_str(), error = %rej.detail,
                        topic = %src.topic, partition = src.partition, offset = src.offset,
                        "input rejected to the dead-letter topic"
                    );
                    *out.dlq.entry(rej.reason.as_str()).or_default() += 1;
                    slots[i] = Some(vec![self.dlq_record(msg, dead_letter(&rej, payload, &src))]);
                }
            }
        }
        // The batch's unknown labels go to the model together (its own batching), bounded by
        // model.timeout_ms; without a model this is the rules alone.
        let mapped = if self.model.is_loaded() {
            self.pipeline.map_batch_with(&events, |queries| {
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(self.model.decide(queries)))
            })
        } else {
            self.pipeline.map_batch(&events)
        };
        for (result, &i) in mapped.into_iter().zip(&event_slots) {
            let msg = &batch[i];
            let src = coords(msg);
            let encoded = result.map_err(|v| v.to_string()).and_then(|mapped| {
                let recs = self.publisher.records(&mapped, &src).map_err(|e| e.to_string())?;
                out.valid += 2;
                for l in &mapped.canonical.lineage {
                    *out.labels.entry(l.route.as_str()).or_default() += 1;
                }
                *out.routes.entry(mapped.canonical.provenance.route.as_str()).or_default() += 1;
                tracing::debug!(
                    tenant = %mapped.canonical.provenance.tenant_id, detector = %mapped.canonical.provenance.detector,
                    labels = ?mapped.canonical.taxonomy, partition = src.partition, offset = src.offset, "mapped"
                );
                Ok(Vec::from(recs))
            });
            slots[i] = Some(match encoded {
                Ok(r) => r,
                Err(bug) => {
                    // An output that fails its schema (or its Avro encoding) is a bug: it is not
                    // emitted, and the input is parked in the DLQ so nothing is lost.
                    out.invalid += 1;
                    *out.dlq.entry(RejectReason::OutputInvalid.as_str()).or_default() += 1;
                    tracing::error!(error = %bug, partition = src.partition, offset = src.offset, "output failed its schema");
                    let rej = crate::ingest::Rejected::new(RejectReason::OutputInvalid, bug);
                    vec![self.dlq_record(msg, dead_letter(&rej, msg.payload().unwrap_or_default(), &src))]
                }
            });
        }
        out.records = slots.into_iter().flatten().flatten().collect();
        Ok(out)
    }

    /// Puts every assigned partition back at its committed offset, so a batch that did not
    /// commit is read again. The committed offset, not the batch start, is the truth: after a
    /// rebalance the partition may have been processed further by another instance meanwhile.
    fn rewind(&self) {
        let assigned = match self.consumer.assignment() {
            Ok(a) if a.count() > 0 => a,
            _ => return,
        };
        let committed = match self.consumer.committed_offsets(assigned, Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading committed offsets for a rewind failed");
                return;
            }
        };
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning, // nothing committed yet: auto.offset.reset=earliest
            };
            if let Err(err) = self.consumer.seek(e.topic(), e.partition(), offset, Duration::from_secs(5)) {
                tracing::warn!(error = %err, partition = e.partition(), "seek for a rewind failed");
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
                            self.abort().await?;
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

    /// Aborts the open transaction, retrying a retriable failure (librdkafka asks for that on
    /// timeouts): a producer left in the aborting state could not begin the next batch.
    async fn abort(&self) -> Result<(), KafkaError> {
        let mut delays = backoff().build();
        loop {
            match tokio::task::block_in_place(|| self.producer.abort_transaction(TXN_TIMEOUT)) {
                Ok(()) => return Ok(()),
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    let wait = delays.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(error = %e, retry_in = ?wait, "abort_transaction failed; retrying");
                    tokio::time::sleep(wait).await;
                }
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
            futures.push(crate::publish::enqueue(self.producer, rec)?);
        }
        Ok(futures)
    }
}

pub(crate) fn client_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.kafka.brokers);
    c.set("client.id", "llama-mapper");
    c
}

/// The user's `kafka.client` properties, applied last so they can override our defaults.
pub(crate) trait ExtendWith {
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
pub(crate) fn next_offsets(batch: &[OwnedMessage]) -> anyhow::Result<TopicPartitionList> {
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

/// Exponential with jitter, 100 ms to 10 s. Unbounded for batches (a stream processor waits
/// out a broker outage); `init_transactions` stops after 20 tries.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_BACKOFF)
        .without_max_times()
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
