//! The in-process engine: mistral.rs running a local Llama (safetensors or GGUF), with a PEFT
//! LoRA adapter merged at load time, answering constrained JSON.
//!
//! Pitfalls of mistral.rs 0.8.1 this module works around (each has a test in tests/model.rs):
//! - A LoRA adapter id is always resolved through the Hugging Face hub cache, even when it
//!   names a local directory; offline that fails. We lay the adapter out as a hub-cache entry
//!   in a private directory and point `HF_HUB_CACHE` at it for the load.
//! - The list of applied LoRAs is thread-local and never cleared, so a later load on the same
//!   thread would merge the adapter again. Every load runs on a fresh thread, which clears it
//!   before and after.
//! - Loading blocks and can panic (bad template, bad config): it runs on that thread and a
//!   panic becomes a load error, never a crashed processor.
//! - Reported log-probabilities are base 10.
//! - `temperature: 0` makes it report raw logits as log-probabilities; the deterministic
//!   (greedy, top-k 1) sampler gives the same argmax with true probabilities, so we use that.
//! - A JSON-schema constraint terminates reliably only when bounded: fixed separators, no
//!   flexible whitespace, `additionalProperties: false`, an enum for the label.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use mistralrs::{Constraint, GgufModelBuilder, LoraModelBuilder, ModelDType, RequestBuilder, TextMessageRole};
use mistralrs::{TextModelBuilder, TokenSource};

use crate::config::ModelSettings;
use crate::mapping::{LabelQuery, ModelDecision};

/// The system turn of every request. Must equal `SYSTEM_PROMPT` in training/chat_format.py
/// byte for byte: the adapter was trained on exactly this prompt (a test checks they agree).
pub const SYSTEM_PROMPT: &str =
    "You map AI-safety detector outputs to a canonical taxonomy. Answer with JSON only: {\"label\":\"<taxonomy label>\"}";

pub struct Engine {
    model: mistralrs::Model,
    schema: serde_json::Value,
    max_new_tokens: usize,
    identity: String,
    /// Requests handed to mistral.rs at once (`model.max_concurrent`); see [`ModelSettings`]
    /// for why the default is 1.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The bounded JSON schema every answer is constrained to: one key, an enum of real labels.
pub fn answer_schema(labels: &[String]) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": { "label": { "type": "string", "enum": labels } },
        "required": ["label"],
        "additionalProperties": false,
        "x-guidance": { "whitespace_flexible": false, "item_separator": ",", "key_separator": ":" }
    })
}

