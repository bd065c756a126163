//! One client connection: TLS negotiation, bounded messages, timeouts, and the message loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use pgwire::api::auth::sasl::scram::ScramServerAuthWaitingForClientFinal;
use pgwire::api::{ClientInfo, DefaultClient, NoopHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::Framed;

use super::users::Verifier;
use super::{AUDIT_DISCONNECT, AUDIT_LOGIN, Server, connection_fields, seconds_since};
use crate::sql::{Session, Stopper};

/// `SSLRequest` and `GSSENCRequest`: a length of 8 and these codes.
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// Whether a connection is within `serve.max_connections`.
pub enum Admission {
    Admitted(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit),
    /// Over the limit: told so once it has said who it is, then closed.
    TooMany(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit),
}

/// The protocol handlers, shared by every connection; per-connection state is a [`Conn`].
pub struct Handlers {
    pub(super) server: Arc<Server>,
}

/// Where a login stands.
pub enum Auth {
    Done,
    ScramFirst { verifier: Verifier, known: bool },
    ScramFinal { waiting: Box<ScramServerAuthWaitingForClientFinal>, known: bool },
}

/// One connection's state, kept in its session extensions.
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    connected: Instant,
    /// The configured subject field of a client certificate the CA issued.
    pub certificate: Option<String>,
    pub auth: Mutex<Auth>,
    login: OnceLock<Login>,
    session: Mutex<Option<Arc<Session>>>,
    /// The catalog context of the session's warehouse version, once a statement needed it.
    pub catalog: Mutex<Option<(u64, datafusion::prelude::SessionContext)>>,
    /// Session parameters the client set (`SET`), answered by `SHOW`.
    pub parameters: Mutex<BTreeMap<String, String>>,
    pub statements: AtomicU64,
}

struct Login {
    user: String,
    role: String,
    cancel_key: Vec<u8>,
}

