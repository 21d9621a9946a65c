use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use mockall::Sequence;
use secrecy::{ExposeSecret as _, SecretString};

use super::*;
use crate::{KvVersion, Login, MockAgentVault};

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) config: AgentConfig,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, "header.payload.sig\n").unwrap();
    let config = AgentConfig {
        auth_path: "auth/asm-c1/hsm/login".into(),
        role: "istiod".into(),
        jwt_path: jwt,
        secret: SecretLocation::parse("asm-c1/hsm", KvVersion::V1).unwrap(),
        files: OutputFiles::in_dir(dir.path().join("out")),
        refresh_interval: Duration::from_secs(60),
        retry_interval: Duration::from_secs(1),
        ready_file: Some(dir.path().join("ready")),
    };
    Fixture { dir, config }
}

fn login(token: &str, lease_s: u64) -> Login {
    Login {
        token: SecretString::from(token),
        lease: Duration::from_secs(lease_s),
        renewable: true,
        policies: vec!["asm-c1-hsm-policy".into()],
    }
}

pub(super) fn secret(pin: &str) -> SecretFields {
    let mut f = SecretFields::new();
    f.insert("clientcert", SecretString::from("CLIENT CERT"));
    f.insert("clientkey", SecretString::from("CLIENT KEY"));
    f.insert("servercert", SecretString::from("SERVER CERT"));
    f.insert("PIN", SecretString::from(pin.to_owned()));
    f
}

#[test]
fn auth_and_secret_paths_accept_the_guides_forms() {
    assert_eq!(normalise_auth_path("auth/asm-c1/hsm/login"), "asm-c1/hsm");
    assert_eq!(
        normalise_auth_path("/v1/auth/asm-c1/hsm/login"),
        "asm-c1/hsm"
    );
    assert_eq!(normalise_auth_path("asm-c1/hsm"), "asm-c1/hsm");
    let v2 = SecretLocation::parse("asm-c1/data/hsm", KvVersion::V2).unwrap();
    assert_eq!((v2.mount.as_str(), v2.path.as_str()), ("asm-c1", "hsm"));
    assert!(SecretLocation::parse("hsm", KvVersion::V1).is_err());
}

#[tokio::test]
async fn once_logs_in_reads_and_writes_four_private_files() {
    let fx = fixture();
    let mut vault = MockAgentVault::new();
    let mut seq = Sequence::new();
    vault
        .expect_login_kubernetes()
        .withf(|path, role, jwt| {
            path == "asm-c1/hsm" && role == "istiod" && jwt.expose_secret() == "header.payload.sig"
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(login("t1", 3600)));
    vault
        .expect_read_secret_with()
        .withf(|token, mount, v, path| {
            token.expose_secret() == "t1"
                && mount == "asm-c1"
                && *v == KvVersion::V1
                && path == "hsm"
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(Some(secret("1234"))));
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::new(fx.config.clone(), Arc::new(vault), Arc::clone(&metrics));
    let report = agent.run_once().await.unwrap();
    assert_eq!(report.written.len(), 4);
    let out = fx.config.files.dir.clone();
    assert_eq!(std::fs::read_to_string(out.join("pin")).unwrap(), "1234\n");
    assert_eq!(
        std::fs::read_to_string(out.join("client-key.pem")).unwrap(),
        "CLIENT KEY"
    );
    for name in [
        "client-cert.pem",
        "client-key.pem",
        "server-cert.pem",
        "pin",
    ] {
        let mode = std::fs::metadata(out.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    assert!(fx.dir.path().join("ready").is_file());
    let snap = metrics.snapshot();
    assert_eq!((snap.logins, snap.fetches, snap.file_writes), (1, 1, 4));
    assert!(snap.ready);
}

#[tokio::test]
async fn second_fetch_rewrites_only_changed_files() {
    let fx = fixture();
    let mut vault = MockAgentVault::new();
    vault
        .expect_login_kubernetes()
        .times(1)
        .returning(|_, _, _| Ok(login("t1", 3600)));
    let mut seq = Sequence::new();
    vault
        .expect_read_secret_with()
        .times(2)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(Some(secret("1234"))));
    vault
        .expect_read_secret_with()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(Some(secret("9999"))));
    let mut agent = Agent::new(fx.config.clone(), Arc::new(vault), Arc::default());
    assert_eq!(agent.fetch().await.unwrap().written.len(), 4);
    let second = agent.fetch().await.unwrap();
    assert!(second.written.is_empty());
    assert_eq!(second.unchanged.len(), 4);
    let third = agent.fetch().await.unwrap();
    assert_eq!(third.written, [fx.config.files.dir.join("pin")]);
}

#[tokio::test]
async fn refused_token_triggers_one_fresh_login() {
    let fx = fixture();
    let mut vault = MockAgentVault::new();
    let mut seq = Sequence::new();
    vault
        .expect_login_kubernetes()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(login("old", 3600)));
    vault
        .expect_read_secret_with()
        .withf(|t, _, _, _| t.expose_secret() == "old")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| {
            Err(Error::PermissionDenied {
                addr: "http://vault".into(),
                operation: "read secret",
                object: "asm-c1/hsm".into(),
                message: "permission denied".into(),
            })
        });
    vault
        .expect_login_kubernetes()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(login("new", 3600)));
    vault
        .expect_read_secret_with()
        .withf(|t, _, _, _| t.expose_secret() == "new")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(Some(secret("1"))));
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::new(fx.config, Arc::new(vault), Arc::clone(&metrics));
    agent.fetch().await.unwrap();
    assert_eq!(metrics.snapshot().logins, 2);
}

