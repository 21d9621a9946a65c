//! The client subcommands of the guide: over the socket (`--socket` or `SOCKET`), or
//! `--in-process` straight through hsm-core for the workstation flow.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use hsm_core::{
    AuthenticatedDecryptRequest, CaId, HsmIstioKms, HsmToken, ImportCaCertRequest, ImportPolicy,
    IstioConfig, IstioKms, KekId, TokenOptions, VerifyCertChainRequest,
};
use kms_grpc::KmsClient;
use kms_grpc::csr_bundle::EncryptedCsr;
use kms_grpc::server::ServerConfig;

use crate::Output;
use crate::serve::TokenArgs;

/// How a client command reaches the HSM.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The plugin socket.
    #[arg(long, env = "SOCKET", default_value = ServerConfig::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Use the HSM directly (P11_* settings) instead of a server.
    #[arg(long)]
    in_process: bool,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

enum Kms {
    Remote(KmsClient),
    Local(Arc<dyn IstioKms>),
}

impl Target {
    async fn connect(&self) -> anyhow::Result<Kms> {
        self.token.check()?;
        if self.in_process {
            let (module, label) = self.token.locate()?;
            let pin = self.token.pin()?;
            let token = tokio::task::spawn_blocking(move || {
                HsmToken::open(&module, &label, pin, TokenOptions::default())
            })
            .await??;
            Ok(Kms::Local(Arc::new(HsmIstioKms::new(
                Arc::new(token),
                IstioConfig::default(),
            ))))
        } else {
            Ok(Kms::Remote(KmsClient::connect(&self.socket).await?))
        }
    }

