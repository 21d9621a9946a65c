//! Certificate parsing and chain verification against the token's CA anchors (W5, W7 fixed):
//! anchors are read from the token on every call, the chain may come in either order, in
//! DER or PEM, and failures carry structured reasons.

use std::fmt;

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509ExtendedKeyUsage, X509Ref, X509StoreContext};

use crate::{Error, Result};

/// One reason a chain was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainProblem {
    /// No certificate was given.
    Empty,
    /// An element is neither a DER certificate nor PEM.
    Unparseable {
        /// Position in the request.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// The certificates do not form one chain, so no single target can be picked.
    NoSingleTarget {
        /// Subjects of the candidates.
        candidates: Vec<String>,
    },
    /// The token holds no CA anchor to verify against.
    NoAnchors,
    /// A certificate is past its notAfter.
    Expired {
        /// Its subject.
        subject: String,
    },
    /// A certificate is before its notBefore.
    NotYetValid {
        /// Its subject.
        subject: String,
    },
    /// A signature does not verify.
    BadSignature {
        /// Subject of the certificate whose signature failed.
        subject: String,
    },
    /// A certificate used as an issuer is not a CA (basicConstraints).
    NotCa {
        /// Its subject.
        subject: String,
    },
    /// A CA's pathlen constraint is exceeded.
    PathLengthExceeded {
        /// Subject of the constraining CA.
        subject: String,
    },
    /// The chain does not lead to any anchor on the token.
    UntrustedIssuer {
        /// Subject of the certificate whose issuer is missing.
        subject: String,
    },
    /// The target carries an extendedKeyUsage without serverAuth or anyExtendedKeyUsage.
    EkuNotAllowed {
        /// The target's subject.
        subject: String,
    },
    /// The target is not a CA certificate, but a CA was required.
    TargetNotCa {
        /// The target's subject.
        subject: String,
    },
    /// The target's public key is not the expected one.
    KeyMismatch {
        /// The target's subject.
        subject: String,
    },
    /// Any other verification error, with OpenSSL's code and text.
    Other {
        /// Subject of the certificate concerned.
        subject: String,
        /// OpenSSL's `X509_V_ERR_*` code.
        code: i32,
        /// Its description.
        text: String,
    },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no certificate given"),
            Self::Unparseable { index, reason } => {
                write!(f, "element {index} is not a certificate ({reason})")
            }
            Self::NoSingleTarget { candidates } => write!(
                f,
                "the certificates do not form one chain (possible targets: {})",
                candidates.join("; ")
            ),
            Self::NoAnchors => f.write_str("no CA anchor is imported on the token"),
            Self::Expired { subject } => write!(f, "{subject} has expired"),
            Self::NotYetValid { subject } => write!(f, "{subject} is not valid yet"),
            Self::BadSignature { subject } => write!(f, "the signature on {subject} is invalid"),
            Self::NotCa { subject } => write!(f, "{subject} is used as an issuer but is not a CA"),
            Self::PathLengthExceeded { subject } => {
                write!(f, "the path length constraint of {subject} is exceeded")
            }
            Self::UntrustedIssuer { subject } => {
                write!(f, "{subject} does not chain to an anchor on the token")
            }
            Self::EkuNotAllowed { subject } => write!(
                f,
                "{subject} has an extendedKeyUsage without serverAuth or anyExtendedKeyUsage"
            ),
            Self::TargetNotCa { subject } => write!(f, "{subject} is not a CA certificate"),
            Self::KeyMismatch { subject } => {
                write!(f, "the public key of {subject} is not the expected key")
            }
            Self::Other {
                subject,
                code,
                text,
            } => write!(f, "{subject}: {text} (X509_V_ERR {code})"),
        }
    }
}

pub(crate) fn render_problems(problems: &[ChainProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What chain verification checks beyond signatures, validity and CA constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// The target must be a CA certificate (the istiod intermediate is). Default true.
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

    let outcome = run_openssl(anchors, &target, &certs).map_err(|e| {
        vec![ChainProblem::Other {
            subject: target_subject.clone(),
            code: -1,
            text: e.to_string(),
        }]
    })?;
    let (anchor_subject, depth) = outcome?;

    if let Some(eku) = target.extended_key_usage()
        && !eku.intersects(X509ExtendedKeyUsage::SSL_SERVER | X509ExtendedKeyUsage::ANYEKU)
    {
        problems.push(ChainProblem::EkuNotAllowed {
            subject: target_subject.clone(),
        });
    }
    let target_der = target.to_der().unwrap_or_default();
    if policy.require_ca_target && !crate::der::is_ca(&target_der) {
        problems.push(ChainProblem::TargetNotCa {
            subject: target_subject.clone(),
        });
    }
    if let Some(expected) = expected_spki {
        let actual = target.public_key().and_then(|k| k.public_key_to_der());
        if actual.ok().as_deref() != Some(expected) {
            problems.push(ChainProblem::KeyMismatch {
                subject: target_subject.clone(),
            });
        }
    }
    if problems.is_empty() {
        Ok(VerifiedChain {
            target_der,
            target_subject,
            anchor_subject,
            depth,
        })
    } else {
        Err(problems)
    }
}

type OpensslOutcome = std::result::Result<(String, usize), Vec<ChainProblem>>;

fn run_openssl(
    anchors: &[X509],
    target: &X509,
    others: &[X509],
) -> std::result::Result<OpensslOutcome, openssl::error::ErrorStack> {
    let mut store = X509StoreBuilder::new()?;
    for anchor in anchors {
        store.add_cert(anchor.clone())?;
    }
    // Any anchor on the token is trusted as such, self-signed or not (Go's root pool semantics).
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
    let store = store.build();
    let mut untrusted = Stack::new()?;
    for cert in others {
        untrusted.push(cert.clone())?;
    }
    let mut ctx = X509StoreContext::new()?;
    ctx.init(&store, target, &untrusted, |c| {
        let ok = c.verify_cert()?;
        if ok {
            let chain = c
                .chain()
                .map(|s| s.iter().map(X509Ref::to_owned).collect::<Vec<_>>());
            let chain = chain.unwrap_or_default();
            let anchor = chain.last().map(|c| subject(c)).unwrap_or_default();
            return Ok(Ok((anchor, chain.len())));
        }
        let subject = c.current_cert().map_or_else(|| subject_of(target), subject);
        let err = c.error();
        Ok(Err(vec![classify(
            err.as_raw(),
            err.error_string(),
            subject,
        )]))
    })
}

fn subject_of(cert: &X509) -> String {
    subject(cert)
}

fn classify(code: i32, text: &str, subject: String) -> ChainProblem {
    // X509_V_ERR_* codes, stable across OpenSSL 1.1 and 3.
    match code {
        7 | 8 => ChainProblem::BadSignature { subject },
        9 => ChainProblem::NotYetValid { subject },
        10 => ChainProblem::Expired { subject },
        2 | 18 | 19 | 20 | 21 => ChainProblem::UntrustedIssuer { subject },
        24 => ChainProblem::NotCa { subject },
        25 => ChainProblem::PathLengthExceeded { subject },
        _ => ChainProblem::Other {
            subject,
            code,
            text: text.to_owned(),
        },
    }
}
