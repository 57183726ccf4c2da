//! Envoy's `CheckRequest` as rampart reads it.
//!
//! Envoy sends every request header, the peers' addresses, labels and
//! certificates, and the body; rampart reads the method, the path, a few
//! headers, the body of batches and deployments, and the identity source.
//! Decoding the whole `envoy.service.auth.v3.CheckRequest` builds a hash map
//! of owned strings per call; instead the received buffer is kept as it
//! came and walked once for where the fields rampart reads lie
//! ([`super::protobuf`]); headers and metadata are looked up in place when
//! asked for.

use envoy_types::pb::envoy::service::auth::v3 as envoy;
use prost::bytes::Bytes;

use super::protobuf::{self, fields, Value, WireError};

/// Where a field lies in the received buffer (at most 4 GiB, refused
/// beyond).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `part`, a slice of `whole` (or empty).
    fn of(whole: &[u8], part: &[u8]) -> Span {
        if part.is_empty() {
            return Span::default();
        }
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// How many headers are remembered where they lie; a request with more is
/// walked again for each lookup.
const HEADERS_KEPT: usize = 32;

/// The headers of a request: Envoy's `headers` map, else its `header_map`.
#[derive(Debug, Clone, Copy)]
struct Headers {
    /// Name and value, with whether it came from `header_map`.
    kept: [(Span, Span, bool); HEADERS_KEPT],
    len: usize,
    /// All of them are in `kept`.
    complete: bool,
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            kept: [(Span::default(), Span::default(), false); HEADERS_KEPT],
            len: 0,
            complete: true,
        }
    }
}

impl Headers {
    fn keep(&mut self, name: Span, value: Span, raw: bool) {
        match self.kept.get_mut(self.len) {
            Some(slot) => {
                *slot = (name, value, raw);
                self.len += 1;
            }
            None => self.complete = false,
        }
    }
}

/// `AttributeContext.HttpRequest`: where its fields lie.
#[derive(Debug, Clone, Copy, Default)]
struct HttpSpans {
    /// The whole message, walked for headers when there are too many to
    /// keep.
    message: Span,
    headers: Headers,
    id: Span,
    method: Span,
    path: Span,
    size: i64,
    body: Span,
    raw_body: Span,
    /// `header_map` (Envoy's `encode_raw_headers`).
    header_map: Option<Span>,
}

/// An `envoy.service.auth.v3.CheckRequest` as received: the buffer, and
/// where in it lie the peer's principal, the HTTP request and the dynamic
/// metadata. Strings read here (id, method, path, principal) are checked to
/// be UTF-8, as a generated decoder would; headers are read when asked for.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    buf: Bytes,
    peer_principal: Span,
    http: Option<HttpSpans>,
    metadata: Option<Span>,
}

/// Sets a singular message field once: a second copy would be merged by a
/// generated decoder, which Envoy never needs, so it is refused.
fn once(slot: &mut Option<Span>, span: Span, field: &'static str) -> Result<(), WireError> {
    if slot.replace(span).is_some() {
        return Err(WireError(field));
    }
    Ok(())
}

