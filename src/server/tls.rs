//! TLS for the listeners and the CLI, with every failure explained: which
//! file is wrong, why, and what to do. The checks run before a listener
//! binds (a certificate and key swapped, a key that does not match, a
//! version-1 certificate, a file without PEM) and again when a handshake
//! fails (an unknown CA, a refused client certificate).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};

/// A PEM file as the operator named it: the flag and the path.
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    pub flag: &'a str,
    pub path: &'a str,
    pub pem: &'a [u8],
}

impl Named<'_> {
    fn name(&self) -> String {
        if self.path.is_empty() {
            self.flag.to_owned()
        } else {
            format!("{} {}", self.flag, self.path)
        }
    }

    /// The `-----BEGIN X-----` labels in the file, in order.
    fn labels(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(self.pem);
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
            .map(str::to_owned)
            .collect()
    }

    fn holds(&self, what: &str) -> bool {
        self.labels().iter().any(|l| l.ends_with(what))
    }
}

/// The certificates of a PEM file, or why there are none.
pub fn certificates(file: Named<'_>) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(file.pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM ({e})", file.name()))?;
    if certs.is_empty() {
        let found = file.labels();
        let hint = if file.holds("PRIVATE KEY") {
            "; it holds a private key: are the certificate and the key swapped?".to_owned()
        } else if found.is_empty() {
            "; expected a '-----BEGIN CERTIFICATE-----' block".to_owned()
        } else {
            format!(" (found: {})", found.join(", "))
        };
        return Err(format!("{} holds no PEM certificate{hint}", file.name()));
    }
    Ok(certs)
}

/// The private key of a PEM file, or why there is none.
pub fn private_key(file: Named<'_>) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(file.pem).map_err(|_| {
        let hint = if file.holds("CERTIFICATE") {
            "; it holds a certificate: are the certificate and the key swapped?"
        } else if file.holds("ENCRYPTED PRIVATE KEY") {
            "; it is encrypted: decrypt it (openssl pkey -in KEY -out KEY.plain)"
        } else {
            "; expected a '-----BEGIN PRIVATE KEY-----' (or RSA/EC PRIVATE KEY) block"
        };
        format!("{} holds no PEM private key{hint}", file.name())
    })
}

/// Refuses an X.509 version 1 certificate: TLS libraries (rustls, Go's,
/// browsers) reject them, so every handshake would fail later.
fn refuse_version_1(file: Named<'_>, der: &CertificateDer<'_>) -> Result<(), String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) if cert.version() == x509_parser::x509::X509Version::V1 => Err(format!(
            "{} is an X.509 version 1 certificate, which TLS refuses; {V1_FIX}",
            file.name()
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "{} holds a certificate that cannot be parsed: {e}",
            file.name()
        )),
    }
}

/// What to do about a version-1 certificate.
pub const V1_FIX: &str = "re-issue it as version 3 with extensions, e.g. `openssl x509 -req … -extfile ext.cnf` with `subjectAltName=DNS:localhost` (a server) or `extendedKeyUsage=clientAuth` (a client) in ext.cnf";

/// A certificate and its key, checked: both present, not swapped, not
/// version 1, and the key the one the certificate was issued for.
pub fn identity(
    cert: Named<'_>,
    key: Named<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if cert.holds("PRIVATE KEY") && !cert.holds("CERTIFICATE") && key.holds("CERTIFICATE") {
        return Err(format!(
            "{} holds a private key and {} a certificate: they are swapped; give the certificate to {} and the key to {}",
            cert.name(),
            key.name(),
            cert.flag,
            key.flag
        ));
    }
    let certs = certificates(cert)?;
    let key_der = private_key(key)?;
    refuse_version_1(cert, &certs[0])?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| format!("{} is not a usable private key: {e}", key.name()))?;
    match rustls::sign::CertifiedKey::new(certs.clone(), signing).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(format!(
                "{} does not match {}: the certificate was issued for another key; give the key it was issued with (compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)",
                key.name(),
                cert.name()
            ))
        }
    }
    Ok((certs, key_der))
}

/// The CAs of a PEM file as trust roots.
pub fn roots(file: Named<'_>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for der in certificates(file)? {
        roots.add(der).map_err(|e| {
            format!(
                "{} holds a certificate that is not a usable CA: {e}",
                file.name()
            )
        })?;
    }
    Ok(roots)
}

/// A server configuration: this identity, HTTP/2 (and HTTP/1.1 when
/// `http1`), and client certificates checked against `client_ca` —
/// required when `require_client_cert`, else optional.
pub fn server_config(
    cert: Named<'_>,
    key: Named<'_>,
    client_ca: Option<Named<'_>>,
    require_client_cert: bool,
    http1: bool,
) -> Result<ServerConfig, String> {
    let (certs, key_der) = identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.name()))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("{} with {}: {e}", cert.name(), key.name()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    if http1 {
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(config)
}

/// Why a handshake on a listener failed, and what to do, from the server's
/// side. `client_ca` names the CA flag and file client certificates are
/// checked against; `cert` names rampart's own certificate.
pub fn explain_server_handshake(
    error: &std::io::Error,
    cert: &str,
    client_ca: Option<&str>,
) -> String {
    let ca = client_ca.unwrap_or("the client CA");
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return format!("{error}");
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the client's certificate is not signed by {ca}: issue it from that CA, or give the listener the CA that signed it"
        ),
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if format!("{other:?}").contains("UnsupportedCertVersion") =>
        {
            format!("the client's certificate is X.509 version 1, which TLS refuses; {V1_FIX}")
        }
        rustls::Error::InvalidCertificate(e) => {
            format!("the client's certificate was refused ({e:?}); check it against {ca}")
        }
        rustls::Error::NoCertificatesPresented => format!(
            "the client presented no certificate, and this listener requires one signed by {ca}"
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "the client refused rampart's certificate ({cert}) with alert {alert:?}: give the client the CA that signed it, and connect with a name the certificate carries"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the client did not speak TLS: connect with https:// (and --ca), or to a plaintext listener".to_owned()
        }
        other => format!("{other}"),
    }
}

