//! TLS as `pollchat connect` and `pollchat bench` ask for it: the flags
//! `--tls`, `--ca FILE` and `--insecure`, the client configuration they make,
//! and a readable line for a handshake that failed.
//!
//! Both commands share this, so that they parse, warn and explain in the
//! same words. The TLS work itself (roots, sessions) is `crate::tls`; the
//! socket side is [`Link`](super::link::Link).
//!
//! The lean build (`--no-default-features`) keeps the flags, so a script
//! that passes `--tls` gets a clear refusal (exit 2, "built without TLS
//! support") rather than a usage error, and [`ClientTls`] there is a type
//! with no values: every TLS branch compiles away.

use std::fmt;
use std::io;
use std::path::PathBuf;

use clap::Args;

#[cfg(feature = "tls")]
pub use crate::tls::ClientTls;

/// The lean build's client configuration: none can be made.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
pub enum ClientTls {}

#[cfg(not(feature = "tls"))]
impl ClientTls {
    pub fn session(&self, _host: &str) -> Result<Box<crate::tls::Session>, String> {
        match *self {}
    }
}

/// Printed once on stderr when `--insecure` is given.
pub const INSECURE_WARNING: &str = "pollchat: warning: --insecure: the server's certificate is not \
checked; the link is encrypted, but anyone on the path could be the other end";

/// The client-side TLS flags, flattened into `connect` and `bench`.
#[derive(Clone, Debug, Default, Args)]
pub struct TlsFlags {
    /// Speak TLS to the server (its TLS port, e.g. `serve --tls-port`). The
    /// certificate is checked against the system's roots.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: also trust this CA certificate (PEM), e.g. a self-signed
    /// server's own cert.pem.
    // Not clap's `requires`: its message for a missing flag spans lines,
    // and only the first is shown. `client_tls` says it in one.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// With --tls: do not check the server's certificate at all (encrypted,
    /// but not authenticated). A warning says so.
    #[arg(long)]
    pub insecure: bool,
}

/// Why the flags could not become a client configuration. Shown as one
/// line, with exit status 2: nothing was tried yet.
#[derive(Debug)]
pub enum TlsSetupError {
    /// `--ca` or `--insecure` without `--tls`.
    NeedsTls,
    /// This binary was built without the `tls` feature.
    NotBuilt,
    /// The `--ca` file cannot be used (it names the file and the problem).
    Ca(crate::tls::TlsError),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::NeedsTls => f.write_str("--ca and --insecure go with --tls"),
            TlsSetupError::NotBuilt => {
                f.write_str("--tls: built without TLS support (rebuild with the default features)")
            }
            TlsSetupError::Ca(e) => write!(f, "--ca: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

impl TlsFlags {
    /// The configuration every connection shares, or `None` without
    /// `--tls`. Made once, before connecting: loading the system's roots
    /// and parsing certificates is the costly part, a session is cheap.
    /// Prints the `--insecure` warning.
    pub fn client_tls(&self) -> Result<Option<ClientTls>, TlsSetupError> {
        if !self.tls {
            return match self.ca.is_some() || self.insecure {
                true => Err(TlsSetupError::NeedsTls),
                false => Ok(None),
            };
        }
        self.build().map(Some)
    }

    #[cfg(feature = "tls")]
    fn build(&self) -> Result<ClientTls, TlsSetupError> {
        use crate::tls::Verify;
        let verify = match (&self.ca, self.insecure) {
            (_, true) => Verify::Insecure,
            (Some(ca), false) => Verify::AlsoTrust(ca.clone()),
            (None, false) => Verify::System,
        };
        let tls = ClientTls::new(&verify).map_err(TlsSetupError::Ca)?;
        if verify == Verify::Insecure {
            eprintln!("{INSECURE_WARNING}");
        }
        Ok(tls)
    }

    #[cfg(not(feature = "tls"))]
    fn build(&self) -> Result<ClientTls, TlsSetupError> {
        Err(TlsSetupError::NotBuilt)
    }
}

/// One line saying why a TLS handshake with `host` failed, from the error
/// a [`Pipe`](crate::tls::Pipe) read returned. The common cases get words a
/// person can act on (and the fix); anything else gets rustls' own.
pub fn explain(e: &io::Error, host: &str) -> String {
    #[cfg(feature = "tls")]
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return explain_rustls(tls, host);
    }
    let _ = host;
    format!("TLS handshake failed: {e}")
}

/// What to do about a certificate no trusted CA signed.
#[cfg(feature = "tls")]
const SIGNED_BY_NOBODY: &str =
    "no trusted CA signed it; for a self-signed server, pass its certificate with --ca FILE";

#[cfg(feature = "tls")]
fn explain_rustls(e: &rustls::Error, host: &str) -> String {
    use rustls::{CertificateError, Error};
    let why = match e {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                format!("certificate not trusted (unknown issuer): {SIGNED_BY_NOBODY}")
            }
            // A trusted CA has the issuer's name but did not make this
            // signature (a local "localhost" CA, a self-signed certificate
            // whose name some root also has): untrusted all the same.
            CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                format!("certificate not trusted (bad signature): {SIGNED_BY_NOBODY}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate name mismatch: the certificate does not name {host}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet (check this machine's clock)".to_string()
            }
            // webpki's own reason, inside `Other`: matched by name, as
            // rustls does not re-export the type. `openssl req -x509` makes
            // such certificates unless told otherwise.
            other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                "certificate rejected: it is a CA certificate (basicConstraints CA:TRUE), \
                 not a server's; make it with `-addext basicConstraints=critical,CA:FALSE`"
                    .to_string()
            }
            other => format!("certificate rejected: {other}"),
        },
        // Bytes that are no TLS record at all: most often a plain port.
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            format!("the server's reply is not TLS (is this its TLS port?): {e}")
        }
        Error::AlertReceived(alert) => format!("the server refused the handshake ({alert:?})"),
        other => other.to_string(),
    };
    format!("TLS handshake failed: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "tls")]
    #[test]
    fn common_failures_are_named() {
        use rustls::{CertificateError, Error};
        let io = |e: Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let unknown = explain(&io(CertificateError::UnknownIssuer.into()), "h");
        assert!(unknown.contains("unknown issuer") && unknown.contains("--ca"));
        let name = explain(
            &io(CertificateError::NotValidForName.into()),
            "chat.example",
        );
        assert!(name.contains("name mismatch") && name.contains("chat.example"));
        let plain = explain(
            &io(Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType,
            )),
            "h",
        );
        assert!(plain.contains("not TLS"), "{plain}");
    }

    #[test]
    fn other_errors_keep_their_text() {
        let e = io::Error::other("boom");
        assert_eq!(explain(&e, "h"), "TLS handshake failed: boom");
    }

    /// Without `--tls` nothing is built, in either build; `--ca` or
    /// `--insecure` alone is a mistake.
    #[test]
    fn no_tls_flag_no_config() {
        assert!(matches!(TlsFlags::default().client_tls(), Ok(None)));
        let insecure = TlsFlags {
            insecure: true,
            ..TlsFlags::default()
        };
        assert!(matches!(
            insecure.client_tls(),
            Err(TlsSetupError::NeedsTls)
        ));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn lean_build_refuses_tls() {
        let flags = TlsFlags {
            tls: true,
            ..TlsFlags::default()
        };
        let e = flags.client_tls().unwrap_err();
        assert!(e.to_string().contains("built without TLS support"));
    }
}
