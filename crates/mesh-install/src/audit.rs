//! The audit trail of a run: one record per object a step created or updated.
//!
//! The library only builds the records from a [`FlowReport`]; the caller stamps the time and
//! appends them (as JSON lines) wherever it keeps its audit log. Records hold names and outcomes,
//! never values, so no secret can reach them.

use mesh_common::Outcome;
use serde::Serialize;

use crate::flow::{FlowReport, Plane};
use crate::steps::Step;

/// One change made by a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When the run finished (RFC 3339, supplied by the caller).
    pub time: String,
    /// The guide's step number.
    pub number: u8,
    /// The step.
    pub step: Step,
    /// Where the object lives.
    pub plane: Plane,
    /// The object, as text.
    pub object: String,
    /// What was done (`created` or `updated`).
    pub outcome: Outcome,
    /// Settings that differed (names only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// The records for every object `report` created or updated, in step order. A dry run (or a
/// run that changed nothing) yields none.
pub fn records(report: &FlowReport, time: &str) -> Vec<AuditRecord> {
    if report.dry_run {
        return Vec::new();
    }
    report
        .changes()
        .filter(|(_, c)| matches!(c.outcome, Outcome::Created | Outcome::Updated))
        .map(|(step, c)| AuditRecord {
            time: time.to_owned(),
            number: step.number(),
            step,
            plane: c.plane,
            object: c.object.clone(),
            outcome: c.outcome,
            differences: c.differences.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Change, StepReport, StepStatus};

    fn report(dry_run: bool) -> FlowReport {
        let change = |object: &str, outcome| Change {
            plane: Plane::Hsm,
            object: object.to_owned(),
            outcome,
            differences: Vec::new(),
        };
        FlowReport {
            dry_run,
            steps: vec![StepReport {
                number: 2,
                step: Step::Kek,
                title: Step::Kek.title(),
                status: StepStatus::Done,
                changes: vec![
                    change("KEK a", Outcome::Created),
                    change("KEK b", Outcome::Unchanged),
                    change("KEK c", Outcome::Updated),
                ],
                warnings: Vec::new(),
                checks: Vec::new(),
                detail: String::new(),
                elapsed_ms: 0,
            }],
        }
    }

    #[test]
    fn only_created_and_updated_objects_are_recorded() {
        let records = records(&report(false), "2026-01-01T00:00:00Z");
        let objects: Vec<_> = records.iter().map(|r| r.object.as_str()).collect();
        assert_eq!(objects, ["KEK a", "KEK c"]);
        assert_eq!(records[0].step, Step::Kek);
        assert_eq!(records[0].time, "2026-01-01T00:00:00Z");
    }

    #[test]
    fn a_dry_run_records_nothing() {
        assert!(records(&report(true), "t").is_empty());
    }
}