impl Conn {
    /// The connection a handler is called for.
    pub fn of<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Arc<Conn>> {
        client.session_extensions().get::<Arc<Conn>>().map(|c| Arc::clone(&*c)).ok_or_else(|| {
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "XX000".into(),
                "no connection state".into(),
            )))
        })
    }

    /// The id cancel requests name (PostgreSQL's process id).
    pub fn pid(&self) -> i32 {
        i32::try_from(self.id).unwrap_or(i32::MAX)
    }

    pub fn logged_in(&self, user: &str, role: &str, session: Session, key: SecretKey) {
        let cancel_key = match key {
            SecretKey::I32(k) => k.to_be_bytes().to_vec(),
            SecretKey::Bytes(b) => b.to_vec(),
        };
        let _ = self.login.set(Login { user: user.to_owned(), role: role.to_owned(), cancel_key });
        *self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(session));
    }

    pub fn user(&self) -> Option<&str> {
        self.login.get().map(|l| l.user.as_str())
    }

    pub fn role(&self) -> Option<&str> {
        self.login.get().map(|l| l.role.as_str())
    }

    /// Compared in constant time: a cancel key is a secret.
    pub fn cancel_key_matches(&self, key: &SecretKey) -> bool {
        let Some(login) = self.login.get() else { return false };
        let offered = match key {
            SecretKey::I32(k) => k.to_be_bytes().to_vec(),
            SecretKey::Bytes(b) => b.to_vec(),
        };
        offered.len() == login.cancel_key.len()
            && offered.iter().zip(&login.cancel_key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    pub fn session(&self) -> Option<Arc<Session>> {
        self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn replace_session(&self, session: Arc<Session>) {
        *self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(session);
    }

    pub fn stopper(&self) -> Option<Stopper> {
        self.session().map(|s| s.stopper())
    }
}

/// Serve one client until it leaves, times out, breaks the protocol, or the server stops.
pub async fn connection(server: Arc<Server>, tcp: tokio::net::TcpStream, peer: SocketAddr, admission: Admission) {
    let id = server.next_connection.fetch_add(1, Ordering::Relaxed);
    let serve = &server.settings.serve;
    let login_deadline = tokio::time::Instant::now() + serve.login_timeout;
    let negotiated = tokio::time::timeout_at(login_deadline, negotiate(&server, tcp)).await;
    let (io, secure, certificate) = match negotiated {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::debug!(connection = id, error = %e, "TLS negotiation failed");
            return;
        }
        Err(_) => return,
    };
    let conn = Arc::new(Conn {
        id,
        peer,
        connected: Instant::now(),
        certificate,
        auth: Mutex::new(Auth::Done),
        login: OnceLock::new(),
        session: Mutex::new(None),
        catalog: Mutex::new(None),
        parameters: Mutex::new(BTreeMap::new()),
        statements: AtomicU64::new(0),
    });
    server.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, Arc::downgrade(&conn));
    let limited = Limited::new(io, serve.max_message_bytes, serve.statement_timeout);
    let mut socket = Framed::new(limited, PgWireMessageServerCodec::new(DefaultClient::new(peer, secure)));
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    socket.session_extensions().insert(Arc::clone(&conn));
    let handlers = Arc::new(Handlers { server: Arc::clone(&server) });
    let mut shutdown = server.shutdown.subscribe();
    let too_many = matches!(admission, Admission::TooMany(_));
    let reason = serve_messages(&server, &handlers, &conn, &mut socket, too_many, login_deadline, &mut shutdown).await;
    if let Some(reason) = reason {
        let _ = socket.send(PgWireBackendMessage::ErrorResponse(reason.into())).await;
    }
    let _ = socket.close().await;
    let stalled = socket.get_ref().stalled_out();
    server.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    if let Some(user) = conn.user() {
        let mut fields = connection_fields(id, peer, Some(user));
        fields.insert("role".into(), Value::from(conn.role().unwrap_or_default()));
        fields.insert("statements".into(), Value::from(conn.statements.load(Ordering::Relaxed)));
        fields.insert("seconds".into(), Value::from(seconds_since(conn.connected)));
        if stalled {
            fields
                .insert("reason".into(), Value::from("the client took no result bytes within serve.statement_timeout"));
        }
        server.audit(AUDIT_DISCONNECT, fields);
    }
    drop(admission);
}

/// The message loop; returns the error to send before closing, if any.
async fn serve_messages<S>(
    server: &Arc<Server>,
    handlers: &Arc<Handlers>,
    conn: &Arc<Conn>,
    socket: &mut Framed<S, PgWireMessageServerCodec<super::query::Statement>>,
    too_many: bool,
    login_deadline: tokio::time::Instant,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<ErrorInfo>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let serve = &server.settings.serve;
    let fatal = |code: &str, message: String| Some(ErrorInfo::new("FATAL".into(), code.into(), message));
    loop {
        let logged_in = conn.user().is_some();
        let deadline = if logged_in { tokio::time::Instant::now() + serve.idle_timeout } else { login_deadline };
        let message = tokio::select! {
            message = socket.next() => message,
            _ = tokio::time::sleep_until(deadline) => {
                return if logged_in {
                    fatal("57P05", format!("terminating connection due to idle-session timeout (serve.idle_timeout, {} s)", serve.idle_timeout.as_secs()))
                } else {
                    fatal("08P01", "no login within serve.login_timeout".into())
                };
            }
            _ = shutdown.wait_for(|stopping| *stopping) => {
                return fatal("57P01", "terminating connection: the server is shutting down".into());
            }
        };
        let message = match message {
            None => return None,
            Some(Err(e)) => return fatal("08P01", format!("invalid message: {e}")),
            Some(Ok(PgWireFrontendMessage::Terminate(_))) => return None,
            Some(Ok(m)) => m,
        };
        if too_many && !matches!(message, PgWireFrontendMessage::CancelRequest(_)) {
            let mut fields = connection_fields(conn.id, conn.peer, None);
            fields.insert("outcome".into(), Value::from("refused"));
            fields.insert("reason".into(), Value::from("too many connections"));
            server.audit(AUDIT_LOGIN, fields);
            return fatal(
                "53300",
                format!("sorry, too many clients already (serve.max_connections = {})", serve.max_connections),
            );
        }
        let extended = message.is_extended_query();
        let cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let noop = Arc::new(NoopHandler);
        let result = process_message(
            message,
            socket,
            Arc::clone(handlers),
            Arc::clone(handlers),
            Arc::clone(handlers),
            Arc::clone(&noop),
            Arc::clone(handlers),
        )
        .await;
        if let Err(e) = result {
            if conn.user().is_none() {
                // Any error before login ends the connection: it never reaches a state that takes queries.
                let mut info = ErrorInfo::from(e);
                info.severity = "FATAL".into();
                return Some(info);
            }
            let fatal = e.is_fatal();
            if process_error(socket, e, extended).await.is_err() || fatal {
                return None;
            }
        }
        if cancel {
            return None;
        }
    }
}

