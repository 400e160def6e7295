//! Pulling raw labels and scores out of a detector's native output, as its pack describes.

use std::collections::HashMap;

use serde_json::Value;

use crate::catalog::pack::{Extractor, Normalize, Pack};
use crate::labels::{bounded, normalize};

/// One raw label as the detector reported it, merged across repeats and extractors.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub raw_label: String,
    /// Normalised form, the key for pack, alias and model lookups.
    pub key: String,
    pub raw_score: Option<Value>,
    /// Normalised score, present when the output carried one.
    pub score: Option<f64>,
    /// Score to use when the output carried none (the extractor's default or the flag).
    pub implied_score: f64,
    pub flagged: Option<bool>,
}

impl Observation {
    pub fn effective_score(&self) -> f64 {
        self.score.unwrap_or(self.implied_score)
    }
}

/// Every observation in `output`, in first-seen order. Repeats of one raw label (two SSNs in a
/// message, or a score from one extractor and a vendor flag from another) are merged: highest
/// score, flagged if any repeat was flagged.
pub fn extract(pack: &Pack, output: &Value) -> Vec<Observation> {
    let mut out: Vec<Observation> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for ex in &pack.extractors {
        let mut touched = false;
        run_extractor(ex, output, &mut |obs| {
            touched = true;
            match index.get(&obs.key) {
                Some(&i) => merge(&mut out[i], obs),
                None => {
                    index.insert(obs.key.clone(), out.len());
                    out.push(obs);
                }
            }
        });
        if pack.first_match && touched {
            break;
        }
    }
    out
}

fn merge(into: &mut Observation, new: Observation) {
    if let Some(s) = new.score {
        if into.score.is_none_or(|cur| s > cur) {
            into.score = Some(s);
            into.raw_score = new.raw_score;
        }
    }
    into.implied_score = into.implied_score.max(new.implied_score);
    into.flagged = match (into.flagged, new.flagged) {
        (Some(a), Some(b)) => Some(a || b),
        (a, b) => a.or(b),
    };
}

fn run_extractor(ex: &Extractor, output: &Value, emit: &mut dyn FnMut(Observation)) {
    for node in ex.select.query(output).all() {
        if let Some(rule) = &ex.text {
            let Some(text) = node.as_str() else { continue };
            if rule.when.as_ref().is_some_and(|w| !w.is_match(text)) {
                continue;
            }
            for m in rule.labels.captures_iter(text) {
                let raw = m.get(1).or_else(|| m.get(0)).map(|g| g.as_str()).unwrap_or_default();
                if let Some(obs) = observation(ex, format!("{}{raw}", ex.label_prefix), None) {
                    emit(obs);
                }
            }
            continue;
        }
        if ex.members {
            let Some(obj) = node.as_object() else { continue };
            for (name, value) in obj {
                let raw = match &ex.label {
                    Some(p) => match first(p, value).and_then(Value::as_str) {
                        Some(s) => s.to_string(),
                        None => continue,
                    },
                    None => name.clone(),
                };
                if let Some(obs) = observation(ex, format!("{}{raw}", ex.label_prefix), Some(value)) {
                    emit(obs);
                }
            }
            continue;
        }
        let label_node = match &ex.label {
            Some(p) => first(p, node),
            None => Some(node),
        };
        let Some(raw) = label_node.and_then(Value::as_str) else { continue };
        if let Some(obs) = observation(ex, format!("{}{raw}", ex.label_prefix), Some(node)) {
            emit(obs);
        }
    }
}

fn first<'a>(path: &serde_json_path::JsonPath, node: &'a Value) -> Option<&'a Value> {
    path.query(node).all().into_iter().next()
}

fn observation(ex: &Extractor, raw: String, node: Option<&Value>) -> Option<Observation> {
    let raw_label = bounded(raw.trim());
    let key = normalize(&raw_label);
    if key.is_empty() {
        return None;
    }
    // A score path may yield several values (Detoxify on a batch: one score per text); the
    // highest one counts, like a label reported twice.
    let (raw_score, score) = match (&ex.score, node) {
        (Some(p), Some(n)) => {
            p.query(n).all().into_iter().filter_map(|v| normalize_score(&ex.normalize, v).map(|s| (v, s))).fold(
                (None, None),
                |(rv, best): (Option<&Value>, Option<f64>), (v, s)| {
                    if best.is_none_or(|b| s > b) {
                        (Some(v), Some(s))
                    } else {
                        (rv, best)
                    }
                },
            )
        }
        _ => (None, None),
    };
    let raw_score = raw_score.cloned();
    // A score map built by the generic pack must not turn `{"label": "x"}` members into labels.
    if ex.members
        && ex.score.is_some()
        && ex.label.is_none()
        && ex.default_score.is_none()
        && raw_score.is_none()
        && ex.flag.is_none()
    {
        return None;
    }
    let flagged = match (&ex.flag, node) {
        (Some(p), Some(n)) => first(p, n).and_then(Value::as_bool).map(|b| b == ex.flagged_when),
        _ => None,
    };
    let implied_score = match (ex.default_score, flagged) {
        (Some(d), _) => d,
        (None, Some(f)) => f64::from(u8::from(f)),
        (None, None) => 1.0,
    };
    Some(Observation { raw_label, key, raw_score, score, implied_score, flagged })
}

/// The raw score as a number in [0,1], or `None` when it cannot be read (an unknown level).
pub fn normalize_score(how: &Normalize, v: &Value) -> Option<f64> {
    let x = match v {
        Value::Bool(b) => return Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => match how {
            Normalize::Levels(levels) => return levels.get(&normalize(s)).copied(),
            _ => s.trim().parse::<f64>().ok()?,
        },
        _ => return None,
    };
    if !x.is_finite() {
        return None;
    }
    let unit = match how {
        Normalize::Probability | Normalize::Levels(_) => x,
        Normalize::Linear { min, max } => (x - min) / (max - min),
    };
    Some(unit.clamp(0.0, 1.0))
}
