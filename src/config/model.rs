//! Settings of the model path (`model:`): which base model and adapter, how it generates,
//! how much the rules trust it, and the kill-switch.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// The kill-switch: `false` maps with the rules alone (the incident procedure: flip it,
    /// restart or roll the deployment, nothing else changes).
    pub enabled: bool,
    /// A local model directory (safetensors + tokenizer.json + config.json), or a directory
    /// holding `gguf_file`. Never a hub id: nothing is downloaded.
    pub path: Option<PathBuf>,
    /// GGUF weights inside `path` (tokenizer and chat template come from the GGUF metadata).
    pub gguf_file: Option<String>,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors),
    /// merged into the base at load time.
    pub adapter: Option<PathBuf>,
    /// Model identity recorded in every event the model decided, e.g. `llama-3-8b-instruct`.
    pub name: String,
    /// Adapter version recorded with it, e.g. `mapper-lora@v1.2.0`.
    pub adapter_version: Option<String>,
    /// Answers below this confidence fall back to the rules (`OTHER.Unknown`).
    pub min_confidence: f64,
    /// Per-detector overrides of `min_confidence`.
    pub detector_min_confidence: BTreeMap<String, f64>,
    /// Per-tenant overrides of `min_confidence` (win over per-detector ones).
    pub tenant_min_confidence: BTreeMap<String, f64>,
    /// The model's whole answer for a batch must come within this; after it, the batch's
    /// unanswered labels are mapped by the rules and the stream moves on.
    pub timeout_ms: u64,
    /// Most new tokens per answer (the constrained JSON answer needs far fewer).
    pub max_new_tokens: usize,
    /// Most requests in the engine at once (and its `max_num_seqs`). Default 1: with
    /// mistral.rs 0.8.1 on the CPU, answers given with several requests in flight differed
    /// from the model's own one-at-a-time answers (measured on SmolLM2 + adapter, 12
    /// validation labels: all 12 changed with 12 in flight, 3 still changed with
    /// `max_num_seqs` 1, none one at a time; one at a time equals transformers' greedy output).
    /// Raise it only where `mapper model eval` scores the same at the higher value.
    pub max_concurrent: usize,
    /// Distinct (detector, raw label, pack version, model) decisions kept in memory.
    pub cache_capacity: usize,
    /// Run on the CPU even in a CUDA build.
    pub force_cpu: bool,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            enabled: false,
            path: None,
            gguf_file: None,
            adapter: None,
            name: "llama-3-8b-instruct".into(),
            adapter_version: None,
            min_confidence: 0.6,
            detector_min_confidence: BTreeMap::new(),
            tenant_min_confidence: BTreeMap::new(),
            timeout_ms: 5_000,
            max_new_tokens: 48,
            max_concurrent: 1,
            cache_capacity: 100_000,
            force_cpu: !cfg!(feature = "cuda"),
        }
    }
}

impl ModelSettings {
    /// `name+adapter_version`, as recorded in provenance and part of every cache key.
    pub fn identity(&self) -> String {
        match &self.adapter_version {
            Some(v) => format!("{}+{v}", self.name),
            None => self.name.clone(),
        }
    }
}
