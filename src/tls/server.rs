//! The server's certificate and key: PEM files as Let's Encrypt or
//! `openssl req` write them (a chain, then a PKCS#8, PKCS#1 or SEC1 key),
//! parsed by rustls-pki-types' own PEM reader.
//!
//! SIGHUP calls [`Acceptor::reload`]: it reads both files again and, only if
//! they make a valid pair, swaps the `ServerConfig` that new handshakes
//! start from. Sessions already running keep the config they began with
//! (each holds its own `Arc`), so nobody is disconnected by a renewal.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use super::session::Session;

/// Where new TLS sessions come from. Shared (`&self`) by the poll loop, or by
/// the threaded engine's accept thread and its signal thread.
#[derive(Debug)]
pub struct Acceptor {
    cert: PathBuf,
    key: PathBuf,
    /// The pair new handshakes use; replaced whole by a reload.
    config: RwLock<Arc<ServerConfig>>,
}

impl Acceptor {
    /// Load `cert` and `key`; every problem names its file.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: RwLock::new(config),
        })
    }

    /// Read the files again. On success new handshakes use the new pair; on
    /// failure the old pair stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// A new server-side session for a connection just accepted.
    pub fn accept(&self) -> Result<Box<Session>, rustls::Error> {
        let config = self
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Session::new(config)
    }
}

/// Both files into a config: ring only (no process-wide provider is
/// installed), TLS 1.2 and 1.3, no client certificates.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_chain(cert)?;
    let key_der = load_key(key)?;
    let rejected = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::Error| TlsError::Rejected {
            path,
            reason: describe(&e),
        }
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(rejected(cert))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(rejected(key))?;
    Ok(Arc::new(config))
}

/// rustls' words for a key that belongs to another certificate are terse.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".to_string(),
        other => other.to_string(),
    }
}

pub(crate) fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, "certificate", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if chain.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_path_buf(),
            wanted: "certificate",
        });
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "private key", e))
}

fn pem_error(path: &Path, wanted: &'static str, e: pem::Error) -> TlsError {
    let path = path.to_path_buf();
    match e {
        pem::Error::Io(e) => TlsError::Read {
            path,
            reason: e.to_string(),
        },
        pem::Error::NoItemsFound => TlsError::NoPem { path, wanted },
        other => TlsError::BadPem {
            path,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh pair in `dir` as `cert.pem` and `key.pem`.
    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn current(acceptor: &Acceptor) -> Arc<ServerConfig> {
        acceptor.config.read().unwrap().clone()
    }

    /// A reload swaps the config new sessions start from; a reload that
    /// fails (the key file damaged) says why and keeps the old one.
    #[test]
    fn reload_swaps_the_pair_only_when_the_new_one_loads() {
        let dir = std::env::temp_dir().join(format!("pollchat-acceptor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = write_pair(&dir);
        let acceptor = Acceptor::load(&cert, &key).unwrap();
        let first = current(&acceptor);

        write_pair(&dir);
        acceptor.reload().unwrap();
        let second = current(&acceptor);
        assert!(
            !Arc::ptr_eq(&first, &second),
            "the reload kept the old config"
        );

        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnot base64!\n").unwrap();
        let err = acceptor.reload().unwrap_err().to_string();
        assert!(err.contains(&key.display().to_string()), "{err}");
        assert!(
            Arc::ptr_eq(&second, &current(&acceptor)),
            "a failed reload replaced the pair"
        );
        assert!(acceptor.accept().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
