//! Unary gRPC calls framed by hand, for the one method on the hot path
//! whose request and answer rampart already reads and writes as bytes
//! (Envoy's `Check`). tonic's generic unary path buffers the request into
//! a growable buffer, decodes it through a codec, boxes the response body
//! and encodes it through another buffer; here the request's message is
//! the received frame itself when it arrives in one piece (as it does from
//! Envoy), and the answer goes out as one frame and one trailer.
//!
//! What tonic would do is kept: identity is the only encoding accepted,
//! the message limit is enforced before anything is buffered, and a
//! failure is a trailers-only response carrying `grpc-status`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http_body::{Body, Frame};
use tonic::metadata::MetadataValue;
use tonic::Status;

/// Named once: parsing a header name from text costs on every call.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");

/// The length-prefixed message header: a compression flag and a 32-bit
/// big-endian length.
const PREFIX: usize = 5;

/// Reassembles the one message of a unary request from the body's data
/// frames, whatever their sizes. Pure: fed bytes, it says what it has.
#[derive(Debug)]
pub struct Assembler {
    limit: usize,
    /// The prefix, while it is incomplete.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// The message's declared length, once the prefix is whole.
    expected: Option<usize>,
    /// The message so far, when it came in pieces.
    partial: BytesMut,
    /// The whole message.
    message: Option<Bytes>,
}

impl Assembler {
    /// Refuses a message longer than `limit` before buffering any of it.
    pub fn new(limit: usize) -> Assembler {
        Assembler {
            limit,
            prefix: [0; PREFIX],
            prefix_len: 0,
            expected: None,
            partial: BytesMut::new(),
            message: None,
        }
    }

    /// Takes the next data frame.
    pub fn push(&mut self, mut data: Bytes) -> Result<(), Status> {
        while data.has_remaining() {
            if self.message.is_some() {
                return Err(Status::internal(
                    "a unary call carries one message; the request sent a second",
                ));
            }
            let Some(expected) = self.expected else {
                let take = (PREFIX - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
                self.prefix_len += take;
                data.advance(take);
                if self.prefix_len == PREFIX {
                    self.expected = Some(self.read_prefix()?);
                    self.complete_if_empty();
                }
                continue;
            };
            let wanted = expected - self.partial.len();
            if self.partial.is_empty() && data.len() >= wanted {
                // The whole message in this frame: keep it without a copy.
                self.message = Some(data.split_to(wanted));
            } else {
                let take = wanted.min(data.len());
                if self.partial.is_empty() {
                    self.partial.reserve(expected);
                }
                self.partial.put_slice(&data[..take]);
                data.advance(take);
                if self.partial.len() == expected {
                    self.message = Some(std::mem::take(&mut self.partial).freeze());
                }
            }
        }
        Ok(())
    }

    /// The message, once the body has ended.
    pub fn finish(self) -> Result<Bytes, Status> {
        match (self.message, self.expected) {
            (Some(message), _) => Ok(message),
            (None, None) if self.prefix_len == 0 => {
                Err(Status::internal("the request carried no message"))
            }
            (None, None) => Err(Status::internal(format!(
                "the request ended inside a message's 5-byte prefix ({} bytes sent)",
                self.prefix_len
            ))),
            (None, Some(expected)) => Err(Status::internal(format!(
                "the request ended inside its message: {} of {expected} bytes sent",
                self.partial.len()
            ))),
        }
    }

    fn read_prefix(&self) -> Result<usize, Status> {
        match self.prefix[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "the message is flagged compressed, but this server accepts only uncompressed (identity) messages",
                ))
            }
            flag => {
                return Err(Status::internal(format!(
                    "invalid compression flag {flag} in the message prefix (0 or 1)"
                )))
            }
        }
        let length = u32::from_be_bytes([
            self.prefix[1],
            self.prefix[2],
            self.prefix[3],
            self.prefix[4],
        ]);
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > self.limit {
            return Err(Status::resource_exhausted(format!(
                "the message is {length} bytes, over this method's limit of {} bytes",
                self.limit
            )));
        }
        Ok(length)
    }

    fn complete_if_empty(&mut self) {
        if self.expected == Some(0) {
            self.message = Some(Bytes::new());
        }
    }
}

/// Reads the request's one message, refusing it past `limit`.
pub async fn read_message<B>(body: B, limit: usize) -> Result<Bytes, Status>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut assembler = Assembler::new(limit);
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| Status::cancelled(format!("reading the request: {e}")))?;
        // A client's trailers carry nothing a unary call reads.
        if let Ok(data) = frame.into_data() {
            assembler.push(data)?;
        }
    }
    assembler.finish()
}

/// Refuses a request whose `grpc-encoding` is other than identity, naming
/// what is accepted, as a gRPC server does.
pub fn accept_encoding(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get(GRPC_ENCODING) {
        None => Ok(()),
        Some(value) if value.as_bytes() == b"identity" => Ok(()),
        Some(value) => {
            let mut status = Status::unimplemented(format!(
                "the request is compressed with {}; this server accepts only identity",
                String::from_utf8_lossy(value.as_bytes())
            ));
            status.metadata_mut().insert(
                "grpc-accept-encoding",
                MetadataValue::from_static("identity"),
            );
            Err(status)
        }
    }
}

/// The response body of a unary call: at most one data frame, then the
/// trailers.
#[derive(Debug, Default)]
pub struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    // No exact size hint: hyper would turn it into a `content-length`
    // header, which gRPC responses (tonic's included) do not carry.
}

