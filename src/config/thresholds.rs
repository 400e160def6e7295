//! Which hit threshold applies to a label: the pack's, unless an operator overrode it.
//!
//! Precedence, most specific last: pack default → pack per-label → global override →
//! tenant override → environment override. Overrides are per detector and replace the pack's
//! per-label values too: an operator raising presidio to 0.8 for a noisy tenant means "every
//! presidio label", not "only the labels the pack author did not tune".

use std::collections::BTreeMap;
use std::fmt;

use super::Settings;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThresholdPolicy {
    global: BTreeMap<String, f64>,
    tenants: BTreeMap<String, BTreeMap<String, f64>>,
    environments: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThresholdSource {
    Pack,
    Global,
    Tenant(String),
    Environment(String),
}

impl fmt::Display for ThresholdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdSource::Pack => f.write_str("pack"),
            ThresholdSource::Global => f.write_str("global"),
            ThresholdSource::Tenant(t) => write!(f, "tenant:{t}"),
            ThresholdSource::Environment(e) => write!(f, "environment:{e}"),
        }
    }
}

impl ThresholdPolicy {
    pub fn from_settings(s: &Settings) -> Self {
        ThresholdPolicy {
            global: s.thresholds.clone(),
            tenants: s.tenants.iter().map(|(k, v)| (k.clone(), v.thresholds.clone())).collect(),
            environments: s.environments.iter().map(|(k, v)| (k.clone(), v.thresholds.clone())).collect(),
        }
    }

    /// The operator's override for `detector`, if any, and where it came from.
    pub fn override_for(
        &self,
        detector: &str,
        tenant: &str,
        environment: Option<&str>,
    ) -> Option<(f64, ThresholdSource)> {
        if let Some(env) = environment {
            if let Some(t) = self.environments.get(env).and_then(|m| m.get(detector)) {
                return Some((*t, ThresholdSource::Environment(env.to_string())));
            }
        }
        if let Some(t) = self.tenants.get(tenant).and_then(|m| m.get(detector)) {
            return Some((*t, ThresholdSource::Tenant(tenant.to_string())));
        }
        self.global.get(detector).map(|t| (*t, ThresholdSource::Global))
    }

    /// Every (scope, detector, threshold) the policy holds, for validation and listings.
    pub fn entries(&self) -> impl Iterator<Item = (ThresholdSource, &str, f64)> {
        let g = self.global.iter().map(|(d, t)| (ThresholdSource::Global, d.as_str(), *t));
        let t = self
            .tenants
            .iter()
            .flat_map(|(n, m)| m.iter().map(move |(d, t)| (ThresholdSource::Tenant(n.clone()), d.as_str(), *t)));
        let e = self
            .environments
            .iter()
            .flat_map(|(n, m)| m.iter().map(move |(d, t)| (ThresholdSource::Environment(n.clone()), d.as_str(), *t)));
        g.chain(t).chain(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScopeSettings;

    fn policy() -> ThresholdPolicy {
        let mut s = Settings::default();
        s.thresholds.insert("presidio".into(), 0.6);
        s.tenants.insert("acme".into(), ScopeSettings { thresholds: [("presidio".to_string(), 0.7)].into() });
        s.environments.insert("prod".into(), ScopeSettings { thresholds: [("presidio".to_string(), 0.9)].into() });
        s.threshold_policy()
    }

    #[test]
    fn precedence_is_global_then_tenant_then_environment() {
        let p = policy();
        assert_eq!(p.override_for("presidio", "other", None), Some((0.6, ThresholdSource::Global)));
        assert_eq!(p.override_for("presidio", "acme", None), Some((0.7, ThresholdSource::Tenant("acme".into()))));
        assert_eq!(
            p.override_for("presidio", "acme", Some("dev")),
            Some((0.7, ThresholdSource::Tenant("acme".into())))
        );
        assert_eq!(
            p.override_for("presidio", "acme", Some("prod")),
            Some((0.9, ThresholdSource::Environment("prod".into())))
        );
        assert_eq!(p.override_for("detoxify", "acme", Some("prod")), None);
    }
}
