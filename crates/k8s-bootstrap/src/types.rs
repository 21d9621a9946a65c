//! Modes, outcomes and reports shared by every operation.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use mesh_common::{Mode, Outcome};

/// One line of a [`Report`]: a resource (`configmap istio-system/vault-tls-cert`, or a file
/// path) and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The object or file, as text.
    pub resource: String,
    /// What was (or would be) done.
    pub action: Outcome,
}

/// What an operation did, in order, plus warnings worth showing the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// True when produced under [`Mode::DryRun`].
    pub dry_run: bool,
    /// One entry per object or file the operation manages.
    pub changes: Vec<Change>,
    /// Surprises that did not stop the operation (also logged with `tracing::warn!`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    /// An empty report for `mode`.
    pub fn new(mode: Mode) -> Self {
        Self {
            dry_run: mode.is_dry_run(),
            ..Self::default()
        }
    }

    /// Appends a change.
    pub fn push(&mut self, resource: impl Into<String>, action: Outcome) {
        self.changes.push(Change {
            resource: resource.into(),
            action,
        });
    }

    /// Records a warning and logs it.
    pub fn warn(&mut self, warning: impl Into<String>) {
        let warning = warning.into();
        tracing::warn!(k8s.warning = %warning, "cluster state needs attention");
        self.warnings.push(warning);
    }

    /// Appends another report's changes and warnings.
    pub fn extend(&mut self, other: Self) {
        self.changes.extend(other.changes);
        self.warnings.extend(other.warnings);
    }

    /// True when every change is `Unchanged`.
    pub fn is_unchanged(&self) -> bool {
        self.changes.iter().all(|c| !c.action.is_change())
    }

    /// The outcome recorded for `resource`, if any.
    pub fn outcome_of(&self, resource: &str) -> Option<Outcome> {
        self.changes
            .iter()
            .find(|c| c.resource == resource)
            .map(|c| c.action)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            writeln!(f, "{:<13} {}", c.action.to_string(), c.resource)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
