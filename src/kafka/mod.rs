//! Every Kafka mechanism of the binary, once: building clients (with the operator's
//! `kafka.client` properties: SASL, TLS, tuning), collecting batches, sending records with
//! backpressure and awaiting their deliveries, offsets, error classification, backoff and
//! shutdown. `stream` (`mapper run`), `sinks`, `cli::tools` (`produce`, `tail`) and `topics`
//! build on this module and never on `ClientConfig` directly.

mod batch;
mod client;
mod deliver;
mod errors;
pub mod offsets;
mod shutdown;

pub use batch::{collect, collect_until, BatchLimits, Collected};
pub use client::{admin, client_config, group_consumer, log_client_error, producer, reader, ExtendWith, Logged};
pub use deliver::{await_all, enqueue, headers, Delivery};
pub use errors::{is_fatal, is_fence, is_record_level, txn_step, TxnStep};
pub use offsets::{first_offsets, next_offsets};
pub use shutdown::{requested as shutdown_requested, shutdown_signal, Shutdown};

use std::time::Duration;

use backon::ExponentialBuilder;

/// Exponential with jitter, `min` to 10 s, never giving up by itself: callers that must give
/// up say so with `with_max_times`. One backoff for the processor, the sinks and the tools.
pub fn backoff(min: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(min)
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
}
