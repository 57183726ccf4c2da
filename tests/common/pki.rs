#![allow(dead_code)]
//! A throwaway PKI for TLS tests: a CA, a server certificate for
//! `localhost` and 127.0.0.1, and client certificates by common name.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};

/// A certificate and its key, both PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

pub struct Pki {
    pub ca_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub server: Pem,
}

impl Pki {
    pub fn new() -> Pki {
        Pki::named("rampart test CA")
    }

    /// A PKI whose CA has this common name.
    pub fn named(ca_name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let ca_pem = ca.pem();
        let mut pki = Pki {
            ca_pem,
            ca,
            server: Pem {
                cert: String::new(),
                key: String::new(),
            },
        };
        pki.server = pki.leaf(&["localhost", "127.0.0.1"], "rampart");
        pki
    }

    /// A certificate signed by the CA, for these names, with this CN.
    pub fn leaf(&self, names: &[&str], cn: &str) -> Pem {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("signed");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate with this common name.
    pub fn client(&self, cn: &str) -> Pem {
        self.leaf(&[], cn)
    }
}

/// The same certificate as X.509 version 1: its version field and its
/// extensions removed (what a plain `openssl x509 -req` makes). The
/// signature no longer matches; only the version is under test.
pub fn version_1(cert_pem: &str) -> String {
    use base64::Engine as _;
    let body: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64");
    let outer = children(content(&der));
    let tbs: Vec<u8> = children(content(outer[0]))
        .into_iter()
        .filter(|element| element[0] != 0xA0 && element[0] != 0xA3)
        .flatten()
        .copied()
        .collect();
    let mut cert = encode(0x30, &tbs);
    cert.extend_from_slice(outer[1]);
    cert.extend_from_slice(outer[2]);
    let cert = encode(0x30, &cert);
    let text = base64::engine::general_purpose::STANDARD.encode(cert);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The length of a DER element's header and of its content.
fn header(der: &[u8]) -> (usize, usize) {
    let first = der[1];
    if first < 0x80 {
        return (2, usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    let len = der[2..2 + n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    (2 + n, len)
}

fn content(der: &[u8]) -> &[u8] {
    let (h, len) = header(der);
    &der[h..h + len]
}

/// The whole elements (header and content) in a DER content.
fn children(mut der: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (h, len) = header(der);
        out.push(&der[..h + len]);
        der = &der[h + len..];
    }
    out
}

fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}
