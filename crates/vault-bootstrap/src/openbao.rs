//! The adapter: [`Vault`] and [`AgentVault`] over vaultrs (plus [`crate::raw`] endpoints), for
//! Vault and OpenBao alike.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{VaultClient, VaultClientSettings};
use vaultrs::error::ClientError;

use crate::api::{AgentVault, KubernetesConfigInfo, Login, MountInfo, Vault};
use crate::{
    Connection, Error, KubernetesAuthConfig, KubernetesRole, KvVersion, Result, SecretFields, raw,
};

/// A Vault/OpenBao server reached through vaultrs with this crate's [`Connection`] (CA,
/// namespace, timeout, retries). Holds an optional operator token for the [`Vault`] port; the
/// [`AgentVault`] calls carry their own token.
pub struct HttpVault {
    conn: Connection,
    http: reqwest::Client,
    client: VaultClient,
}

impl fmt::Debug for HttpVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpVault")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl HttpVault {
    /// An adapter for `conn`, authenticating with `token` (`None` for the agent, which logs in).
    ///
    /// # Errors
    /// [`Error::InvalidCaCert`] when the connection's CA cannot be used.
    pub fn new(conn: Connection, token: Option<&SecretString>) -> Result<Self> {
        let http = conn.http_client()?;
        let mut adapter = Self {
            client: build_client(&conn, &http, "")?,
            conn,
            http,
        };
        if let Some(token) = token {
            adapter.client = adapter.with_token(token)?;
        }
        Ok(adapter)
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn with_token(&self, token: &SecretString) -> Result<VaultClient> {
        build_client(&self.conn, &self.http, token.expose_secret())
    }

    fn addr(&self) -> String {
        self.conn.addr().to_string()
    }

    /// Runs a vaultrs call with retries, mapping its error.
    async fn call<T, F, Fut>(&self, operation: &'static str, object: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        self.conn
            .retry()
            .run(operation, || async {
                f().await.map_err(|e| self.map_err(operation, object, e))
            })
            .await
    }

    /// As [`Self::call`], with "does not exist" answers as `None`.
    async fn read<T, F, Fut>(
        &self,
        operation: &'static str,
        object: &str,
        f: F,
    ) -> Result<Option<T>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        self.conn
            .retry()
            .run(operation, || async {
                match f().await {
                    Ok(v) => Ok(Some(v)),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(self.map_err(operation, object, e)),
                }
            })
            .await
    }

    fn map_err(&self, operation: &'static str, object: &str, err: ClientError) -> Error {
        match err {
            ClientError::APIError { code, errors } => {
                let message = if errors.is_empty() {
                    "no detail".to_owned()
                } else {
                    errors.join("; ")
                };
                if code == 503 && message.to_ascii_lowercase().contains("sealed") {
                    Error::Sealed { addr: self.addr() }
                } else if code == 403 {
                    Error::PermissionDenied {
                        addr: self.addr(),
                        operation,
                        object: object.to_owned(),
                        message,
                    }
                } else {
                    Error::Api {
                        addr: self.addr(),
                        operation,
                        object: object.to_owned(),
                        code,
                        message,
                    }
                }
            }
            ClientError::RestClientError { source } => match source {
                rustify::errors::ClientError::ServerResponseError { code, .. } => Error::Api {
                    addr: self.addr(),
                    operation,
                    object: object.to_owned(),
                    code,
                    message: "an answer that is not a Vault error document".to_owned(),
                },
                transport @ (rustify::errors::ClientError::RequestError { .. }
                | rustify::errors::ClientError::ResponseError { .. }) => {
                    self.conn.transport_error(Box::new(transport))
                }
                other => Error::Client {
                    addr: self.addr(),
                    operation,
                    object: object.to_owned(),
                    source: Box::new(other),
                },
            },
            other => Error::Client {
                addr: self.addr(),
                operation,
                object: object.to_owned(),
                source: Box::new(other),
            },
        }
    }
}

/// 404, and the 400 answers Vault gives for a mount that does not exist.
fn is_not_found(err: &ClientError) -> bool {
    match err {
        ClientError::APIError { code: 404, .. } => true,
        ClientError::APIError { code: 400, errors } => errors.iter().any(|e| {
            e.starts_with("No secret engine mount at") || e.starts_with("No auth engine at")
        }),
        _ => false,
    }
}

fn build_client(conn: &Connection, http: &reqwest::Client, token: &str) -> Result<VaultClient> {
    let address = reqwest::Url::parse(conn.addr().as_str()).map_err(|_| Error::InvalidAddr {
        addr: conn.addr().to_string(),
        reason: "not a URL",
    })?;
    let namespace = conn.namespace().map(str::to_owned);
    Ok(VaultClient {
        http: rustify::clients::reqwest::Client::new(conn.addr().as_str(), http.clone()),
        middle: EndpointMiddleware {
            token: token.to_owned(),
            version: "v1".to_owned(),
            wrap: None,
            namespace: namespace.clone(),
        },
        settings: VaultClientSettings {
            address,
            ca_certs: Vec::new(),
            identity: None,
            timeout: None,
            token: token.to_owned(),
            verify: true,
            version: 1,
            wrapping: false,
            namespace,
            proxy: None,
        },
    })
}

