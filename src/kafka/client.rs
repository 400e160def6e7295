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
    refuse_incremental_rebalancing(k)?;
    client_config(k, client_id, &ours)
        .create_with_context(ctx)
        .with_context(|| format!("creating the Kafka consumer {client_id} for {}", k.brokers))
}

/// Refuses the incremental rebalance protocols (`cooperative-sticky`, and KIP-848's
/// `group.protocol=consumer`). The batch collector drops a half-collected batch at a
/// rebalance and relies on every partition being re-assigned from its committed offset,
/// which the eager protocols (`range`, `roundrobin`, librdkafka's default) do. Under an
/// incremental one, a partition kept across the rebalance goes on fetching after the
/// dropped records, and the next commit would skip them: lost evidence.
fn refuse_incremental_rebalancing(k: &KafkaSettings) -> anyhow::Result<()> {
    if let Some(s) = k.client.get("partition.assignment.strategy") {
        anyhow::ensure!(
            !s.contains("cooperative"),
            "kafka.client.partition.assignment.strategy = {s:?} is not supported: a batch dropped at a \
             rebalance is read again only when every partition is re-assigned (use range or roundrobin)"
        );
    }
    if let Some(p) = k.client.get("group.protocol") {
        anyhow::ensure!(
            p.eq_ignore_ascii_case("classic"),
            "kafka.client.group.protocol = {p:?} is not supported: its rebalances are incremental, and a batch \
             dropped at a rebalance is read again only when every partition is re-assigned (use classic)"
        );
    }
    Ok(())
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

    #[test]
    fn incremental_rebalancing_is_refused_with_the_reason() {
        use rdkafka::consumer::{BaseConsumer, DefaultConsumerContext};
        let make = |key: &str, value: &str| {
            let mut k = KafkaSettings::default();
            k.client.insert(key.into(), value.into());
            group_consumer::<_, BaseConsumer>(&k, "t", "g", &[], DefaultConsumerContext)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let e = make("partition.assignment.strategy", "cooperative-sticky").unwrap_err();
        assert!(e.contains("not supported") && e.contains("range or roundrobin"), "{e}");
        let e = make("group.protocol", "consumer").unwrap_err();
        assert!(e.contains("use classic"), "{e}");
        make("partition.assignment.strategy", "roundrobin").unwrap();
        make("group.protocol", "classic").unwrap();
    }
}
