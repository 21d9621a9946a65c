//! Path validation: the one implementation every chain check of mesh-hsm goes through
//! (`cert-chain.pem` here, the plugin's `VerifyCertChain` in `hsm-core`).
//!
//! OpenSSL's `X509_verify_cert` checks signatures, validity windows, CA flags and path
//! lengths up to a trusted anchor; on top of that the certificate being verified (the
//! target) can be held to the istiod intermediate CA profile (ANCHORS §4.6):
//! `basicConstraints` CA:TRUE with pathLenConstraint 0 and `keyUsage` keyCertSign. Optional
//! checks: Go's default EKU rule (what the Thales plugin applies) and the target's key.

use std::fmt;

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509ExtendedKeyUsage, X509NameRef, X509Ref, X509StoreContext};
use x509_parser::prelude::FromDer as _;

use crate::cert::{Certificate, same_public_key};

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
    /// There is no trust anchor to verify against.
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
    /// The chain does not lead to a trusted anchor.
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
    /// The target CA does not carry pathLenConstraint 0 (it could issue further CAs).
    TargetPathLen {
        /// The target's subject.
        subject: String,
        /// Its pathLenConstraint (`None`: absent, unlimited).
        found: Option<u32>,
    },
    /// The target CA's keyUsage lacks keyCertSign (or it has no keyUsage at all).
    TargetCannotSign {
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
            Self::NoAnchors => f.write_str("no CA anchor to verify against"),
            Self::Expired { subject } => write!(f, "{subject} has expired"),
            Self::NotYetValid { subject } => write!(f, "{subject} is not valid yet"),
            Self::BadSignature { subject } => write!(f, "the signature on {subject} is invalid"),
            Self::NotCa { subject } => write!(f, "{subject} is used as an issuer but is not a CA"),
            Self::PathLengthExceeded { subject } => {
                write!(f, "the path length constraint of {subject} is exceeded")
            }
            Self::UntrustedIssuer { subject } => {
                write!(f, "{subject} does not chain to a trusted CA anchor")
            }
            Self::EkuNotAllowed { subject } => write!(
                f,
                "{subject} has an extendedKeyUsage without serverAuth or anyExtendedKeyUsage"
            ),
            Self::TargetNotCa { subject } => write!(
                f,
                "{subject} is not a CA certificate (basicConstraints CA:TRUE is required)"
            ),
            Self::TargetPathLen { subject, found } => match found {
                Some(n) => write!(
                    f,
                    "{subject} has pathlen:{n}; the istiod CA needs pathlen:0 (it issues workloads only)"
                ),
                None => write!(
                    f,
                    "{subject} has no pathlen constraint; the istiod CA needs pathlen:0 (it issues workloads only)"
                ),
            },
            Self::TargetCannotSign { subject } => write!(
                f,
                "{subject} lacks keyUsage keyCertSign, so it may not sign certificates"
            ),
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

/// Renders findings as one line, `; `-separated.
pub fn render_problems(problems: &[ChainProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What [`verify_path`] checks beyond OpenSSL's path validation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches of one verifier, each documented"
)]
pub struct PathPolicy {
    /// Hold the target to the istiod intermediate CA profile: CA:TRUE, pathLenConstraint 0,
    /// keyUsage keyCertSign. Default true.
    pub istiod_ca_target: bool,
    /// Trust every anchor as such, self-signed or not (Go's root pool, the plugin's
    /// semantics). Default false: a path must end at a self-signed anchor.
    pub any_anchor: bool,
    /// OpenSSL's `X509_STRICT` checks (well-formed extensions, no legacy encodings).
    /// Default true.
    pub strict: bool,
    /// Refuse a target whose extendedKeyUsage excludes serverAuth (Go's default when no key
    /// usage is asked for, as the Thales plugin verifies). Default false.
    pub go_server_auth_eku: bool,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            istiod_ca_target: true,
            any_anchor: false,
            strict: true,
            go_server_auth_eku: false,
        }
    }
}

impl PathPolicy {
    /// The defaults with the target checks of `istiod_ca_target` (see the field).
    #[must_use]
    pub fn istiod_ca(mut self, istiod_ca_target: bool) -> Self {
        self.istiod_ca_target = istiod_ca_target;
        self
    }

    /// Sets [`PathPolicy::any_anchor`].
    #[must_use]
    pub fn any_anchor(mut self, any_anchor: bool) -> Self {
        self.any_anchor = any_anchor;
        self
    }

    /// Sets [`PathPolicy::strict`].
    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Sets [`PathPolicy::go_server_auth_eku`].
    #[must_use]
    pub fn go_server_auth_eku(mut self, on: bool) -> Self {
        self.go_server_auth_eku = on;
        self
    }
}

/// A path that verified.
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    /// The path as OpenSSL built it: the target first, the anchor last.
    pub chain: Vec<X509>,
}

impl VerifiedPath {
    /// The anchor the path ended at.
    pub fn anchor(&self) -> Option<&X509Ref> {
        self.chain.last().map(|c| &**c)
    }
}

