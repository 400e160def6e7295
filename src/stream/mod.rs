//! `mapper run`: consume detector events, map them, publish canonical + audit events, in
//! batches, exactly once.
//!
//! One loop owns offsets, transactions and rebalances; the mapping itself is the pure
//! [`Pipeline`]. Per batch, in exactly-once mode:
//!
//! 1. collect up to `batch_size` records (or what arrived within `batch_timeout_ms`, or until
//!    the stream is idle for `batch_idle_ms`); a batch never spans a rebalance
//!    ([`kafka::collect`]);
//! 2. decode, map, validate, encode, on every core (rayon), outputs in input order; an input
//!    that cannot become outputs (undecodable, invalid, too many labels, an output larger
//!    than the producer may send, one the broker refused) is a dead letter instead, so one
//!    record never stops its partition;
//! 3. begin a transaction, enqueue every output and dead letter; **while librdkafka delivers
//!    them, read and map the next batch** ([`Processor::read_ahead`]); await every delivery,
//!    add the batch's next offsets with the group metadata it was read under, commit.
//!
//! So mapping batch N+1 overlaps delivering batch N, and at low rates a batch is what has
//! arrived (the idle rule), so latency is not the linger. Transactions stay one per batch and
//! one at a time, on one transactional producer: Kafka allows one open transaction per
//! producer, and a producer per partition (Kafka Streams' EOS v1) would multiply commits on
//! the broker that shares this host's cores. The read-ahead batch is only a guess until the
//! batch before it commits: when that fails, both are read again from the first's offsets;
//! when a rebalance (or a partition put back at its committed offset) happened while reading
//! ahead, the batch in flight is aborted, since its partitions may be someone else's now.
//!
//! A batch that did not commit is read again: every partition of the batch is sought back to
//! the batch's own first offset, which the loop knows without asking the broker. A seek that
//! keeps failing stops the process (its restart resumes from the committed offsets) rather
//! than read past an uncommitted batch. Transaction errors follow librdkafka's documented
//! semantics: a retriable error (a timeout; the call goes on in the background) means call
//! the same function again, never abort; an abortable one means abort and re-read; a fatal one
//! ends the process. Every wait selects on shutdown, and `/healthz` turns 503 when one batch
//! has been in progress for longer than `kafka.stall_timeout_ms`.
//!
//! The transactional id is `<group>-<instance_id>`, stable across restarts, so a restarted
//! instance fences its own zombie (and `init_transactions` aborts what it left open); the
//! group metadata passed with the offsets fences zombies across rebalances (KIP-447).
//!
//! At-least-once mode uses an idempotent producer, reads ahead the same way, and commits
//! offsets (asynchronously) only after every output of the batch was acknowledged: nothing is
//! lost, a crash can repeat a batch.

mod context;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backon::{BackoffBuilder, Retryable};
use rayon::prelude::*;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use self::context::StreamContext;
use crate::config::{Guarantee, Settings};
use crate::contracts::DetectorEvent;
use crate::ingest::dlq::{dead_letter, SourceCoords};
use crate::ingest::{Decoder, RejectReason, Rejected};
use crate::kafka::{self, BatchLimits, Delivery, Shutdown, TxnStep};
use crate::model::ModelRuntime;
use crate::ops::{self, Metrics};
use crate::pipeline::{Mapped, Pipeline, Unmapped};
use crate::publish::{OutputRecord, Publisher};

/// Longest single wait on a transactional call before the loop looks at shutdown again. A
/// call that times out keeps running inside librdkafka and is simply called again.
const TXN_CALL: Duration = Duration::from_secs(5);
/// `init_transactions` also waits for the broker to abort what a previous incarnation left.
const TXN_INIT: Duration = Duration::from_secs(30);
/// librdkafka's default `message.max.bytes`, the producer's limit when the operator sets none.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room for what librdkafka adds around a record (batch and record framing).
const RECORD_OVERHEAD: usize = 512;

/// Where an input record is: the key of the per-record dead-letter decisions.
type Coord = (String, i32, i64);

/// What one batch produced, counted for the metrics once it is committed.
#[derive(Default)]
struct Processed {
    records: Vec<OutputRecord>,
    /// For each record, the index of the input it came from.
    origin: Vec<usize>,
    routes: BTreeMap<&'static str, u64>,
    labels: BTreeMap<&'static str, u64>,
    dlq: BTreeMap<&'static str, u64>,
    valid: u64,
    invalid: u64,
}

/// How one attempt at a batch ended.
enum Outcome {
    Committed(Processed),
    /// Nothing of the batch is committed: rewind and read it again. `at_once` when the cause
    /// was a record (now dead-lettered on the next attempt), not the broker.
    Retry {
        error: String,
        at_once: bool,
    },
    /// Shutdown was requested while the outcome was still open.
    Interrupted,
    /// Shutdown was requested mid-batch and the batch's transaction was aborted: nothing of
    /// it is visible, and whoever owns its partitions next reads it again.
    Aborted,
    Fatal(anyhow::Error),
}

