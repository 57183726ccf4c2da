//! Connections on every listener: a cap per listener, TLS with a handshake
//! deadline and explained failures, a deadline for a client's first bytes,
//! HTTP/2 keepalive, and an idle timeout. Each connection lives in its own
//! task and the accept loop never waits on a peer, so a flood of silent
//! connections fills only the slots of the listener it targets: the health
//! and admin listeners keep answering.
//!
//! The cost on a request is one increment and one decrement of the
//! connection's own in-flight counter (no lock, no allocation, no shared
//! cache line), which is what lets an idle connection be told apart from a
//! long call or an open watch stream.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tonic::codegen::BoxFuture;
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tower_service::Service;

use super::check::{CheckCall, CHECK_PATH};
use super::unary::UnaryBody;
use crate::model::duration_text;

/// Timeouts and keepalive, shared by every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// How long a client has to finish the TLS handshake, and to send its
    /// first bytes (the HTTP/2 preface) on a plaintext listener.
    pub handshake_timeout: Duration,
    /// A connection with no call in flight for this long is closed
    /// (gracefully: HTTP/2 GOAWAY). Clients reconnect when they need to.
    pub idle_timeout: Duration,
    /// HTTP/2 PING to each client after this much silence…
    pub keepalive_interval: Duration,
    /// …and the connection closes when the answer takes longer than this.
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// The most connections each listener holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub authorizer: usize,
    pub admin: usize,
    pub health: usize,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        ConnectionCaps {
            authorizer: 1024,
            admin: 256,
            health: 64,
        }
    }
}

impl ConnectionCaps {
    /// The file descriptors the listeners may hold at once (the Unix
    /// socket shares the Authorizer's cap).
    pub fn total(&self, uds: bool) -> usize {
        self.authorizer * if uds { 2 } else { 1 } + self.admin + self.health
    }
}

/// A bound socket.
pub enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A listener and how to serve it.
pub struct Listener {
    /// The flag that configures it (`--listen`…), named in logs.
    pub flag: &'static str,
    pub socket: Socket,
    pub tls: Option<Tls>,
    /// Also serve HTTP/1.1 (the approvals page).
    pub http1: bool,
    pub max_connections: usize,
}

/// TLS on a listener, and the names its failures are explained with.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// `--tls-cert PATH`.
    pub cert: Arc<str>,
    /// `--admin-client-ca PATH` or `--authorizer-client-ca PATH`.
    pub client_ca: Option<Arc<str>>,
}

/// One accepted connection's transport.
enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The transport, noting when the client first sends something.
struct Conn {
    io: Io,
    state: Arc<ConnState>,
    heard: bool,
}

