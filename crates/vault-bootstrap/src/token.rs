use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::{Error, Result};

/// Where the operator's Vault token comes from, in the order the Vault CLI uses them. The
/// binary fills this from its flags and environment; the library never reads variables itself.
#[derive(Debug, Default)]
pub struct TokenSources {
    /// A token file named on the command line (highest precedence).
    pub token_file: Option<PathBuf>,
    /// The value of `VAULT_TOKEN`.
    pub env_token: Option<SecretString>,
    /// The home directory, for `~/.vault-token` (lowest precedence).
    pub home_dir: Option<PathBuf>,
}

impl TokenSources {
    /// Picks the token: the token file, then `VAULT_TOKEN`, then `~/.vault-token`. File contents
    /// are trimmed.
    ///
    /// # Errors
    /// [`Error::ReadFile`] when the named token file cannot be read, [`Error::InvalidConfig`]
    /// when no source yields a token.
    pub fn resolve(self) -> Result<SecretString> {
        if let Some(path) = &self.token_file {
            return read_token_file(path);
        }
        if let Some(token) = self.env_token {
            use secrecy::ExposeSecret as _;
            if !token.expose_secret().trim().is_empty() {
                return Ok(token);
            }
        }
        if let Some(home) = &self.home_dir {
            let path = home.join(".vault-token");
            if path.is_file() {
                return read_token_file(&path);
            }
        }
        Err(Error::InvalidConfig {
            field: "token",
            reason: "no Vault token: set VAULT_TOKEN, pass a token file, or log in so that \
                     ~/.vault-token exists"
                .to_owned(),
        })
    }
}

/// Reads a token (or JWT) file, trimming surrounding whitespace.
pub(crate) fn read_token_file(path: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        what: "a token",
        path: path.to_owned(),
        source,
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidConfig {
            field: "token",
            reason: format!("the token file {} is empty", path.display()),
        });
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn precedence_is_file_then_env_then_home() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::write(dir.path().join(".vault-token"), "from-home").unwrap();
        let all = TokenSources {
            token_file: Some(file),
            env_token: Some("from-env".into()),
            home_dir: Some(dir.path().to_owned()),
        };
        assert_eq!(all.resolve().unwrap().expose_secret(), "from-file");
        let env_and_home = TokenSources {
            token_file: None,
            env_token: Some("from-env".into()),
            home_dir: Some(dir.path().to_owned()),
        };
        assert_eq!(env_and_home.resolve().unwrap().expose_secret(), "from-env");
        let home = TokenSources {
            home_dir: Some(dir.path().to_owned()),
            ..TokenSources::default()
        };
        assert_eq!(home.resolve().unwrap().expose_secret(), "from-home");
        let none = TokenSources::default().resolve().unwrap_err();
        assert!(none.is_config(), "{none}");
    }
}