/// How sending a batch's outputs ended.
enum Produced {
    Delivered,
    Interrupted,
    /// Reading ahead met an error after which no position can be vouched for.
    Fatal(anyhow::Error),
    /// `at_once` as in [`Outcome::Retry`].
    Failed {
        error: String,
        at_once: bool,
    },
}

/// A batch read and mapped, not yet sent.
struct Staged {
    batch: Vec<OwnedMessage>,
    /// The rebalance generation it was read in: it commits only while that is current.
    generation: u64,
    /// The group metadata it was read under, sent with its offsets.
    group: Option<ConsumerGroupMetadata>,
    processed: Result<Processed, String>,
}

/// The batch being sent.
struct InFlight<'b> {
    batch: &'b [OwnedMessage],
    generation: u64,
    processed: &'b Processed,
}

/// Where the batch read while another is delivered goes. One at most: reading further ahead
/// would only hold more records that a failure of the first must throw away.
struct ReadAhead<'s> {
    limits: BatchLimits,
    slot: &'s mut Option<Staged>,
}

/// Runs until `shutdown` turns true; then finishes the open batch and leaves the group.
pub async fn run(settings: Settings, mut shutdown: Shutdown) -> anyhow::Result<()> {
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
    metrics.progress.set_stall_timeout(settings.kafka.stall_timeout_ms);
    let addr: SocketAddr = settings.metrics_addr.parse().context("metrics_addr")?;
    let bound = ops::serve(addr, metrics.clone()).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(metrics = %bound, "metrics, /healthz and /readyz listening");

    let k = &settings.kafka;
    let instance = k.instance_id.clone().unwrap_or_else(hostname);
    let ctx = StreamContext { generation: Default::default(), metrics: metrics.clone() };
    let consumer: StreamConsumer<StreamContext> = kafka::group_consumer(
        k,
        "llama-mapper",
        &k.group,
        &[
            ("statistics.interval.ms", "5000".into()),
            // Bounded prefetch: backpressure instead of buffering the topic in memory.
            ("queued.max.messages.kbytes", "16384".into()),
            // librdkafka's 500 ms default long-poll shows up directly as latency at low rates.
            ("fetch.wait.max.ms", "100".into()),
        ],
        ctx,
    )?;
    let transactional_id = format!("{}-{instance}", k.group);
    let mut extra = Vec::new();
    if k.guarantee == Guarantee::ExactlyOnce {
        extra.push(("transactional.id", transactional_id.clone()));
        extra.push(("transaction.timeout.ms", k.transaction_timeout_ms.to_string()));
    }
    let producer: FutureProducer = kafka::producer(k, "llama-mapper", &extra)?;
    if k.guarantee == Guarantee::ExactlyOnce {
        let init = (|| async { tokio::task::block_in_place(|| producer.init_transactions(TXN_INIT)) })
            .retry(kafka::backoff(Duration::from_millis(100)).with_max_times(20))
            .when(|e| !kafka::is_fatal(e) && !kafka::shutdown_requested())
            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "init_transactions failed"))
            .await;
        match init {
            Err(_) if kafka::shutdown_requested() => {
                tracing::info!("mapper run stopped before its transactions were initialised");
                return Ok(());
            }
            r => r.context("initialising transactions")?,
        }
    }
    consumer.subscribe(&[k.input_topic.as_str()]).context("subscribing")?;
    let max_record_bytes = match k.client.get("message.max.bytes") {
        Some(v) => v.parse().with_context(|| format!("kafka.client.message.max.bytes = {v:?} is not a number"))?,
        None => DEFAULT_MESSAGE_MAX_BYTES,
    };
    tracing::info!(
        brokers = %k.brokers, group = %k.group, instance = %instance, input = %k.input_topic,
        guarantee = ?k.guarantee, "mapper run started"
    );

    let processor = Processor {
        pipeline: &pipeline,
        model: &model,
        decoder: Decoder::new(&pipeline.contracts, &settings),
        publisher: Publisher::new(&settings),
        settings: &settings,
        metrics: &metrics,
        consumer: &consumer,
        producer: &producer,
        max_record_bytes,
        transactional_id,
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
    /// The producer's `message.max.bytes`: an output over it is dead-lettered before it is
    /// sent, so it never costs an aborted transaction.
    max_record_bytes: usize,
    /// `<group>-<instance>`: named when another instance fences this one.
    transactional_id: String,
}

