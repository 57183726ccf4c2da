//! Random strings in every field of `Authorize`, through the real server:
//! each answer is a decision or INVALID_ARGUMENT, never a crash, and the
//! server keeps answering.

mod common;

use std::collections::HashMap;

use common::{TestServer, SUB1};
use proptest::prelude::*;
use rampart::proto::{AuthorizeBatchRequest, AuthorizeRequest, Decision};
use tonic::Code;

/// Strings that are mostly hostile: any character, near-valid scopes and
/// operations, GUID-shaped ids, long runs.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        any::<String>(),
        "(/[a-zA-Z*.]{0,12}){0,8}/?",
        "[A-Za-z.]{1,10}(/[A-Za-z*]{0,10}){0,5}",
        "[0-9a-fA-F-]{36}",
        Just(format!("{SUB1}/resourceGroups/rg-app")),
        Just("mg-reader".to_owned()),
        "x{2000,2100}",
    ]
}

fn attributes() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(field(), field(), 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_fields_get_a_decision_or_invalid_argument(
        principal_id in field(),
        action in field(),
        scope in field(),
        data_action in any::<bool>(),
        explain in any::<bool>(),
        dry_run in any::<bool>(),
        attributes in attributes(),
    ) {
        let (rt, server) = runtime_and_server();
        rt.block_on(async {
            let req = AuthorizeRequest { principal_id, action, scope, data_action, attributes, explain, dry_run, request_digest: String::new() };
            match server.try_authorize(req.clone()).await {
                Ok(r) => prop_assert!(r.decision() != Decision::Unspecified),
                Err(status) => {
                    prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", status);
                    prop_assert!(!status.message().is_empty());
                }
            }
            let batch = AuthorizeBatchRequest { requests: vec![req.clone(), req] };
            let results = server.authorizer.clone().authorize_batch(batch).await;
            prop_assert!(results.is_ok(), "a batch never fails whole for bad items: {:?}", results.err());
            Ok(())
        })?;
    }
}

/// One runtime and one server for all cases, so clients and server
/// outlive each case.
fn runtime_and_server() -> (&'static tokio::runtime::Runtime, &'static TestServer) {
    use std::sync::OnceLock;
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    let server = SERVER.get_or_init(|| rt.block_on(TestServer::rules()));
    (rt, server)
}
