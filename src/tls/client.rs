//! The client side, for `pollchat connect --tls` and `pollchat bench --tls`:
//! which servers to believe.
//!
//! By default the system's roots (`/etc/ssl/certs`, read by
//! rustls-native-certs), as a browser would. `--ca FILE` trusts one more CA,
//! for a server with a self-signed certificate; `--insecure` believes any
//! certificate at all, and says so.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TlsError;
use super::server::load_chain;
use super::session::Session;

/// How a client decides the server is who it claims to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// The system's roots.
    System,
    /// The system's roots and this CA (a PEM file).
    AlsoTrust(PathBuf),
    /// Any certificate: the link is encrypted, but anyone could be on the
    /// other end.
    Insecure,
}

/// A client configuration, made once and shared by every connection.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    pub fn new(verify: &Verify) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected {
                path: PathBuf::from("(built-in provider)"),
                reason: e.to_string(),
            })?;
        let config = match verify {
            Verify::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
            Verify::System | Verify::AlsoTrust(_) => {
                let mut roots = RootCertStore::empty();
                // Unreadable or unparsable system certificates are skipped,
                // as every TLS client does.
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if let Verify::AlsoTrust(ca) = verify {
                    for cert in load_chain(ca)? {
                        roots.add(cert).map_err(|e| TlsError::Rejected {
                            path: ca.clone(),
                            reason: e.to_string(),
                        })?;
                    }
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// A session to `host` (a name or an IP address, as typed), which its
    /// certificate must name.
    pub fn session(&self, host: &str) -> Result<Box<Session>, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        Session::client(self.config.clone(), name).map_err(|e| e.to_string())
    }
}

/// `--insecure`: every certificate is accepted, but the handshake's
/// signatures are still checked (the peer holds the key it presents).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