impl Processor<'_> {
    fn generation(&self) -> u64 {
        self.consumer.context().generation.load(Ordering::SeqCst)
    }

    async fn run_loop(&self, shutdown: &mut Shutdown) -> anyhow::Result<()> {
        let k = &self.settings.kafka;
        let limits = BatchLimits {
            max_records: k.batch_size.max(1),
            linger: Duration::from_millis(k.batch_timeout_ms),
            idle: (k.batch_idle_ms > 0).then(|| Duration::from_millis(k.batch_idle_ms)),
        };
        // Backoff for consecutive failed batches; reset by the next commit.
        let mut delays = kafka::backoff(Duration::from_millis(100)).build();
        // Inputs whose outputs the broker refused for a reason of the record itself: on the
        // batch's next attempt each goes to the DLQ instead. Cleared by a commit.
        let mut refused: HashMap<Coord, Rejected> = HashMap::new();
        // The batch read and mapped while the one before it was being delivered.
        let mut ahead: Option<Staged> = None;
        while !*shutdown.borrow() {
            let staged = match ahead.take() {
                Some(s) => s,
                None => {
                    let c = kafka::collect(self.consumer, limits, shutdown, || self.generation()).await?;
                    if c.records.is_empty() {
                        continue;
                    }
                    self.stage(c.records, &refused)
                }
            };
            self.metrics.progress.busy();
            let started = Instant::now();
            let Staged { batch, generation, group, processed } = staged;
            let mut next = ReadAhead { limits, slot: &mut ahead };
            match self.attempt(&batch, generation, group, processed, &mut refused, shutdown, &mut next).await {
                Outcome::Committed(out) => {
                    delays = kafka::backoff(Duration::from_millis(100)).build();
                    refused.clear();
                    self.metrics.progress.done();
                    self.record_committed(&batch, &out);
                    tracing::debug!(records = batch.len(), took = ?started.elapsed(), "batch committed");
                }
                Outcome::Aborted => {
                    tracing::info!(
                        records = batch.len(),
                        "stopping: the batch in flight was aborted and will be read again"
                    );
                    return Ok(());
                }
                Outcome::Interrupted => {
                    tracing::warn!(
                        "stopping with a transaction whose outcome is open: the broker aborts it after \
                         kafka.transaction_timeout_ms, or this instance's next start fences it at once"
                    );
                    return Ok(());
                }
                Outcome::Fatal(e) => return Err(e),
                Outcome::Retry { error, at_once } => {
                    let wait = if at_once { Duration::ZERO } else { delays.next().unwrap_or(Duration::from_secs(10)) };
                    tracing::warn!(error = %error, retry_in = ?wait, records = batch.len(), "batch not committed; re-reading it");
                    // The batch read ahead came after this one: it is read again too.
                    let mut first = kafka::first_offsets(&batch);
                    if let Some(later) = ahead.take() {
                        for (tp, o) in kafka::first_offsets(&later.batch) {
                            first.entry(tp).and_modify(|f| *f = (*f).min(o)).or_insert(o);
                        }
                    }
                    if *shutdown.borrow() {
                        // Nothing commits after this: the restart resumes from the committed offsets.
                        return Ok(());
                    }
                    if let Err(e) = self.rewind(&first, generation) {
                        if *shutdown.borrow() {
                            tracing::info!(error = %e, "stopping during a rewind; the restart resumes from the committed offsets");
                            return Ok(());
                        }
                        return Err(e);
                    }
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.wait_for(|s| *s) => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Maps a batch just read, noting what commits it must be checked against.
    fn stage(&self, batch: Vec<OwnedMessage>, refused: &HashMap<Coord, Rejected>) -> Staged {
        // Decoding may fetch a schema from the registry: blocking I/O, off the async workers.
        let processed = tokio::task::block_in_place(|| self.process(&batch, refused));
        Staged { generation: self.generation(), group: self.consumer.group_metadata(), processed, batch }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        batch: &[OwnedMessage],
        generation: u64,
        group: Option<ConsumerGroupMetadata>,
        processed: Result<Processed, String>,
        refused: &mut HashMap<Coord, Rejected>,
        shutdown: &mut Shutdown,
        next: &mut ReadAhead<'_>,
    ) -> Outcome {
        let processed = match processed {
            Ok(p) => p,
            Err(transient) => return Outcome::Retry { error: transient, at_once: false },
        };
        let offsets = match kafka::next_offsets(batch) {
            Ok(o) => o,
            Err(e) => return Outcome::Fatal(e),
        };
        let inflight = InFlight { batch, generation, processed: &processed };
        match self.settings.kafka.guarantee {
            Guarantee::ExactlyOnce => match self.transact(&inflight, group, &offsets, refused, shutdown, next).await {
                None => Outcome::Committed(processed),
                Some(o) => o,
            },
            Guarantee::AtLeastOnce => match self.at_least_once(&inflight, &offsets, refused, shutdown, next).await {
                None => Outcome::Committed(processed),
                Some(o) => o,
            },
        }
    }

    /// One batch's transaction; `None` once it is committed.
    async fn transact(
        &self,
        b: &InFlight<'_>,
        group: Option<ConsumerGroupMetadata>,
        offsets: &TopicPartitionList,
        refused: &mut HashMap<Coord, Rejected>,
        shutdown: &mut Shutdown,
        next: &mut ReadAhead<'_>,
    ) -> Option<Outcome> {
        if let Err(e) = self.producer.begin_transaction() {
            return Some(self.abort_and(shutdown, kafka::txn_step(&e, false), e.to_string(), false).await);
        }
        match self.produce(b, refused, shutdown, next).await {
            Produced::Delivered => {}
            Produced::Interrupted => return Some(self.abort_for_shutdown().await),
            Produced::Fatal(e) => {
                // Abort so that no reader is held by what this instance leaves behind.
                self.abort_for_shutdown().await;
                return Some(Outcome::Fatal(e));
            }
            Produced::Failed { error, at_once } => {
                return Some(self.abort_and(shutdown, TxnStep::Abort, error, at_once).await);
            }
        }
        // The group metadata is the one the batch was read under: after a rebalance the
        // broker refuses its offsets (KIP-447) rather than let two owners commit one batch.
        let Some(cgm) = group.filter(|_| self.generation() == b.generation) else {
            return Some(
                self.abort_and(shutdown, TxnStep::Abort, "a rebalance while the batch was in flight".into(), false)
                    .await,
            );
        };
        let sent = self
            .txn_call("send_offsets_to_transaction", shutdown, false, {
                let (offsets, cgm) = (offsets.clone(), Arc::new(cgm));
                move |p| p.send_offsets_to_transaction(&offsets, &cgm, TXN_CALL)
            })
            .await;
        match sent {
            Ok(()) => {}
            // Shutdown while the call runs on: an abort now would conflict with it.
            Err((TxnStep::Retry, _)) => return Some(Outcome::Interrupted),
            Err((step, e)) => return Some(self.abort_and(shutdown, step, e, false).await),
        }
        match self.txn_call("commit_transaction", shutdown, false, |p| p.commit_transaction(TXN_CALL)).await {
            Ok(()) => {
                self.metrics.transactions.with_label_values(&["commit"]).inc();
                None
            }
            Err((TxnStep::Retry, _)) => Some(Outcome::Interrupted),
            Err((step, e)) => Some(self.abort_and(shutdown, step, e, false).await),
        }
    }

    /// One batch without a transaction; `None` once its offsets are committed.
    async fn at_least_once(
        &self,
        b: &InFlight<'_>,
        offsets: &TopicPartitionList,
        refused: &mut HashMap<Coord, Rejected>,
        shutdown: &mut Shutdown,
        next: &mut ReadAhead<'_>,
    ) -> Option<Outcome> {
        match self.produce(b, refused, shutdown, next).await {
            Produced::Delivered => {}
            // Nothing committed: the restart repeats the batch, which this mode allows.
            Produced::Interrupted => return Some(Outcome::Interrupted),
            Produced::Fatal(e) => return Some(Outcome::Fatal(e)),
            Produced::Failed { error, at_once } => return Some(Outcome::Retry { error, at_once }),
        }
        if self.generation() != b.generation {
            // The partitions may be another instance's now; it re-reads from the last commit.
            return Some(Outcome::Retry { error: "a rebalance while the batch was in flight".into(), at_once: true });
        }
        // Every output is acknowledged, so nothing can be lost past this commit; an async
        // commit keeps the broker round trip out of the loop (a failed one repeats work,
        // which this mode allows, and the next commit supersedes it).
        match self.consumer.commit(offsets, CommitMode::Async) {
            Ok(()) => None,
            Err(e) if kafka::is_fatal(&e) => Some(Outcome::Fatal(anyhow::Error::new(e).context("committing offsets"))),
            Err(e) => Some(Outcome::Retry { error: format!("offset commit: {e}"), at_once: false }),
        }
    }

    /// Sends every output of a batch and, while librdkafka delivers them, reads and maps the
    /// next batch ([`ReadAhead`]); then awaits the deliveries. A record the broker refuses for
    /// a reason of its own is noted in `refused` (see [`Self::refuse`]). Partitions put back
    /// at their committed offsets meanwhile fail the batch: its commit could skip nothing
    /// now, but the records after it would be read twice.
    async fn produce(
        &self,
        b: &InFlight<'_>,
        refused: &mut HashMap<Coord, Rejected>,
        shutdown: &mut Shutdown,
        next: &mut ReadAhead<'_>,
    ) -> Produced {
        let (i, e) = match self.send_all(&b.processed.records) {
            Ok(futures) => {
                let delivered = tokio::sync::Notify::new();
                let mut stop = shutdown.clone();
                let deliveries = async {
                    let d = kafka::await_all(futures, Some(shutdown), Some(self.delivery_timeout())).await;
                    delivered.notify_one();
                    d
                };
                let (delivery, read) = tokio::join!(deliveries, self.read_ahead(next, refused, &mut stop, &delivered));
                match (delivery, read) {
                    (_, Err(e)) => return Produced::Fatal(e),
                    (Delivery::Interrupted, _) => return Produced::Interrupted,
                    (Delivery::Failed(i, e), _) => (i, e),
                    (Delivery::Delivered, Ok(true)) => {
                        return Produced::Failed {
                            error: "partitions were put back at their committed offsets while the batch was in flight"
                                .into(),
                            at_once: true,
                        }
                    }
                    (Delivery::Delivered, Ok(false)) => return Produced::Delivered,
                }
            }
            Err(failed) => failed,
        };
        let at_once = self.refuse(b.batch, b.processed, i, &e, refused);
        Produced::Failed { error: e.to_string(), at_once }
    }

    /// Reads and maps the next batch while this one is delivered: what arrives before the
    /// deliveries are done (or the batch is full). Returns whether partitions were
    /// re-positioned meanwhile.
    async fn read_ahead(
        &self,
        next: &mut ReadAhead<'_>,
        refused: &HashMap<Coord, Rejected>,
        shutdown: &mut Shutdown,
        delivered: &tokio::sync::Notify,
    ) -> anyhow::Result<bool> {
        if next.slot.is_some() || *shutdown.borrow() {
            return Ok(false);
        }
        let c = kafka::collect_until(self.consumer, next.limits, shutdown, || self.generation(), delivered.notified())
            .await?;
        if !c.records.is_empty() {
            *next.slot = Some(self.stage(c.records, refused));
        }
        Ok(c.resumed)
    }

    /// How long a batch's deliveries may take before the batch is given up (aborted and read
    /// again): half the transaction timeout, so the abort comes before the broker's own.
    fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.settings.kafka.transaction_timeout_ms / 2).max(1_000))
    }

    /// Records that record `i` failed with `e`. When the error is the record's own (its size,
    /// its validity), its input goes to the DLQ on the next attempt, and `true` says the
    /// attempt can follow at once. A dead letter refused itself is not retried that way (it
    /// would loop): that waits like a broker problem.
    fn refuse(
        &self,
        batch: &[OwnedMessage],
        processed: &Processed,
        i: usize,
        e: &KafkaError,
        refused: &mut HashMap<Coord, Rejected>,
    ) -> bool {
        let Some(record) = processed.records.get(i) else { return false };
        if !kafka::is_record_level(e) || record.topic == self.settings.kafka.dlq_topic {
            return false;
        }
        let msg = &batch[processed.origin[i]];
        tracing::warn!(topic = %record.topic, partition = msg.partition(), offset = msg.offset(), error = %e,
            "the broker refused an output record; its input goes to the dead-letter topic");
        refused.insert(
            coord(msg),
            Rejected::new(RejectReason::OutputRejected, format!("the broker refused the {} record: {e}", record.topic)),
        );
        true
    }

    /// Aborts the open transaction (unless `step` says the producer is gone), then says what
    /// the loop does next.
    async fn abort_and(&self, shutdown: &mut Shutdown, step: TxnStep, error: String, at_once: bool) -> Outcome {
        if step == TxnStep::Fatal {
            return Outcome::Fatal(self.fatal(&error));
        }
        self.metrics.transactions.with_label_values(&["abort"]).inc();
        match self.txn_call("abort_transaction", shutdown, true, |p| p.abort_transaction(TXN_CALL)).await {
            Ok(()) => Outcome::Retry { error, at_once },
            Err((TxnStep::Fatal, e)) => Outcome::Fatal(self.fatal(&e)),
            Err(_) => Outcome::Interrupted,
        }
    }

    /// The error a fatally failed producer stops the process with. librdkafka keeps the cause
    /// of its fatal state (the failing call may only say "requires abort", or name the step
    /// that met it); when that cause is a fence, the remedy is the operator's.
    fn fatal(&self, error: &str) -> anyhow::Error {
        match self.producer.client().fatal_error() {
            Some((code, reason)) if kafka::is_fence(code) => anyhow::anyhow!(
                "fenced: another instance runs with this one's transactional id ({}); give every \
                 instance its own kafka.instance_id (librdkafka: {reason})",
                self.transactional_id
            ),
            Some((code, reason)) => anyhow::anyhow!("fatal Kafka error: {reason} ({code:?}; the call said: {error})"),
            None => anyhow::anyhow!("fatal Kafka error: {error}"),
        }
    }

    /// Aborts the open transaction once, bounded by [`TXN_CALL`], when shutdown interrupts its
    /// deliveries. Left open, it would hold every `read_committed` reader of the output
    /// partitions at its first record (the last stable offset) until the broker's
    /// `transaction.timeout.ms`: a rolling restart stalled analytics and the sinks for a
    /// minute, behind the records the partitions' new owner had already committed. librdkafka
    /// purges what is still queued and waits for what is in flight, so the wait is short
    /// unless the broker is unreachable; then the transaction stays open, as before.
    async fn abort_for_shutdown(&self) -> Outcome {
        self.metrics.transactions.with_label_values(&["abort"]).inc();
        let producer = self.producer.clone();
        // librdkafka does not always return within the call's own timeout when the broker is
        // unresponsive (40 s were seen with 5 s asked), so the wait is bounded here too.
        let abort = tokio::task::spawn_blocking(move || producer.abort_transaction(TXN_CALL));
        match tokio::time::timeout(TXN_CALL + Duration::from_secs(1), abort).await {
            Ok(Ok(Ok(()))) => Outcome::Aborted,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "could not abort the batch's transaction on shutdown");
                Outcome::Interrupted
            }
            _ => {
                tracing::warn!("the abort of the batch's transaction did not return in time on shutdown");
                Outcome::Interrupted
            }
        }
    }

    /// Calls a transactional API until it succeeds. A retriable error means the call is still
    /// running inside librdkafka (it timed out here, not there): call the same API again, as
    /// librdkafka documents, never another one. Returns the step to take otherwise; a
    /// shutdown while retrying returns `Retry` (the outcome stays open).
    async fn txn_call(
        &self,
        what: &'static str,
        shutdown: &mut Shutdown,
        aborting: bool,
        call: impl Fn(&FutureProducer) -> KafkaResult<()> + Send + Sync + 'static,
    ) -> Result<(), (TxnStep, String)> {
        let call = Arc::new(call);
        let mut delays = kafka::backoff(Duration::from_millis(50)).build();
        loop {
            // On a blocking thread: librdkafka does not always return within the call's
            // timeout when the broker is unresponsive (a SIGTERM once waited 20 s for one).
            // After a shutdown request the call gets one call's time to finish (a commit under
            // way should land), then the outcome is left open for the next start to fence.
            //
            // A call that outlives the whole transaction timeout is stuck inside librdkafka:
            // `send_offsets_to_transaction` can wait forever for a group coordinator after a
            // broker pause (confluentinc/librdkafka#5456, its timeout is never checked; seen
            // here after a 40 s broker freeze). Nothing can cancel it and no other
            // transactional call may be made meanwhile, so the process exits. By then the
            // coordinator has aborted the transaction (its timeout) or, if our commit reached
            // it, completes the commit; the restart's init_transactions waits for either,
            // fences this producer and resumes from the stable committed offsets.
            let (p, c) = (self.producer.clone(), Arc::clone(&call));
            let mut job = tokio::task::spawn_blocking(move || c(&p));
            let stuck_after = self.stuck_after();
            let joined = tokio::select! {
                r = &mut job => r,
                _ = tokio::time::sleep(stuck_after) => return Err((TxnStep::Fatal, format!(
                    "{what} did not return within {stuck_after:?} (asked to within {TXN_CALL:?}): librdkafka \
                     is stuck in it (confluentinc/librdkafka#5456); exiting so that the restart fences \
                     the open transaction"
                ))),
                _ = shutdown.wait_for(|s| *s) => match tokio::time::timeout(TXN_CALL + Duration::from_secs(1), &mut job).await {
                    Ok(r) => r,
                    Err(_) => return Err((TxnStep::Retry, format!("{what} did not return after shutdown was requested"))),
                },
            };
            let result = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            let e = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let step = kafka::txn_step(&e, aborting);
            if step != TxnStep::Retry {
                return Err((step, e.to_string()));
            }
            if *shutdown.borrow() {
                return Err((TxnStep::Retry, e.to_string()));
            }
            let wait = delays.next().unwrap_or(Duration::from_secs(10));
            tracing::warn!(error = %e, retry_in = ?wait, "{what} has not completed; calling it again");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        }
    }

    /// How long one transactional call may block before it counts as stuck: the transaction
    /// timeout (the broker aborts the transaction then anyway), at least 10 s.
    fn stuck_after(&self) -> Duration {
        Duration::from_millis(u64::from(self.settings.kafka.transaction_timeout_ms)).max(Duration::from_secs(10))
    }

    /// Seeks every partition of an uncommitted batch back to where the batch started, and
    /// stops the process (its restart resumes from the committed offsets) when that cannot be
    /// done: reading on would commit past the batch.
    ///
    /// Without a rebalance since the batch was read, that place is the batch's own first
    /// offset, known here. After one, another instance may have processed the partitions
    /// meanwhile, so the committed offset is the truth: partitions no longer ours are left to
    /// their owner, the others are sought to their committed offsets.
    fn rewind(&self, first: &BTreeMap<(String, i32), i64>, generation: u64) -> anyhow::Result<()> {
        let mut targets: Vec<(String, i32, Offset)> = Vec::with_capacity(first.len());
        if self.generation() == generation {
            targets.extend(first.iter().map(|((t, p), o)| (t.clone(), *p, Offset::Offset(*o))));
        } else {
            self.metrics.progress.done();
            let assigned = self.consumer.assignment().context("reading the assignment for a rewind")?;
            let mut ours = TopicPartitionList::new();
            for (t, p) in first.keys() {
                if assigned.find_partition(t, *p).is_some() {
                    ours.add_partition(t, *p);
                }
            }
            if ours.count() == 0 {
                return Ok(());
            }
            let committed = kafka::offsets::committed(self.consumer, &ours)
                .context("rewinding after a rebalance: stopping rather than skipping a batch")?;
            // Never committed: the group's first batch on it failed, so the beginning.
            targets.extend(committed.into_iter().map(|(t, p, o)| (t, p, o.map_or(Offset::Beginning, Offset::Offset))));
        }
        kafka::offsets::seek_all(self.consumer, &targets).context("rewinding after an uncommitted batch")
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
        let now = ops::now_millis();
        for msg in batch {
            if let Some(ts) = msg.timestamp().to_millis() {
                m.latency.observe((now.saturating_sub(ts) as f64 / 1000.0).max(0.0));
            }
        }
        m.update_ratios();
    }

    /// Decode, map and encode one batch: the outputs of every input, in input order. `Err`
    /// only for a transient problem (the schema registry unreachable): the batch is retried.
    ///
    /// Decoding, rule mapping and encoding run on rayon's pool (one thread per core), in
    /// chunks; results are put back in input order, so outputs keep each partition's order.
    /// With a model loaded, mapping stays one call over the batch: the model batches the
    /// batch's unknown labels itself.
    fn process(&self, batch: &[OwnedMessage], refused: &HashMap<Coord, Rejected>) -> Result<Processed, String> {
        let decoder = &self.decoder;
        let decoded: Vec<Result<DetectorEvent, Rejected>> = batch
            .par_iter()
            .with_min_len(CHUNK)
            .map(|msg| match refused.get(&coord(msg)) {
                Some(rej) => Err(rej.clone()),
                None => decoder.decode(msg.payload().unwrap_or_default()),
            })
            .collect();
        let mut rejected: Vec<(usize, Rejected)> = Vec::new();
        let mut events = Vec::with_capacity(batch.len());
        let mut event_slots = Vec::with_capacity(batch.len());
        for (i, d) in decoded.into_iter().enumerate() {
            match d {
                Ok(ev) => {
                    events.push(ev);
                    event_slots.push(i);
                }
                Err(rej) if rej.reason == RejectReason::Unavailable => return Err(rej.to_string()),
                Err(rej) => rejected.push((i, rej)),
            }
        }
        // The batch's unknown labels go to the model together (its own batching), bounded by
        // model.timeout_ms; without a model this is the rules alone.
        let mapped: Vec<Result<Mapped, Unmapped>> = if self.model.is_loaded() {
            self.pipeline.map_batch_with(&events, |queries| {
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(self.model.decide(queries)))
            })
        } else {
            let pipeline = self.pipeline;
            let chunks: Vec<Vec<_>> = events.par_chunks(CHUNK).map(|c| pipeline.map_batch(c)).collect();
            chunks.into_iter().flatten().collect()
        };
        let (publisher, max_bytes) = (&self.publisher, self.max_record_bytes);
        let encoded: Vec<Encoded> = mapped
            .into_par_iter()
            .zip(event_slots.par_iter())
            .with_min_len(CHUNK)
            .map(|(result, &i)| encode(publisher, max_bytes, result, &coords(&batch[i])))
            .collect();

        let mut out = Processed::default();
        let mut slots: Vec<Option<Vec<OutputRecord>>> = vec![None; batch.len()];
        for (i, rej) in rejected {
            slots[i] = Some(vec![self.reject(&batch[i], &rej, &mut out)]);
        }
        for (e, &i) in encoded.into_iter().zip(&event_slots) {
            slots[i] = Some(match e {
                Encoded::Records { records, route, label_routes } => {
                    out.valid += 2;
                    for r in label_routes {
                        *out.labels.entry(r).or_default() += 1;
                    }
                    *out.routes.entry(route).or_default() += 1;
                    Vec::from(records)
                }
                Encoded::Rejected(rej) => vec![self.reject(&batch[i], &rej, &mut out)],
                Encoded::Invalid(bug) => {
                    let rej = self.output_invalid(bug, &mut out);
                    vec![self.reject(&batch[i], &rej, &mut out)]
                }
            });
        }
        for (i, recs) in slots.into_iter().enumerate() {
            for r in recs.into_iter().flatten() {
                out.records.push(r);
                out.origin.push(i);
            }
        }
        Ok(out)
    }

    /// An output that failed its schema is a bug: it is not emitted, and its input is parked
    /// in the DLQ so nothing is lost.
    fn output_invalid(&self, bug: String, out: &mut Processed) -> Rejected {
        out.invalid += 1;
        tracing::error!(error = %bug, "output failed its schema");
        Rejected::new(RejectReason::OutputInvalid, bug)
    }

    /// The dead letter of an input, counted.
    fn reject(&self, msg: &OwnedMessage, rej: &Rejected, out: &mut Processed) -> OutputRecord {
        let src = coords(msg);
        tracing::warn!(
            reason = rej.reason.as_str(), error = %rej.detail,
            topic = %src.topic, partition = src.partition, offset = src.offset,
            "input rejected to the dead-letter topic"
        );
        *out.dlq.entry(rej.reason.as_str()).or_default() += 1;
        let dl = dead_letter(rej, msg.payload().unwrap_or_default(), &src);
        OutputRecord {
            topic: self.settings.kafka.dlq_topic.clone(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            payload: dl.value,
            headers: dl.headers,
        }
    }

    /// Enqueues every record; on an enqueue error, which record and why.
    fn send_all(&self, records: &[OutputRecord]) -> Result<Vec<DeliveryFuture>, (usize, KafkaError)> {
        let mut futures = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let headers = kafka::headers(r.headers.iter().map(|(k, v)| (*k, v.as_bytes())));
            let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&r.topic).key(r.key.as_str()).headers(headers);
            if let Some(p) = &r.payload {
                rec = rec.payload(p.as_slice());
            }
            futures.push(kafka::enqueue(self.producer, rec).map_err(|e| (i, e))?);
        }
        Ok(futures)
    }
}

