//! Kubeconfig files with embedded credentials, as `kubectl config view --raw` shows them.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::pki::ClientCert;
use crate::Result;

/// Writes a kubeconfig (JSON, which every kubeconfig reader accepts) for `user` at `server`,
/// trusting `ca_pem`; 0600, since it holds a private key.
pub(crate) fn write(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    cert: &ClientCert,
) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "sandbox",
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_pem),
            },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": STANDARD.encode(&cert.cert_pem),
                "client-key-data": STANDARD.encode(&cert.key_pem),
            },
        }],
        "contexts": [{
            "name": format!("{user}@sandbox"),
            "context": { "cluster": "sandbox", "user": user },
        }],
        "current-context": format!("{user}@sandbox"),
    });
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    crate::write_secret_file(path, text.as_bytes())
}