/// The subject as this crate prints it elsewhere (`O=Istio, CN=Root CA`).
pub fn default_subject(name: &X509NameRef) -> String {
    name.to_der()
        .ok()
        .and_then(|der| {
            x509_parser::x509::X509Name::from_der(&der)
                .ok()
                .map(|(_, n)| n.to_string())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// Verifies `target` up to one of `anchors` through `untrusted` intermediates, then holds the
/// target to `policy`; `expected_spki` (DER) is the key the target must carry, if any.
/// `subject` renders names in findings.
///
/// # Errors
/// Every finding: the path's first failure as OpenSSL reports it, then all the target's
/// failures against the policy.
pub fn verify_path(
    anchors: &[X509],
    target: &X509Ref,
    untrusted: &[X509],
    expected_spki: Option<&[u8]>,
    policy: &PathPolicy,
    subject: &dyn Fn(&X509NameRef) -> String,
) -> Result<VerifiedPath, Vec<ChainProblem>> {
    let target_subject = subject(target.subject_name());
    if anchors.is_empty() {
        return Err(vec![ChainProblem::NoAnchors]);
    }
    let path = run_openssl(anchors, target, untrusted, policy, subject).map_err(|e| {
        vec![ChainProblem::Other {
            subject: target_subject.clone(),
            code: -1,
            text: e.to_string(),
        }]
    })?;
    // The path's failure first, then every finding about the target itself.
    let (chain, mut problems) = match path {
        Ok(chain) => (chain, Vec::new()),
        Err(problems) => (Vec::new(), problems),
    };
    if policy.istiod_ca_target {
        problems.extend(istiod_ca_profile(target, &target_subject));
    }
    if policy.go_server_auth_eku
        && let Some(eku) = target.extended_key_usage()
        && !eku.intersects(X509ExtendedKeyUsage::SSL_SERVER | X509ExtendedKeyUsage::ANYEKU)
    {
        problems.push(ChainProblem::EkuNotAllowed {
            subject: target_subject.clone(),
        });
    }
    if let Some(expected) = expected_spki {
        let actual = target.public_key().and_then(|k| k.public_key_to_der());
        if !actual.is_ok_and(|actual| same_public_key(&actual, expected)) {
            problems.push(ChainProblem::KeyMismatch {
                subject: target_subject,
            });
        }
    }
    if problems.is_empty() {
        Ok(VerifiedPath { chain })
    } else {
        Err(problems)
    }
}

/// The istiod intermediate CA profile: CA:TRUE, pathLenConstraint 0, keyCertSign.
fn istiod_ca_profile(target: &X509Ref, target_subject: &str) -> Vec<ChainProblem> {
    let parsed = target
        .to_der()
        .ok()
        .and_then(|der| Certificate::from_der(der).ok());
    let Some(cert) = parsed else {
        return vec![ChainProblem::Unparseable {
            index: 0,
            reason: "the target's extensions cannot be read".to_owned(),
        }];
    };
    let subject = || target_subject.to_owned();
    let mut problems = Vec::new();
    match cert.basic_constraints() {
        Some(bc) if bc.ca => {
            if bc.path_len != Some(0) {
                problems.push(ChainProblem::TargetPathLen {
                    subject: subject(),
                    found: bc.path_len,
                });
            }
        }
        _ => problems.push(ChainProblem::TargetNotCa { subject: subject() }),
    }
    if cert.key_cert_sign() != Some(true) {
        problems.push(ChainProblem::TargetCannotSign { subject: subject() });
    }
    problems
}

type PathOutcome = Result<Vec<X509>, Vec<ChainProblem>>;

fn run_openssl(
    anchors: &[X509],
    target: &X509Ref,
    untrusted: &[X509],
    policy: &PathPolicy,
    subject: &dyn Fn(&X509NameRef) -> String,
) -> Result<PathOutcome, openssl::error::ErrorStack> {
    let mut store = X509StoreBuilder::new()?;
    for anchor in anchors {
        store.add_cert(anchor.clone())?;
    }
    let mut flags = X509VerifyFlags::empty();
    if policy.any_anchor {
        flags |= X509VerifyFlags::PARTIAL_CHAIN;
    }
    if policy.strict {
        flags |= X509VerifyFlags::X509_STRICT;
    }
    store.set_flags(flags)?;
    let store = store.build();
    let mut stack = Stack::new()?;
    for cert in untrusted {
        stack.push(cert.clone())?;
    }
    let mut ctx = X509StoreContext::new()?;
    ctx.init(&store, target, &stack, |c| {
        if c.verify_cert()? {
            let chain = c
                .chain()
                .map(|s| s.iter().map(X509Ref::to_owned).collect::<Vec<_>>())
                .unwrap_or_default();
            return Ok(Ok(chain));
        }
        let at = c.current_cert().map_or_else(
            || subject(target.subject_name()),
            |c| subject(c.subject_name()),
        );
        let err = c.error();
        Ok(Err(vec![classify(err.as_raw(), err.error_string(), at)]))
    })
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
