//! Certificate parsing and chain verification against the token's CA anchors (W5, W7 fixed):
//! anchors are read from the token on every call, the chain may come in either order, in
//! DER or PEM, and failures carry structured reasons.

use openssl::x509::{X509, X509Ref};

pub use ca_signing::ChainProblem;

use crate::{Error, Result};

pub(crate) fn render_problems(problems: &[ChainProblem]) -> String {
    ca_signing::render_problems(problems)
}

/// What chain verification checks beyond signatures, validity and CA constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// The target must be the istiod intermediate CA: CA:TRUE with pathLenConstraint 0 and
    /// keyUsage keyCertSign (ANCHORS §4.6). Default true.
    pub require_ca_target: bool,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            require_ca_target: true,
        }
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The target certificate (DER).
    pub target_der: Vec<u8>,
    /// Its subject, Go style (`CN=..,O=..`).
    pub target_subject: String,
    /// Subject of the anchor the chain ended at.
    pub anchor_subject: String,
    /// Length of the verified path, anchor included.
    pub depth: usize,
}

/// Parses one element: DER, or PEM with one or more certificates.
pub(crate) fn parse_certs(
    index: usize,
    bytes: &[u8],
) -> std::result::Result<Vec<X509>, ChainProblem> {
    let unparseable = |e: openssl::error::ErrorStack| ChainProblem::Unparseable {
        index,
        reason: e
            .errors()
            .first()
            .and_then(openssl::error::Error::reason)
            .unwrap_or("invalid encoding")
            .to_owned(),
    };
    if looks_like_pem(bytes) {
        let certs = X509::stack_from_pem(bytes).map_err(unparseable)?;
        if certs.is_empty() {
            return Err(ChainProblem::Unparseable {
                index,
                reason: "no CERTIFICATE block".to_owned(),
            });
        }
        Ok(certs)
    } else {
        X509::from_der(bytes).map(|c| vec![c]).map_err(unparseable)
    }
}

pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes
        .windows(b"-----BEGIN".len())
        .any(|w| w == b"-----BEGIN")
}

/// Parses the first certificate of a PEM blob, or a DER certificate.
pub(crate) fn parse_one(what: &str, bytes: &[u8]) -> Result<X509> {
    let parsed = if looks_like_pem(bytes) {
        X509::from_pem(bytes)
    } else {
        X509::from_der(bytes)
    };
    parsed.map_err(|e| Error::InvalidCertificate {
        what: what.to_owned(),
        reason: e
            .errors()
            .first()
            .and_then(openssl::error::Error::reason)
            .unwrap_or("invalid encoding")
            .to_owned(),
    })
}

fn subject(cert: &X509Ref) -> String {
    crate::anchor::go_dn_string(cert.subject_name())
}

/// The one certificate that issues none of the others.
fn pick_target(certs: &[X509]) -> std::result::Result<usize, ChainProblem> {
    let issues_another = |i: usize| {
        certs.iter().enumerate().any(|(j, other)| {
            i != j
                && certs[i].issued(other) == openssl::x509::X509VerifyResult::OK
                && certs[i].to_der().ok() != other.to_der().ok()
        })
    };
    let leaves: Vec<usize> = (0..certs.len()).filter(|&i| !issues_another(i)).collect();
    match leaves.as_slice() {
        [one] => Ok(*one),
        _ => Err(ChainProblem::NoSingleTarget {
            candidates: leaves.iter().map(|&i| subject(&certs[i])).collect(),
        }),
    }
}

/// Verifies `elements` (any order, DER or PEM) against `anchors`.
pub(crate) fn verify_chain(
    anchors: &[X509],
    elements: &[Vec<u8>],
    expected_spki: Option<&[u8]>,
    policy: &VerifyPolicy,
) -> std::result::Result<VerifiedChain, Vec<ChainProblem>> {
    if elements.is_empty() {
        return Err(vec![ChainProblem::Empty]);
    }
    if anchors.is_empty() {
        return Err(vec![ChainProblem::NoAnchors]);
    }
    let mut certs = Vec::new();
    let mut problems = Vec::new();
    for (index, element) in elements.iter().enumerate() {
        match parse_certs(index, element) {
            Ok(mut parsed) => certs.append(&mut parsed),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let target_index = pick_target(&certs).map_err(|p| vec![p])?;
    let target = certs.remove(target_index);
    let target_subject = subject(&target);
    let target_der = target.to_der().unwrap_or_default();
    // The one verifier of the workspace (ca-signing); the plugin's semantics: any anchor on
    // the token is trusted as such (Go's root pool), Go's default serverAuth EKU rule, no
    // OpenSSL-only strictness Go would not apply.
    let path_policy = ca_signing::PathPolicy::default()
        .istiod_ca(policy.require_ca_target)
        .any_anchor(true)
        .strict(false)
        .go_server_auth_eku(true);
    let path = ca_signing::verify_path(
        anchors,
        &target,
        &certs,
        expected_spki,
        &path_policy,
        &crate::anchor::go_dn_string,
    )?;
    Ok(VerifiedChain {
        target_der,
        target_subject,
        anchor_subject: path.anchor().map(subject).unwrap_or_default(),
        depth: path.chain.len(),
    })
}
