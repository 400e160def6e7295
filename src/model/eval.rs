//! Offline evaluation of the model path on the dataset's validation split (`mapper model
//! eval`, the quality test, the model bench).
//!
//! What an operator needs before rolling out a base model or adapter is not one accuracy
//! figure but what the stream will do with it: how many unknown labels the model maps at the
//! configured threshold (the rest fall back to `OTHER.Unknown`), how often those mappings are
//! right, and how fast distinct labels get answered. Queries go through [`ModelRuntime`] in
//! chunks of `chunk` labels, as a Kafka batch's unknown labels do in `mapper run`.

use std::fmt;
use std::time::Instant;

use crate::catalog::Catalog;
use crate::dataset::{self, Example, Options};
use crate::mapping::LabelQuery;
use crate::model::ModelRuntime;

/// One labelled question: what a detector said, and the taxonomy label it means.
#[derive(Debug, Clone)]
pub struct Case {
    pub query: LabelQuery,
    pub gold: String,
}

/// The validation examples as queries, with each detector's current pack version (part of
/// the decision-cache key, as in the stream).
pub fn cases(catalog: &Catalog, examples: &[Example]) -> Vec<Case> {
    examples
        .iter()
        .map(|e| Case {
            query: LabelQuery {
                detector: e.meta.detector.clone(),
                raw_label: e.meta.raw_label.clone(),
                pack_version: catalog.pack_for(&e.meta.detector).0.version_tag(),
            },
            gold: e.meta.label.clone(),
        })
        .collect()
}

/// The validation split `dataset::build` makes with `opts`, as cases: by default only the
/// labels the rules cannot place (what the model is for), `limit` of them spread evenly
/// (0 = all).
pub fn validation_cases(catalog: &Catalog, opts: &Options, rule_placeable_too: bool, limit: usize) -> Vec<Case> {
    let ds = dataset::build(catalog, opts);
    let picked: Vec<Example> =
        ds.validation.into_iter().filter(|e| rule_placeable_too || !e.meta.rules_place).collect();
    spread(cases(catalog, &picked), limit)
}

/// `limit` items spread evenly over `all` (every label family gets its share), or all of them.
pub fn spread<T>(all: Vec<T>, limit: usize) -> Vec<T> {
    if limit == 0 || limit >= all.len() {
        return all;
    }
    let n = all.len();
    let keep: std::collections::BTreeSet<usize> = (0..limit).map(|i| i * n / limit).collect();
    all.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, x)| x).collect()
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub model: String,
    pub examples: usize,
    /// The model gave an answer (no timeout or error).
    pub answered: usize,
    /// The answer was the gold label, whatever its confidence.
    pub correct: usize,
    pub min_confidence: f64,
    /// Answers at or above `min_confidence`: what the stream would map by the model.
    pub confident: usize,
    pub confident_correct: usize,
    pub seconds: f64,
    /// Every case with the model's answer, in case order: what to read when a figure is bad.
    pub answers: Vec<Answer>,
}

/// One scored case.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    pub detector: String,
    pub raw_label: String,
    pub gold: String,
    /// `None`: no answer (timeout or engine error).
    pub label: Option<String>,
    pub confidence: Option<f64>,
}

impl Answer {
    pub fn is_correct(&self) -> bool {
        self.label.as_deref() == Some(self.gold.as_str())
    }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

impl Report {
    pub fn accuracy(&self) -> f64 {
        pct(self.correct, self.examples) / 100.0
    }
    /// Share of the labels the stream maps by the model at the threshold.
    pub fn coverage(&self) -> f64 {
        pct(self.confident, self.examples) / 100.0
    }
    /// Share of the model-mapped labels that are right.
    pub fn precision(&self) -> f64 {
        pct(self.confident_correct, self.confident) / 100.0
    }
    pub fn labels_per_second(&self) -> f64 {
        self.examples as f64 / self.seconds.max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model:      {}", self.model)?;
        writeln!(f, "examples:   {} (answered {})", self.examples, self.answered)?;
        writeln!(
            f,
            "accuracy:   {:.1}% ({} of {}) taking every answer",
            pct(self.correct, self.examples),
            self.correct,
            self.examples
        )?;
        writeln!(
            f,
            "at min_confidence {:.2}: the model maps {:.1}% ({}), {:.1}% of those correctly ({}); the rest fall back to OTHER.Unknown",
            self.min_confidence,
            pct(self.confident, self.examples),
            self.confident,
            pct(self.confident_correct, self.confident),
            self.confident_correct
        )?;
        write!(f, "throughput: {:.2} distinct labels/s ({:.1} s)", self.labels_per_second(), self.seconds)
    }
}

/// Asks the model every case (cache bypassed only in the sense that each case is distinct)
/// and scores the answers.
pub async fn evaluate(rt: &ModelRuntime, cases: &[Case], chunk: usize, min_confidence: f64) -> Report {
    let mut r = Report { model: rt.identity().to_string(), examples: cases.len(), min_confidence, ..Report::default() };
    let started = Instant::now();
    for part in cases.chunks(chunk.max(1)) {
        let queries: Vec<LabelQuery> = part.iter().map(|c| c.query.clone()).collect();
        for (c, a) in part.iter().zip(rt.decide(&queries).await) {
            r.answers.push(Answer {
                detector: c.query.detector.clone(),
                raw_label: c.query.raw_label.clone(),
                gold: c.gold.clone(),
                label: a.as_ref().map(|a| a.label.clone()),
                confidence: a.as_ref().map(|a| a.confidence),
            });
            let Some(a) = a else { continue };
            r.answered += 1;
            let right = a.label == c.gold;
            r.correct += usize::from(right);
            if a.confidence >= min_confidence {
                r.confident += 1;
                r.confident_correct += usize::from(right);
            }
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_divide_by_the_right_totals() {
        let r = Report {
            examples: 10,
            answered: 9,
            correct: 6,
            confident: 4,
            confident_correct: 3,
            seconds: 2.0,
            ..Report::default()
        };
        assert_eq!(r.accuracy(), 0.6);
        assert_eq!(r.coverage(), 0.4);
        assert_eq!(r.precision(), 0.75);
        assert_eq!(r.labels_per_second(), 5.0);
        assert_eq!(Report::default().precision(), 0.0);
    }

    #[test]
    fn spread_takes_evenly_spaced_items_in_order() {
        assert_eq!(spread((0..10).collect(), 3), vec![0, 3, 6]);
        assert_eq!(spread((0..10).collect(), 0).len(), 10);
        assert_eq!(spread((0..4).collect(), 9), vec![0, 1, 2, 3]);
    }
}