#[tokio::test]
async fn a_secret_missing_a_field_changes_no_file_and_is_not_ready() {
    let fx = fixture();
    let mut vault = MockAgentVault::new();
    vault
        .expect_login_kubernetes()
        .returning(|_, _, _| Ok(login("t", 3600)));
    vault.expect_read_secret_with().returning(|_, _, _, _| {
        let mut f = secret("1");
        f = f
            .iter()
            .filter(|(k, _)| *k != "clientkey")
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        Ok(Some(f))
    });
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::new(fx.config.clone(), Arc::new(vault), Arc::clone(&metrics));
    let err = agent.run_once().await.unwrap_err();
    assert!(err.to_string().contains("clientkey"), "{err}");
    assert!(!fx.config.files.dir.join("pin").exists());
    assert!(!fx.dir.path().join("ready").exists());
    let snap = metrics.snapshot();
    assert_eq!((snap.fetch_failures, snap.ready), (1, false));
}

#[tokio::test(start_paused = true)]
async fn token_is_renewed_after_two_thirds_of_its_lease() {
    let fx = fixture();
    let mut vault = MockAgentVault::new();
    vault
        .expect_login_kubernetes()
        .times(1)
        .returning(|_, _, _| Ok(login("t1", 90)));
    vault
        .expect_renew_self()
        .withf(|t, asked| t.expose_secret() == "t1" && *asked == Duration::from_secs(90))
        .times(1)
        .returning(|_, _| Ok(login("", 90)));
    vault
        .expect_read_secret_with()
        .withf(|t, _, _, _| t.expose_secret() == "t1")
        .returning(|_, _, _, _| Ok(Some(secret("1"))));
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::new(fx.config, Arc::new(vault), Arc::clone(&metrics));
    agent.fetch().await.unwrap();
    // Renewal is due after 60 s of a 90 s lease; the refresh interval is 60 s.
    assert_eq!(agent.next_wait(), Duration::from_secs(60));
    tokio::time::advance(Duration::from_secs(61)).await;
    agent.fetch().await.unwrap();
    let snap = metrics.snapshot();
    assert_eq!((snap.logins, snap.renewals), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn run_survives_an_unavailable_server_and_recovers() {
    let fx = fixture();
    let mut vault = MockAgentVault::new();
    let mut seq = Sequence::new();
    vault
        .expect_login_kubernetes()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| {
            Err(Error::Unavailable {
                addr: "http://vault".into(),
                source: "connection refused".into(),
            })
        });
    vault
        .expect_login_kubernetes()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(login("t", 3600)));
    vault
        .expect_read_secret_with()
        .returning(|_, _, _, _| Ok(Some(secret("1"))));
    vault
        .expect_revoke_self()
        .withf(|t| t.expose_secret() == "t")
        .times(1)
        .returning(|_| Ok(()));
    let metrics = Arc::new(Metrics::default());
    let agent = Agent::new(fx.config.clone(), Arc::new(vault), Arc::clone(&metrics));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async move {
        let _ = stopped.await;
    }));
    while !metrics.is_ready() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    let snap = metrics.snapshot();
    assert_eq!((snap.login_failures, snap.logins), (1, 1));
    assert!(snap.fetch_failures >= 1);
    assert!(fx.config.files.dir.join("pin").is_file());
}
