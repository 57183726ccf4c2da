//! deploy/overlays/envoy-egress/envoy.yaml against Envoy's own schema, with
//! no Envoy binary: the YAML is read as Envoy reads it (protobuf JSON into
//! `envoy.config.bootstrap.v3.Bootstrap`, every `@type` resolved, unknown
//! fields refused), using descriptors compiled from the `.proto` files the
//! `envoy-types` crate ships. (Envoy's own `validate.rules` — required
//! fields, minimum lengths — are not applied: the protobuf compiler used here
//! does not keep those custom options.) Then what rampart relies on: ext_authz fails closed, bounds its wait, sends bodies whole,
//! and reaches the socket rampart serves in the overlay. deploy/check.sh
//! runs this test.

use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value as Json;

const ENVOY_PROTO: &str = env!("RAMPART_ENVOY_PROTO_DIR");
const INCLUDES: [&str; 6] = [
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec/proto",
    "opentelemetry-proto",
];

fn overlay(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/overlays/envoy-egress")
        .join(file)
}

fn load_yaml(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `@type` in a JSON tree.
fn type_urls(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            if let Some(Json::String(t)) = map.get("@type") {
                out.push(t.clone());
            }
            map.values().for_each(|v| type_urls(v, out));
        }
        Json::Array(list) => list.iter().for_each(|v| type_urls(v, out)),
        _ => {}
    }
}

/// The descriptors of the Bootstrap and of every type the configuration
/// names: each type's package directory is compiled whole.
fn pool_for(config: &Json) -> DescriptorPool {
    let root = Path::new(ENVOY_PROTO);
    let includes: Vec<PathBuf> = INCLUDES.iter().map(|d| root.join(d)).collect();
    let mut files = vec!["envoy/config/bootstrap/v3/bootstrap.proto".to_owned()];
    let mut urls = Vec::new();
    type_urls(config, &mut urls);
    for url in urls {
        let name = url.rsplit('/').next().unwrap_or_default();
        let package = &name[..name.rfind('.').unwrap_or(0)];
        let dir = package.replace('.', "/");
        let on_disk = root.join("data-plane-api").join(&dir);
        let entries = std::fs::read_dir(&on_disk)
            .unwrap_or_else(|e| panic!("@type {url}: no protos at {}: {e}", on_disk.display()));
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.ends_with(".proto") {
                files.push(format!("{dir}/{file}"));
            }
        }
    }
    files.sort();
    files.dedup();
    let set = protox::compile(&files, &includes)
        .unwrap_or_else(|e| panic!("compiling Envoy's protos: {e}"));
    DescriptorPool::from_file_descriptor_set(set).expect("a descriptor pool")
}

/// Parses a configuration as Envoy would (protobuf JSON, unknown fields refused).
fn parse(pool: &DescriptorPool, config: &Json) -> Result<DynamicMessage, String> {
    let bootstrap = pool
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .expect("Bootstrap");
    DynamicMessage::deserialize(bootstrap, config.clone()).map_err(|e| e.to_string())
}

fn config() -> (DescriptorPool, Json) {
    let config = load_yaml(&overlay("envoy.yaml"));
    (pool_for(&config), config)
}

/// The ext_authz filter's configuration, as JSON.
fn ext_authz(config: &Json) -> Json {
    let filters = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    filters
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        })
        .map(|f| f["typed_config"].clone())
        .expect("an ext_authz filter")
}

#[test]
fn the_envoy_configuration_parses_as_a_bootstrap() {
    let (pool, config) = config();
    parse(&pool, &config).unwrap_or_else(|e| panic!("envoy.yaml is not a valid Bootstrap:\n{e}"));
}

#[test]
fn ext_authz_fails_closed_with_a_timeout_and_whole_bodies() {
    let (_, config) = config();
    let filter = ext_authz(&config);
    assert_eq!(filter["failure_mode_allow"], false);
    assert_eq!(filter["transport_api_version"], "V3");
    assert_eq!(
        filter["grpc_service"]["envoy_grpc"]["cluster_name"],
        "rampart"
    );
    assert!(
        filter["grpc_service"]["timeout"].is_string(),
        "a bounded wait"
    );
    let body = &filter["with_request_body"];
    assert_eq!(body["allow_partial_message"], false);
    let max = body["max_request_bytes"]
        .as_u64()
        .expect("max_request_bytes");
    assert!(
        max as usize <= rampart::extauthz::nested::MAX_BODY_BYTES,
        "rampart inspects up to its limit"
    );
    // ext_authz runs before the router.
    let filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(
        filters,
        ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    );
}

#[test]
fn envoy_reaches_rampart_on_the_socket_the_overlay_serves() {
    let (_, config) = config();
    let clusters = config["static_resources"]["clusters"].as_array().unwrap();
    let rampart = clusters
        .iter()
        .find(|c| c["name"] == "rampart")
        .expect("a rampart cluster");
    let pipe = rampart["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["pipe"]["path"]
        .as_str()
        .expect("a Unix socket");
    assert!(
        rampart["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
            .get("http2_protocol_options")
            .is_some(),
        "gRPC needs HTTP/2"
    );
    let patch = load_yaml(&overlay("sidecar-envoy.yaml"));
    let init = patch["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap();
    let args: Vec<&str> = init
        .iter()
        .find(|c| c["name"] == "rampart")
        .and_then(|c| c["args"].as_array())
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    let uds = args.iter().position(|a| *a == "--uds").map(|i| args[i + 1]);
    assert_eq!(
        uds,
        Some(pipe),
        "rampart's --uds and Envoy's pipe must agree"
    );
    // ARM is reached over TLS with its name checked.
    let arm = clusters
        .iter()
        .find(|c| c["name"] == "arm")
        .expect("an arm cluster");
    assert_eq!(
        arm["transport_socket"]["typed_config"]["sni"],
        "management.azure.com"
    );
}

#[test]
fn the_check_refuses_what_envoy_would_refuse() {
    let (pool, config) = config();
    // A misspelt field.
    let mut typo = config.clone();
    let filter = &mut typo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"];
    let allow = filter
        .as_object_mut()
        .unwrap()
        .remove("failure_mode_allow")
        .unwrap();
    filter["failure_mode_alow"] = allow;
    assert!(parse(&pool, &typo).is_err(), "an unknown field is an error");
    // A wrong type.
    let mut wrong = config.clone();
    wrong["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        Json::from("https");
    assert!(parse(&pool, &wrong).is_err());
    // An enum value Envoy does not have, inside a typed_config.
    let mut enum_typo = config.clone();
    enum_typo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"]["transport_api_version"] =
        Json::from("V4");
    let error = parse(&pool, &enum_typo).err().unwrap_or_default();
    assert!(error.contains("V4"), "{error}");
    // An unknown @type.
    let mut unknown = config;
    unknown["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["@type"] =
        Json::from("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManagr");
    assert!(parse(&pool, &unknown).is_err());
}
