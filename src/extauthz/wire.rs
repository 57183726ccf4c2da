//! The parts of Envoy's `CheckRequest` that rampart reads, and the tonic
//! service that decodes them.
//!
//! Envoy sends every request header, the peers' addresses, labels and
//! certificates, and the body; rampart reads the method, the path, a few
//! headers, the body of batches and deployments, and the identity source.
//! Decoding the whole `envoy.service.auth.v3.CheckRequest` built a hash map
//! of owned strings per call; these messages share the wire format (same
//! field numbers and types: a `map<string, string>` is a repeated entry of
//! key 1 and value 2, and `string` and `bytes` are both length-delimited)
//! but skip what rampart ignores, and borrow headers and bodies from the
//! received buffer instead of copying them. The answer is Envoy's own
//! `CheckResponse`.

use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use prost::bytes::Bytes;
use tonic::body::Body;
use tonic::codegen::{http, Body as HttpBody, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`: the source peer (for mTLS),
/// the request, and the dynamic metadata (for `jwt_authn`'s payload).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    #[prost(message, optional, tag = "11")]
    pub metadata_context: Option<Metadata>,
}

/// `AttributeContext.Peer`: only its authenticated principal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(string, tag = "4")]
    pub principal: String,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`, with headers in the order sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub method: String,
    /// `map<string, string> headers`, entries as they came.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Header>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(int64, tag = "9")]
    pub size: i64,
    /// A `string` on the wire; read as bytes, as the JSON parser that
    /// reads it checks UTF-8 itself.
    #[prost(bytes = "bytes", tag = "11")]
    pub body: Bytes,
    #[prost(bytes = "bytes", tag = "12")]
    pub raw_body: Bytes,
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of `HttpRequest.headers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.config.core.v3.HeaderMap` (Envoy's `encode_raw_headers`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

impl HttpRequest {
    /// A header's value, from whichever field Envoy filled; names compare
    /// case-insensitively. As when the map is decoded, the last entry of a
    /// name counts. A value that is not UTF-8 is no value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.as_bytes();
        if let Some(h) = self
            .headers
            .iter()
            .rev()
            .find(|h| h.key.eq_ignore_ascii_case(name))
        {
            return std::str::from_utf8(&h.value).ok();
        }
        let map = self.header_map.as_ref()?;
        let h = map
            .headers
            .iter()
            .rev()
            .find(|h| h.key.eq_ignore_ascii_case(name))?;
        let value = if h.value.is_empty() {
            &h.raw_value
        } else {
            &h.value
        };
        std::str::from_utf8(value).ok()
    }

    /// Adds a header (tests and benchmarks build requests with it).
    pub fn with_header(mut self, name: &str, value: &str) -> HttpRequest {
        self.headers.push(Header {
            key: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        });
        self
    }
}

/// What answers a decoded check.
pub trait Check: Send + Sync + 'static {
    fn check(
        &self,
        request: CheckRequest,
    ) -> impl std::future::Future<Output = CheckResponse> + Send;
}

/// `envoy.service.auth.v3.Authorization` as a tonic service: decodes the
/// request as [`CheckRequest`] and answers Envoy's `CheckResponse`.
pub struct AuthorizationService<T> {
    inner: Arc<T>,
    max_decoding_message_size: usize,
}

impl<T> AuthorizationService<T> {
    pub fn new(inner: T, max_decoding_message_size: usize) -> Self {
        AuthorizationService {
            inner: Arc::new(inner),
            max_decoding_message_size,
        }
    }
}

impl<T> Clone for AuthorizationService<T> {
    fn clone(&self) -> Self {
        AuthorizationService {
            inner: self.inner.clone(),
            max_decoding_message_size: self.max_decoding_message_size,
        }
    }
}

impl<T> NamedService for AuthorizationService<T> {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

/// The path of the one method.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

struct CheckMethod<T>(Arc<T>);

impl<T: Check> UnaryService<CheckRequest> for CheckMethod<T> {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let answer = inner.check(request.into_inner()).await;
            Ok(tonic::Response::new(answer))
        })
    }
}

