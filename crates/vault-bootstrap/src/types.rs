use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// Version of a KV secrets engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvVersion {
    /// KV version 1 (the guide's choice): secrets at `<mount>/<path>`.
    #[default]
    V1,
    /// KV version 2: secrets at `<mount>/data/<path>`, versioned.
    V2,
}

impl KvVersion {
    /// The mount option value (`"1"` or `"2"`).
    pub fn option(self) -> &'static str {
        match self {
            Self::V1 => "1",
            Self::V2 => "2",
        }
    }

    /// Parses the `version` mount option; a KV mount without one is version 1.
    pub fn from_option(option: Option<&str>) -> Option<Self> {
        match option.map(str::trim) {
            None | Some("" | "1") => Some(Self::V1),
            Some("2") => Some(Self::V2),
            Some(_) => None,
        }
    }

    /// The API path a policy must grant `read` on for secret `path` in `mount`.
    pub fn policy_path(self, mount: &str, path: &str) -> String {
        match self {
            Self::V1 => format!("{mount}/{path}"),
            Self::V2 => format!("{mount}/data/{path}"),
        }
    }
}

pub use mesh_common::{Mode, Outcome};

/// The kinds of Vault objects step 5 manages, in the order they are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// The KV secrets engine mount.
    SecretsMount,
    /// The mount's tuned `max_lease_ttl`.
    MountTune,
    /// The HSM credential secret.
    Secret,
    /// The read-only ACL policy.
    Policy,
    /// The Kubernetes auth method mount.
    AuthMount,
    /// The Kubernetes auth method configuration.
    AuthConfig,
    /// The Kubernetes auth role.
    AuthRole,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SecretsMount => "secrets mount",
            Self::MountTune => "mount tuning",
            Self::Secret => "secret",
            Self::Policy => "policy",
            Self::AuthMount => "auth mount",
            Self::AuthConfig => "auth config",
            Self::AuthRole => "auth role",
        })
    }
}

/// One object's line in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Kind of object.
    pub kind: ObjectKind,
    /// Its path or name (`asm-c1`, `asm-c1/hsm`, `asm-c1-hsm-policy`, `auth/asm-c1/hsm/role/istiod`).
    pub object: String,
    /// What happened.
    pub outcome: Outcome,
    /// Which settings differed (names only, never values); empty when unchanged or created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// What an apply (or dry run) did, object by object, in apply order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// True for a dry run.
    pub dry_run: bool,
    /// One entry per object.
    pub changes: Vec<Change>,
}

impl Report {
    /// True when every object was already as desired.
    pub fn is_unchanged(&self) -> bool {
        self.changes.iter().all(|c| !c.outcome.is_change())
    }

    /// The outcome for an object kind, if it was part of the run.
    pub fn outcome(&self, kind: ObjectKind) -> Option<Outcome> {
        self.changes
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.outcome)
    }

    /// The objects that changed (or would change).
    pub fn changed(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| c.outcome.is_change())
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            write!(
                f,
                "{:<13} {:<40} {}",
                c.kind.to_string(),
                c.object,
                c.outcome
            )?;
            if !c.differences.is_empty() {
                write!(f, " ({})", c.differences.join(", "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The fields of a KV secret, every value secret. `Debug` shows field names only.
#[derive(Clone, Default)]
pub struct SecretFields(BTreeMap<String, SecretString>);

impl SecretFields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a field.
    pub fn insert(&mut self, name: impl Into<String>, value: SecretString) {
        self.0.insert(name.into(), value);
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.0.get(name)
    }

    /// Field names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Field names whose values differ (or exist on one side only), compared without printing.
    pub fn differing_fields(&self, other: &Self) -> Vec<String> {
        let mut names: Vec<&String> = self.0.keys().chain(other.0.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|n| match (self.0.get(*n), other.0.get(*n)) {
                (Some(a), Some(b)) => a.expose_secret() != b.expose_secret(),
                _ => true,
            })
            .cloned()
            .collect()
    }

    /// Iterates over names and values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl fmt::Debug for SecretFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFields")
            .field("names", &self.0.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl FromIterator<(String, SecretString)> for SecretFields {
    fn from_iter<I: IntoIterator<Item = (String, SecretString)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_debug_shows_names_only_and_compare_by_value() {
        let mut a = SecretFields::new();
        a.insert("PIN", SecretString::from("1234-secret"));
        a.insert("clientkey", SecretString::from("KEY"));
        let text = format!("{a:?}");
        assert!(
            text.contains("PIN") && !text.contains("1234-secret"),
            "{text}"
        );
        let mut b = a.clone();
        assert!(a.differing_fields(&b).is_empty());
        b.insert("PIN", SecretString::from("other"));
        b.insert("servercert", SecretString::from("x"));
        assert_eq!(a.differing_fields(&b), ["PIN", "servercert"]);
    }

    #[test]
    fn kv_version_paths_and_options() {
        assert_eq!(KvVersion::V1.policy_path("asm-c1", "hsm"), "asm-c1/hsm");
        assert_eq!(
            KvVersion::V2.policy_path("asm-c1", "hsm"),
            "asm-c1/data/hsm"
        );
        assert_eq!(KvVersion::from_option(None), Some(KvVersion::V1));
        assert_eq!(KvVersion::from_option(Some("2")), Some(KvVersion::V2));
        assert_eq!(KvVersion::from_option(Some("3")), None);
    }

    #[test]
    fn report_serialises_snake_case() {
        let r = Report {
            dry_run: true,
            changes: vec![Change {
                kind: ObjectKind::SecretsMount,
                object: "asm-c1".into(),
                outcome: Outcome::WouldCreate,
                differences: vec![],
            }],
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["changes"][0]["kind"], "secrets_mount");
        assert_eq!(json["changes"][0]["outcome"], "would_create");
        assert!(!r.is_unchanged());
    }
}
