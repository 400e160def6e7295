//! Sending records: enqueue with backpressure, then await every delivery report.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::Shutdown;

/// Enqueues a record, waiting while librdkafka's local queue is full (backpressure rather
/// than an error or unbounded buffering). Other errors are returned as they are.
pub fn enqueue<K, P>(producer: &FutureProducer, mut rec: FutureRecord<'_, K, P>) -> KafkaResult<DeliveryFuture>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                producer.poll(Duration::from_millis(20));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Record headers from `(name, value)` pairs.
pub fn headers<'a>(pairs: impl ExactSizeIterator<Item = (&'a str, &'a [u8])>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(pairs.len());
    for (key, value) in pairs {
        h = h.insert(Header { key, value: Some(value) });
    }
    h
}

/// The outcome of awaiting a set of deliveries.
#[derive(Debug)]
pub enum Delivery {
    /// Every record was acknowledged.
    Delivered,
    /// This record (by index; `usize::MAX` when the deadline passed) failed first; the
    /// others' outcomes are unknown.
    Failed(usize, KafkaError),
    /// Shutdown was requested before every report arrived.
    Interrupted,
}

/// Awaits every delivery report, returning at the first failure, on shutdown (when given
/// one), or when `within` has passed (as a failure of the first record still pending, with
/// `MessageTimedOut`). Returning at once matters in a transaction: after a failed record
/// librdkafka holds the others until the transaction is aborted, so waiting for all of them
/// would wait for `message.timeout.ms`; the deadline makes the wait ours rather than
/// librdkafka's after a broker outage.
pub async fn await_all(
    futures: Vec<DeliveryFuture>,
    mut shutdown: Option<&mut Shutdown>,
    within: Option<Duration>,
) -> Delivery {
    let deadline = async {
        match within {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut pending: FuturesUnordered<_> =
        futures.into_iter().enumerate().map(|(i, f)| async move { (i, f.await) }).collect();
    let stop = async {
        match shutdown.as_deref_mut() {
            Some(s) => {
                let _ = s.wait_for(|s| *s).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            n = pending.next() => n,
            _ = &mut stop => return Delivery::Interrupted,
            _ = &mut deadline => {
                return Delivery::Failed(usize::MAX, KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut))
            }
        };
        match next {
            None => return Delivery::Delivered,
            Some((_, Ok(Ok(_)))) => {}
            Some((i, Ok(Err((e, _))))) => return Delivery::Failed(i, e),
            Some((i, Err(_))) => return Delivery::Failed(i, KafkaError::Canceled),
        }
    }
}