fn secret_fields(map: HashMap<String, serde_json::Value>) -> SecretFields {
    map.into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, SecretString::from(text))
        })
        .collect()
}

async fn read_kv(
    client: &VaultClient,
    mount: &str,
    version: KvVersion,
    path: &str,
) -> std::result::Result<HashMap<String, serde_json::Value>, ClientError> {
    match version {
        KvVersion::V1 => vaultrs::kv1::get(client, mount, path).await,
        KvVersion::V2 => vaultrs::kv2::read(client, mount, path).await,
    }
}

fn login_from(info: vaultrs::api::AuthInfo) -> Login {
    Login {
        token: SecretString::from(info.client_token),
        lease: Duration::from_secs(info.lease_duration),
        renewable: info.renewable,
        policies: info.token_policies,
    }
}

#[async_trait::async_trait]
impl Vault for HttpVault {
    async fn read_secrets_mount(&self, path: &str) -> Result<Option<MountInfo>> {
        let found = self
            .read("read secrets mount", path, || {
                vaultrs::sys::mount::get_configuration_of_a_secret_engine(&self.client, path)
            })
            .await?;
        Ok(found.map(|m| {
            let version = m
                .options
                .as_ref()
                .and_then(|o| o.get("version"))
                .map(String::as_str);
            MountInfo {
                kv_version: if m.mount_type == "kv" {
                    KvVersion::from_option(version)
                } else {
                    None
                },
                kind: m.mount_type,
                max_lease_ttl: Duration::from_secs(m.config.max_lease_ttl),
            }
        }))
    }

    async fn enable_secrets_mount(&self, path: &str, version: KvVersion) -> Result<()> {
        self.call("enable secrets mount", path, || async {
            let mut options = HashMap::new();
            options.insert("version".to_owned(), version.option().to_owned());
            let mut request = vaultrs::api::sys::requests::EnableEngineRequest::builder();
            request.options(options);
            vaultrs::sys::mount::enable(&self.client, path, "kv", Some(&mut request)).await
        })
        .await
    }

    async fn tune_max_lease_ttl(&self, path: &str, max_lease_ttl: Duration) -> Result<()> {
        self.call("tune secrets mount", path, || {
            vaultrs::api::exec_with_empty(
                &self.client,
                raw::TuneMount {
                    path: path.to_owned(),
                    max_lease_ttl: Some(format!("{}s", max_lease_ttl.as_secs())),
                },
            )
        })
        .await
    }

    async fn read_secret(
        &self,
        mount: &str,
        version: KvVersion,
        path: &str,
    ) -> Result<Option<SecretFields>> {
        let object = format!("{mount}/{path}");
        let found = self
            .read("read secret", &object, || {
                read_kv(&self.client, mount, version, path)
            })
            .await?;
        Ok(found.map(secret_fields))
    }

    async fn write_secret(
        &self,
        mount: &str,
        version: KvVersion,
        path: &str,
        fields: &SecretFields,
    ) -> Result<()> {
        let object = format!("{mount}/{path}");
        self.call("write secret", &object, || async {
            let data: HashMap<&str, &str> =
                fields.iter().map(|(k, v)| (k, v.expose_secret())).collect();
            match version {
                KvVersion::V1 => vaultrs::kv1::set(&self.client, mount, path, &data).await,
                KvVersion::V2 => vaultrs::kv2::set(&self.client, mount, path, &data)
                    .await
                    .map(|_| ()),
            }
        })
        .await
    }

    async fn read_policy(&self, name: &str) -> Result<Option<String>> {
        let found = self
            .read("read policy", name, || {
                vaultrs::sys::policy::read(&self.client, name)
            })
            .await?;
        Ok(found.map(|p| p.rules))
    }

    async fn write_policy(&self, name: &str, rules: &str) -> Result<()> {
        self.call("write policy", name, || {
            vaultrs::sys::policy::set(&self.client, name, rules)
        })
        .await
    }

    async fn read_auth_mount(&self, path: &str) -> Result<Option<String>> {
        let found = self
            .read("read auth mount", path, || {
                vaultrs::api::exec_with_result(
                    &self.client,
                    raw::ReadAuthMount {
                        path: path.to_owned(),
                    },
                )
            })
            .await?;
        Ok(found.map(|m| m.kind))
    }

    async fn enable_auth_mount(&self, path: &str, kind: &str) -> Result<()> {
        self.call("enable auth mount", path, || {
            vaultrs::sys::auth::enable(&self.client, path, kind, None)
        })
        .await
    }