#[derive(Default)]
struct ConnState {
    /// Calls started on the connection, and those not yet finished.
    started: AtomicU64,
    in_flight: AtomicUsize,
    /// The client has sent at least one byte.
    heard: AtomicBool,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = match &mut this.io {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if !this.heard && buf.filled().len() > before {
            this.heard = true;
            this.state.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Unix(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What a listener serves: its router and, on the Authorizer's listeners,
/// Envoy's `Check`, called ahead of the router: it is the hot path, and
/// the router's matching and boxing cost it about a microsecond.
#[derive(Clone)]
pub struct Services {
    pub routes: Routes,
    pub check: Option<CheckCall>,
}

impl From<Routes> for Services {
    fn from(routes: Routes) -> Services {
        Services {
            routes,
            check: None,
        }
    }
}

/// The service of one connection: the listener's services, counting calls
/// in flight, and (over TLS) the client's certificates for the
/// interceptors that read them.
#[derive(Clone)]
struct ConnService {
    services: Services,
    state: Arc<ConnState>,
    tls_info: Option<TlsConnectInfo<TcpConnectInfo>>,
}

/// A call in flight, until its response body ends or is dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl Service<http::Request<Incoming>> for ConnService {
    type Response = http::Response<Tracked>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<Incoming>>::poll_ready(&mut self.services.routes, cx)
    }

    fn call(&mut self, mut request: http::Request<Incoming>) -> TrackedFuture {
        self.state.started.fetch_add(1, Ordering::Relaxed);
        self.state.in_flight.fetch_add(1, Ordering::Acquire);
        let guard = InFlight(self.state.clone());
        if let Some(info) = &self.tls_info {
            request.extensions_mut().insert(info.clone());
        }
        let inner = match &self.services.check {
            Some(check) if request.uri().path() == CHECK_PATH => {
                Routed::Check(check.answer(request))
            }
            _ => Routed::Router(self.services.routes.call(request)),
        };
        TrackedFuture {
            inner,
            guard: Some(guard),
        }
    }
}

/// Where a call went. The router's future stays inline: boxing it would
/// add an allocation to every `Authorize`.
#[allow(clippy::large_enum_variant)]
enum Routed {
    Router(<Routes as Service<http::Request<Incoming>>>::Future),
    Check(BoxFuture<http::Response<UnaryBody>, Infallible>),
}

struct TrackedFuture {
    inner: Routed,
    guard: Option<InFlight>,
}

impl Future for TrackedFuture {
    type Output = Result<http::Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = match &mut this.inner {
            Routed::Router(future) => match Pin::new(future).poll(cx) {
                Poll::Ready(Ok(response)) => response.map(TrackedBody::Router),
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            Routed::Check(future) => match future.as_mut().poll(cx) {
                Poll::Ready(Ok(response)) => response.map(TrackedBody::Unary),
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
        };
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| Tracked {
            inner,
            _guard: guard,
        })))
    }
}

/// A response body that keeps its call counted as in flight.
struct Tracked {
    inner: TrackedBody,
    _guard: Option<InFlight>,
}

enum TrackedBody {
    Router(tonic::body::Body),
    Unary(UnaryBody),
}

impl Body for Tracked {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.inner {
            TrackedBody::Router(body) => Pin::new(body).poll_frame(cx),
            TrackedBody::Unary(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            TrackedBody::Router(body) => body.is_end_stream(),
            TrackedBody::Unary(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            TrackedBody::Router(body) => body.size_hint(),
            TrackedBody::Unary(body) => body.size_hint(),
        }
    }
}

/// Logs at most [`Throttle::PER_SECOND`] warnings a second, counting the
/// rest, so a flood cannot fill the log (only failures pass here, never a
/// served call).
#[derive(Default)]
struct Throttle {
    /// The current second, the warnings logged in it, and those suppressed.
    state: std::sync::Mutex<(u64, u32, u64)>,
}

impl Throttle {
    const PER_SECOND: u32 = 10;

