//! Drift and health from a dry run: every object the flow manages becomes one check, passing
//! when the dry run would leave it unchanged.

use mesh_common::Outcome;
use serde::Serialize;

use crate::flow::{FlowReport, Plane, StepStatus};
use crate::steps::Step;

/// The result of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// In the desired state.
    Ok,
    /// Missing or different from the configuration.
    Drift,
    /// The check could not be made (a backend failed or refused).
    Error,
    /// Worth a look, not a failure (a warning or a blocked step).
    Warning,
}

/// One line of `meshca status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The step that manages the object.
    pub step: Step,
    /// The guide's step number.
    pub number: u8,
    /// Where the object lives (`None` for a step-level check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plane: Option<Plane>,
    /// What was checked.
    pub name: String,
    /// The result.
    pub state: CheckState,
    /// What to do about it (empty when ok).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hint: String,
}

/// The checks of a dry-run `report`, in step order. Steps skipped or not run give none.
pub fn checks(report: &FlowReport) -> Vec<Check> {
    let mut out = Vec::new();
    for step in &report.steps {
        let check = |plane, name: String, state, hint: String| Check {
            step: step.step,
            number: step.number,
            plane,
            name,
            state,
            hint,
        };
        for c in &step.checks {
            let state = match (c.ok, c.required) {
                (true, _) => CheckState::Ok,
                (false, true) => CheckState::Error,
                (false, false) => CheckState::Warning,
            };
            let hint = if c.ok {
                String::new()
            } else {
                c.detail.clone()
            };
            out.push(check(None, c.name.clone(), state, hint));
        }
        match step.status {
            StepStatus::Failed if !step.checks.is_empty() => {}
            StepStatus::Done => {
                for c in &step.changes {
                    let (state, hint) = match c.outcome {
                        Outcome::Unchanged => (CheckState::Ok, String::new()),
                        Outcome::WouldCreate | Outcome::Created => (
                            CheckState::Drift,
                            format!("missing; `meshca apply` (step {}) creates it", step.number),
                        ),
                        Outcome::WouldUpdate | Outcome::Updated => {
                            let what = if c.differences.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", c.differences.join(", "))
                            };
                            (
                                CheckState::Drift,
                                format!(
                                    "differs from the configuration{what}; `meshca apply` \
                                     (step {}) restores it",
                                    step.number
                                ),
                            )
                        }
                    };
                    out.push(check(Some(c.plane), c.object.clone(), state, hint));
                }
                for w in &step.warnings {
                    out.push(check(None, w.clone(), CheckState::Warning, String::new()));
                }
            }
            StepStatus::Failed => out.push(check(
                None,
                step.title.to_owned(),
                CheckState::Error,
                step.detail.clone(),
            )),
            StepStatus::Blocked => out.push(check(
                None,
                step.title.to_owned(),
                CheckState::Warning,
                step.detail.clone(),
            )),
            StepStatus::Skipped | StepStatus::NotRun => {}
        }
    }
    out
}

/// True when every check passed (warnings allowed).
pub fn is_clean(checks: &[Check]) -> bool {
    checks
        .iter()
        .all(|c| matches!(c.state, CheckState::Ok | CheckState::Warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Change, StepReport};

    fn step(status: StepStatus, changes: Vec<Change>) -> StepReport {
        StepReport {
            number: 5,
            step: Step::VaultSetup,
            title: Step::VaultSetup.title(),
            status,
            changes,
            warnings: Vec::new(),
            checks: Vec::new(),
            detail: "vault sealed".to_owned(),
            elapsed_ms: 0,
        }
    }

    fn change(object: &str, outcome: Outcome, differences: &[&str]) -> Change {
        Change {
            plane: Plane::Vault,
            object: object.to_owned(),
            outcome,
            differences: differences.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn would_update_is_drift_naming_the_object_and_fields() {
        let report = FlowReport {
            dry_run: true,
            steps: vec![step(
                StepStatus::Done,
                vec![
                    change("mount asm-c1", Outcome::Unchanged, &[]),
                    change("policy asm-c1-hsm-policy", Outcome::WouldUpdate, &["rules"]),
                ],
            )],
        };
        let checks = checks(&report);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].state, CheckState::Ok);
        assert_eq!(checks[1].state, CheckState::Drift);
        assert_eq!(checks[1].name, "policy asm-c1-hsm-policy");
        assert!(checks[1].hint.contains("rules"), "{}", checks[1].hint);
        assert!(!is_clean(&checks));
    }

    #[test]
    fn unchanged_is_clean_and_a_failed_step_is_an_error() {
        let clean = FlowReport {
            dry_run: true,
            steps: vec![step(
                StepStatus::Done,
                vec![change("mount asm-c1", Outcome::Unchanged, &[])],
            )],
        };
        assert!(is_clean(&checks(&clean)));
        let failed = FlowReport {
            dry_run: true,
            steps: vec![step(StepStatus::Failed, Vec::new())],
        };
        let checks = checks(&failed);
        assert_eq!(checks[0].state, CheckState::Error);
        assert_eq!(checks[0].hint, "vault sealed");
        assert!(!is_clean(&checks));
    }
}