impl<T, B> Service<http::Request<B>> for AuthorizationService<T>
where
    T: Check,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            let status =
                tonic::Status::unimplemented(format!("{} serves only {CHECK_PATH}", Self::NAME));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = CheckMethod(self.inner.clone());
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default();
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::service::auth::v3 as full;
    use proptest::prelude::*;
    use prost::Message;

    fn full_request(
        headers: &[(String, String)],
        raw: &[(String, Vec<u8>)],
        method: &str,
        path: &str,
        body: &str,
        principal: &str,
    ) -> full::CheckRequest {
        full::CheckRequest {
            attributes: Some(full::AttributeContext {
                source: Some(full::attribute_context::Peer {
                    principal: principal.into(),
                    service: "ignored".into(),
                    ..Default::default()
                }),
                request: Some(full::attribute_context::Request {
                    http: Some(full::attribute_context::HttpRequest {
                        id: "17".into(),
                        method: method.into(),
                        headers: headers.iter().cloned().collect(),
                        path: path.into(),
                        host: "management.azure.com".into(),
                        size: body.len() as i64,
                        body: body.into(),
                        header_map: (!raw.is_empty()).then(|| core::HeaderMap {
                            headers: raw
                                .iter()
                                .map(|(k, v)| core::HeaderValue {
                                    key: k.clone(),
                                    raw_value: v.clone(),
                                    ..Default::default()
                                })
                                .collect(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: [("ignored".to_owned(), "x".to_owned())].into(),
                ..Default::default()
            }),
        }
    }

    fn lean(full: &full::CheckRequest) -> CheckRequest {
        CheckRequest::decode(Bytes::from(full.encode_to_vec())).unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        /// Whatever Envoy's full message carries, the lean one reads the
        /// same method, path, body, peer and headers from its bytes.
        #[test]
        fn reads_what_the_full_message_says(
            headers in proptest::collection::vec(("[a-zA-Z-]{1,12}", "[ -~]{0,40}"), 0..12),
            raw in proptest::collection::vec(("[a-z-]{1,8}", proptest::collection::vec(any::<u8>(), 0..16)), 0..4),
            method in "[A-Z]{0,7}",
            path in "[ -~]{0,80}",
            body in "\\PC{0,64}",
            principal in "[ -~]{0,20}",
            probe in "[a-zA-Z-]{1,12}",
        ) {
            let full = full_request(&headers, &raw, &method, &path, &body, &principal);
            let lean = lean(&full);
            let attributes = lean.attributes.unwrap_or_default();
            prop_assert_eq!(attributes.source.unwrap_or_default().principal, principal);
            let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
            let full_http = full.attributes.and_then(|a| a.request).and_then(|r| r.http).unwrap_or_default();
            prop_assert_eq!(&http.method, &method);
            prop_assert_eq!(&http.path, &path);
            prop_assert_eq!(&http.body[..], body.as_bytes());
            prop_assert_eq!(http.size, body.len() as i64);
            // The map as prost decodes it: the last entry of a key counts.
            let want = full_http
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&probe))
                .map(|(_, v)| v.as_str());
            let raw_want = full_http.header_map.as_ref().and_then(|m| {
                m.headers
                    .iter()
                    .rev()
                    .find(|h| h.key.eq_ignore_ascii_case(&probe))
                    .map(|h| String::from_utf8(h.raw_value.clone()).ok())
            });
            match want {
                Some(v) if full_http.headers.keys().filter(|k| k.eq_ignore_ascii_case(&probe)).count() == 1 => {
                    prop_assert_eq!(http.header(&probe), Some(v));
                }
                Some(_) => {} // two spellings of one name: either may come last
                None => prop_assert_eq!(http.header(&probe).map(str::to_owned), raw_want.flatten()),
            }
        }

        /// Any bytes: decoding fails or succeeds, never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = CheckRequest::decode(Bytes::from(bytes));
        }
    }

    #[test]
    fn headers_compare_names_case_insensitively_and_skip_bad_utf8() {
        let full = full_request(
            &[("Authorization".into(), "Bearer x".into())],
            &[("x-raw".into(), vec![0xff, 0xfe])],
            "GET",
            "/",
            "",
            "",
        );
        let http = lean(&full)
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        assert_eq!(http.header("authorization"), Some("Bearer x"));
        assert_eq!(http.header("AUTHORIZATION"), Some("Bearer x"));
        assert_eq!(http.header("x-raw"), None);
        assert_eq!(http.header("absent"), None);
    }

    #[test]
    fn the_body_is_borrowed_from_the_received_buffer() {
        let body = "x".repeat(4096);
        let bytes = Bytes::from(full_request(&[], &[], "POST", "/", &body, "").encode_to_vec());
        let http = CheckRequest::decode(bytes.clone())
            .ok()
            .and_then(|r| r.attributes)
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let inside = bytes.as_ptr_range();
        assert!(inside.contains(&http.body.as_ptr()), "the body was copied");
    }
}