/// Answer `SSLRequest`s and `GSSENCRequest`s, and start TLS where asked:
/// the stream, whether it is TLS, and the subject field of a client
/// certificate the configured CA issued.
async fn negotiate(
    server: &Server,
    mut tcp: tokio::net::TcpStream,
) -> std::io::Result<(Box<dyn Io>, bool, Option<String>)> {
    tcp.set_nodelay(true)?;
    let mut first = [0u8; 1];
    let direct_tls = tcp.peek(&mut first).await? == 1 && first[0] == 0x16;
    if !direct_tls {
        loop {
            let mut head = [0u8; 8];
            tcp.read_exact(&mut head).await?;
            let length = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let code = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            match (length, code) {
                (8, SSL_REQUEST) if server.tls.is_some() => {
                    tcp.write_all(b"S").await?;
                    break;
                }
                (8, SSL_REQUEST) | (8, GSSENC_REQUEST) => tcp.write_all(b"N").await?,
                _ => {
                    // A startup or cancel message: its first bytes are its own.
                    return Ok((Box::new(Prefixed { prefix: head.to_vec(), at: 0, inner: tcp }), false, None));
                }
            }
        }
    }
    let Some(acceptor) = &server.tls else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "TLS without a configured certificate"));
    };
    let tls = acceptor.accept(tcp).await?;
    let field = server.settings.serve.client_ca.as_ref().and_then(|_| {
        let (_, session) = tls.get_ref();
        let leaf = session.peer_certificates()?.first()?;
        super::login::certificate_field(leaf, server.settings.serve.certificate_user_field)
    });
    Ok((Box::new(tls), true, field))
}

/// A connection's byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// A stream with bytes already read from it put back in front.
struct Prefixed<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads a client's messages through, refusing any whose length field
/// claims more than `max` bytes (or less than its own four) as soon as the
/// length is read: nothing is buffered for what a message only claims.
///
/// Writes are watched too: a client that takes no bytes of what it is sent
/// for `stall` (the statement timeout) has its connection ended, since a
/// statement blocked on the socket is never polled and its own time limit
/// and cancel requests cannot reach it.
pub struct Limited {
    inner: Box<dyn Io>,
    max: u64,
    framing: Framing,
    stall: std::time::Duration,
    /// Armed while a write waits for the client.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set once the client took nothing for `stall`: every later write fails at once.
    stalled_out: bool,
}

/// Where the bytes read so far stand in the message framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// Header bytes of the current message read so far.
    header: [u8; 5],
    have: usize,
    /// 4 for the first message (startup or cancel, no type byte), 5 after.
    need: usize,
    /// Body bytes of the current message still to come.
    remaining: u64,
}

impl Framing {
    pub fn new() -> Framing {
        Framing { header: [0; 5], have: 0, need: 4, remaining: 0 }
    }

