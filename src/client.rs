//! The HTTP(S) client of agents and operators (`agent`, `sign --server`, `revoke`, `crl`):
//! JSON in and out, API errors as typed values, and the server trusted through the system
//! roots, a CA file, or a pinned certificate digest.

use crate::proto::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server refused ({status} {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl ClientError {
    /// The API error code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How the server's certificate is trusted.
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// The operating system's roots.
    #[default]
    System,
    /// Only the CA certificate(s) in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate whose DER has this SHA-256 (hex).
    Pinned(String),
}

/// A connection to one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    bearer: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct PinVerifier {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if crate::pki::sha256_hex(end_entity.as_ref()) == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server certificate does not match the pinned SHA-256".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Client {
    /// A client for `url` (`http://` or `https://`), with request timeout `timeout`.
    pub fn new(url: &str, trust: &Trust, timeout: Duration) -> Result<Self, ClientError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ClientError::Unreachable {
                url: url.into(),
                reason: "the URL must start with http:// or https://".into(),
            });
        }
        // one TLS crypto provider for the whole process: ring
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = |e: reqwest::Error| ClientError::Tls(e.to_string());
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10));
        match trust {
            Trust::System => {}
            Trust::CaFile(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(tls)?;
                builder = builder.tls_certs_only(certs);
            }
            Trust::Pinned(sha) => {
                let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ClientError::Tls(e.to_string()))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinVerifier {
                        sha256: sha.to_lowercase(),
                        provider,
                    }))
                    .with_no_client_auth();
                builder = builder.use_preconfigured_tls(config);
            }
        }
        let http = builder.build().map_err(tls)?;
        Ok(Client {
            base: url.trim_end_matches('/').to_owned(),
            http,
            bearer: None,
        })
    }

    pub fn with_bearer(mut self, bearer: &str) -> Self {
        self.bearer = Some(bearer.to_owned());
        self
    }

    pub fn set_bearer(&mut self, bearer: Option<String>) {
        self.bearer = bearer;
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<T, ClientError> {
        let req = match &self.bearer {
            Some(b) => req.bearer_auth(b),
            None => req,
        };
        let resp = req.send().map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        if status >= 400 {
            return Err(match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => ClientError::Api {
                    status,
                    code: e.code,
                    message: e.error,
                },
                Err(_) => ClientError::Api {
                    status,
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    /// A document (CRL, certificate) as bytes.
    pub fn document(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                reason: error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        if status >= 400 {
            let e: ApiError = serde_json::from_slice(&bytes).unwrap_or(ApiError {
                error: format!("HTTP {status}"),
                code: "http".into(),
            });
            return Err(ClientError::Api {
                status,
                code: e.code,
                message: e.error,
            });
        }
        Ok(bytes.to_vec())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
