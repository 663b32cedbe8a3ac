//! TLS client configuration for FTPS: trust roots, per-server CA files and
//! the explicit opt-out of verification.
//!
//! One `ClientConfig` is built per (CA file, verification) pair and shared by
//! every session that uses it. Sharing matters beyond speed: rustls keeps its
//! TLS session cache in the config, and servers such as vsftpd with
//! `require_ssl_reuse=YES` accept a data connection only if it resumes the
//! control connection's TLS session.

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The operating system's trust store, loaded once: reading it takes tens of milliseconds.
fn system_roots() -> &'static Result<RootCertStore, String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            Err(format!(
                "no trusted root certificates found on this system ({} errors); set ca_file",
                found.errors.len()
            ))
        } else {
            Ok(store)
        }
    })
}

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read ca_file {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("ca_file {} is not a PEM certificate bundle", path.display()))?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(anyhow!(
            "ca_file {} holds no usable certificate",
            path.display()
        ));
    }
    Ok(store)
}

/// Builds (once) and hands out TLS client configs.
/// (CA file, skip verification) → config.
type ConfigCache = HashMap<(Option<PathBuf>, bool), Arc<ClientConfig>>;

#[derive(Default)]
pub struct TlsConfigs {
    cache: Mutex<ConfigCache>,
}

impl TlsConfigs {
    pub fn get(&self, ca_file: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>> {
        let key = (ca_file.map(Path::to_path_buf), insecure);
        if let Some(cfg) = self.cache.lock().unwrap().get(&key) {
            return Ok(cfg.clone());
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS provider setup")?;
        let cfg = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth()
        } else {
            let roots = match ca_file {
                Some(p) => roots_from_file(p)?,
                None => system_roots().clone().map_err(|e| anyhow!(e))?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let cfg = Arc::new(cfg);
        self.cache.lock().unwrap().insert(key, cfg.clone());
        Ok(cfg)
    }
}

/// Accepts any certificate; only reachable through `insecure_skip_verify`.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