impl CheckRequest {
    /// Finds the fields rampart reads; the buffer is kept, not copied.
    pub fn decode(buf: Bytes) -> Result<CheckRequest, WireError> {
        if u32::try_from(buf.len()).is_err() {
            return Err(WireError("a check request of 4 GiB or more"));
        }
        let whole = &buf[..];
        let mut attributes = None;
        for field in fields(whole) {
            if let (1, value) = field? {
                once(
                    &mut attributes,
                    Span::of(whole, value.bytes()?),
                    "attributes twice",
                )?;
            }
        }
        let mut request = CheckRequest::default();
        let mut source = None;
        let mut inner = None;
        if let Some(span) = attributes {
            for field in fields(&whole[span.range()]) {
                match field? {
                    (1, v) => once(&mut source, Span::of(whole, v.bytes()?), "source twice")?,
                    (4, v) => once(&mut inner, Span::of(whole, v.bytes()?), "request twice")?,
                    (11, v) => once(
                        &mut request.metadata,
                        Span::of(whole, v.bytes()?),
                        "metadata_context twice",
                    )?,
                    _ => {}
                }
            }
        }
        if let Some(span) = source {
            for field in fields(&whole[span.range()]) {
                if let (4, v) = field? {
                    request.peer_principal = Span::of(whole, v.text()?.as_bytes());
                }
            }
        }
        let mut http = None;
        if let Some(span) = inner {
            for field in fields(&whole[span.range()]) {
                if let (2, v) = field? {
                    once(&mut http, Span::of(whole, v.bytes()?), "http twice")?;
                }
            }
        }
        if let Some(message) = http {
            let mut spans = HttpSpans {
                message,
                ..HttpSpans::default()
            };
            for field in fields(&whole[message.range()]) {
                let (number, value) = field?;
                let text = |v: Value<'_>| v.text().map(|t| Span::of(whole, t.as_bytes()));
                let bytes = |v: Value<'_>| v.bytes().map(|b| Span::of(whole, b));
                match number {
                    1 => spans.id = text(value)?,
                    2 => spans.method = text(value)?,
                    3 => {
                        let (name, value) = protobuf::map_entry(value.bytes()?)?;
                        let value = value.map_or(Ok(&[][..]), Value::bytes)?;
                        let (name, value) = (Span::of(whole, name), Span::of(whole, value));
                        spans.headers.keep(name, value, false);
                    }
                    4 => spans.path = text(value)?,
                    // int64: the varint's bits, as two's complement.
                    9 => spans.size = value.varint()? as i64,
                    11 => spans.body = bytes(value)?,
                    12 => spans.raw_body = bytes(value)?,
                    13 => once(&mut spans.header_map, bytes(value)?, "header_map twice")?,
                    _ => {}
                }
            }
            if let Some(map) = spans.header_map {
                for field in fields(&whole[map.range()]) {
                    if let (1, entry) = field? {
                        let (name, value) = raw_header(entry.bytes()?)?;
                        let (name, value) = (Span::of(whole, name), Span::of(whole, value));
                        spans.headers.keep(name, value, true);
                    }
                }
            }
            request.http = Some(spans);
        }
        request.buf = buf;
        Ok(request)
    }

    /// Encodes Envoy's own message and reads it back (tests, benchmarks,
    /// tools).
    pub fn from_envoy(message: &envoy::CheckRequest) -> Result<CheckRequest, WireError> {
        CheckRequest::decode(Bytes::from(prost::Message::encode_to_vec(message)))
    }

    fn text(&self, span: Span) -> &str {
        // Checked when decoded.
        std::str::from_utf8(&self.buf[span.range()]).unwrap_or_default()
    }

    /// `attributes.source.principal`: the mTLS peer's URI SAN or subject.
    pub fn peer_principal(&self) -> &str {
        self.text(self.peer_principal)
    }

    /// `attributes.request.http`, when sent.
    pub fn http(&self) -> Option<HttpRequest<'_>> {
        let spans = self.http.as_ref()?;
        Some(HttpRequest {
            request: self,
            spans,
            method: self.text(spans.method),
            path: self.text(spans.path),
        })
    }

    /// The non-empty string at `filter` → `path` in
    /// `attributes.metadata_context.filter_metadata` (a `Struct` per filter,
    /// walked through nested structs). Anything malformed on the way is no
    /// string.
    pub fn metadata_string(&self, filter: &str, path: &[String]) -> Option<&str> {
        let span = self.metadata?;
        let same = |a: &[u8], b: &[u8]| a == b;
        let mut structure =
            protobuf::map_value(&self.buf[span.range()], 1, filter.as_bytes(), same)
                .ok()??
                .bytes()
                .ok()?;
        let (last, walk) = path.split_last()?;
        for key in walk {
            let value = protobuf::map_value(structure, 1, key.as_bytes(), same).ok()??;
            structure = match kind(value.bytes().ok()?)? {
                (5, inner) => inner.bytes().ok()?,
                _ => return None,
            };
        }
        let value = protobuf::map_value(structure, 1, last.as_bytes(), same).ok()??;
        match kind(value.bytes().ok()?)? {
            (3, text) => text.text().ok().filter(|t| !t.is_empty()),
            _ => None,
        }
    }
}

/// An `envoy.config.core.v3.HeaderValue`: its name, and its `value`, else
/// its `raw_value`.
fn raw_header(entry: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value, mut raw): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    for field in fields(entry) {
        match field? {
            (1, v) => key = v.bytes()?,
            (2, v) => value = v.bytes()?,
            (3, v) => raw = v.bytes()?,
            _ => {}
        }
    }
    Ok((key, if value.is_empty() { raw } else { value }))
}

/// A `google.protobuf.Value`'s one kind; one written twice is no value.
fn kind(value: &[u8]) -> Option<(u32, Value<'_>)> {
    let mut fields = fields(value);
    let kind = fields.next()?.ok()?;
    fields.next().is_none().then_some(kind)
}

/// `AttributeContext.HttpRequest`, read in place.
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    request: &'a CheckRequest,
    spans: &'a HttpSpans,
    /// Read once: the decision path asks for them often.
    method: &'a str,
    path: &'a str,
}

