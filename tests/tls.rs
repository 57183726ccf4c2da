//! TLS on both listeners, and mutual TLS on the admin listener with the
//! client certificate's subject mapped to a principal. Certificates are
//! made in the test (rcgen).

mod common;

use std::sync::Arc;

use common::{request, RULES, SUB1};
use rampart::elevation::{Broker, Store};
use rampart::engine::Engine;
use rampart::proto::admin_client::AdminClient;
use rampart::proto::authorizer_client::AuthorizerClient;
use rampart::proto::GetSnapshotStatusRequest;
use rampart::server::{self, ServeConfig, TlsFiles, Tokens};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

struct Pki {
    ca_pem: String,
    server: (String, String),
    admin_client: (String, String),
    stranger: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rampart test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(names).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        server: leaf(vec!["localhost".into()], "rampart"),
        admin_client: leaf(vec![], "root-operator"),
        stranger: leaf(vec![], "somebody-else"),
    }
}

async fn channel(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client: Option<&(String, String)>,
) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn both_listeners_speak_tls_and_client_certificates_map_to_principals() {
    let pki = pki();
    let engine = Arc::new(Engine::new(
        rampart::snapshot::load_str(RULES, "tls").unwrap(),
    ));
    let broker = Broker::start(engine, Store::in_memory().unwrap()).unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: None,
        tokens: Tokens::from_plain(&[]).with_subjects(&[("CN=root-operator", "admin", true)]),
        insecure: false,
        audit: None,
        audit_decisions_sample: 0.0,
        uds: None,
        ext_authz: Default::default(),
        authorizer_tokens: None,
        connections: Default::default(),
        caps: Default::default(),
        tls: Some(TlsFiles {
            cert_pem: pki.server.0.clone().into_bytes(),
            key_pem: pki.server.1.clone().into_bytes(),
            admin_client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            ..Default::default()
        }),
    };
    let running = server::start(config, broker, None).await.unwrap();

    // The Authorizer over TLS.
    let mut authorizer = AuthorizerClient::new(channel(running.authorizer_addr, &pki, None).await);
    let r = authorizer
        .authorize(request(
            "mg-reader",
            "Microsoft.Compute/virtualMachines/read",
            SUB1,
            false,
        ))
        .await
        .unwrap();
    assert_eq!(r.into_inner().decision(), rampart::proto::Decision::Allow);
    // Plaintext is refused.
    let plain = Channel::from_shared(format!("http://{}", running.authorizer_addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let refused = AuthorizerClient::new(plain)
            .authorize(request(
                "mg-reader",
                "Microsoft.Compute/virtualMachines/read",
                SUB1,
                false,
            ))
            .await;
        assert!(refused.is_err());
    }

    // The admin listener: a mapped client certificate is the caller.
    let mut admin =
        AdminClient::new(channel(running.admin_addr, &pki, Some(&pki.admin_client)).await);
    let status = admin
        .get_snapshot_status(GetSnapshotStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.revision, "rules-1");
    // A valid certificate whose subject maps to nobody is not a caller.
    let mut stranger =
        AdminClient::new(channel(running.admin_addr, &pki, Some(&pki.stranger)).await);
    let refused = stranger
        .get_snapshot_status(GetSnapshotStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // Nor is a TLS client without a certificate or token.
    let mut anonymous = AdminClient::new(channel(running.admin_addr, &pki, None).await);
    assert_eq!(
        anonymous
            .get_snapshot_status(GetSnapshotStatusRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_tls_the_admin_listener_may_leave_loopback() {
    let pki = pki();
    let engine = Arc::new(Engine::new(
        rampart::snapshot::load_str(RULES, "tls").unwrap(),
    ));
    let broker = Broker::start(engine, Store::in_memory().unwrap()).unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "0.0.0.0:0".parse().unwrap(),
        health_listen: None,
        tokens: Tokens::default(),
        insecure: false,
        audit: None,
        audit_decisions_sample: 0.0,
        uds: None,
        ext_authz: Default::default(),
        authorizer_tokens: None,
        connections: Default::default(),
        caps: Default::default(),
        tls: Some(TlsFiles {
            cert_pem: pki.server.0.into_bytes(),
            key_pem: pki.server.1.into_bytes(),
            admin_client_ca_pem: None,
            ..Default::default()
        }),
    };
    let running = server::start(config, broker, None)
        .await
        .expect("TLS allows a non-loopback admin listener");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_an_authorizer_client_ca_every_authorizer_client_needs_a_certificate() {
    let pki = pki();
    let engine = Arc::new(Engine::new(
        rampart::snapshot::load_str(RULES, "tls").unwrap(),
    ));
    let broker = Broker::start(engine, Store::in_memory().unwrap()).unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: None,
        tokens: Tokens::default(),
        insecure: false,
        audit: None,
        audit_decisions_sample: 0.0,
        uds: None,
        ext_authz: Default::default(),
        authorizer_tokens: None,
        connections: Default::default(),
        caps: Default::default(),
        tls: Some(TlsFiles {
            cert_pem: pki.server.0.clone().into_bytes(),
            key_pem: pki.server.1.clone().into_bytes(),
            authorizer_client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            ..Default::default()
        }),
    };
    let running = server::start(config, broker, None).await.unwrap();
    let ask = || {
        request(
            "mg-reader",
            "Microsoft.Compute/virtualMachines/read",
            SUB1,
            false,
        )
    };
    // With a certificate from the CA: served.
    let mut authorizer = AuthorizerClient::new(
        channel(running.authorizer_addr, &pki, Some(&pki.admin_client)).await,
    );
    assert_eq!(
        authorizer
            .authorize(ask())
            .await
            .unwrap()
            .into_inner()
            .decision(),
        rampart::proto::Decision::Allow
    );
    // Without one: the handshake fails (at connect, or at the first call
    // when TLS 1.3 lets the client finish first).
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    let endpoint = Channel::from_shared(format!("https://{}", running.authorizer_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    if let Ok(anonymous) = endpoint.connect().await {
        let refused = AuthorizerClient::new(anonymous).authorize(ask()).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    // The admin listener keeps client certificates optional.
    let mut admin = AdminClient::new(channel(running.admin_addr, &pki, None).await);
    assert_eq!(
        admin
            .get_snapshot_status(GetSnapshotStatusRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tls_client_that_never_finishes_its_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    let pki = pki();
    let engine = Arc::new(Engine::new(
        rampart::snapshot::load_str(RULES, "tls").unwrap(),
    ));
    let broker = Broker::start(engine, Store::in_memory().unwrap()).unwrap();
    let connections = rampart::server::ConnectionSettings {
        handshake_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: None,
        tokens: Tokens::default(),
        insecure: false,
        audit: None,
        audit_decisions_sample: 0.0,
        uds: None,
        ext_authz: Default::default(),
        authorizer_tokens: None,
        connections,
        caps: Default::default(),
        tls: Some(TlsFiles {
            cert_pem: pki.server.0.clone().into_bytes(),
            key_pem: pki.server.1.clone().into_bytes(),
            ..Default::default()
        }),
    };
    let running = server::start(config, broker, None).await.unwrap();
    for addr in [running.authorizer_addr, running.admin_addr] {
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        // Closed by the server (EOF or reset), without a byte sent.
        let read = tokio::time::timeout(std::time::Duration::from_secs(60), silent.read(&mut byte))
            .await
            .expect("the server closes a silent TLS client");
        assert!(matches!(read, Ok(0) | Err(_)), "{addr}: {read:?}");
    }
    running.shutdown().await.unwrap();
}
