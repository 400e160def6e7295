//! The one batch collector, shared by `mapper run` and the sinks.

use std::time::Duration;

use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;

use super::{offsets, Shutdown};

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    /// How long to wait for more once the first record arrived.
    pub linger: Duration,
    /// Close the batch early when no record followed the last one for this long. Under load
    /// the next record is already fetched, so batches still fill to `max_records`; at low
    /// rates a batch is what has arrived, and latency is not the linger. `None`: wait the
    /// whole linger.
    pub idle: Option<Duration>,
}

/// What [`collect`] read.
#[derive(Debug, Default)]
pub struct Collected {
    pub records: Vec<OwnedMessage>,
    /// Whether some partition was put back at its committed offset meanwhile
    /// ([`offsets::resume`]): positions moved under the caller, as at a rebalance, so a batch
    /// it still has in flight must not commit.
    pub resumed: bool,
}

/// Waits for a first record, then collects up to `max_records` within `linger` (or until the
/// stream goes `idle`). Returns what it has (possibly nothing) when shutdown is requested.
///
/// `epoch` is read after every record: when it changed (a rebalance revoked partitions), the
/// records collected so far belonged to the old assignment and are dropped, so a batch never
/// spans a rebalance and its own first offsets are always the right place to rewind to.
///
/// When librdkafka reports that it cannot continue a partition (`auto.offset.reset=error`),
/// the records collected so far are dropped and every assigned partition is put back at its
/// committed offset ([`offsets::resume`]); an error here means the process must stop rather
/// than read from a place it cannot vouch for.
pub async fn collect<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    limits: BatchLimits,
    shutdown: &mut Shutdown,
    epoch: impl Fn() -> u64,
) -> anyhow::Result<Collected> {
    collect_until(consumer, limits, shutdown, epoch, std::future::pending()).await
}

/// As [`collect`], but the batch also ends, with what it has (possibly nothing), when
/// `enough` completes. Reading ahead while a batch is delivered uses it: the next batch is
/// welcome, but waiting for one (or for its linger) would hold the commit of the first.
/// Every record read is returned, so stopping early drops nothing.
pub async fn collect_until<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    limits: BatchLimits,
    shutdown: &mut Shutdown,
    epoch: impl Fn() -> u64,
    enough: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Collected> {
    let mut enough = std::pin::pin!(enough);
    let mut batch = Vec::with_capacity(limits.max_records.min(65_536));
    let mut resumed = false;
    let mut seen = epoch();
    let mut deadline: Option<tokio::time::Instant> = None;
    while batch.len() < limits.max_records.max(1) {
        let until = match (deadline, limits.idle) {
            (Some(d), Some(idle)) => Some(d.min(tokio::time::Instant::now() + idle)),
            (d, _) => d,
        };
        let wait = async {
            match until {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let got = tokio::select! {
            m = consumer.recv() => m,
            _ = wait => break,
            _ = &mut enough => break,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match got {
            Ok(m) => {
                let now = epoch();
                if now != seen {
                    tracing::info!(dropped = batch.len(), "rebalance while collecting: starting the batch again");
                    batch.clear();
                    seen = now;
                }
                batch.push(m.detach());
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + limits.linger);
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                if !batch.is_empty() {
                    tracing::info!(dropped = batch.len(), "a partition could not continue: starting the batch again");
                }
                batch.clear();
                tokio::task::block_in_place(|| offsets::resume(consumer))?;
                resumed = true;
                deadline = None;
            }
            // Broker hiccups surface here; librdkafka reconnects by itself.
            Err(e) => {
                tracing::warn!(error = %e, "Kafka read error");
                if batch.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                } else {
                    break;
                }
            }
        }
    }
    // A revocation can also run inside a `recv()` that the linger timeout then cancelled.
    if epoch() != seen {
        batch.clear();
    }
    Ok(Collected { records: batch, resumed })
}