    /// Whether to log now, and how many were suppressed since the last.
    fn admit(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (second, logged, suppressed) = &mut *state;
        if *second != now {
            (*second, *logged) = (now, 0);
        }
        if *logged < Self::PER_SECOND {
            *logged += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// Serves `services` on `listener` until `stop` turns true, then closes each
/// connection gracefully and waits for them.
pub async fn serve(
    listener: Listener,
    services: Services,
    settings: ConnectionSettings,
    stop: watch::Receiver<bool>,
) {
    let Listener {
        flag,
        socket,
        tls,
        http1,
        max_connections,
    } = listener;
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !http1 {
        builder = builder.http2_only();
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout);
    builder.http1().timer(TokioTimer::new());
    let full = Arc::new(Throttle::default());
    let failed_tls = Arc::new(Throttle::default());
    loop {
        let accepted = tokio::select! {
            biased;
            () = super::stopped(stop.clone()) => break,
            accepted = accept(&socket) => accepted,
        };
        let (io, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: back off instead of
                // spinning; the connections already open carry on.
                if let Some(more) = full.admit() {
                    tracing::warn!(
                        listener = flag,
                        "cannot accept a connection: {e} ({more} more since the last report)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(more) = full.admit() {
                tracing::warn!(
                    listener = flag,
                    peer = %peer,
                    "refused a connection: {max_connections} are open, the cap of this listener; raise it with {} if clients need more{}",
                    cap_flag(flag),
                    more_since(more)
                );
            }
            drop(io);
            continue;
        };
        let builder = builder.clone();
        let services = services.clone();
        let tls = tls.clone();
        let failed_tls = failed_tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let state = Arc::new(ConnState::default());
            let (io, tls_info) = match (io, &tls) {
                (Io::Tcp(tcp), Some(tls)) => {
                    let handshake = tls.acceptor.accept(tcp);
                    match tokio::time::timeout(settings.handshake_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let info = stream.connect_info();
                            (Io::Tls(Box::new(stream)), Some(info))
                        }
                        Ok(Err(e)) => {
                            if let Some(more) = failed_tls.admit() {
                                let why = super::tls::explain_server_handshake(
                                    &e,
                                    &tls.cert,
                                    tls.client_ca.as_deref(),
                                );
                                tracing::warn!(listener = flag, peer = %peer, "TLS handshake failed: {why}{}", more_since(more));
                            }
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = flag, peer = %peer, "no TLS handshake within {}; closed", duration_text(settings.handshake_timeout));
                            return;
                        }
                    }
                }
                (io, _) => (io, None),
            };
            let heard = matches!(io, Io::Tls(_));
            let conn = Conn {
                io,
                state: state.clone(),
                heard,
            };
            state.heard.store(heard, Ordering::Relaxed);
            let service = ConnService {
                services,
                state: state.clone(),
                tls_info,
            };
            let hyper_service = hyper_util::service::TowerToHyperService::new(service);
            let connection = builder.serve_connection(TokioIo::new(conn), hyper_service);
            tokio::pin!(connection);
            // The client must say something within the handshake deadline;
            // then each idle period must see a call, or one in flight.
            let first_bytes = tokio::time::sleep(settings.handshake_timeout);
            tokio::pin!(first_bytes);
            let mut waiting_first = !heard;
            // (An interval of zero would panic; the flags refuse it.)
            let mut idle =
                tokio::time::interval(settings.idle_timeout.max(Duration::from_millis(1)));
            idle.tick().await;
            let mut seen = state.started.load(Ordering::Relaxed);
            let close_by = tokio::time::sleep(Duration::from_secs(u32::MAX.into()));
            tokio::pin!(close_by);
            let (mut closing, mut stopping) = (false, false);
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(listener = flag, peer = %peer, "connection ended: {e}");
                        }
                        return;
                    }
                    () = &mut first_bytes, if waiting_first => {
                        waiting_first = false;
                        if !state.heard.load(Ordering::Relaxed) {
                            tracing::debug!(listener = flag, peer = %peer, "nothing received within {}; closed", duration_text(settings.handshake_timeout));
                            return;
                        }
                    }
                    _ = idle.tick(), if !closing => {
                        let started = state.started.load(Ordering::Relaxed);
                        if started == seen && state.in_flight.load(Ordering::Acquire) == 0 {
                            tracing::debug!(listener = flag, peer = %peer, "no call for {}; closing", duration_text(settings.idle_timeout));
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                            close_by.as_mut().reset(tokio::time::Instant::now() + settings.handshake_timeout);
                        }
                        seen = started;
                    }
                    () = super::stopped(stop.clone()), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = &mut close_by, if closing => return,
                }
            }
        });
    }
    // Stopped: wait until every connection has closed (each holds a slot).
    let _ = slots.acquire_many(max_connections as u32).await;
}

/// Who connected: an address, or a Unix socket peer.
#[derive(Debug, Clone, Copy)]
enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix => f.write_str("unix socket"),
        }
    }
}

async fn accept(socket: &Socket) -> io::Result<(Io, Peer)> {
    match socket {
        Socket::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Io::Tcp(stream), Peer::Tcp(peer)))
        }
        Socket::Unix(l) => {
            let (stream, _) = l.accept().await?;
            Ok((Io::Unix(stream), Peer::Unix))
        }
    }
}

/// How many like warnings were left out since the last one logged.
fn more_since(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more since the last report)")
    }
}

/// The flag that sets a listener's connection cap.
pub fn cap_flag(listener_flag: &str) -> &'static str {
    match listener_flag {
        "--admin-listen" => "--max-admin-connections",
        "--health-listen" => "--max-health-connections",
        _ => "--max-connections",
    }
}