/// A successful call answering `message`.
pub fn respond(message: &[u8]) -> http::Response<UnaryBody> {
    let mut frame = BytesMut::with_capacity(PREFIX + message.len());
    frame.put_u8(0);
    // Answers are written by rampart and far below 4 GiB.
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    let mut response = http::Response::new(UnaryBody {
        data: Some(frame.freeze()),
        trailers: Some(trailers),
    });
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A failed call: headers only, with `grpc-status` and `grpc-message`.
pub fn fail(status: Status) -> http::Response<UnaryBody> {
    status.into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn assemble(chunks: &[&[u8]], limit: usize) -> Result<Bytes, Status> {
        let mut assembler = Assembler::new(limit);
        for chunk in chunks {
            assembler.push(Bytes::copy_from_slice(chunk))?;
        }
        assembler.finish()
    }

    #[test]
    fn a_message_in_one_frame_is_kept_without_a_copy() {
        let frame = Bytes::from(framed(0, b"hello"));
        let start = frame.as_ptr() as usize;
        let mut assembler = Assembler::new(100);
        assembler.push(frame).unwrap();
        let message = assembler.finish().unwrap();
        assert_eq!(&message[..], b"hello");
        assert_eq!(message.as_ptr() as usize, start + PREFIX);
    }

    #[test]
    fn an_empty_message_is_a_message() {
        assert_eq!(assemble(&[&framed(0, b"")], 10).unwrap().len(), 0);
    }

    #[test]
    fn no_message_is_refused() {
        let status = assemble(&[], 10).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("no message"));
        let status = assemble(&[&[0, 0]], 10).unwrap_err();
        assert!(status.message().contains("prefix"), "{status:?}");
    }

    #[test]
    fn a_message_cut_short_is_refused() {
        let whole = framed(0, b"abcdef");
        let status = assemble(&[&whole[..8]], 10).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("3 of 6 bytes"), "{status:?}");
    }

    #[test]
    fn a_second_message_is_refused() {
        let mut two = framed(0, b"one");
        two.extend(framed(0, b"two"));
        let status = assemble(&[&two], 10).unwrap_err();
        assert!(status.message().contains("second"), "{status:?}");
        // Even one stray byte after the message.
        let mut stray = framed(0, b"one");
        stray.push(0);
        assert!(assemble(&[&stray], 10).is_err());
    }

    #[test]
    fn over_the_limit_is_refused_from_the_prefix_alone() {
        // Only the prefix is sent: the refusal does not wait for the bytes.
        let prefix = [0, 0, 0, 0x10, 0];
        let mut assembler = Assembler::new(4095);
        let status = assembler.push(Bytes::copy_from_slice(&prefix)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("4096 bytes"), "{status:?}");
        assert!(status.message().contains("4095"), "{status:?}");
        // At the limit is fine.
        assert!(assemble(&[&framed(0, &[7; 16])], 16).is_ok());
    }

    #[test]
    fn compressed_and_unknown_flags_are_refused() {
        let status = assemble(&[&framed(1, b"x")], 10).unwrap_err();
        assert!(status.message().contains("compressed"), "{status:?}");
        let status = assemble(&[&framed(2, b"x")], 10).unwrap_err();
        assert!(status.message().contains("flag 2"), "{status:?}");
    }

    #[test]
    fn only_identity_encoding_is_accepted() {
        let mut headers = HeaderMap::new();
        assert!(accept_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert!(accept_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        let status = accept_encoding(&headers).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("gzip"));
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").unwrap(),
            "identity"
        );
    }

    /// The body's next frame (it never waits).
    fn next_frame(body: &mut UnaryBody) -> Option<Frame<Bytes>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(frame) => frame.map(|f| f.unwrap_or_else(|never| match never {})),
            Poll::Pending => panic!("a unary body never waits"),
        }
    }

    #[test]
    fn the_answer_is_one_frame_then_status_zero() {
        let response = respond(b"answer");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        let mut body = response.into_body();
        let data = next_frame(&mut body).unwrap().into_data().unwrap();
        assert_eq!(&data[..], &framed(0, b"answer")[..]);
        assert!(!body.is_end_stream());
        let trailers = next_frame(&mut body).unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert!(body.is_end_stream());
        assert!(next_frame(&mut body).is_none());
    }

    #[test]
    fn a_failure_is_trailers_only() {
        let response = fail(Status::invalid_argument("refused"));
        assert_eq!(response.headers()["grpc-status"], "3");
        assert_eq!(response.headers()["grpc-message"], "refused");
        assert!(response.body().is_end_stream());
    }

    proptest! {
        /// However the frame is cut into data frames, the same message
        /// comes out; cut short anywhere, it is refused.
        #[test]
        fn any_chunking_reassembles_the_message(
            message in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..310, 0..8),
            cut_short in proptest::option::of(0usize..305),
        ) {
            let whole = framed(0, &message);
            let end = cut_short.map_or(whole.len(), |n| n.min(whole.len()));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(end)).collect();
            cuts.push(0);
            cuts.push(end);
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &whole[w[0]..w[1]]).collect();
            let result = assemble(&chunks, 1000);
            if end == whole.len() {
                prop_assert_eq!(&result.unwrap()[..], &message[..]);
            } else {
                prop_assert!(result.is_err());
            }
        }
    }
}
