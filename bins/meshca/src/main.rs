//! `meshca`: the operator CLI for installing a mesh whose CA key is protected by an HSM.

mod ca;
mod demo;
mod run;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use mesh_common::Mode;
use mesh_install::config::Overrides;
use mesh_install::flow::BUILT;
use mesh_install::steps::Step;

/// Install Istio / Anthos Service Mesh with the mesh CA key in an HSM and its credentials in Vault.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 3 invalid configuration, \
                  4 dependency unavailable"
)]
struct Cli {
    /// The configuration file (`meshca init` writes a sample).
    #[arg(
        long,
        global = true,
        env = "MESHCA_CONFIG",
        default_value = "meshca.toml"
    )]
    config: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Overrides `cluster.kubeconfig`.
    #[arg(long, global = true, env = "MESHCA_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Overrides `cluster.context`.
    #[arg(long, global = true, env = "MESHCA_CONTEXT")]
    context: Option<String>,
    /// Overrides `cluster.revision`.
    #[arg(long, global = true, env = "MESHCA_REVISION")]
    revision: Option<String>,
    /// Overrides `vault.address`.
    #[arg(long, global = true, env = "MESHCA_VAULT_ADDR")]
    vault_addr: Option<String>,
    /// Overrides `hsm.module`.
    #[arg(long, global = true, env = "MESHCA_HSM_MODULE")]
    hsm_module: Option<PathBuf>,
    /// Overrides `hsm.token-label`.
    #[arg(long, global = true, env = "MESHCA_TOKEN_LABEL")]
    token_label: Option<String>,
    /// Overrides `audit.log` (default: meshca-audit.jsonl next to the configuration).
    #[arg(long, global = true, env = "MESHCA_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Read everything, change nothing, report what would change.
    #[arg(long, global = true)]
    dry_run: bool,
    /// More log output (repeat for more); `RUST_LOG` wins.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// No progress output.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the guide's steps and the crate that owns each.
    Steps,
    /// Write a commented sample configuration.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Show what `apply` would change on the HSM, in Vault and in the cluster.
    Plan,
    /// Run every step of the guide in order, idempotently (a re-run resumes after a failure).
    Apply,
    /// Drift and health: plan against the live HSM, Vault and cluster and check every managed
    /// object (exit 1 on drift or a failed check).
    Status,
    /// HSM steps.
    #[command(subcommand)]
    Hsm(HsmCommand),
    /// Vault steps.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Cluster steps.
    #[command(subcommand)]
    K8s(K8sCommand),
    /// Mesh release and install steps.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Offline istiod CA signing (step 10 by hand): review a CSR and sign it with a root key
    /// file.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Step 11: check istiod's pods, the signed chain against the root, certificate expiry,
    /// and (in the demo) the mTLS chain a workload presents.
    Verify,
    /// Step 12: label the configured namespaces with the revision and restart their workloads.
    Inject,
    /// Step 13: the ingress gateway's external address.
    Ingress,
    /// Run the whole flow on this machine against a fresh SoftHSM2 token, a real OpenBao
    /// server, the emulated cluster and the emulated istiod, then verify and tear down.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum MeshCommand {
    /// Steps 9-10: install the control plane with the HSM values, then hand istiod's CSR to
    /// the root and its signed chain back (istiod becomes ready).
    Install,
    /// Write the rendered IstioOperator (step 9) without touching the cluster.
    Render {
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Render for upstream Istio (our sidecars as an overlay) instead of ASM.
        #[arg(long)]
        upstream: bool,
    },
    /// Step 6: check a downloaded release against its detached ECDSA signature (exit 1 when it
    /// does not match).
    VerifyRelease {
        /// The downloaded archive.
        #[arg(long)]
        file: PathBuf,
        /// The detached DER signature.
        #[arg(long)]
        signature: PathBuf,
        /// The release signing public key (PEM).
        #[arg(long)]
        public_key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Show the review of istiod's CSR (subject, SANs, key, extensions, policy violations);
    /// exit 1 when it breaks the istiod CA policy.
    Inspect {
        /// The CSR (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// The mesh trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Review and sign istiod's CSR with the root key, verify the chain, then write
    /// ca-cert.pem, cert-chain.pem, root-cert.pem and the istio-ca-cert Secret manifest.
    Sign {
        /// The CSR (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// The root certificate (PEM or DER).
        #[arg(long)]
        root_cert: PathBuf,
        /// The root private key (PEM, PKCS#8 or encrypted PKCS#8).
        #[arg(long)]
        root_key: PathBuf,
        /// A file (owner-only) holding the root key's passphrase.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// The output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The mesh trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
}

#[derive(Debug, Subcommand)]
enum HsmCommand {
    /// Steps 1-3: find the token by label and log in, ensure the KEK, import the root anchor.
    Init,
    /// The KEKs and root anchors on the token, with their protection attributes.
    List,
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Steps 4-5: the reviewer JWT from the cluster, then the Vault mount, secret, policy and
    /// Kubernetes auth.
    Setup,
}

#[derive(Debug, Subcommand)]
enum K8sCommand {
    /// Step 4: namespace, TokenReview binding and reviewer JWT for Vault.
    VaultAuth,
    /// Steps 7-8: istio-system, the vault-tls-cert ConfigMap and the istiod Service.
    ControlPlane,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // vaultrs and rustify log every expected 404 (a mount not created yet) at ERROR; the
    // flow reports real failures itself.
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error,vaultrs=off,rustify=off",
        (false, 0) => "warn,vaultrs=off,rustify=off",
        (false, 1) => "info,vaultrs=off,rustify=off",
        (false, _) => "debug",
    };
    cli_common::init_logging(cli_common::LogFormat::Text, level);
    sandbox::init_crypto();
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code(&err)
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per subcommand; the step groups map to their steps in one place"
)]
fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let mode = if cli.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    };
    let selection: &[Step] = match &cli.command {
        Command::Steps => {
            steps(cli.output)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Init { force } => {
            init(&cli.config, *force)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Demo(args) => {
            return demo::run(args, cli.output == Output::Json, cli.quiet);
        }
        Command::Hsm(HsmCommand::List) => {
            hsm_list(cli)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Mesh(MeshCommand::Render { out, upstream }) => {
            render(cli, out.as_deref(), *upstream)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Status => {
            return status(cli);
        }
        Command::Mesh(MeshCommand::VerifyRelease {
            file,
            signature,
            public_key,
        }) => {
            let release = mesh_install::flow::ReleaseFiles {
                file: file.clone(),
                signature: signature.clone(),
                public_key: public_key.clone(),
            };
            ca::verify_release_files(&release, cli.output == Output::Json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Ca(CaCommand::Inspect { csr, trust_domain }) => {
            return ca::inspect(csr, trust_domain, cli.output == Output::Json);
        }
        Command::Ca(CaCommand::Sign {
            csr,
            root_cert,
            root_key,
            passphrase_file,
            out,
            trust_domain,
        }) => {
            let args = ca::SignArgs {
                csr,
                root_cert,
                root_key,
                passphrase_file: passphrase_file.as_deref(),
                out,
                trust_domain,
            };
            ca::sign(&args, cli.output == Output::Json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Plan | Command::Apply => &BUILT,
        Command::Hsm(HsmCommand::Init) => &[Step::HsmSlot, Step::Kek, Step::RootImport],
        Command::Vault(VaultCommand::Setup) => &[Step::VaultKubeAuth, Step::VaultSetup],
        Command::K8s(K8sCommand::VaultAuth) => &[Step::VaultKubeAuth],
        Command::K8s(K8sCommand::ControlPlane) => {
            &[Step::ControlPlaneResources, Step::WebhookService]
        }
        Command::Mesh(MeshCommand::Install) => &[Step::Install, Step::SignCa],
        Command::Verify => &[Step::Verify],
        Command::Inject => &[Step::Injection],
        Command::Ingress => &[Step::ExternalIp],
    };
    let mode = if matches!(cli.command, Command::Plan) {
        Mode::DryRun
    } else {
        mode
    };
    let progress = run::Progress::for_stderr(cli.quiet);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let overrides = overrides(cli);
    let outcome = runtime.block_on(run::execute(
        &cli.config,
        overrides,
        cli.audit_log.as_deref(),
        selection,
        mode,
        progress,
        run::Supplied::default(),
    ))?;
    match outcome {
        Ok(report) => {
            run::print_report(&report, cli.output == Output::Json)?;
            // `verify` asked for proof; a step with nothing to verify yet gave none.
            let unverified = matches!(cli.command, Command::Verify)
                && report.steps.iter().any(|s| {
                    s.step == Step::Verify && s.status == mesh_install::flow::StepStatus::Blocked
                });
            Ok(if unverified {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(failure) => {
            run::print_report(&failure.report, cli.output == Output::Json)?;
            Err(anyhow::Error::new(*failure))
        }
    }
}

fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
        revision: cli.revision.clone(),
        vault_address: cli.vault_addr.clone(),
        hsm_module: cli.hsm_module.clone(),
        token_label: cli.token_label.clone(),
    }
}

/// `meshca status`: the flow as a dry run, one check per managed object.
fn status(cli: &Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = runtime.block_on(run::execute(
        &cli.config,
        overrides(cli),
        None,
        &BUILT,
        Mode::DryRun,
        run::Progress::Quiet,
        run::Supplied::default(),
    ))?;
    let (report, failure) = match outcome {
        Ok(report) => (report, None),
        Err(failure) => (failure.report.clone(), Some(failure)),
    };
    let checks = mesh_install::status::checks(&report);
    let clean = mesh_install::status::is_clean(&checks);
    run::print_status(&checks, clean, cli.output == Output::Json)?;
    if let Some(failure) = failure {
        return Err(anyhow::Error::new(*failure));
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `meshca hsm list`.
fn hsm_list(cli: &Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let doc = runtime.block_on(run::hsm_list(&cli.config, overrides(cli)))?;
    let mut out = std::io::stdout().lock();
    if cli.output == Output::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(out, "token {}", doc["token"].as_str().unwrap_or_default())?;
    for k in doc["keks"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  KEK    {:<40} AES-{} sensitive={} extractable={}",
            k["id"].as_str().unwrap_or_default(),
            k["bytes"].as_u64().unwrap_or(0) * 8,
            k["sensitive"],
            k["extractable"]
        )?;
    }
    for a in doc["anchors"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  anchor {:<40} {} (until {})",
            a["ca_id"].as_str().unwrap_or_default(),
            a["subject"].as_str().unwrap_or_default(),
            a["not_after"].as_str().unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `meshca mesh render`: the IstioOperator of step 9, from the configuration alone.
fn render(cli: &Cli, out: Option<&Path>, upstream: bool) -> anyhow::Result<()> {
    let mut config =
        mesh_install::config::Config::load(&cli.config)?.with_overrides(overrides(cli))?;
    if upstream {
        config.install.flavour = mesh_install::config::InstallFlavour::Upstream;
    }
    let yaml = mesh_install::install::to_yaml(&mesh_install::flow::render_operator(&config)?)?;
    match out {
        Some(path) => {
            mesh_common::fs::write_atomic(path, yaml.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            if !cli.quiet {
                eprintln!(
                    "wrote {}; install it with `istioctl install -y -f {}`",
                    path.display(),
                    path.display()
                );
            }
        }
        None => std::io::stdout().lock().write_all(yaml.as_bytes())?,
    }
    Ok(())
}

fn init(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        anyhow::bail!(
            "{} exists; pass --force to overwrite it or --config to choose another path",
            path.display()
        );
    }
    std::fs::write(path, mesh_install::config::SAMPLE)
        .with_context(|| format!("writing the sample configuration to {}", path.display()))?;
    eprintln!("wrote {}; edit it, then run `meshca plan`", path.display());
    Ok(())
}

fn steps(output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let doc: Vec<_> = Step::ALL
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "number": s.number(),
                        "name": s,
                        "title": s.title(),
                        "owner": s.owner(),
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Output::Text => {
            for s in Step::ALL {
                writeln!(out, "{s:<60} [{}]", s.owner())?;
            }
        }
    }
    Ok(())
}

fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<mesh_install::Error>() {
            if e.is_config() {
                return ExitCode::from(3);
            }
            if e.is_unavailable() {
                return ExitCode::from(4);
            }
        }
        if let Some(e) = cause.downcast_ref::<sandbox::Error>()
            && matches!(
                e,
                sandbox::Error::MissingTool { .. } | sandbox::Error::OpenBaoStart { .. }
            )
        {
            return ExitCode::from(4);
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>()
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::FAILURE
}