impl<'a> HttpRequest<'a> {
    /// Envoy's request id.
    pub fn id(&self) -> &'a str {
        self.request.text(self.spans.id)
    }

    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The path with its query string, as the client sent it.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The body's full size as Envoy saw it (-1 or 0 when unknown).
    pub fn size(&self) -> i64 {
        self.spans.size
    }

    /// The body Envoy sent as a string (`body`).
    pub fn body(&self) -> &'a [u8] {
        &self.request.buf[self.spans.body.range()]
    }

    /// The body Envoy sent as bytes (`raw_body`, with `pack_as_bytes`).
    pub fn raw_body(&self) -> &'a [u8] {
        &self.request.buf[self.spans.raw_body.range()]
    }

    /// A header's value, from whichever field Envoy filled; names compare
    /// case-insensitively. As when the map is decoded, the last entry of a
    /// name counts. A value that is not UTF-8 is no value.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        std::str::from_utf8(self.header_bytes(name)?).ok()
    }

    /// [`Self::header`], its value as sent.
    pub fn header_bytes(&self, name: &str) -> Option<&'a [u8]> {
        let buf = &self.request.buf[..];
        let name = name.as_bytes();
        let headers = &self.spans.headers;
        let value = if headers.complete {
            let same = |(key, _, _): &&(Span, Span, bool)| {
                key.range().len() == name.len() && buf[key.range()].eq_ignore_ascii_case(name)
            };
            let kept = headers.kept[..headers.len].iter().rev();
            let (_, value, _) = kept
                .clone()
                .filter(|(_, _, raw)| !raw)
                .find(same)
                .or_else(|| kept.filter(|(_, _, raw)| *raw).find(same))?;
            &buf[value.range()]
        } else {
            self.walk_for_header(name)?
        };
        Some(value)
    }

    /// [`Self::header`] for a request with more headers than are kept.
    fn walk_for_header(&self, name: &[u8]) -> Option<&'a [u8]> {
        let buf = &self.request.buf[..];
        let same = |key: &[u8], name: &[u8]| key.eq_ignore_ascii_case(name);
        let message = &buf[self.spans.message.range()];
        // Checked to be well-formed when decoded.
        if let Ok(Some(value)) = protobuf::map_value(message, 3, name, same) {
            return value.bytes().ok();
        }
        let mut found = None;
        for field in fields(&buf[self.spans.header_map?.range()]) {
            let Ok((1, entry)) = field else { continue };
            let (key, value) = raw_header(entry.bytes().ok()?).ok()?;
            if same(key, name) {
                found = Some(value);
            }
        }
        found
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
        CheckRequest::from_envoy(full).unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        /// Whatever Envoy's full message carries, the lean one reads the
        /// same method, path, body, peer and headers from its bytes.
        #[test]
        fn reads_what_the_full_message_says(
            // Past HEADERS_KEPT too, where lookups walk the message.
            headers in proptest::collection::vec(("[a-zA-Z-]{1,12}", "[ -~]{0,40}"), 0..40),
            raw in proptest::collection::vec(("[a-z-]{1,8}", proptest::collection::vec(any::<u8>(), 0..16)), 0..36),
            method in "[A-Z]{0,7}",
            path in "[ -~]{0,80}",
            body in "\\PC{0,64}",
            principal in "[ -~]{0,20}",
            probe in "[a-zA-Z-]{1,12}",
        ) {
            let full = full_request(&headers, &raw, &method, &path, &body, &principal);
            let lean = lean(&full);
            prop_assert_eq!(lean.peer_principal(), principal.as_str());
            let http = lean.http().expect("an HTTP request");
            let full_http = full.attributes.and_then(|a| a.request).and_then(|r| r.http).unwrap_or_default();
            prop_assert_eq!(http.method(), method.as_str());
            prop_assert_eq!(http.path(), path.as_str());
            prop_assert_eq!(http.id(), "17");
            prop_assert_eq!(http.body(), body.as_bytes());
            prop_assert_eq!(http.size(), body.len() as i64);
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

        /// Any bytes: decoding fails or succeeds, never panics, and what
        /// decodes can be read whole.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(request) = CheckRequest::decode(Bytes::from(bytes)) {
                read_everything(&request);
            }
        }

        /// Bytes mutated from a real request: where both prost and rampart
        /// read them, they read the same strings. (rampart refuses more —
        /// a message field twice, a group — and checks less of what it
        /// never reads, such as other fields' UTF-8.)
        #[test]
        fn reads_what_prost_reads_or_refuses(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let full = full_request(
                &[("authorization".into(), "Bearer x.y.z".into())],
                &[("x-raw".into(), b"v".to_vec())],
                "GET",
                "/subscriptions/s1",
                "{}",
                "spiffe://a",
            );
            let mut bytes = prost::Message::encode_to_vec(&full);
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let ours = CheckRequest::decode(Bytes::from(bytes.clone()));
            if let Ok(ours) = &ours {
                read_everything(ours);
            }
            match full::CheckRequest::decode(&bytes[..]) {
                Err(_) => {}
                Ok(theirs) => {
                    if let Ok(ours) = ours {
                        read_everything(&ours);
                        let http = theirs.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
                        prop_assert_eq!(ours.http().map(|h| h.path().to_owned()), http.map(|h| h.path.clone()));
                        prop_assert_eq!(ours.http().map(|h| h.method().to_owned()), http.map(|h| h.method.clone()));
                        let principal = theirs.attributes.as_ref().and_then(|a| a.source.as_ref()).map(|s| s.principal.clone()).unwrap_or_default();
                        prop_assert_eq!(ours.peer_principal(), principal.as_str());
                    }
                }
            }
        }
    }

    fn read_everything(request: &CheckRequest) {
        let _ = request.peer_principal();
        let _ = request.metadata_string("f", &["a".into(), "b".into()]);
        if let Some(http) = request.http() {
            let _ = (
                http.id(),
                http.method(),
                http.path(),
                http.body(),
                http.raw_body(),
            );
            let _ = http.header("authorization");
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
        let lean = lean(&full);
        let http = lean.http().expect("an HTTP request");
        assert_eq!(http.header("authorization"), Some("Bearer x"));
        assert_eq!(http.header("AUTHORIZATION"), Some("Bearer x"));
        assert_eq!(http.header("x-raw"), None);
        assert_eq!(http.header("absent"), None);
    }

    #[test]
    fn the_body_is_borrowed_from_the_received_buffer() {
        let body = "x".repeat(4096);
        let bytes = Bytes::from(full_request(&[], &[], "POST", "/", &body, "").encode_to_vec());
        let request = CheckRequest::decode(bytes.clone()).expect("decodes");
        let http = request.http().expect("an HTTP request");
        let inside = bytes.as_ptr_range();
        assert!(
            inside.contains(&http.body().as_ptr()),
            "the body was copied"
        );
    }

    #[test]
    fn a_message_field_sent_twice_is_refused_not_merged() {
        let one = full_request(&[], &[], "GET", "/a", "", "");
        let mut bytes = prost::Message::encode_to_vec(&one);
        // CheckRequest.attributes, appended again: prost would merge.
        bytes.extend_from_slice(&prost::Message::encode_to_vec(&one));
        assert!(CheckRequest::decode(Bytes::from(bytes)).is_err());
    }

    #[test]
    fn metadata_is_walked_along_its_path() {
        use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
        let string = |s: &str| PbValue {
            kind: Some(Kind::StringValue(s.into())),
        };
        let nested = |fields: Vec<(&str, PbValue)>| Struct {
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        };
        let payload = nested(vec![
            ("oid", string("alice")),
            (
                "n",
                PbValue {
                    kind: Some(Kind::NumberValue(1.0)),
                },
            ),
            ("e", string("")),
        ]);
        let filter = nested(vec![(
            "payload",
            PbValue {
                kind: Some(Kind::StructValue(payload)),
            },
        )]);
        let mut full = full_request(&[], &[], "GET", "/", "", "");
        if let Some(a) = full.attributes.as_mut() {
            a.metadata_context = Some(core::Metadata {
                filter_metadata: [("jwt".to_owned(), filter)].into(),
                ..Default::default()
            });
        }
        let request = lean(&full);
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            request.metadata_string("jwt", &path(&["payload", "oid"])),
            Some("alice")
        );
        assert_eq!(
            request.metadata_string("jwt", &path(&["payload", "n"])),
            None,
            "not a string"
        );
        assert_eq!(
            request.metadata_string("jwt", &path(&["payload", "e"])),
            None,
            "empty"
        );
        assert_eq!(
            request.metadata_string("jwt", &path(&["payload"])),
            None,
            "a struct"
        );
        assert_eq!(request.metadata_string("jwt", &path(&["oid"])), None);
        assert_eq!(
            request.metadata_string("other", &path(&["payload", "oid"])),
            None
        );
        assert_eq!(
            request.metadata_string("jwt", &path(&["payload", "oid", "x"])),
            None
        );
    }
}
