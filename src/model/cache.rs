//! Decisions keyed by (detector, normalised raw label, pack version, model identity): in
//! steady state each distinct unknown label reaches the model once. A new pack version or a
//! new adapter changes the key, so stale answers are never served.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::labels::normalize;
use crate::mapping::{LabelQuery, ModelDecision};

type Key = (String, String, String, String);

pub struct DecisionCache {
    capacity: usize,
    map: Mutex<HashMap<Key, ModelDecision>>,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache { capacity, map: Mutex::new(HashMap::new()) }
    }

    fn key(q: &LabelQuery, model: &str) -> Key {
        (q.detector.clone(), normalize(&q.raw_label), q.pack_version.clone(), model.to_string())
    }

    pub fn get(&self, q: &LabelQuery, model: &str) -> Option<ModelDecision> {
        self.map.lock().expect("cache lock").get(&Self::key(q, model)).cloned()
    }

    /// Inserts; when full, the cache is emptied first (unknown labels are few and recur, so a
    /// rare full reset costs one model round, and no LRU bookkeeping runs per lookup).
    pub fn put(&self, q: &LabelQuery, model: &str, d: ModelDecision) {
        if self.capacity == 0 {
            return;
        }
        let mut m = self.map.lock().expect("cache lock");
        if m.len() >= self.capacity {
            m.clear();
        }
        m.insert(Self::key(q, model), d);
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str, pack: &str) -> LabelQuery {
        LabelQuery { detector: "d".into(), raw_label: raw.into(), pack_version: pack.into() }
    }

    #[test]
    fn keys_include_pack_and_model_versions() {
        let c = DecisionCache::new(10);
        let d = ModelDecision { label: "A.B".into(), confidence: 0.9, model: "m1".into() };
        c.put(&q("SSN_Number", "d@1"), "m1", d.clone());
        assert_eq!(c.get(&q("ssn-number", "d@1"), "m1"), Some(d), "spelling drift hits");
        assert_eq!(c.get(&q("ssn-number", "d@2"), "m1"), None, "new pack version misses");
        assert_eq!(c.get(&q("ssn-number", "d@1"), "m2"), None, "new model misses");
    }
}