    async fn read_kubernetes_config(&self, path: &str) -> Result<Option<KubernetesConfigInfo>> {
        let object = format!("auth/{path}/config");
        let found = self
            .read("read kubernetes auth config", &object, || {
                vaultrs::api::exec_with_result(
                    &self.client,
                    raw::ReadKubernetesConfig {
                        mount: path.to_owned(),
                    },
                )
            })
            .await?;
        Ok(found.map(|c| KubernetesConfigInfo {
            kubernetes_host: c.kubernetes_host,
            kubernetes_ca_cert: c.kubernetes_ca_cert,
            token_reviewer_jwt_set: c.token_reviewer_jwt_set,
            issuer: c.issuer,
            pem_keys: c.pem_keys.unwrap_or_default(),
            disable_local_ca_jwt: c.disable_local_ca_jwt,
        }))
    }

    async fn write_kubernetes_config(
        &self,
        path: &str,
        config: &KubernetesAuthConfig,
    ) -> Result<()> {
        let object = format!("auth/{path}/config");
        self.call("write kubernetes auth config", &object, || {
            vaultrs::api::exec_with_empty(
                &self.client,
                raw::WriteKubernetesConfig {
                    mount: path.to_owned(),
                    kubernetes_host: config.kubernetes_host.clone(),
                    kubernetes_ca_cert: config.kubernetes_ca_cert.clone(),
                    token_reviewer_jwt: config
                        .token_reviewer_jwt
                        .as_ref()
                        .map(|j| j.expose_secret().to_owned()),
                    issuer: config.issuer.clone(),
                    pem_keys: (!config.pem_keys.is_empty()).then(|| config.pem_keys.clone()),
                    disable_local_ca_jwt: config.disable_local_ca_jwt,
                },
            )
        })
        .await
    }

    async fn read_kubernetes_role(&self, path: &str, name: &str) -> Result<Option<KubernetesRole>> {
        let object = format!("auth/{path}/role/{name}");
        let found = self
            .read("read kubernetes auth role", &object, || {
                vaultrs::api::exec_with_result(
                    &self.client,
                    raw::ReadKubernetesRole {
                        mount: path.to_owned(),
                        name: name.to_owned(),
                    },
                )
            })
            .await?;
        Ok(found.map(|r| KubernetesRole {
            name: name.to_owned(),
            bound_service_account_names: r.bound_service_account_names,
            bound_service_account_namespaces: r.bound_service_account_namespaces,
            policies: r.token_policies,
            ttl: Duration::from_secs(r.token_ttl),
            audience: r.audience.filter(|a| !a.is_empty()),
        }))
    }

    async fn write_kubernetes_role(&self, path: &str, role: &KubernetesRole) -> Result<()> {
        let object = format!("auth/{path}/role/{}", role.name);
        self.call("write kubernetes auth role", &object, || async {
            let mut request =
                vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder();
            request
                .bound_service_account_names(role.bound_service_account_names.clone())
                .bound_service_account_namespaces(role.bound_service_account_namespaces.clone())
                .token_policies(role.policies.clone())
                .token_ttl(format!("{}s", role.ttl.as_secs()))
                .audience(role.audience.clone().unwrap_or_default());
            vaultrs::auth::kubernetes::role::create(
                &self.client,
                path,
                &role.name,
                Some(&mut request),
            )
            .await
        })
        .await
    }
}

#[async_trait::async_trait]
impl AgentVault for HttpVault {
    async fn login_kubernetes(
        &self,
        auth_path: &str,
        role: &str,
        jwt: &SecretString,
    ) -> Result<Login> {
        let object = format!("auth/{auth_path}/login (role {role})");
        let info = self
            .call("kubernetes login", &object, || {
                vaultrs::auth::kubernetes::login(&self.client, auth_path, role, jwt.expose_secret())
            })
            .await?;
        Ok(login_from(info))
    }

    async fn renew_self(&self, token: &SecretString, increment: Duration) -> Result<Login> {
        let client = self.with_token(token)?;
        let increment = (!increment.is_zero()).then(|| format!("{}s", increment.as_secs()));
        let info = self
            .call("renew token", "auth/token/renew-self", || {
                vaultrs::token::renew_self(&client, increment.as_deref())
            })
            .await?;
        Ok(login_from(info))
    }

    async fn revoke_self(&self, token: &SecretString) -> Result<()> {
        let client = self.with_token(token)?;
        self.call("revoke token", "auth/token/revoke-self", || {
            vaultrs::token::revoke_self(&client)
        })
        .await
    }

    async fn read_secret_with(
        &self,
        token: &SecretString,
        mount: &str,
        version: KvVersion,
        path: &str,
    ) -> Result<Option<SecretFields>> {
        let client = self.with_token(token)?;
        let object = format!("{mount}/{path}");
        let found = self
            .read("read secret", &object, || {
                read_kv(&client, mount, version, path)
            })
            .await?;
        Ok(found.map(secret_fields))
    }
}