    fn print(&self, text: &str, json: &serde_json::Value) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.output {
            Output::Text => writeln!(out, "{text}")?,
            Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(json)?)?,
        }
        Ok(())
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Flags of `generate-kek`.
#[derive(Debug, Args)]
pub(crate) struct GenerateKekArgs {
    /// The KEK id (a random UUID when absent; also `kek-id` in the environment).
    #[arg(long, env = "KEK_ID")]
    kek_id: Option<String>,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn generate_kek(mut args: GenerateKekArgs) -> anyhow::Result<()> {
    args.kek_id = crate::compat::hyphenated_env(args.kek_id, "kek-id");
    let id = match args.target.connect().await? {
        Kms::Remote(c) => {
            c.generate_kek(args.kek_id.as_deref().map(str::as_bytes))
                .await?
        }
        Kms::Local(kms) => {
            let id = args
                .kek_id
                .as_deref()
                .map(|id| KekId::new(id.as_bytes().to_vec()))
                .transpose()?;
            kms.generate_kek(id).await?.as_bytes().to_vec()
        }
    };
    let id = String::from_utf8_lossy(&id);
    args.target.print(
        &format!("KEK ID: {id}"),
        &serde_json::json!({ "kek_id": id }),
    )
}

/// Flags of `import-ca`.
#[derive(Debug, Args)]
pub(crate) struct ImportCaArgs {
    /// The root certificate, PEM (first block) or DER.
    #[arg(short = 'f', long = "cert-file")]
    cert_file: PathBuf,
    /// The CA id (the server's default, 1c3d30d5-…, when absent; also `ca-id`).
    #[arg(long, env = "CA_ID")]
    ca_id: Option<String>,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn import_ca(mut args: ImportCaArgs) -> anyhow::Result<()> {
    args.target.token.check()?;
    args.ca_id = crate::compat::hyphenated_env(args.ca_id, "ca-id");
    let cert = read(&args.cert_file, "the CA certificate")?;
    match args.target.connect().await? {
        Kms::Remote(c) => {
            c.import_ca_cert(args.ca_id.as_deref().map(str::as_bytes), &cert)
                .await?;
        }
        Kms::Local(kms) => {
            let ca_id = args
                .ca_id
                .as_deref()
                .map(|id| CaId::new(id.as_bytes().to_vec()))
                .transpose()?;
            kms.import_ca_cert(ImportCaCertRequest {
                ca_id,
                cert,
                policy: ImportPolicy::KeepExisting,
            })
            .await?;
        }
    }
    let ca_id = args.ca_id.unwrap_or_else(|| CaId::DEFAULT.to_owned());
    args.target.print(
        &format!("CA certificate imported as {ca_id}"),
        &serde_json::json!({ "ca_id": ca_id, "imported": true }),
    )
}

/// Flags of `decrypt-csr`.
#[derive(Debug, Args)]
pub(crate) struct DecryptCsrArgs {
    /// The `.data` of Secret istio-ca-cert-csr as JSON (kek-id, encrypted-dek, csr-id,
    /// encrypted-csr, standard base64).
    #[arg(short = 'f', long = "inName", visible_alias = "in")]
    input: PathBuf,
    /// Where to write the CSR (mode 0600); printed to stdout when absent.
    #[arg(short = 'o', long = "outName", visible_alias = "out")]
    output_file: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn decrypt_csr(args: DecryptCsrArgs) -> anyhow::Result<()> {
    let doc = EncryptedCsr::from_json(&read(&args.input, "the encrypted CSR document")?)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let csr = match args.target.connect().await? {
        Kms::Remote(c) => {
            c.authenticated_decrypt(
                &doc.kek_id,
                &doc.encrypted_dek,
                &doc.encrypted_csr,
                &doc.csr_id,
            )
            .await?
        }
        Kms::Local(kms) => {
            kms.authenticated_decrypt(AuthenticatedDecryptRequest {
                kek_id: KekId::new(doc.kek_id.clone())?,
                encrypted_dek: doc.encrypted_dek.clone(),
                ciphertext: doc.encrypted_csr.clone(),
                aad: doc.csr_id.clone(),
            })
            .await?
        }
    };
    let kek_id = String::from_utf8_lossy(&doc.kek_id).into_owned();
    let csr_id = String::from_utf8_lossy(&doc.csr_id).into_owned();
    match &args.output_file {
        Some(path) => {
            ca_signing::write_file_atomic(path, &csr, ca_signing::FileMode::Secret)?;
            args.target.print(
                &format!("KEK ID: {kek_id}\nCSR ID: {csr_id}"),
                &serde_json::json!({
                    "kek_id": kek_id,
                    "csr_id": csr_id,
                    "csr_file": path.display().to_string(),
                }),
            )
        }
        None => args.target.print(
            &format!(
                "KEK ID: {kek_id}\nCSR ID: {csr_id}\n{}",
                String::from_utf8_lossy(&csr).trim_end()
            ),
            &serde_json::json!({
                "kek_id": kek_id,
                "csr_id": csr_id,
                "csr": String::from_utf8_lossy(&csr),
            }),
        ),
    }
}

/// Flags of `verify-cert`.
#[derive(Debug, Args)]
pub(crate) struct VerifyCertArgs {
    /// The chain, PEM (every block is sent; any order) or one DER certificate.
    #[arg(short = 'f', long = "cert-file")]
    cert_file: PathBuf,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn verify_cert(args: VerifyCertArgs) -> anyhow::Result<()> {
    let bytes = read(&args.cert_file, "the certificate chain")?;
    let elements = if bytes.starts_with(b"-----") || bytes.windows(10).any(|w| w == b"-----BEGIN") {
        ca_signing::Certificate::parse_pem_bundle(&bytes)
            .with_context(|| format!("reading {}", args.cert_file.display()))?
            .iter()
            .map(|c| c.der().to_vec())
            .collect()
    } else {
        vec![bytes]
    };
    match args.target.connect().await? {
        Kms::Remote(c) => c.verify_cert_chain(elements).await?,
        Kms::Local(kms) => {
            kms.verify_cert_chain(VerifyCertChainRequest {
                certificates: elements,
                expected_spki: None,
            })
            .await?;
        }
    }
    args.target.print(
        "certificate chain verified",
        &serde_json::json!({ "verified": true }),
    )
}