/// Why a client-side TLS failure happened, and what to do: `ca` names the
/// CA flag and file the client trusts, `cert` the client certificate.
/// `None` when the error is not about TLS.
pub fn explain_client_error(chain: &str, ca: &str, cert: Option<&str>) -> Option<String> {
    let has_cert = cert.is_some();
    let cert = cert.unwrap_or("a client certificate");
    if chain.contains("UnknownIssuer") {
        return Some(format!(
            "the server's certificate is not signed by {ca}; give --ca the CA that signed it"
        ));
    }
    if chain.contains("invalid peer certificate: BadSignature") {
        return Some(format!(
            "the server's certificate does not verify against {ca} (a CA of the same name but another key?); give --ca the CA that signed it"
        ));
    }
    if chain.contains("NotValidForName") {
        return Some(
            "the server's certificate does not carry the name connected to: connect with a name it carries, or give --tls-server-name".to_owned(),
        );
    }
    if chain.contains("UnsupportedCertVersion") {
        return Some(format!(
            "the server's certificate is X.509 version 1, which TLS refuses; the server must {V1_FIX}"
        ));
    }
    for alert in [
        "UnknownCA",
        "BadCertificate",
        "CertificateRequired",
        "UnsupportedCertificate",
        "DecryptError",
    ] {
        if chain.contains(&format!("alert: {alert}")) || chain.contains(&format!("({alert})")) {
            return Some(format!(
                "the server refused {cert} (alert {alert}): it is not signed by the CA the server trusts for clients (--admin-client-ca); issue it from that CA"
            ));
        }
    }
    if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        return Some(
            "the server did not answer in TLS: it is plaintext; write http:// or drop --ca and --cert".to_owned(),
        );
    }
    // With TLS 1.3 the server checks a client certificate after the client
    // considers the handshake done: the refusal shows as a connection
    // dropped on the first call, its alert often lost on the way.
    let dropped = [
        "connection closed",
        "reset",
        "broken pipe",
        "eof",
        "transport error",
    ];
    let lower = chain.to_ascii_lowercase();
    let never_connected = lower.contains("tcp connect") || lower.contains("connection refused");
    if has_cert && !never_connected && dropped.iter().any(|d| lower.contains(d)) {
        return Some(format!(
            "the server closed the connection: it refused {cert}, most likely because it is not signed by the CA the server trusts for clients (--admin-client-ca); issue it from that CA (the server's log says why)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn named<'a>(flag: &'a str, path: &'a str, pem: &'a str) -> Named<'a> {
        Named {
            flag,
            path,
            pem: pem.as_bytes(),
        }
    }

    #[test]
    fn a_matching_pair_is_accepted() {
        let (cert, key) = pair();
        identity(
            named("--tls-cert", "c.pem", &cert),
            named("--tls-key", "k.pem", &key),
        )
        .unwrap();
    }

    #[test]
    fn swapped_files_are_named_as_swapped() {
        let (cert, key) = pair();
        let e = identity(
            named("--tls-cert", "k.pem", &key),
            named("--tls-key", "c.pem", &cert),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "--tls-cert k.pem holds a private key and --tls-key c.pem a certificate: they are swapped; give the certificate to --tls-cert and the key to --tls-key"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let e = identity(
            named("--tls-cert", "c.pem", &cert),
            named("--tls-key", "k.pem", &other_key),
        )
        .unwrap_err();
        assert!(
            e.starts_with("--tls-key k.pem does not match --tls-cert c.pem: the certificate was issued for another key"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_pem_says_what_was_expected() {
        let (_, key) = pair();
        let e = identity(
            named("--tls-cert", "c.pem", "hello"),
            named("--tls-key", "k.pem", &key),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "--tls-cert c.pem holds no PEM certificate; expected a '-----BEGIN CERTIFICATE-----' block"
        );
        let (cert, _) = pair();
        let e = identity(
            named("--tls-cert", "c.pem", &cert),
            named("--tls-key", "k.pem", "x"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("--tls-key k.pem holds no PEM private key"),
            "{e}"
        );
    }

    #[test]
    fn client_errors_are_explained() {
        let text = explain_client_error(
            "transport error: invalid peer certificate: UnknownIssuer",
            "--ca ca.pem",
            None,
        )
        .unwrap();
        assert_eq!(
            text,
            "the server's certificate is not signed by --ca ca.pem; give --ca the CA that signed it"
        );
        let text = explain_client_error(
            "status: Unknown, message: \"h2 protocol error: received fatal alert: UnknownCA\"",
            "--ca ca.pem",
            Some("--cert me.pem"),
        )
        .unwrap();
        assert!(
            text.starts_with("the server refused --cert me.pem (alert UnknownCA)"),
            "{text}"
        );
        assert!(explain_client_error("connection refused", "--ca x", None).is_none());
        assert!(explain_client_error(
            "transport error: tcp connect error: Connection refused (os error 111)",
            "--ca x",
            Some("--cert c.pem")
        )
        .is_none());
        let text = explain_client_error("transport error", "--ca x", Some("--cert c.pem")).unwrap();
        assert!(
            text.starts_with("the server closed the connection: it refused --cert c.pem"),
            "{text}"
        );
    }
}
