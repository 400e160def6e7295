//! Offsets: where a batch starts (to rewind to), where the next one starts (to commit), and
//! where a partition resumes when librdkafka would otherwise pick a place by itself.
//!
//! Every group consumer runs with `auto.offset.reset=error` ([`super::group_consumer`]):
//! librdkafka then never moves a partition on its own (it would go to the beginning after a
//! failed offset-and-epoch validation following a leader change, or on an out-of-range fetch,
//! and re-publish everything since). It reports the partition instead, and [`resume`]
//! decides from the group's committed offsets, which are the only truth about what was
//! already published.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

/// Broker round trips (reading committed offsets, a seek) before the process stops rather
/// than guess where a partition stands.
const TRIES: usize = 5;
const CALL: Duration = Duration::from_secs(10);

/// The error of a retry loop cut short by a shutdown request. Nothing was committed past the
/// place being looked for, so the restart resumes from the committed offsets.
const STOPPING: &str = "shutdown requested while retrying a broker call";

/// The lowest offset of each partition in `batch`: where to seek back to when the batch did
/// not commit. Known locally, so a rewind never depends on the broker answering.
pub fn first_offsets(batch: &[OwnedMessage]) -> BTreeMap<(String, i32), i64> {
    let mut out: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = out.entry((m.topic().to_string(), m.partition())).or_insert(m.offset());
        *e = (*e).min(m.offset());
    }
    out
}

/// The offsets to commit for a batch: one past the last record of each partition.
pub fn next_offsets(batch: &[OwnedMessage]) -> anyhow::Result<TopicPartitionList> {
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = last.entry((m.topic(), m.partition())).or_insert(m.offset());
        *e = (*e).max(m.offset());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in last {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
    }
    Ok(tpl)
}

/// The committed offset of each partition in `tpl`. A per-partition error is retried and then
/// fatal, never read as "nothing committed" (which would re-read the retention); `None` is a
/// partition this group never committed.
pub fn committed<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    tpl: &TopicPartitionList,
) -> anyhow::Result<Vec<(String, i32, Option<i64>)>> {
    let mut last = String::new();
    for tries in 1..=TRIES {
        match consumer.committed_offsets(tpl.clone(), CALL) {
            Ok(c) => {
                let mut out = Vec::with_capacity(c.count());
                let mut bad = None;
                for e in c.elements() {
                    if let Err(err) = e.error() {
                        bad = Some(format!("{}/{}: {err}", e.topic(), e.partition()));
                        break;
                    }
                    let offset = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    out.push((e.topic().to_string(), e.partition(), offset));
                }
                match bad {
                    None => return Ok(out),
                    Some(b) => last = b,
                }
            }
            Err(e) => last = e.to_string(),
        }
        if super::shutdown::requested() {
            anyhow::bail!(STOPPING);
        }
        tracing::warn!(error = %last, "reading committed offsets failed; retrying");
        std::thread::sleep(Duration::from_millis(200 * tries as u64));
    }
    anyhow::bail!(
        "cannot read the group's committed offsets ({last}); stopping rather than guess where \
         a partition stands (a restart resumes from the committed offsets)"
    )
}

/// A partition's log bounds. Retried: right after a broker restart or a long pause its
/// metadata answers `NotLeaderForPartition` for a moment, which once stopped the process in
/// the frozen-broker test.
fn watermarks<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
) -> anyhow::Result<(i64, i64)> {
    let mut tries = 0;
    loop {
        match consumer.fetch_watermarks(topic, partition, CALL) {
            Ok(w) => return Ok(w),
            Err(e) => {
                tries += 1;
                if tries >= TRIES {
                    anyhow::bail!("reading the bounds of {topic}/{partition}: {e}");
                }
                if super::shutdown::requested() {
                    anyhow::bail!(STOPPING);
                }
                tracing::warn!(error = %e, topic, partition, "reading a partition's bounds failed; retrying");
                std::thread::sleep(Duration::from_millis(200 * tries as u64));
            }
        }
    }
}

/// Seeks each `(topic, partition, offset)`; a partition revoked meanwhile is skipped (not
/// ours any more), one that keeps refusing stops the process rather than be read from the
/// wrong place.
pub fn seek_all<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    targets: &[(String, i32, Offset)],
) -> anyhow::Result<()> {
    for (topic, partition, offset) in targets {
        let mut tries = 0;
        while let Err(e) = consumer.seek(topic, *partition, *offset, Duration::from_secs(5)) {
            if consumer.assignment().is_ok_and(|a| a.find_partition(topic, *partition).is_none()) {
                break;
            }
            tries += 1;
            if tries >= TRIES {
                anyhow::bail!(
                    "cannot seek {topic}/{partition} to {offset:?} ({e}); stopping rather than read \
                     it from the wrong place (a restart resumes from the committed offset)"
                );
            }
            if super::shutdown::requested() {
                anyhow::bail!(STOPPING);
            }
            tracing::warn!(error = %e, partition, ?offset, "seek failed; retrying");
            std::thread::sleep(Duration::from_millis(200 * tries as u64));
        }
    }
    Ok(())
}

/// Where a partition resumes, given what the group committed and the log's current bounds.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// The committed offset, within the log.
    Committed(i64),
    /// Never committed by this group: the whole retention is new to it.
    Beginning,
    /// Retention deleted records the group had not read yet: the oldest left is the only
    /// place to go (what Kafka's `earliest` would do), said loudly.
    Deleted { committed: i64, low: i64 },
    /// The group committed past the log's end: the topic was re-created or an unclean leader
    /// election dropped records, or the broker has just restarted and its high watermark is
    /// catching up. Going back would publish again what is published: after a few looks the
    /// process stops with what to do (an operator resets the group if it was re-created).
    BeyondEnd { committed: i64, high: i64 },
}