impl Engine {
    /// Loads the model described by `s` (on a thread of its own; see the module notes).
    pub fn load(s: &ModelSettings, labels: Vec<String>) -> anyhow::Result<Engine> {
        let path = s.path.clone().context("model.path is not set")?;
        anyhow::ensure!(path.is_dir(), "model.path {} is not a directory (no hub downloads)", path.display());
        let hub = match &s.adapter {
            Some(a) => Some(adapter_hub_cache(a)?),
            None => None,
        };
        let s2 = s.clone();
        let model = std::thread::Builder::new()
            .name("model-load".into())
            .spawn(move || -> anyhow::Result<mistralrs::Model> {
                mistralrs_quant::clear_applied_loras();
                if let Some((cache, _)) = &hub {
                    // Process-wide, but only a model load reads it (hf-hub, inside `build`).
                    std::env::set_var("HF_HUB_CACHE", cache);
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let r = rt.block_on(build(&s2, &path, hub.as_ref().map(|(_, id)| id.as_str())));
                mistralrs_quant::clear_applied_loras();
                r
            })?
            .join()
            .map_err(|p| anyhow::anyhow!("model load panicked: {}", panic_text(&p)))??;
        Ok(Engine {
            model,
            schema: answer_schema(&labels),
            max_new_tokens: s.max_new_tokens,
            identity: s.identity(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(s.max_concurrent.max(1))),
        })
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One query: the constrained answer and its confidence (the probability the model gave
    /// the label's tokens, from their base-10 log-probabilities). Private: every request goes
    /// through [`Engine::classify_many`], which holds the in-flight bound.
    async fn classify(&self, q: &LabelQuery) -> anyhow::Result<ModelDecision> {
        let req = RequestBuilder::new()
            .add_message(TextMessageRole::System, SYSTEM_PROMPT)
            .add_message(TextMessageRole::User, crate::dataset::instruction(&q.detector, &q.raw_label))
            .set_deterministic_sampler()
            .set_sampler_max_len(self.max_new_tokens)
            .return_logprobs(true)
            .set_constraint(Constraint::JsonSchema(self.schema.clone()));
        let resp = self.model.send_chat_request(req).await.map_err(|e| anyhow::anyhow!("model request: {e}"))?;
        let choice = resp.choices.first().context("no choice in the model's response")?;
        let text = choice.message.content.clone().unwrap_or_default();
        let answer: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("unparsable answer {text:?}"))?;
        let label = answer["label"].as_str().with_context(|| format!("no label in {text:?}"))?.to_string();
        let tokens: Vec<(String, f32)> = choice
            .logprobs
            .as_ref()
            .and_then(|l| l.content.as_ref())
            .map(|c| c.iter().map(|t| (t.token.clone(), t.logprob)).collect())
            .unwrap_or_default();
        let confidence = label_confidence(&text, &label, &tokens);
        Ok(ModelDecision { label, confidence, model: self.identity.clone() })
    }

    /// Every query of a batch together, at most `model.max_concurrent` of them in the engine
    /// at once (it batches the concurrent requests itself).
    pub async fn classify_many(self: &Arc<Self>, queries: &[LabelQuery]) -> Vec<anyhow::Result<ModelDecision>> {
        let mut set = tokio::task::JoinSet::new();
        for (i, q) in queries.iter().cloned().enumerate() {
            let me = Arc::clone(self);
            set.spawn(async move {
                // Never closed, so acquiring cannot fail.
                let _permit = me.in_flight.acquire().await.expect("the in-flight semaphore is never closed");
                (i, me.classify(&q).await)
            });
        }
        let mut out: Vec<Option<anyhow::Result<ModelDecision>>> = (0..queries.len()).map(|_| None).collect();
        while let Some(r) = set.join_next().await {
            match r {
                Ok((i, d)) => out[i] = Some(d),
                Err(e) => tracing::warn!(error = %e, "model request task failed"),
            }
        }
        out.into_iter().map(|d| d.unwrap_or_else(|| Err(anyhow::anyhow!("model request task failed")))).collect()
    }
}

async fn build(s: &ModelSettings, path: &Path, adapter_id: Option<&str>) -> anyhow::Result<mistralrs::Model> {
    let dir = path.display().to_string();
    if let Some(file) = &s.gguf_file {
        anyhow::ensure!(adapter_id.is_none(), "a LoRA adapter needs safetensors weights, not GGUF");
        let mut b = GgufModelBuilder::new(dir, vec![file.clone()])
            .with_token_source(TokenSource::None)
            .with_max_num_seqs(s.max_concurrent);
        if s.force_cpu {
            b = b.with_force_cpu();
        }
        return b.build().await;
    }
    let mut tb = TextModelBuilder::new(dir)
        .with_token_source(TokenSource::None)
        .with_dtype(if s.force_cpu { ModelDType::F32 } else { ModelDType::BF16 })
        .with_max_num_seqs(s.max_concurrent);
    if s.force_cpu {
        tb = tb.with_force_cpu();
    }
    match adapter_id {
        Some(id) => LoraModelBuilder::from_text_model_builder(tb, [id.to_string()]).build().await,
        None => tb.build().await,
    }
}

/// Lays `adapter` out as the hub-cache entry mistral.rs looks for; returns (cache dir, id).
fn adapter_hub_cache(adapter: &Path) -> anyhow::Result<(PathBuf, String)> {
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        anyhow::ensure!(adapter.join(f).is_file(), "adapter {}: {f} missing", adapter.display());
    }
    let cache = std::env::temp_dir().join(format!("llama-mapper-hub-{}", std::process::id()));
    let repo = cache.join("models--local--mapper-lora");
    let snap = repo.join("snapshots").join("main");
    std::fs::create_dir_all(&snap)?;
    std::fs::create_dir_all(repo.join("refs"))?;
    // hf-hub reads the ref with read_to_string and does not trim: no trailing newline.
    std::fs::write(repo.join("refs").join("main"), "main")?;
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        let dst = snap.join(f);
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(adapter.join(f), &dst).with_context(|| format!("staging {f}"))?;
    }
    Ok((cache, "local/mapper-lora".into()))
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// The probability of the label's own tokens: 10^(sum of their base-10 log-probabilities),
/// over the tokens that overlap the label inside the answer text. The JSON around it is forced
/// by the constraint and says nothing about the model's belief.
pub fn label_confidence(text: &str, label: &str, tokens: &[(String, f32)]) -> f64 {
    let Some(start) = text.find(&format!("\"{label}\"")).map(|i| i + 1) else { return 0.0 };
    let end = start + label.len();
    let mut pos = 0usize;
    let mut sum = 0f64;
    let mut any = false;
    for (tok, lp) in tokens {
        let (a, b) = (pos, pos + tok.len());
        pos = b;
        if a < end && b > start {
            sum += f64::from(*lp);
            any = true;
        }
    }
    if !any || !sum.is_finite() {
        return 0.0;
    }
    10f64.powf(sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_uses_only_the_label_tokens_in_base_10() {
        let text = r#"{"label":"PII.Identifier.SSN"}"#;
        let toks = vec![
            ("{\"label\":\"".to_string(), -3.0),
            ("PII".to_string(), -0.1),
            (".Identifier".to_string(), 0.0),
            (".SSN".to_string(), -0.2),
            ("\"}".to_string(), -5.0),
        ];
        let c = label_confidence(text, "PII.Identifier.SSN", &toks);
        assert!((c - 10f64.powf(-0.3)).abs() < 1e-6, "{c}");
        assert_eq!(label_confidence(text, "OTHER.Unknown", &toks), 0.0);
    }

    #[test]
    fn the_system_prompt_is_the_one_the_adapter_was_trained_on() {
        let py = include_str!("../../training/chat_format.py");
        let block = py.split("SYSTEM_PROMPT = (").nth(1).unwrap().split("\n)").next().unwrap();
        let mut joined = String::new();
        for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let q = line.chars().next().unwrap();
            joined.push_str(&line[1..line.rfind(q).unwrap()]);
        }
        assert_eq!(joined, SYSTEM_PROMPT);
    }

    #[test]
    fn the_answer_schema_is_bounded() {
        let s = answer_schema(&["A.B".into(), "OTHER.Unknown".into()]);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["label"]["enum"][1], "OTHER.Unknown");
        assert_eq!(s["x-guidance"]["whitespace_flexible"], false);
    }
}
