use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The agent's counters, rendered in the Prometheus text exposition format.
#[derive(Debug, Default)]
pub struct Metrics {
    logins: AtomicU64,
    login_failures: AtomicU64,
    renewals: AtomicU64,
    renewal_failures: AtomicU64,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    file_writes: AtomicU64,
    ready: AtomicBool,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Successful logins.
    pub logins: u64,
    /// Failed logins.
    pub login_failures: u64,
    /// Successful token renewals.
    pub renewals: u64,
    /// Failed token renewals.
    pub renewal_failures: u64,
    /// Successful fetches (secret read and files in place).
    pub fetches: u64,
    /// Failed fetches.
    pub fetch_failures: u64,
    /// Credential files rewritten.
    pub file_writes: u64,
    /// Whether the credentials are in place.
    pub ready: bool,
}

impl Metrics {
    pub(crate) fn count_login(&self, ok: bool) {
        bump(if ok {
            &self.logins
        } else {
            &self.login_failures
        });
    }

    pub(crate) fn count_renewal(&self, ok: bool) {
        bump(if ok {
            &self.renewals
        } else {
            &self.renewal_failures
        });
    }

    pub(crate) fn count_fetch(&self, ok: bool) {
        bump(if ok {
            &self.fetches
        } else {
            &self.fetch_failures
        });
    }

    pub(crate) fn count_file_write(&self) {
        bump(&self.file_writes);
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// True once the credential files are in place and matched Vault at the last fetch (or
    /// the last fetch failed but the files are still there).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The current values.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            logins: get(&self.logins),
            login_failures: get(&self.login_failures),
            renewals: get(&self.renewals),
            renewal_failures: get(&self.renewal_failures),
            fetches: get(&self.fetches),
            fetch_failures: get(&self.fetch_failures),
            file_writes: get(&self.file_writes),
            ready: self.is_ready(),
        }
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "vault_client_logins_total",
            "counter",
            "Vault logins by result.",
            &[
                ("{result=\"success\"}", s.logins),
                ("{result=\"failure\"}", s.login_failures),
            ],
        );
        family(
            "vault_client_token_renewals_total",
            "counter",
            "Vault token renewals by result.",
            &[
                ("{result=\"success\"}", s.renewals),
                ("{result=\"failure\"}", s.renewal_failures),
            ],
        );
        family(
            "vault_client_fetches_total",
            "counter",
            "Fetches of the HSM credential secret by result.",
            &[
                ("{result=\"success\"}", s.fetches),
                ("{result=\"failure\"}", s.fetch_failures),
            ],
        );
        family(
            "vault_client_failures_total",
            "counter",
            "Failed logins, renewals and fetches.",
            &[("", s.login_failures + s.renewal_failures + s.fetch_failures)],
        );
        family(
            "vault_client_file_writes_total",
            "counter",
            "Credential files rewritten because their content changed.",
            &[("", s.file_writes)],
        );
        family(
            "vault_client_ready",
            "gauge",
            "1 when the HSM credential files are in place.",
            &[("", u64::from(s.ready))],
        );
        out
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.count_login(true);
        m.count_login(false);
        m.count_fetch(true);
        m.set_ready(true);
        let text = m.render();
        assert!(text.contains("# TYPE vault_client_logins_total counter\n"));
        assert!(text.contains("vault_client_logins_total{result=\"success\"} 1\n"));
        assert!(text.contains("vault_client_logins_total{result=\"failure\"} 1\n"));
        assert!(text.contains("vault_client_fetches_total{result=\"success\"} 1\n"));
        assert!(text.contains("vault_client_failures_total 1\n"));
        assert!(text.contains("vault_client_ready 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
