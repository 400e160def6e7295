//! Offsets of a batch: where it starts (to rewind to) and where the next one starts (to commit).

use std::collections::BTreeMap;

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

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
}
