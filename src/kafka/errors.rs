//! What a Kafka error means for the loop, following librdkafka's documented semantics
//! (INTRODUCTION.md, "Transactional Producer: Error handling").

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The producer (or the consumer's group membership) cannot continue: exit, and let the
/// restart fence or rejoin. Being fenced means another instance uses our transactional id.
pub fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(r) => r.is_fatal(),
        _ => e.rdkafka_error_code().is_some_and(|c| {
            is_fence(c) || matches!(c, RDKafkaErrorCode::TransactionalIdAuthorizationFailed | RDKafkaErrorCode::Fatal)
        }),
    }
}

/// A transactional producer's fatal error that means another producer with the same
/// transactional id started after it (a newer epoch).
pub fn is_fence(code: RDKafkaErrorCode) -> bool {
    matches!(code, RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
}

/// A produce error that belongs to the record, not to the broker or the network: the same
/// record fails the same way every time, so it is dead-lettered rather than retried.
pub fn is_record_level(e: &KafkaError) -> bool {
    e.rdkafka_error_code().is_some_and(|c| {
        matches!(
            c,
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    })
}

/// What to do after a transactional call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStep {
    /// Call the same API again: it is still running in the background (a timeout).
    Retry,
    /// The transaction cannot commit: abort it, then re-read the batch.
    Abort,
    /// The producer is unusable: exit.
    Fatal,
}

/// Classification of an error from `send_offsets_to_transaction`, `commit_transaction` or
/// `abort_transaction`. Calling abort while a commit is still in progress is what made the
/// old loop hang ("conflicting commit_transaction API call"), so a retriable error always
/// means "call the same thing again", never "abort".
///
/// While *aborting*, only a retriable error or one that "requires an abort" means "call
/// abort again"; any other error (an invalid state, say) would fail the same way forever, so
/// it is fatal: the process exits and its restart fences whatever is left open.
pub fn txn_step(e: &KafkaError, aborting: bool) -> TxnStep {
    match e {
        KafkaError::Transaction(r) if aborting && !r.is_fatal() && (r.is_retriable() || r.txn_requires_abort()) => {
            TxnStep::Retry
        }
        _ if aborting => TxnStep::Fatal,
        KafkaError::Transaction(r) if r.is_fatal() => TxnStep::Fatal,
        KafkaError::Transaction(r) if r.txn_requires_abort() => TxnStep::Abort,
        KafkaError::Transaction(r) if r.is_retriable() => TxnStep::Retry,
        e if is_fatal(e) => TxnStep::Fatal,
        _ => TxnStep::Abort,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, Producer};

    use super::*;

    /// A real librdkafka error of the kind that once kept the loop aborting forever: an abort
    /// called in a state where no abort is possible fails the same way every time (no broker
    /// is needed to get it: transactions were never initialised).
    #[test]
    fn an_abort_that_cannot_succeed_is_fatal_not_retried() {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("transactional.id", "errors-unit-test")
            .create()
            .unwrap();
        let e = p.abort_transaction(Duration::from_millis(100)).unwrap_err();
        let KafkaError::Transaction(r) = &e else { panic!("not a transaction error: {e}") };
        assert!(!r.is_retriable() && !r.txn_requires_abort() && !r.is_fatal(), "{e}");
        assert_eq!(txn_step(&e, true), TxnStep::Fatal, "{e}");
        // The same error met while committing: the transaction cannot commit, abort it.
        assert_eq!(txn_step(&e, false), TxnStep::Abort, "{e}");
    }
}
