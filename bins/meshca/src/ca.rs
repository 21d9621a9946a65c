//! `meshca mesh verify-release`, `meshca ca inspect` and `meshca ca sign`: the offline file
//! operations of steps 6 and 10.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use ca_signing::{CsrPolicy, CsrPurpose};
use mesh_install::flow::{ReleaseFiles, verify_release};
use mesh_install::steps::Step;

/// Step 6 by hand: checks `file` against its detached signature.
pub(crate) fn verify_release_files(release: &ReleaseFiles, json: bool) -> anyhow::Result<()> {
    verify_release(Step::Download, release)?;
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "file": release.file,
            "public_key": release.public_key,
            "verified": true,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "\u{2714} {}: signature verified with {}",
            release.file.display(),
            release.public_key.display()
        )?;
    }
    Ok(())
}

fn policy(trust_domain: &str) -> anyhow::Result<CsrPolicy> {
    CsrPolicy::for_trust_domain(trust_domain)
        .with_context(|| format!("--trust-domain {trust_domain}"))
}

fn read(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// `meshca ca inspect`: the CSR review an admin reads before signing; exit 1 when the CSR
/// breaks the istiod CA policy.
pub(crate) fn inspect(csr_path: &Path, trust_domain: &str, json: bool) -> anyhow::Result<ExitCode> {
    let csr = ca_signing::Csr::parse(&read("the CSR", csr_path)?)
        .with_context(|| format!("parsing the CSR {}", csr_path.display()))?;
    let report = csr.report();
    let violations = policy(trust_domain)?.check(report, CsrPurpose::IstiodCa);
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "csr": csr_path,
            "purpose": CsrPurpose::IstiodCa,
            "review": report,
            "violations": violations,
            "acceptable": violations.is_empty(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        write!(out, "{report}")?;
        if violations.is_empty() {
            writeln!(
                out,
                "\u{2714} acceptable as the istiod CA (trust domain {trust_domain})"
            )?;
        } else {
            for v in &violations {
                writeln!(out, "\u{2718} {}", serde_json::to_string(v)?)?;
            }
        }
    }
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Inputs of `meshca ca sign`.
pub(crate) struct SignArgs<'a> {
    pub(crate) csr: &'a Path,
    pub(crate) root_cert: &'a Path,
    pub(crate) root_key: &'a Path,
    pub(crate) passphrase_file: Option<&'a Path>,
    pub(crate) out: &'a Path,
    pub(crate) trust_domain: &'a str,
}

/// `meshca ca sign`: reviews the CSR, signs it with the software root key, verifies the chain,
/// then writes `ca-cert.pem`, `cert-chain.pem`, `root-cert.pem` and the `istio-ca-cert` Secret.
pub(crate) fn sign(args: &SignArgs<'_>, json: bool) -> anyhow::Result<()> {
    let csr = read("the CSR", args.csr)?;
    let root_cert = read("the root certificate", args.root_cert)?;
    let signer = ca_signing::SoftwareSigner::from_file(args.root_key, args.passphrase_file)
        .with_context(|| format!("loading the root key {}", args.root_key.display()))?;
    std::fs::create_dir_all(args.out)
        .with_context(|| format!("creating the output directory {}", args.out.display()))?;
    let policy = policy(args.trust_domain)?;
    let profile = ca_signing::IstiodCaProfile::default();
    let request = ca_signing::ops::SignIstiodCaRequest {
        csr: &csr,
        root_cert: &root_cert,
        policy: &policy,
        profile: &profile,
    };
    let issued = ca_signing::ops::sign_istiod_ca_to_dir(&request, &signer, args.out)
        .context("signing the istiod CA")?;
    let files: Vec<PathBuf> = issued.files.clone();
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "review": issued.review,
            "serial": issued.istiod_ca.serial_hex(),
            "subject": issued.istiod_ca.subject(),
            "verification": issued.verification,
            "files": files,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        write!(out, "{}", issued.review)?;
        writeln!(
            out,
            "\u{2714} signed {} (serial {}); chain verified against the root",
            issued.istiod_ca.subject(),
            issued.istiod_ca.serial_hex()
        )?;
        for f in &files {
            writeln!(out, "  wrote {}", f.display())?;
        }
    }
    Ok(())
}
