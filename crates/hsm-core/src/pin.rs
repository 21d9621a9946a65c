//! Where the token user's PIN comes from: a file, an environment variable, or standard input.
//!
//! The PIN is held as a [`SecretString`] from the moment it is read; intermediate buffers are
//! zeroised. This module never reads the process environment or standard input on its own:
//! the binary hands in a lookup function and a reader, so the library stays testable and
//! free of global state.

use std::ffi::OsString;
use std::io::{BufRead, Read as _};
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Whether a PIN file readable by group or others is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileAccess {
    /// Refuse a file whose mode grants any access to group or others (the default).
    #[default]
    OwnerOnly,
    /// Accept any mode (for example a Kubernetes secret volume mounted 0644 on purpose).
    AllowShared,
}

/// A place to read the user PIN from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinSource {
    /// A file holding the PIN; trailing whitespace (the newline editors add) is trimmed.
    File {
        /// The file.
        path: PathBuf,
        /// Whether group/world access is tolerated.
        access: FileAccess,
    },
    /// An environment variable (its name; the value is looked up by the caller's function).
    Env(String),
    /// The first line of standard input (the caller passes the reader).
    Stdin,
}

impl PinSource {
    /// A file source that refuses group- or world-readable files.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File {
            path: path.into(),
            access: FileAccess::OwnerOnly,
        }
    }

    /// Reads the PIN.
    ///
    /// `env` looks up an environment variable (a binary passes `|k| std::env::var_os(k)`);
    /// `stdin` is read only for [`PinSource::Stdin`].
    ///
    /// # Errors
    /// See [`pin_from_file`], [`pin_from_env`] and [`pin_from_reader`].
    pub fn read(
        &self,
        env: impl Fn(&str) -> Option<OsString>,
        stdin: &mut dyn BufRead,
    ) -> Result<SecretString> {
        match self {
            Self::File { path, access } => pin_from_file(path, *access),
            Self::Env(var) => pin_from_env(var, env(var)),
            Self::Stdin => pin_from_reader("stdin", stdin),
        }
    }
}

/// Reads a PIN file: trailing whitespace trimmed, refused when empty or (unless `access` is
/// [`FileAccess::AllowShared`]) when group or others can read it.
///
/// # Errors
/// [`Error::PinRead`], [`Error::PinFileShared`], [`Error::PinInvalid`].
pub fn pin_from_file(path: &Path, access: FileAccess) -> Result<SecretString> {
    use std::os::unix::fs::PermissionsExt as _;
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|source| Error::PinRead {
        source_name: name.clone(),
        source,
    })?;
    let mode = file
        .metadata()
        .map_err(|source| Error::PinRead {
            source_name: name.clone(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if access == FileAccess::OwnerOnly && mode & 0o077 != 0 {
        return Err(Error::PinFileShared {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut raw = Zeroizing::new(Vec::new());
    file.read_to_end(&mut raw)
        .map_err(|source| Error::PinRead {
            source_name: name.clone(),
            source,
        })?;
    pin_from_bytes(&name, &raw)
}

/// Takes the PIN from an environment variable's value (`value` is what the caller looked up
/// for `var`); trailing whitespace is trimmed.
///
/// # Errors
/// [`Error::PinEnvMissing`] when `value` is `None`, [`Error::PinInvalid`] when it is empty or
/// not UTF-8.
pub fn pin_from_env(var: &str, value: Option<OsString>) -> Result<SecretString> {
    let value = value.ok_or_else(|| Error::PinEnvMissing {
        var: var.to_owned(),
    })?;
    let raw = Zeroizing::new(value.into_encoded_bytes());
    pin_from_bytes(&format!("environment variable {var}"), &raw)
}

/// Reads the first line of `reader` as the PIN (standard input, a pipe); trailing whitespace
/// trimmed.
///
/// # Errors
/// [`Error::PinRead`] or [`Error::PinInvalid`].
pub fn pin_from_reader(name: &str, reader: &mut dyn BufRead) -> Result<SecretString> {
    let mut line = Zeroizing::new(Vec::new());
    reader
        .read_until(b'\n', &mut line)
        .map_err(|source| Error::PinRead {
            source_name: name.to_owned(),
            source,
        })?;
    pin_from_bytes(name, &line)
}

fn pin_from_bytes(name: &str, raw: &[u8]) -> Result<SecretString> {
    let text = std::str::from_utf8(raw).map_err(|_| Error::PinInvalid {
        source_name: name.to_owned(),
        problem: "not UTF-8",
    })?;
    let pin = text.trim_end();
    if pin.is_empty() {
        return Err(Error::PinInvalid {
            source_name: name.to_owned(),
            problem: "empty",
        });
    }
    Ok(SecretString::from(pin))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use secrecy::ExposeSecret as _;

    use super::*;

    fn write(dir: &Path, body: &[u8], mode: u32) -> PathBuf {
        let path = dir.join("pin");
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn file_pin_is_trimmed_of_trailing_whitespace_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), b" 12 34\r\n\n", 0o600);
        let pin = pin_from_file(&path, FileAccess::OwnerOnly).unwrap();
        assert_eq!(pin.expose_secret(), " 12 34");
    }

    #[test]
    fn group_readable_pin_file_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), b"1234\n", 0o640);
        let err = pin_from_file(&path, FileAccess::OwnerOnly).unwrap_err();
        assert!(
            matches!(err, Error::PinFileShared { mode: 0o640, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("1234"));
        let pin = pin_from_file(&path, FileAccess::AllowShared).unwrap();
        assert_eq!(pin.expose_secret(), "1234");
    }

    #[test]
    fn empty_and_missing_sources_are_distinct_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), b" \n", 0o600);
        assert!(matches!(
            pin_from_file(&path, FileAccess::OwnerOnly),
            Err(Error::PinInvalid {
                problem: "empty",
                ..
            })
        ));
        assert!(matches!(
            pin_from_file(&dir.path().join("absent"), FileAccess::OwnerOnly),
            Err(Error::PinRead { .. })
        ));
        assert!(matches!(
            pin_from_env("P11_PIN", None),
            Err(Error::PinEnvMissing { .. })
        ));
    }

    #[test]
    fn sources_dispatch_to_env_and_stdin() {
        let env = |k: &str| (k == "MY_PIN").then(|| OsString::from("9876\n"));
        let mut stdin = std::io::Cursor::new(b"5555\nsecond line\n".to_vec());
        let pin = PinSource::Env("MY_PIN".into())
            .read(env, &mut stdin)
            .unwrap();
        assert_eq!(pin.expose_secret(), "9876");
        let pin = PinSource::Stdin.read(env, &mut stdin).unwrap();
        assert_eq!(pin.expose_secret(), "5555");
    }
}