/// Inputs per unit of parallel work: enough that handing out work costs nothing beside it.
const CHUNK: usize = 128;

/// One mapped input, encoded (or why it cannot be sent).
enum Encoded {
    Records {
        records: [OutputRecord; 2],
        route: &'static str,
        label_routes: Vec<&'static str>,
    },
    /// The input's own fault (too many labels, an output too large): dead-lettered.
    Rejected(Rejected),
    /// Our fault: a schema or encoding violation (a bug; dead-lettered, never emitted).
    Invalid(String),
}

/// The records of one mapped input, checked against the producer's size limit. Runs on the
/// mapping pool: no logging beyond debug, no counters (the caller counts in input order).
fn encode(publisher: &Publisher, max_bytes: usize, result: Result<Mapped, Unmapped>, src: &SourceCoords) -> Encoded {
    let mapped = match result {
        Ok(m) => m,
        Err(Unmapped::TooManyLabels(e)) => {
            return Encoded::Rejected(Rejected::new(RejectReason::TooManyLabels, e.to_string()))
        }
        Err(Unmapped::Invalid(v)) => return Encoded::Invalid(v.to_string()),
    };
    let records = match publisher.records(&mapped, src) {
        Ok(r) => r,
        // An output that fails its Avro encoding is a bug, like a schema violation.
        Err(e) => return Encoded::Invalid(e.to_string()),
    };
    if let Some(big) = records.iter().find(|r| record_bytes(r) > max_bytes) {
        return Encoded::Rejected(Rejected::new(
            RejectReason::OutputTooLarge,
            format!(
                "the {} record would be {} bytes; the producer's message.max.bytes is {max_bytes}",
                big.topic,
                record_bytes(big)
            ),
        ));
    }
    let c = &mapped.canonical;
    tracing::debug!(
        tenant = %c.provenance.tenant_id, detector = %c.provenance.detector,
        labels = ?c.taxonomy, partition = src.partition, offset = src.offset, "mapped"
    );
    Encoded::Records {
        route: c.provenance.route.as_str(),
        label_routes: c.lineage.iter().map(|l| l.route.as_str()).collect(),
        records,
    }
}

/// What a record weighs against `message.max.bytes`.
fn record_bytes(r: &OutputRecord) -> usize {
    let headers: usize = r.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    r.payload.as_ref().map_or(0, Vec::len) + r.key.len() + headers + RECORD_OVERHEAD
}

fn coords(m: &OwnedMessage) -> SourceCoords {
    SourceCoords { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset() }
}

fn coord(m: &OwnedMessage) -> Coord {
    (m.topic().to_string(), m.partition(), m.offset())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "mapper".into())
}
