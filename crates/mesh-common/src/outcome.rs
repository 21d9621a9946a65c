use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether an operation makes its changes or only reports what it would change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Make the changes.
    #[default]
    Apply,
    /// Read everything, change nothing, report `WouldCreate` / `WouldUpdate`.
    DryRun,
}

impl Mode {
    /// True under [`Mode::DryRun`].
    pub fn is_dry_run(self) -> bool {
        self == Self::DryRun
    }
}

/// What an idempotent `ensure_*` operation did (or would do) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The object did not exist and was created.
    Created,
    /// The object existed and was changed.
    Updated,
    /// The object already matched; nothing was written.
    Unchanged,
    /// Dry run: the object would be created.
    WouldCreate,
    /// Dry run: the object would be changed.
    WouldUpdate,
}

impl Outcome {
    /// True for every outcome except [`Outcome::Unchanged`].
    pub fn is_change(self) -> bool {
        self != Self::Unchanged
    }

    /// [`Outcome::Created`], or [`Outcome::WouldCreate`] in a dry run.
    pub fn create(mode: Mode) -> Self {
        match mode {
            Mode::Apply => Self::Created,
            Mode::DryRun => Self::WouldCreate,
        }
    }

    /// [`Outcome::Updated`], or [`Outcome::WouldUpdate`] in a dry run.
    pub fn update(mode: Mode) -> Self {
        match mode {
            Mode::Apply => Self::Updated,
            Mode::DryRun => Self::WouldUpdate,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::WouldCreate => "would create",
            Self::WouldUpdate => "would update",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_turns_writes_into_would_writes() {
        assert_eq!(Outcome::create(Mode::Apply), Outcome::Created);
        assert_eq!(Outcome::create(Mode::DryRun), Outcome::WouldCreate);
        assert_eq!(Outcome::update(Mode::DryRun), Outcome::WouldUpdate);
        assert!(Outcome::WouldCreate.is_change());
        assert!(!Outcome::Unchanged.is_change());
    }

    #[test]
    fn outcomes_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Outcome::WouldUpdate).unwrap(),
            "\"would_update\""
        );
        assert_eq!(serde_json::to_string(&Mode::DryRun).unwrap(), "\"dry_run\"");
    }
}
