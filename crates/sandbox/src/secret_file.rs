use std::path::Path;

use crate::{Error, Result};

/// Writes `contents` to `path` with mode 0600, atomically: a temporary file in the same
/// directory is written, synced and renamed over `path`, so readers never see a partial file
/// and the secret is never world-readable, not even briefly.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    mesh_common::fs::write_atomic(path, contents, mesh_common::fs::OWNER_ONLY)
        .map_err(Error::io("writing secret file", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn secret_file_is_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "old-and-world-readable").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        write_secret_file(&path, b"1234").unwrap();

        assert_eq!(std::fs::read(&path).unwrap(), b"1234");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn secret_file_error_names_the_path() {
        let err = write_secret_file(Path::new("/nonexistent-dir/pin"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/pin"), "{err}");
    }
}
