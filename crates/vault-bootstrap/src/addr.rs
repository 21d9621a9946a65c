use std::fmt;

use crate::{Error, Result};

/// A validated Vault/OpenBao address: `http` or `https` with a host, no query or fragment.
///
/// vaultrs panics on an invalid URL; this type rejects one with an error that names it.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultAddr(reqwest::Url);

impl VaultAddr {
    /// Parses and validates an address such as `https://vault.example:8200`.
    ///
    /// # Errors
    /// [`Error::InvalidAddr`] naming the address and what is wrong with it.
    pub fn parse(addr: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidAddr {
            addr: addr.to_owned(),
            reason,
        };
        let url = reqwest::Url::parse(addr.trim())
            .map_err(|_| invalid("not a URL; expected e.g. https://vault.example:8200"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the address has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("the address must not have a query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials do not belong in the address; use a token file",
            ));
        }
        Ok(Self(url))
    }

    /// The address without a trailing slash, as vaultrs expects it.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    /// True for `https` addresses.
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// The URL of an API path (`v1/...`).
    pub(crate) fn api(&self, path: &str) -> String {
        format!("{}/{}", self.as_str(), path.trim_start_matches('/'))
    }
}

impl fmt::Display for VaultAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for VaultAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::str::FromStr for VaultAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_forms() {
        let a = VaultAddr::parse("https://vault.example:8200/").unwrap();
        assert_eq!(a.as_str(), "https://vault.example:8200");
        assert!(a.is_tls());
        assert_eq!(
            a.api("/v1/sys/health"),
            "https://vault.example:8200/v1/sys/health"
        );
        assert!(!VaultAddr::parse("http://127.0.0.1:8200").unwrap().is_tls());
    }

    #[test]
    fn rejects_what_vaultrs_would_panic_on_or_misuse() {
        for (bad, why) in [
            ("vault.example:8200", "scheme"),
            ("not a url", "not a URL"),
            ("ftp://vault.example", "scheme"),
            ("https://vault.example/?x=1", "query"),
            ("https://user:pw@vault.example", "credentials"),
        ] {
            let err = VaultAddr::parse(bad).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(bad.trim()), "{text}");
            assert!(text.contains(why), "{bad}: {text}");
        }
    }
}
