//! TLS to the state database, with libpq's `sslmode` meanings over rustls:
//! `disable` (plain), `prefer` and `require` (encrypted; the certificate
//! is checked only when a CA is given, as libpq does), `verify-ca` (the
//! chain, not the name) and `verify-full` (the chain and the host name).
//! Without a CA (`sslrootcert` or `--state-db-ca`) the verifying modes
//! trust the public web roots, as managed PostgreSQL services use them.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Result<TlsMode, String> {
        Ok(match text {
            "disable" | "allow" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(format!(
                    "--state-db sslmode '{other}' is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }
}

/// How connections to the database are made.
#[derive(Clone)]
pub enum DbTls {
    Off,
    Rustls(MakeRustlsConnect, SslMode),
}

impl DbTls {
    /// The connector for `mode`, trusting `ca_pem` (or the web roots).
    pub fn new(mode: TlsMode, ca_pem: Option<&[u8]>) -> Result<DbTls, String> {
        if mode == TlsMode::Disable {
            return Ok(DbTls::Off);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                let mut n = 0;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|e| format!("--state-db-ca: not PEM certificates ({e})"))?;
                    roots.add(cert).map_err(|e| {
                        format!("--state-db-ca: a certificate is not usable as a CA ({e})")
                    })?;
                    n += 1;
                }
                if n == 0 {
                    return Err("--state-db-ca holds no PEM certificate".into());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let roots = Arc::new(roots);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("--state-db: cannot build the certificate check ({e})"))?;
        let check = match (mode, ca_pem.is_some()) {
            (TlsMode::VerifyFull, _) => Check::Full,
            (TlsMode::VerifyCa, _) | (TlsMode::Prefer | TlsMode::Require, true) => Check::Chain,
            _ => Check::Encrypt,
        };
        let verifier = Arc::new(Verifier {
            webpki,
            check,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("--state-db: TLS ({e})"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let ssl = if mode == TlsMode::Prefer {
            SslMode::Prefer
        } else {
            SslMode::Require
        };
        Ok(DbTls::Rustls(MakeRustlsConnect::new(config), ssl))
    }

    /// What tokio-postgres is told: whether TLS is required.
    pub fn ssl_mode(&self) -> SslMode {
        match self {
            DbTls::Off => SslMode::Disable,
            DbTls::Rustls(_, mode) => *mode,
        }
    }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing but the handshake's own signature: encrypted, not
    /// authenticated (`require` without a CA, as libpq).
    Encrypt,
    /// The chain to a trusted CA, any name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    check: Check,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::Encrypt {
            return Ok(ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or
/// `key=value` form): what is left for tokio-postgres, the mode (libpq's
/// default, `prefer`, when absent) and the CA file named.
pub fn split_tls_params(url: &str) -> Result<(String, TlsMode, Option<String>), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                mode = Some(TlsMode::parse(value)?);
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(value.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, &percent_decode(v))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            let (k, v) = token.split_once('=').unwrap_or((token, ""));
            if !take(k, v.trim_matches('\''))? {
                kept.push(token);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode.unwrap_or(TlsMode::Prefer), root))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connection string without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let after = &url[scheme_end + 3..];
        let authority_end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..authority_end];
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            return format!(
                "{}{user}{hidden}@{host}{}",
                &url[..scheme_end + 3],
                &after[authority_end..]
            );
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|t| {
            if t.starts_with("password=") {
                "password=***"
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u:p@db:5432/rampart?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest, "postgres://u:p@db:5432/rampart?application_name=x");
        assert_eq!(mode, TlsMode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));

        let (rest, mode, root) =
            split_tls_params("postgres://u@db/rampart").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://u@db/rampart", TlsMode::Prefer, None)
        );

        let (rest, mode, _) = split_tls_params("host=db user=u sslmode=require dbname=r")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (rest.as_str(), mode),
            ("host=db user=u dbname=r", TlsMode::Require)
        );
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        let err = split_tls_params("postgres://u@db/r?sslmode=maybe").err();
        assert!(err.is_some_and(|e| e.contains("sslmode 'maybe'")));
    }

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redact("postgres://rampart:s3cret@db:5432/r?sslmode=require"),
            "postgres://rampart:***@db:5432/r?sslmode=require"
        );
        assert_eq!(redact("postgres://rampart@db/r"), "postgres://rampart@db/r");
        assert_eq!(
            redact("host=db password=s3cret user=u"),
            "host=db password=*** user=u"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let err = DbTls::new(TlsMode::VerifyFull, Some(b"not a pem")).err();
        assert!(err.is_some_and(|e| e.contains("--state-db-ca")), "refused");
    }
}