pub fn decide(committed: Option<i64>, low: i64, high: i64) -> Resume {
    match committed {
        None => Resume::Beginning,
        Some(c) if c < low => Resume::Deleted { committed: c, low },
        Some(c) if c > high => Resume::BeyondEnd { committed: c, high },
        Some(c) => Resume::Committed(c),
    }
}

/// Puts every assigned partition back at the place the group's committed offsets give (see
/// [`decide`]). Called when librdkafka reported that it could not continue a partition from
/// where it was; which partition is not carried by the error, so all of them are put back:
/// the caller drops the batch it was collecting, and `mapper run` also aborts the batch it
/// had in flight (its records come again from the committed offsets).
pub fn resume<C: ConsumerContext>(consumer: &impl Consumer<C>) -> anyhow::Result<()> {
    let tpl = consumer.assignment().map_err(|e| anyhow::anyhow!("reading the assignment: {e}"))?;
    if tpl.count() == 0 {
        return Ok(());
    }
    let mut targets = Vec::with_capacity(tpl.count());
    for (topic, partition, c) in committed(consumer, &tpl)? {
        // librdkafka queues one report per partition it could not start, so a group's first
        // start brings one per partition: those need no look at the log's bounds.
        let Some(c) = c else {
            targets.push((topic, partition, Offset::Beginning));
            continue;
        };
        let mut tries = 0;
        let offset = loop {
            let (low, high) = watermarks(consumer, &topic, partition)?;
            match decide(Some(c), low, high) {
                Resume::Committed(o) => break Offset::Offset(o),
                Resume::Beginning => break Offset::Beginning,
                Resume::Deleted { committed, low } => {
                    tracing::error!(
                        topic,
                        partition,
                        committed,
                        low,
                        "retention deleted records this group had not read yet; resuming at the oldest left"
                    );
                    break Offset::Offset(low);
                }
                // A broker that has just restarted may still be catching its high watermark
                // up: a few looks, then stop, like Kafka's own consumer with reset `none`.
                Resume::BeyondEnd { committed, high } => {
                    tries += 1;
                    if tries >= TRIES {
                        anyhow::bail!(
                            "the group committed {topic}/{partition} up to offset {committed}, past the \
                             end of its log ({high}): the topic was re-created or an unclean leader \
                             election dropped records. Stopping rather than publish again what was \
                             published; if the topic was re-created, reset the group's offsets \
                             (kafka-consumer-groups --reset-offsets --to-earliest) and start again"
                        );
                    }
                    tracing::warn!(
                        topic,
                        partition,
                        committed,
                        high,
                        "committed offset past the log's end; looking again"
                    );
                    std::thread::sleep(Duration::from_millis(500 * tries as u64));
                }
            }
        };
        targets.push((topic, partition, offset));
    }
    if targets.iter().all(|(_, _, o)| *o == Offset::Beginning) {
        // A group's first start: nothing committed anywhere, nothing to worry about.
        tracing::info!(
            partitions = targets.len(),
            "no committed offsets yet: starting every assigned partition at its beginning"
        );
    } else {
        tracing::warn!(
            partitions = targets.len(),
            "librdkafka could not continue a partition (auto.offset.reset=error); resumed every assigned \
             partition from the group's committed offsets"
        );
    }
    // librdkafka has stopped fetching the partition it could not continue, and a stopped
    // partition refuses `seek`: the assignment itself is given again, with explicit offsets.
    let mut with_offsets = TopicPartitionList::new();
    for (topic, partition, offset) in &targets {
        with_offsets
            .add_partition_offset(topic, *partition, *offset)
            .map_err(|e| anyhow::anyhow!("{topic}/{partition}: {e}"))?;
    }
    let reassigned = match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => {
            consumer.incremental_unassign(&tpl).and_then(|()| consumer.incremental_assign(&with_offsets))
        }
        _ => consumer.assign(&with_offsets),
    };
    reassigned.map_err(|e| {
        anyhow::anyhow!(
            "cannot resume the assigned partitions at their committed offsets ({e}); stopping rather \
             than read them from the wrong place (a restart resumes from the committed offsets)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn msg(p: i32, o: i64) -> OwnedMessage {
        OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, p, o, None)
    }

    #[test]
    fn a_batch_knows_where_it_starts_and_where_the_next_starts() {
        let b = [msg(0, 7), msg(1, 3), msg(0, 5), msg(0, 9)];
        let first = first_offsets(&b);
        assert_eq!(first[&("t".to_string(), 0)], 5);
        assert_eq!(first[&("t".to_string(), 1)], 3);
        let next = next_offsets(&b).unwrap();
        assert_eq!(next.find_partition("t", 0).unwrap().offset(), Offset::Offset(10));
        assert_eq!(next.find_partition("t", 1).unwrap().offset(), Offset::Offset(4));
    }

    #[test]
    fn a_partition_resumes_where_the_group_committed_and_never_before() {
        assert_eq!(decide(Some(40), 0, 100), Resume::Committed(40));
        assert_eq!(decide(Some(100), 0, 100), Resume::Committed(100), "caught up: the end is fine");
        assert_eq!(decide(None, 5, 100), Resume::Beginning);
        assert_eq!(decide(Some(3), 5, 100), Resume::Deleted { committed: 3, low: 5 });
        // The case librdkafka's `earliest` turns into re-publishing the whole partition.
        assert_eq!(decide(Some(4000), 0, 10), Resume::BeyondEnd { committed: 4000, high: 10 });
    }
}
