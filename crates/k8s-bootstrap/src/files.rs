//! Atomic, owner-only output files (Unix permissions).

use std::path::Path;

use crate::{Error, Mode, Outcome, Result};

/// Writes `contents` to `path` with mode 0600 through a temporary file in the same directory
/// and a rename, unless the file already holds exactly `contents`. Under [`Mode::DryRun`]
/// nothing is written.
pub(crate) fn ensure_secret_file(path: &Path, contents: &[u8], mode: Mode) -> Result<Outcome> {
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::ReadFile {
                path: path.to_owned(),
                source,
            });
        }
    };
    let outcome = match existing {
        Some(bytes) if bytes == contents && owner_only(path) => return Ok(Outcome::Unchanged),
        Some(_) => Outcome::update(mode),
        None => Outcome::create(mode),
    };
    if mode.is_dry_run() {
        return Ok(outcome);
    }
    mesh_common::fs::write_atomic(path, contents, mesh_common::fs::OWNER_ONLY).map_err(
        |source| Error::WriteFile {
            path: path.to_owned(),
            source,
        },
    )?;
    Ok(outcome)
}

fn owner_only(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode().trailing_zeros() >= 6)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn files_are_written_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1-tokenreview_jwt");
        assert_eq!(
            ensure_secret_file(&path, b"a", Mode::DryRun).unwrap(),
            Outcome::WouldCreate
        );
        assert!(!path.exists());
        assert_eq!(
            ensure_secret_file(&path, b"a", Mode::Apply).unwrap(),
            Outcome::Created
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            ensure_secret_file(&path, b"a", Mode::Apply).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(
            ensure_secret_file(&path, b"b", Mode::DryRun).unwrap(),
            Outcome::WouldUpdate
        );
        assert_eq!(
            ensure_secret_file(&path, b"b", Mode::Apply).unwrap(),
            Outcome::Updated
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"b");
    }

    #[test]
    fn a_world_readable_file_is_rewritten_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"a").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            ensure_secret_file(&path, b"a", Mode::Apply).unwrap(),
            Outcome::Updated
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
