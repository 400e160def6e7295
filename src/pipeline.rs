//! The mapping step as the outside world sees it: detector events in, schema-checked canonical
//! and audit events out. Shared by `mapper map` and the stream processor so both emit exactly
//! the same bytes for the same input.

use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;

use crate::audit::audit_event;
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::contracts::{AuditEvent, CanonicalEvent, Contract, Contracts, DetectorEvent, Violation};
use crate::mapping::{Mapper, ModelDecision, TooManyLabels};

#[derive(Debug)]
pub struct Pipeline {
    pub mapper: Mapper,
    pub contracts: Contracts,
}

/// One input event's outputs, already validated against their schemas.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub canonical: CanonicalEvent,
    pub audit: AuditEvent,
    pub canonical_json: Value,
    pub audit_json: Value,
}

/// Why an input event produced no outputs.
#[derive(Debug, thiserror::Error)]
pub enum Unmapped {
    /// The input's fault: more labels than one event may carry (dead-lettered).
    #[error(transparent)]
    TooManyLabels(#[from] TooManyLabels),
    /// Our fault: an output failed its schema (a bug; never emitted).
    #[error(transparent)]
    Invalid(#[from] Violation),
}

impl Pipeline {
    pub fn load(settings: &Settings) -> anyhow::Result<Pipeline> {
        let catalog = Catalog::load(&settings.catalog_dir)
            .with_context(|| format!("loading the catalog from {}", settings.catalog_dir.display()))?;
        let contracts = Contracts::load().context("compiling the schemas")?;
        let label_key = match &settings.privacy.label_key_file {
            Some(f) => Some(crate::config::secrets::read_key_file(f, "privacy.label_key_file")?),
            None => None,
        };
        let mapper = Mapper::new(Arc::new(catalog), settings.threshold_policy())
            .with_model_policy(crate::mapping::ModelPolicy::from_settings(&settings.model))
            .with_label_shield(crate::labels::LabelShield::new(label_key));
        Ok(Pipeline { mapper, contracts })
    }

    pub fn catalog(&self) -> &Catalog {
        self.mapper.catalog()
    }

    /// Maps a batch with the rules (and `answers` for the batch's model queries, if a model
    /// ran). Each result is validated; a violation is a bug and is returned, never emitted.
    pub fn map_batch(&self, events: &[DetectorEvent]) -> Vec<Result<Mapped, Unmapped>> {
        self.finish(events, |prepared| prepared.finish(&[]))
    }

    /// As [`Self::map_batch`], with a model answering the batch's queries.
    pub fn map_batch_with(
        &self,
        events: &[DetectorEvent],
        model: impl FnOnce(&[crate::mapping::LabelQuery]) -> Vec<Option<ModelDecision>>,
    ) -> Vec<Result<Mapped, Unmapped>> {
        self.finish(events, |prepared| {
            let answers = if prepared.queries().is_empty() { Vec::new() } else { model(prepared.queries()) };
            prepared.finish(&answers)
        })
    }

    fn finish<'a>(
        &'a self,
        events: &'a [DetectorEvent],
        run: impl FnOnce(crate::mapping::PreparedBatch<'a>) -> Vec<Result<CanonicalEvent, TooManyLabels>>,
    ) -> Vec<Result<Mapped, Unmapped>> {
        run(self.mapper.prepare(events)).into_iter().map(|c| Ok(self.emit(c?)?)).collect()
    }

    fn emit(&self, canonical: CanonicalEvent) -> Result<Mapped, Violation> {
        let audit = audit_event(&self.catalog().frameworks, &canonical);
        let canonical_json = serde_json::to_value(&canonical).expect("canonical events serialise");
        let audit_json = serde_json::to_value(&audit).expect("audit events serialise");
        self.contracts.validate(Contract::CanonicalEvent, &canonical_json)?;
        self.contracts.validate(Contract::AuditEvent, &audit_json)?;
        Ok(Mapped { canonical, audit, canonical_json, audit_json })
    }
}
