//! The HTTPS listener's certificate (`[tls]`): reading a PEM certificate chain and its
//! private key and checking that they belong together, the rustls server configuration
//! (aws-lc-rs, the crypto the gateway already links; actix adds ALPN for HTTP/2 and
//! HTTP/1.1), and swapping in a renewed pair on SIGHUP without dropping a connection.
//!
//! A leaf like `metrics`: it knows files and rustls, nothing of the gateway. `config` checks
//! the files with [`load`], `lib` serves with [`ServedCert`].

use std::{
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use rustls::{
    crypto::{aws_lc_rs, CryptoProvider},
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    InconsistentKeys, ServerConfig,
};

/// Why a certificate and key cannot be served; the message names the key and the file,
/// never the key's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`tls.cert_file` {0}")]
    Cert(String),
    #[error("`tls.key_file` {0}")]
    Key(String),
}

impl TlsError {
    /// The configuration key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Cert(_) => "tls.cert_file",
            Self::Key(_) => "tls.key_file",
        }
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &str {
        match self {
            Self::Cert(problem) | Self::Key(problem) => problem,
        }
    }
}

fn provider() -> CryptoProvider {
    aws_lc_rs::default_provider()
}

/// Reads `cert_file` (the server's certificate first, then any intermediates) and `key_file`
/// (PKCS#8, PKCS#1 or SEC1), and checks that the key is the first certificate's.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |path: &Path, error: fn(String) -> TlsError| {
        std::fs::read(path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert_file, TlsError::Cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("{} is not PEM: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(format!(
            "{} holds no PEM certificate",
            cert_file.display()
        )));
    }
    // The PEM parser's messages may quote the file; for a private key, none is repeated.
    let key = PrivateKeyDer::from_pem_slice(&read(key_file, TlsError::Key)?)
        .map_err(|_| TlsError::Key(format!("{} holds no PEM private key", key_file.display())))?;
    let key = provider().key_provider.load_private_key(key).map_err(|_| {
        TlsError::Key(format!(
            "{} is not a supported private key (RSA, ECDSA or Ed25519)",
            key_file.display()
        ))
    })?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Key(format!(
                "{} does not match the certificate in {}",
                key_file.display(),
                cert_file.display()
            )))
        }
        Err(e) => {
            return Err(TlsError::Cert(format!(
                "{}: the first certificate does not parse: {e}",
                cert_file.display()
            )))
        }
    }
    Ok(Arc::new(certified))
}

/// The certificate the listener serves, from its two files; [`ServedCert::reload`] swaps in
/// what they hold now. A handshake under way keeps the pair it started with.
#[derive(Debug)]
pub struct ServedCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServedCert {
    /// Loads the pair (see [`load`]).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(load(cert_file, key_file)?),
        })
    }

    /// Reads the files again and serves what they hold from the next handshake on; on an
    /// error the current pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The rustls configuration serving this certificate: TLS 1.2 and 1.3 with the
    /// provider's safe defaults, no client certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, rustls::Error> {
        Ok(ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>))
    }

    /// Reloads on every SIGHUP (what certificate renewal tools send), logging the outcome.
    /// Registers the handler now, so that a SIGHUP after this returns never ends the process;
    /// the returned task runs until the runtime stops.
    #[cfg(unix)]
    pub fn reload_on_hangup(
        self: &Arc<Self>,
    ) -> std::io::Result<impl std::future::Future<Output = ()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let served = Arc::clone(self);
        Ok(async move {
            while hangups.recv().await.is_some() {
                match served.reload() {
                    Ok(()) => tracing::info!(
                        cert_file = %served.cert_file.display(),
                        "tls certificate reloaded"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "tls certificate not reloaded; the current one stays"
                    ),
                }
            }
        })
    }
}

impl ResolvesServerCert for ServedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}