    /// Follow `bytes` through the framing; an error names a message that is too long or malformed.
    pub fn scan(&mut self, mut bytes: &[u8], max: u64) -> Result<(), String> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(bytes.len() as u64)) as usize;
                self.remaining -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have == self.need {
                let at = self.need - 4;
                let h = &self.header[at..at + 4];
                let length = i64::from(i32::from_be_bytes([h[0], h[1], h[2], h[3]]));
                if length < 4 {
                    return Err(format!("a message's length field says {length} bytes"));
                }
                let body = (length - 4) as u64;
                if body > max {
                    return Err(format!("a message of {length} bytes is longer than serve.max_message_bytes ({max})"));
                }
                self.remaining = body;
                self.have = 0;
                self.need = 5;
            }
        }
        Ok(())
    }
}

impl Default for Framing {
    fn default() -> Self {
        Self::new()
    }
}

impl Limited {
    fn new(inner: Box<dyn Io>, max: u64, stall: std::time::Duration) -> Limited {
        Limited { inner, max, framing: Framing::new(), stall, stalled: None, stalled_out: false }
    }

    /// Whether the connection ended because the client stopped taking what it was sent.
    pub fn stalled_out(&self) -> bool {
        self.stalled_out
    }

    fn stalled_error(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client took nothing it was sent for {} s (serve.statement_timeout)", self.stall.as_secs()),
        )
    }

    /// A write's outcome, failed once it has waited for the client longer than `stall`.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let stall = self.stall;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled_out = true;
            return Poll::Ready(Err(self.stalled_error()));
        }
        Poll::Pending
    }
}

impl AsyncRead for Limited {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let max = self.max;
            let fresh = &buf.filled()[before..];
            if let Err(e) = self.framing.scan(fresh, max) {
                return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
            }
        }
        polled
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.stalled_out {
            return Poll::Ready(Err(self.stalled_error()));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.stalled_out {
            return Poll::Ready(Err(self.stalled_error()));
        }
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.stalled_out {
            // Nothing more reaches this client; the socket is closed when dropped.
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn lengths_are_checked_as_soon_as_they_are_read() {
        let mut f = Framing::new();
        let mut startup = 12i32.to_be_bytes().to_vec();
        startup.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 0]);
        f.scan(&startup, 100).unwrap();
        f.scan(&message(b'Q', b"SELECT 1\0"), 100).unwrap();
        // A gigabyte claimed in a header of five bytes: refused before any body arrives.
        let mut huge = vec![b'Q'];
        huge.extend_from_slice(&(1i32 << 30).to_be_bytes());
        assert!(f.clone().scan(&huge, 100).unwrap_err().contains("longer than serve.max_message_bytes"));
        assert!(f.clone().scan(&[b'Q', 0, 0, 0, 2], 100).unwrap_err().contains("length field says 2"));
        assert!(f.clone().scan(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100).is_err());
    }

    proptest! {
        /// However the bytes are split across reads, the framing follows them.
        #[test]
        fn framing_does_not_depend_on_how_reads_split(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..8), cuts in proptest::collection::vec(1usize..20, 1..40)) {
            let mut bytes = 8i32.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0, 3, 0, 0]);
            for b in &bodies {
                bytes.extend(message(b'Q', b));
            }
            let mut whole = Framing::new();
            whole.scan(&bytes, 64).unwrap();
            let mut split = Framing::new();
            let mut rest = &bytes[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() { break }
                let n = (*c).min(rest.len());
                split.scan(&rest[..n], 64).unwrap();
                rest = &rest[n..];
            }
            prop_assert_eq!(whole, split);
        }

        /// Random bytes never panic the framing, and never let through a claimed length above the limit.
        #[test]
        fn random_bytes_are_refused_or_followed(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut f = Framing::new();
            if f.scan(&bytes, 1000).is_ok() {
                prop_assert!(f.remaining <= 1000);
            }
        }
    }
}
