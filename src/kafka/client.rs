//! The one place a Kafka client is configured. Our defaults first, the operator's
//! `kafka.client` map last (so SASL/TLS and any tuning apply to every client, and can
//! override a default when an operator knows better).

use std::collections::BTreeMap;

use anyhow::Context as _;
use rdkafka::admin::AdminClient;
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, FromClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaSettings;

/// `bootstrap.servers`, `client.id`, then `ours`, then the operator's `kafka.client`.
pub fn client_config(k: &KafkaSettings, client_id: &str, ours: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers).set("client.id", client_id);
    for (key, v) in ours {
        c.set(*key, v);
    }
    c.extend_with(&k.client);
    c
}

/// A consumer in `group` that commits only what its owner says is done, and reads only
/// committed transactions (the mapper's own outputs included).
///
/// `auto.offset.reset=error`: librdkafka never moves a partition by itself. With `earliest`
/// it went back to offset 0 of a partition whose offsets were committed (seen once under
/// the checker's broker restart: 4 000 inputs published twice); now it reports, and
/// [`super::collect`] resumes from the committed offsets ([`super::offsets::resume`]), which
/// also starts a partition the group never committed at the beginning.
pub fn group_consumer<C, T>(
    k: &KafkaSettings,
    client_id: &str,
    group: &str,
    extra: &[(&str, String)],
    ctx: C,
) -> anyhow::Result<T>
where
    C: ConsumerContext,
    T: FromClientConfigAndContext<C>,
{
    let mut ours: Vec<(&str, String)> = vec![
        ("group.id", group.to_string()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "error".into()),
        ("isolation.level", "read_committed".into()),
        ("session.timeout.ms", k.session_timeout_ms.to_string()),
        ("heartbeat.interval.ms", (k.session_timeout_ms / 3).max(100).to_string()),
    ];
    ours.extend(extra.iter().cloned());
    client_config(k, client_id, &ours)
        .create_with_context(ctx)
        .with_context(|| format!("creating the Kafka consumer {client_id} for {}", k.brokers))
}

/// A group-less consumer that assigns partitions itself (`mapper tail`).
pub fn reader<T: FromClientConfig>(k: &KafkaSettings, client_id: &str) -> anyhow::Result<T> {
    client_config(
        k,
        client_id,
        &[
            // librdkafka wants a group id even for assign(); nothing is ever committed under it.
            ("group.id", format!("{client_id}-{}", std::process::id())),
            ("enable.auto.commit", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("isolation.level", "read_committed".into()),
        ],
    )
    .create()
    .with_context(|| format!("creating the Kafka reader for {}", k.brokers))
}

/// An idempotent producer (acks=all); `extra` adds e.g. the transactional id.
pub fn producer<T: FromClientConfig>(
    k: &KafkaSettings,
    client_id: &str,
    extra: &[(&str, String)],
) -> anyhow::Result<T> {
    let mut ours: Vec<(&str, String)> = vec![("enable.idempotence", "true".into()), ("linger.ms", "5".into())];
    ours.extend(extra.iter().cloned());
    client_config(k, client_id, &ours)
        .create()
        .with_context(|| format!("creating the Kafka producer {client_id} for {}", k.brokers))
}

pub fn admin(k: &KafkaSettings) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    client_config(k, "llama-mapper-admin", &[])
        .create()
        .with_context(|| format!("creating the Kafka admin client for {}", k.brokers))
}

/// librdkafka's client-level errors, as rust-rdkafka would log them, except the report that
/// a partition cannot continue (`auto.offset.reset=error`): that one is expected and handled
/// by [`super::offsets::resume`], which logs what it decided.
pub fn log_client_error(error: &KafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) {
        tracing::debug!(target: "librdkafka", "{error}: {reason}");
    } else {
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
    }
}

/// The context of a group consumer with no callbacks of its own (the sinks).
#[derive(Default)]
pub struct Logged;

impl ClientContext for Logged {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl ConsumerContext for Logged {}

/// Applies `extra` over a configuration (used for the operator's map).
pub trait ExtendWith {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_map_is_applied_last_to_every_client() {
        let mut k = KafkaSettings::default();
        k.client.insert("security.protocol".into(), "SASL_SSL".into());
        k.client.insert("linger.ms".into(), "50".into());
        let c = client_config(&k, "x", &[("linger.ms", "5".into())]);
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("linger.ms"), Some("50"), "the operator overrides our default");
        assert_eq!(c.get("bootstrap.servers"), Some(k.brokers.as_str()));
    }
}
