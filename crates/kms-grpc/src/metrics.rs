//! Prometheus metrics of the server, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::policy::Rpc;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    calls: BTreeMap<(Rpc, &'static str), u64>,
    latency: BTreeMap<Rpc, Histogram>,
}

/// One CA anchor's expiry, for the `hsm_plugin_root_cert_expiry_timestamp` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorExpiry {
    /// The anchor's CA id.
    pub ca_id: String,
    /// Its subject.
    pub subject: String,
    /// notAfter, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// Call counters by RPC and gRPC code, and a latency histogram per RPC.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The gRPC code name Prometheus labels use (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one finished call.
    pub fn record(&self, rpc: Rpc, code: tonic::Code, elapsed: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.calls.entry((rpc, code_label(code))).or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        let h = inner.latency.entry(rpc).or_default();
        h.count += 1;
        h.sum += seconds;
        for (bound, count) in BUCKETS.iter().zip(h.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
    }

    /// How many calls of `rpc` ended with `code`.
    pub fn calls(&self, rpc: Rpc, code: tonic::Code) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .calls
            .get(&(rpc, code_label(code)))
            .copied()
            .unwrap_or(0)
    }

    /// The exposition text: calls, errors, latency, readiness and the anchors' expiry.
    pub fn render(&self, ready: bool, anchors: &[AnchorExpiry]) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP hsm_plugin_grpc_requests_total gRPC calls by RPC and status code.\n# TYPE hsm_plugin_grpc_requests_total counter"
        );
        for ((rpc, code), n) in &inner.calls {
            let _ = writeln!(
                out,
                "hsm_plugin_grpc_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hsm_plugin_grpc_errors_total gRPC calls that failed, by RPC and status code.\n# TYPE hsm_plugin_grpc_errors_total counter"
        );
        for ((rpc, code), n) in inner.calls.iter().filter(|((_, c), _)| *c != "OK") {
            let _ = writeln!(
                out,
                "hsm_plugin_grpc_errors_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hsm_plugin_grpc_request_duration_seconds gRPC call latency.\n# TYPE hsm_plugin_grpc_request_duration_seconds histogram"
        );
        for (rpc, h) in &inner.latency {
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "hsm_plugin_grpc_request_duration_seconds_bucket{{rpc=\"{rpc}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "hsm_plugin_grpc_request_duration_seconds_bucket{{rpc=\"{rpc}\",le=\"+Inf\"}} {}\nhsm_plugin_grpc_request_duration_seconds_sum{{rpc=\"{rpc}\"}} {}\nhsm_plugin_grpc_request_duration_seconds_count{{rpc=\"{rpc}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP hsm_plugin_ready Whether the plugin can serve (1) or not (0).\n# TYPE hsm_plugin_ready gauge\nhsm_plugin_ready {}",
            u8::from(ready)
        );
        let _ = writeln!(
            out,
            "# HELP hsm_plugin_root_cert_expiry_timestamp notAfter of each CA anchor on the token, seconds since the epoch.\n# TYPE hsm_plugin_root_cert_expiry_timestamp gauge"
        );
        for a in anchors {
            let _ = writeln!(
                out,
                "hsm_plugin_root_cert_expiry_timestamp{{ca_id=\"{}\",subject=\"{}\"}} {}",
                escape(&a.ca_id),
                escape(&a.subject),
                a.not_after_unix
            );
        }
        out
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// notAfter of a DER certificate, seconds since the epoch.
pub fn not_after_unix(der: &[u8]) -> Option<i64> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_calls_errors_and_buckets() {
        let m = Metrics::new();
        m.record(Rpc::GenerateDek, tonic::Code::Ok, Duration::from_millis(2));
        m.record(
            Rpc::GenerateDek,
            tonic::Code::Ok,
            Duration::from_millis(200),
        );
        m.record(
            Rpc::GenerateDek,
            tonic::Code::NotFound,
            Duration::from_millis(1),
        );
        let text = m.render(
            true,
            &[AnchorExpiry {
                ca_id: "root\"1".into(),
                subject: "CN=Root".into(),
                not_after_unix: 2_000_000_000,
            }],
        );
        assert!(text.contains("hsm_plugin_grpc_requests_total{rpc=\"GenerateDEK\",code=\"OK\"} 2"));
        assert!(
            text.contains("hsm_plugin_grpc_errors_total{rpc=\"GenerateDEK\",code=\"NOT_FOUND\"} 1")
        );
        assert!(!text.contains("hsm_plugin_grpc_errors_total{rpc=\"GenerateDEK\",code=\"OK\"}"));
        assert!(text.contains(
            "hsm_plugin_grpc_request_duration_seconds_bucket{rpc=\"GenerateDEK\",le=\"0.0025\"} 2"
        ));
        assert!(text.contains(
            "hsm_plugin_grpc_request_duration_seconds_bucket{rpc=\"GenerateDEK\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("hsm_plugin_ready 1"));
        assert!(text.contains(
            "hsm_plugin_root_cert_expiry_timestamp{ca_id=\"root\\\"1\",subject=\"CN=Root\"} 2000000000"
        ));
        assert_eq!(m.calls(Rpc::GenerateDek, tonic::Code::Ok), 2);
    }
}
