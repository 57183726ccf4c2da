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
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "rampart test CA");
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
