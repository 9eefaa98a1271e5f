//! One pipelined connection: a writer task sends frames as callers queue
//! them, a reader task matches replies to callers by request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::io;
use std::time::Duration;

use monotable_proto::frame::{
    client_handshake, decode_payload, encode_frame, read_frame_keeping, FrameError,
};
use monotable_proto::limits::FRAME_SIZE_MAX_BYTES;
use monotable_proto::{Command, ErrorInfo, Password, Reply, Request, Response, ServerHello};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::error::Error;
use crate::options::Options;

type Waiter = oneshot::Sender<Result<Reply, Error>>;

/// Callers waiting for replies, keyed by request id.
struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set once the connection failed; later requests fail at once.
    closed: Option<Error>,
}

pub(crate) struct Connection {
    /// Frames to send, consumed by the writer task. Unbounded because the
    /// server bounds what is in flight: callers wait for replies, and the
    /// server stops reading past its per-connection limit.
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// A std mutex: held for a map insert or remove, never across an await.
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    pub(crate) hello: ServerHello,
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // Every critical section completes its map edit; a poisoned lock is
    // still consistent.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connection {
    /// Connects, performs the handshake and, with a password, authenticates;
    /// each step within its timeout of `options`.
    pub(crate) async fn open(
        addr: impl ToSocketAddrs,
        options: &Options,
    ) -> Result<Connection, Error> {
        let mut stream = match timeout(options.connect_timeout, TcpStream::connect(addr)).await {
            Ok(connected) => connected?,
            Err(_) => {
                return Err(Error::from(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {} ms", options.connect_timeout.as_millis()),
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let hello = handshake(&mut stream, options.handshake_timeout).await?;
        let (reader, writer) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(Pending { waiters: HashMap::new(), closed: None }));
        tokio::spawn(write_frames(writer, rx, pending.clone()));
        tokio::spawn(read_replies(reader, pending.clone()));
        let conn = Connection { tx, pending, next_id: AtomicU64::new(1), hello };
        if let Some(password) = &options.password {
            conn.authenticate(password, options.handshake_timeout).await?;
        }
        Ok(conn)
    }

    async fn authenticate(&self, password: &[u8], limit: Duration) -> Result<(), Error> {
        let auth = Command::Auth { password: Password::new(password) };
        match timeout(limit, self.call(auth)).await {
            Ok(Ok(Reply::Ok)) => Ok(()),
            Ok(Ok(other)) => Err(Error::Protocol(format!("unexpected reply {other:?} to Auth"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout(format!(
                "the node did not answer the password within {} ms (it answers failed \
                 passwords from one address more and more slowly)",
                limit.as_millis()
            ))),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.pending).closed.is_some()
    }

    pub(crate) async fn call(&self, command: Command) -> Result<Reply, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        encode_frame(&Request { id, command }, &mut frame).map_err(|e| {
            Error::Invalid(ErrorInfo::new(monotable_proto::ErrorCode::FrameTooLarge, e.to_string()))
        })?;
        let (waiter, reply) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if let Some(e) = &p.closed {
                return Err(e.clone());
            }
            p.waiters.insert(id, waiter);
        }
        if self.tx.send(frame).is_err() {
            lock(&self.pending).waiters.remove(&id);
            return Err(Error::Disconnected("connection closed".into()));
        }
        reply.await.unwrap_or_else(|_| Err(Error::Disconnected("connection closed".into())))
    }
}

/// The client's half of the version handshake, within `limit`. Whatever is
/// not a Monotable answer (silence, a Redis error, a closed connection) is
/// reported as such, naming the likeliest mistake.
async fn handshake(stream: &mut TcpStream, limit: Duration) -> Result<ServerHello, Error> {
    let peer = stream.peer_addr().map_or_else(|_| "the server".to_owned(), |a| a.to_string());
    let why = match timeout(limit, client_handshake(stream)).await {
        Ok(Ok(answer)) => return answer.map_err(Error::Handshake),
        Err(_) => format!("no answer within {} ms", limit.as_millis()),
        Ok(Err(FrameError::TooLarge { .. } | FrameError::Decode(_))) => {
            "it answered in another protocol".to_owned()
        }
        Ok(Err(FrameError::Truncated)) => "it closed the connection".to_owned(),
        Ok(Err(e)) => e.to_string(),
    };
    Err(Error::NoHandshake(format!(
        "{peer} did not answer the Monotable handshake ({why}); is this the RESP port? The \
         native protocol is served at `serve --listen` (default 127.0.0.1:7070), the Redis \
         protocol at --resp-listen (default 127.0.0.1:7379)"
    )))
}

/// Fails every waiting caller and every later one with `error`.
fn close(pending: &Mutex<Pending>, error: Error) {
    let mut p = lock(pending);
    p.closed.get_or_insert(error.clone());
    for (_, waiter) in p.waiters.drain() {
        let _ = waiter.send(Err(error.clone()));
    }
}

async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Arc<Mutex<Pending>>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        buf.extend_from_slice(&frame);
        // Let other callers queue their requests first, so a burst goes out
        // in one write rather than one syscall each.
        tokio::task::yield_now().await;
        while buf.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(frame) => buf.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if let Err(e) = writer.write_all(&buf).await {
            close(&pending, Error::Disconnected(format!("write failed: {e}")));
            return;
        }
        buf.clear();
    }
    let _ = writer.shutdown().await;
}

/// Capacity the reply buffer keeps between replies: a large reply's
/// buffer is reused by the next (segment reads come 1 MiB at a time).
const REPLY_BUFFER_KEPT_BYTES: usize = 4 * 1024 * 1024;

async fn read_replies(reader: OwnedReadHalf, pending: Arc<Mutex<Pending>>) {
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::new();
    loop {
        match read_frame_keeping(
            &mut reader,
            &mut buf,
            FRAME_SIZE_MAX_BYTES,
            REPLY_BUFFER_KEPT_BYTES,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                return close(&pending, Error::Disconnected("server closed the connection".into()))
            }
            Err(e) => return close(&pending, Error::Disconnected(e.to_string())),
        }
        let response: Response = match decode_payload(&buf) {
            Ok(r) => r,
            Err(e) => return close(&pending, Error::Protocol(format!("undecodable reply: {e}"))),
        };
        if response.id == 0 {
            // A connection-level error: the server closes after sending it.
            let error = match response.result {
                Err(info) => Error::Server(info),
                Ok(_) => Error::Protocol("reply without a request id".into()),
            };
            return close(&pending, error);
        }
        let waiter = lock(&pending).waiters.remove(&response.id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(response.result.map_err(Error::Server));
        }
    }
}
