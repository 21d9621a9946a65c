//! Figures, their targets, the table on stdout and `bench-out/report.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

/// Which way a figure must lie relative to its target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "op", content = "value")]
pub(crate) enum Target {
    /// The figure must not exceed the value.
    #[serde(rename = "<=")]
    AtMost(f64),
    /// The figure must stay strictly below the value.
    #[serde(rename = "<")]
    Below(f64),
    /// The figure must reach at least the value.
    #[serde(rename = ">=")]
    AtLeast(f64),
}

impl Target {
    fn holds(self, value: f64) -> bool {
        match self {
            Self::AtMost(t) => value <= t,
            Self::Below(t) => value < t,
            Self::AtLeast(t) => value >= t,
        }
    }

    fn render(self, unit: Unit) -> String {
        let (op, v) = match self {
            Self::AtMost(v) => ("≤", v),
            Self::Below(v) => ("<", v),
            Self::AtLeast(v) => ("≥", v),
        };
        format!("{op} {}", unit.render(v))
    }
}

/// How a value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unit {
    /// Operations per second.
    OpsPerSec,
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
    /// Mebibytes.
    MiB,
    /// A dimensionless ratio, printed with `×`.
    Ratio,
    /// A count.
    Count,
}

impl Unit {
    fn render(self, v: f64) -> String {
        match self {
            Self::OpsPerSec => format!("{v:.0} ops/s"),
            Self::Micros => format!("{v:.1} µs"),
            Self::Millis => format!("{v:.1} ms"),
            Self::Seconds => format!("{v:.2} s"),
            Self::MiB => format!("{v:.1} MiB"),
            Self::Ratio => format!("{v:.3}×"),
            Self::Count => format!("{v:.0}"),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Stable identifier (`plugin.auth_encrypt.c1.p50_ratio`).
    pub(crate) id: String,
    /// The part (1 to 5).
    pub(crate) part: u8,
    /// What it is, for people.
    pub(crate) label: String,
    /// The measured value.
    pub(crate) value: f64,
    /// Its unit.
    pub(crate) unit: Unit,
    /// The target, when this figure is judged.
    pub(crate) target: Option<Target>,
    /// Whether the target is met (`None` when not judged, as in smoke mode).
    pub(crate) met: Option<bool>,
}

/// Every figure of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// True for the smoke run (few iterations, targets not judged).
    pub(crate) smoke: bool,
    /// Logical CPUs of the machine.
    pub(crate) cpus: usize,
    /// Build profile of the measured binaries.
    pub(crate) profile: String,
    /// The figures, in measuring order.
    pub(crate) figures: Vec<Figure>,
    /// True when every judged figure met its target (`None` in smoke mode).
    pub(crate) all_met: Option<bool>,
    /// Notes on how figures were taken.
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(smoke: bool, profile: &str) -> Self {
        Self {
            smoke,
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            profile: profile.to_owned(),
            figures: Vec::new(),
            all_met: None,
            notes: Vec::new(),
        }
    }

    /// Adds a figure without a target.
    pub(crate) fn info(&mut self, part: u8, id: &str, label: &str, value: f64, unit: Unit) {
        self.push(part, id, label, value, unit, None);
    }

    /// Adds a figure judged against `target` (not judged in smoke mode).
    pub(crate) fn judged(
        &mut self,
        part: u8,
        id: &str,
        label: &str,
        value: f64,
        unit: Unit,
        target: Target,
    ) {
        self.push(part, id, label, value, unit, Some(target));
    }

    fn push(
        &mut self,
        part: u8,
        id: &str,
        label: &str,
        value: f64,
        unit: Unit,
        target: Option<Target>,
    ) {
        let met = if self.smoke {
            None
        } else {
            target.map(|t| t.holds(value))
        };
        eprintln!(
            "mesh-bench: {label}: {}{}",
            unit.render(value),
            match (target, met) {
                (Some(t), Some(ok)) => format!(
                    " (target {}: {})",
                    t.render(unit),
                    if ok { "met" } else { "MISSED" }
                ),
                _ => String::new(),
            }
        );
        self.figures.push(Figure {
            id: id.to_owned(),
            part,
            label: label.to_owned(),
            value,
            unit,
            target,
            met,
        });
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Sets `all_met` from the figures.
    pub(crate) fn finish(&mut self) {
        self.all_met = (!self.smoke).then(|| self.figures.iter().all(|f| f.met != Some(false)));
    }

    /// The judged figures that missed their target.
    pub(crate) fn missed(&self) -> impl Iterator<Item = &Figure> {
        self.figures.iter().filter(|f| f.met == Some(false))
    }

    /// The table: figure, value, target, met.
    pub(crate) fn table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    format!("{}. {}", f.part, f.label),
                    f.unit.render(f.value),
                    f.target
                        .map_or_else(|| "—".to_owned(), |t| t.render(f.unit)),
                    match f.met {
                        Some(true) => "✓".to_owned(),
                        Some(false) => "✗".to_owned(),
                        None if f.target.is_some() => "(smoke)".to_owned(),
                        None => String::new(),
                    },
                ]
            })
            .collect();
        let header = [
            "figure".to_owned(),
            "value".to_owned(),
            "target".to_owned(),
            "met".to_owned(),
        ];
        let width = |i: usize| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (w0, w1, w2) = (width(0), width(1), width(2));
        let mut out = String::new();
        let mut line = |r: &[String; 4]| {
            let pad = |s: &str, w: usize| {
                let n = w.saturating_sub(s.chars().count());
                format!("{s}{}", " ".repeat(n))
            };
            let lpad = |s: &str, w: usize| {
                let n = w.saturating_sub(s.chars().count());
                format!("{}{s}", " ".repeat(n))
            };
            let _ = writeln!(
                out,
                "{}  {}  {}  {}",
                pad(&r[0], w0),
                lpad(&r[1], w1),
                pad(&r[2], w2),
                r[3]
            );
        };
        line(&header);
        for r in &rows {
            line(r);
        }
        let _ = writeln!(out);
        match self.all_met {
            Some(true) => {
                let _ = writeln!(out, "every target is met");
            }
            Some(false) => {
                let missed: Vec<&str> = self.missed().map(|f| f.label.as_str()).collect();
                let _ = writeln!(
                    out,
                    "{} target(s) MISSED: {}",
                    missed.len(),
                    missed.join("; ")
                );
            }
            None => {
                let _ = writeln!(out, "smoke run: figures are not judged against targets");
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// Writes the JSON document to `path` (its directory is created).
    pub(crate) fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the report directory {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the report {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_judged_outside_smoke_mode_only() {
        let mut r = Report::new(false, "release");
        r.judged(1, "a", "ratio a", 1.05, Unit::Ratio, Target::AtMost(1.10));
        r.judged(1, "b", "ratio b", 0.7, Unit::Ratio, Target::AtLeast(0.8));
        r.info(1, "c", "ops", 100.0, Unit::OpsPerSec);
        r.finish();
        assert_eq!(r.figures[0].met, Some(true));
        assert_eq!(r.figures[1].met, Some(false));
        assert_eq!(r.figures[2].met, None);
        assert_eq!(r.all_met, Some(false));
        let table = r.table();
        assert!(table.contains("✗"), "{table}");
        assert!(table.contains("MISSED: ratio b"), "{table}");

        let mut s = Report::new(true, "debug");
        s.judged(1, "a", "ratio a", 9.0, Unit::Ratio, Target::AtMost(1.10));
        s.finish();
        assert_eq!(s.figures[0].met, None);
        assert_eq!(s.all_met, None);
    }

    #[test]
    fn json_names_the_target_and_its_direction() {
        let mut r = Report::new(false, "release");
        r.judged(3, "m", "rss", 10.0, Unit::MiB, Target::Below(24.0));
        r.finish();
        let doc = serde_json::to_value(&r).unwrap();
        assert_eq!(doc["figures"][0]["target"]["op"], "<");
        assert_eq!(doc["figures"][0]["target"]["value"], 24.0);
        assert_eq!(doc["figures"][0]["met"], true);
        assert_eq!(doc["all_met"], true);
    }
}
