//! The native-protocol server: accepts connections, reads framed requests,
//! runs them concurrently and writes replies as they complete.
//!
//! Each connection lives on one worker arbiter: a reader loop, one task per
//! request (at most [`IN_FLIGHT_PER_CONNECTION_MAX`] at once: past that the
//! reader stops reading, which pushes back on the client through TCP), and a
//! writer task that coalesces finished replies into few writes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monotable_proto::frame::{
    check_handshake, decode_payload, encode_frame, read_frame_within, FrameError,
};
use monotable_proto::limits::{IN_FLIGHT_PER_CONNECTION_MAX, REPLY_BUFFER_MAX_BYTES};
use monotable_proto::{Command, ErrorCode, ErrorInfo, Reply, Request, Response, ServerHello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::config::{NodeConfig, CONNECTIONS_MAX, HANDSHAKE_TIMEOUT_SECS, SHUTDOWN_GRACE_SECS};
use crate::counters::CommandStat;
use crate::error::NodeError;
use crate::node::{Node, Session};

/// Bytes read from a connection at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Replies are written in batches of at most this many bytes.
const WRITE_BATCH_MAX_BYTES: usize = 1024 * 1024;

/// What the accept loop and the connections share.
struct ServerState {
    connections: AtomicUsize,
    /// Connections accepted since the start.
    connections_received: std::sync::atomic::AtomicU64,
    /// Per command, in the order of [`Command::NAMES`].
    commands: Vec<CommandStat>,
    in_flight: AtomicUsize,
    /// Woken whenever `in_flight` or `connections` drops to zero.
    idle: Notify,
    /// The Redis endpoint's shared state, which answers the Redis commands
    /// other nodes forward here ([`Command::RespForward`]), with or without
    /// a RESP listener on this node.
    resp: std::sync::OnceLock<Arc<crate::resp::state::RespState>>,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            connections: AtomicUsize::new(0),
            connections_received: Default::default(),
            commands: Command::NAMES.iter().map(|_| CommandStat::default()).collect(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            resp: std::sync::OnceLock::new(),
        }
    }
}

impl ServerState {
    /// Adds the native protocol's figures: its commands and connections.
    fn figures(&self, e: &mut crate::metrics::Exposition) {
        e.commands("native", Command::NAMES.iter().copied().zip(&self.commands));
        let l = [("protocol", "native")];
        let open = self.connections.load(Ordering::Relaxed);
        e.gauge("connections", "Client connections open, by protocol.", None, &l, open as f64);
        let received = self.connections_received.load(Ordering::Relaxed);
        e.counter(
            "connections_received",
            "Client connections accepted, by protocol.",
            &l,
            received,
        );
    }

    /// Counts one request of the command at `index` that took `took`.
    fn count(&self, index: usize, took: Duration, failed: bool) {
        self.commands[index].record(took, failed);
    }

    fn request_done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    fn connection_done(&self) {
        if self.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn wait_zero(&self, counter: &AtomicUsize, deadline: tokio::time::Instant) {
        loop {
            let notified = self.idle.notified();
            if counter.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// Reply bytes of one connection queued for its writer and not yet
/// written. Shared by the connection's reader (which waits while it is
/// past [`REPLY_BUFFER_MAX_BYTES`]), its request tasks (which add) and its
/// writer (which subtracts once written); an atomic and a `Notify` because
/// none of them holds it across an await.
#[derive(Default)]
struct Unsent {
    bytes: AtomicUsize,
    /// Set when the writer stopped (the client is gone): nothing drains
    /// any more, and the reader must not wait.
    writer_gone: std::sync::atomic::AtomicBool,
    /// Woken when the writer has written, or stopped.
    drained: Notify,
}

impl Unsent {
    fn wrote(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    /// Waits until the queued replies are within the limit.
    async fn within_limit(&self) {
        loop {
            let drained = self.drained.notified();
            if self.bytes.load(Ordering::Acquire) <= REPLY_BUFFER_MAX_BYTES
                || self.writer_gone.load(Ordering::Acquire)
            {
                return;
            }
            drained.await;
        }
    }
}

fn server_hello() -> ServerHello {
    ServerHello {
        protocol_version: monotable_proto::limits::PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Serves until `shutdown` resolves, then shuts down gracefully: stops
/// accepting, lets in-flight requests finish, closes connections, syncs every
/// chunk. Must run inside an actix `System`.
pub async fn serve(
    config: NodeConfig,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    serve_with_listeners(config, listener, Extra::default(), shutdown).await
}

/// The listeners beside the native protocol's.
#[derive(Default)]
pub struct Extra {
    /// The Redis protocol.
    pub resp: Option<std::net::TcpListener>,
    /// HTTP: `/metrics` ([`crate::http`]).
    pub http: Option<std::net::TcpListener>,
}

/// [`serve`], also serving the Redis protocol and HTTP on the listeners
/// `extra` gives.
pub async fn serve_with_listeners(
    config: NodeConfig,
    listener: std::net::TcpListener,
    extra: Extra,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    serve_inner(config, listener, extra, shutdown, None).await
}

/// [`serve_with_listeners`], handing the node to `started` once it serves.
async fn serve_inner(
    config: NodeConfig,
    listener: std::net::TcpListener,
    Extra { resp, http }: Extra,
    shutdown: impl Future<Output = ()>,
    started: Option<std::sync::mpsc::SyncSender<Arc<Node>>>,
) -> Result<(), NodeError> {
    crate::file_modes::restrict_new_files();
    crate::file_modes::prepare_data_dir(&config.data_dir).map_err(|e| {
        NodeError::Internal(format!("cannot create {}: {e}", config.data_dir.display()))
    })?;
    let node = Node::start(config)?;
    node.complete_intents().await?;
    let to_tokio = |l: std::net::TcpListener| {
        l.set_nonblocking(true).map_err(|e| NodeError::Internal(e.to_string()))?;
        TcpListener::from_std(l).map_err(|e| NodeError::Internal(e.to_string()))
    };
    let resp = resp.map(to_tokio).transpose()?;
    let http = http.map(to_tokio).transpose()?;
    listener.set_nonblocking(true).map_err(|e| NodeError::Internal(e.to_string()))?;
    let listener =
        TcpListener::from_std(listener).map_err(|e| NodeError::Internal(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| NodeError::Internal(e.to_string()))?;
    let cluster = start_cluster(&node, addr).await?;
    let job_leftovers = node.job_leftovers();
    let state = Arc::new(ServerState::default());
    let resp_state = Arc::new(crate::resp::state::RespState::new(node.clone()));
    resp_state
        .scripts
        .functions
        .open(&node.config.data_dir.join("functions"))
        .map_err(NodeError::Internal)?;
    let _ = state.resp.set(resp_state.clone());
    let (closing_tx, closing_rx) = watch::channel(false);
    if let Some(resp) = resp {
        let resp_addr = resp.local_addr().map_err(|e| NodeError::Internal(e.to_string()))?;
        tracing::info!(resp = %resp_addr, "serving the Redis protocol");
        actix_rt::spawn(crate::resp::server::serve(resp_state.clone(), resp, closing_rx.clone()));
    }
    if let Some(http) = http {
        let http_addr = http.local_addr().map_err(|e| NodeError::Internal(e.to_string()))?;
        tracing::info!(http = %http_addr, "serving HTTP: /metrics");
        let (state, resp_state) = (state.clone(), resp_state.clone());
        let protocols: crate::http::ProtocolFigures = Arc::new(move |e| {
            state.figures(e);
            resp_state.stats.figures(e, resp_state.clients.len());
        });
        actix_rt::spawn(crate::http::serve(http, node.clone(), protocols, closing_rx.clone()));
    }
    // In the background once the Redis endpoint listens: a stopped job's
    // output may be this node's own Redis endpoint.
    actix_rt::spawn({
        let node = node.clone();
        async move { node.clean_up_jobs(job_leftovers).await }
    });
    if node.auth.is_required() {
        tracing::info!("clients of both protocols must authenticate");
    } else if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "no password set (serve --requirepass-file): anyone who can reach this address can \
             read, write and drop data"
        );
    }
    tracing::info!(%addr, data_dir = %node.config.data_dir.display(), "monotable is serving");
    if let Some(started) = started {
        let _ = started.send(node.clone());
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = resp_state.saves.shutdown.notified() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept(&node, &state, &closing_rx, stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(SHUTDOWN_GRACE_SECS);
    node.begin_shutdown();
    state.wait_zero(&state.in_flight, deadline).await;
    let _ = closing_tx.send(true);
    state.wait_zero(&state.connections, deadline).await;
    node.shutdown().await;
    cluster.shutdown().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

fn accept(
    node: &Arc<Node>,
    state: &Arc<ServerState>,
    closing: &watch::Receiver<bool>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => return tracing::warn!(%peer, error = %e, "cannot take connection"),
    };
    state.connections_received.fetch_add(1, Ordering::Relaxed);
    if state.connections.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
        state.connection_done();
        tracing::warn!(%peer, "refusing connection: {CONNECTIONS_MAX} connections open");
        let mut out = Vec::new();
        let refusal: Result<ServerHello, ErrorInfo> = Err(ErrorInfo::new(
            ErrorCode::Busy,
            format!("too many connections (limit {CONNECTIONS_MAX})"),
        ));
        if encode_frame(&refusal, &mut out).is_ok() {
            let _ = std::io::Write::write_all(&mut &std_stream, &out);
        }
        return;
    }
    let node = node.clone();
    let state = state.clone();
    let closing = closing.clone();
    node.next_worker().spawn_fn(move || {
        actix_rt::spawn(async move {
            match TcpStream::from_std(std_stream) {
                Ok(stream) => connection(node, state.clone(), closing, stream, peer).await,
                Err(e) => tracing::warn!(%peer, error = %e, "cannot register connection"),
            }
            state.connection_done();
        });
    });
}

async fn handshake(stream: &mut TcpStream) -> io::Result<bool> {
    let mut hello = [0u8; 8];
    let timeout = Duration::from_secs(HANDSHAKE_TIMEOUT_SECS);
    match tokio::time::timeout(timeout, stream.read_exact(&mut hello)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(false),
    }
    let reply = check_handshake(&hello).map(|()| server_hello());
    let mut out = Vec::new();
    encode_frame(&reply, &mut out).map_err(io::Error::other)?;
    stream.write_all(&out).await?;
    Ok(reply.is_ok())
}

async fn connection(
    node: Arc<Node>,
    state: Arc<ServerState>,
    mut closing: watch::Receiver<bool>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    match handshake(&mut stream).await {
        Ok(true) => {}
        Ok(false) => return tracing::debug!(%peer, "handshake refused or timed out"),
        Err(e) => return tracing::debug!(%peer, error = %e, "handshake failed"),
    }
    let (reader, writer) = stream.into_split();
    // Buffered so that a pipeline of small requests costs one read syscall,
    // not two per frame.
    let mut reader = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let unsent = Arc::new(Unsent::default());
    let writer = actix_rt::spawn(write_replies(writer, rx, unsent.clone()));
    let session = Arc::new(Session::new(node.clone()));
    let permits = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION_MAX));
    let mut buf = Vec::new();
    let mut authenticated = !node.auth.is_required();
    // One future for the whole connection: it resolves when the server
    // starts closing connections.
    let closed = async move {
        if !*closing.borrow_and_update() {
            let _ = closing.changed().await;
        }
    };
    tokio::pin!(closed);
    loop {
        // A client that does not read its replies is not read either.
        tokio::select! {
            biased;
            () = unsent.within_limit() => {}
            () = &mut closed => break,
        }
        let permit = tokio::select! {
            biased;
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut closed => break,
        };
        let read = tokio::select! {
            biased;
            r = read_frame_within(&mut reader, &mut buf, frame_limit(authenticated)) => r,
            () = &mut closed => break,
        };
        match read {
            Ok(true) => {}
            Ok(false) => break,
            Err(e @ FrameError::TooLarge { .. }) => {
                let message = e.to_string();
                send(&tx, &unsent, 0, Err(ErrorInfo::new(ErrorCode::FrameTooLarge, message)));
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended mid-frame");
                break;
            }
        }
        let request: Request = match decode_payload(&buf) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("undecodable request: {e}");
                send(&tx, &unsent, 0, Err(ErrorInfo::new(ErrorCode::BadRequest, message)));
                break;
            }
        };
        // Authentication runs here, in the reader, not in a task of its own:
        // the connection reads nothing more until it is decided, so one
        // connection cannot pipeline guesses, and no request read after a
        // successful one is refused.
        let request = match request.command {
            Command::Auth { password } => {
                let checked = tokio::select! {
                    biased;
                    r = authenticate(&node, peer, &password.0) => r,
                    () = &mut closed => break,
                };
                authenticated |= checked.is_ok();
                send(&tx, &unsent, request.id, checked.map(|()| Reply::Ok));
                continue;
            }
            _ if !authenticated => {
                send(&tx, &unsent, request.id, Err(no_auth()));
                continue;
            }
            _ => request,
        };
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        let node = node.clone();
        let session = session.clone();
        let state = state.clone();
        let tx = tx.clone();
        let unsent = unsent.clone();
        let (index, started) = (request.command.index(), std::time::Instant::now());
        let mut task = Box::pin(async move {
            let result = match (request.command, state.resp.get()) {
                (Command::SegmentRead { cluster, incarnation, region, offset, len }, _) => {
                    let slice = node
                        .cluster()
                        .and_then(|c| c.segment_slice(cluster, (incarnation, region), offset, len));
                    match slice {
                        Ok((file, held)) => {
                            let head = monotable_proto::frame::segment_reply_head(request.id, held);
                            queue(&tx, &unsent, Outgoing::File { head, file, offset, len: held });
                            state.count(index, started.elapsed(), false);
                            drop(permit);
                            state.request_done();
                            return;
                        }
                        Err(e) => Err(e),
                    }
                }
                (command @ Command::RespForward { .. }, Some(resp)) => {
                    crate::resp::cluster::serve_forward(resp, command).await
                }
                (Command::RespPublish { channel, message }, Some(resp)) => {
                    resp.pubsub.publish(&channel, &message);
                    Ok(monotable_proto::Reply::Ok)
                }
                (command, _) => node.execute(command, &session).await,
            };
            let result = result.map_err(|e| e.to_info());
            let took = started.elapsed();
            state.count(index, took, result.is_err());
            crate::metrics::log_if_slow(&node.config, "native", Command::NAMES[index], peer, took);
            send(&tx, &unsent, request.id, result);
            drop(permit);
            state.request_done();
        });
        // Most reads finish without waiting: run them right here, and give
        // a task of its own only to requests that wait (writes, moved
        // chunks). A future polled once with a no-op waker registers the
        // real waker when its task polls it again.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if task.as_mut().poll(&mut cx).is_pending() {
            actix_rt::spawn(task);
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The refusal of every request but `Auth` before authentication.
fn no_auth() -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::NoAuth,
        "authentication required: this node has a password (serve --requirepass); give it \
         first (the client library's Options::password, or the CLI's --password-file, \
         MONOTABLE_PASSWORD or --password)",
    )
}

/// Checks a native client's password through the node's shared, throttled
/// check.
async fn authenticate(node: &Node, peer: SocketAddr, given: &[u8]) -> Result<(), ErrorInfo> {
    if !node.auth.is_required() {
        // As Redis answers AUTH on a server without requirepass: a client
        // that expects a protected node learns that this one is open.
        return Err(ErrorInfo::new(
            ErrorCode::BadRequest,
            "this node has no password, so there is nothing to authenticate; anyone who can \
             reach it can use it (serve --requirepass or --requirepass-file sets one)",
        ));
    }
    node.auth.check(peer.ip(), given).await.map_err(|_| {
        ErrorInfo::new(
            ErrorCode::AuthFailed,
            "wrong password; failed attempts from one address are answered more and more \
             slowly",
        )
    })
}

/// The largest frame a connection may send next: small until it has
/// authenticated on a node with a password.
fn frame_limit(authenticated: bool) -> usize {
    if authenticated {
        monotable_proto::limits::FRAME_SIZE_MAX_BYTES
    } else {
        monotable_proto::limits::UNAUTHENTICATED_FRAME_SIZE_MAX_BYTES
    }
}

/// A reply on its way to the connection's writer.
enum Outgoing {
    /// A whole frame.
    Frame(Vec<u8>),
    /// A segment read's reply ([`Command::SegmentRead`]): its frame's
    /// head, then `len` bytes of `file` at `offset`, sent from the file
    /// with `sendfile` (see [`send_file`]).
    File { head: Vec<u8>, file: Arc<std::fs::File>, offset: u64, len: u32 },
}

impl Outgoing {
    /// Bytes it puts on the connection.
    fn len(&self) -> usize {
        match self {
            Outgoing::Frame(frame) => frame.len(),
            Outgoing::File { head, len, .. } => head.len() + *len as usize,
        }
    }
}

/// Queues a reply for the writer, counted as unsent until written.
fn queue(tx: &mpsc::UnboundedSender<Outgoing>, unsent: &Unsent, out: Outgoing) {
    unsent.bytes.fetch_add(out.len(), Ordering::AcqRel);
    let _ = tx.send(out);
}

/// Encodes a reply and queues it for the writer. A reply too large for a
/// frame becomes an error reply.
fn send(
    tx: &mpsc::UnboundedSender<Outgoing>,
    unsent: &Unsent,
    id: u64,
    result: Result<monotable_proto::Reply, ErrorInfo>,
) {
    let mut out = Vec::new();
    if let Err(e) = encode_frame(&Response { id, result }, &mut out) {
        let error =
            ErrorInfo::new(ErrorCode::FrameTooLarge, format!("reply not sent: {e}; ask for less"));
        out.clear();
        if encode_frame(&Response { id, result: Err(error) }, &mut out).is_err() {
            return;
        }
    }
    queue(tx, unsent, Outgoing::Frame(out));
}

async fn write_replies(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    unsent: Arc<Unsent>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    // A reply taken while batching that does not go in the batch.
    let mut next = None;
    loop {
        let out = match next.take() {
            Some(out) => out,
            None => match rx.recv().await {
                Some(out) => out,
                None => break,
            },
        };
        let frame = match out {
            Outgoing::File { head, file, offset, len } => {
                if !write_out(&mut writer, &head, &unsent).await {
                    return;
                }
                if let Err(e) = send_file(&writer, file, offset, len).await {
                    // The frame is cut: the connection cannot go on.
                    tracing::debug!(error = %e, "a segment read's reply was not sent whole");
                    unsent.writer_gone.store(true, Ordering::Release);
                    unsent.drained.notify_waiters();
                    return;
                }
                unsent.wrote(len as usize);
                continue;
            }
            Outgoing::Frame(frame) => frame,
        };
        if frame.len() >= WRITE_BATCH_MAX_BYTES {
            // A bulk reply goes out as it is, not copied into the batch.
            if !write_out(&mut writer, &frame, &unsent).await {
                return;
            }
            continue;
        }
        buf.extend_from_slice(&frame);
        // Let the requests that are ready finish first, so their replies go
        // out in this write rather than one syscall each.
        tokio::task::yield_now().await;
        while buf.len() < WRITE_BATCH_MAX_BYTES {
            match rx.try_recv() {
                Ok(Outgoing::Frame(frame)) => buf.extend_from_slice(&frame),
                Ok(file) => {
                    next = Some(file);
                    break;
                }
                Err(_) => break,
            }
        }
        if !write_out(&mut writer, &buf, &unsent).await {
            return;
        }
        buf.clear();
    }
    let _ = writer.shutdown().await;
}

/// Writes replies' bytes; `false` when the client is gone.
async fn write_out(writer: &mut OwnedWriteHalf, bytes: &[u8], unsent: &Unsent) -> bool {
    if writer.write_all(bytes).await.is_err() {
        // The remaining replies have nowhere to go. The reader must not
        // wait for them: it finds the end next.
        unsent.writer_gone.store(true, Ordering::Release);
        unsent.drained.notify_waiters();
        return false;
    }
    unsent.wrote(bytes.len());
    true
}

/// How long [`send_file`] waits for room in the socket's buffer before it
/// gives the reply up (a reader that stopped reading).
const SEND_FILE_STALL_MAX_MS: i32 = 30_000;

/// Sends `len` bytes of `file` at `offset` on the connection with
/// `sendfile(2)`: from the page cache to the socket, never through this
/// process's memory (seed 004's point: a replica's copy should cost its
/// source next to no CPU). It runs on a blocking thread, on a duplicate of
/// the socket's descriptor (so a connection dropped meanwhile never
/// leaves it writing to a reused one), waiting for room with `poll(2)`:
/// bytes not in the page cache wait for the disk there, not on the
/// connection's worker.
///
/// Errors: the file ends before `len` bytes (the region's bytes were cut
/// back by a failed write), the socket fails or stays full for
/// [`SEND_FILE_STALL_MAX_MS`]. The frame is then cut, and the caller must
/// close the connection.
async fn send_file(
    writer: &OwnedWriteHalf,
    file: Arc<std::fs::File>,
    offset: u64,
    len: u32,
) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if len == 0 {
        return Ok(());
    }
    // SAFETY: `dup` of a descriptor this connection owns; the duplicate is
    // owned (and closed) by the `OwnedFd`.
    let socket = match unsafe { libc::dup(writer.as_ref().as_raw_fd()) } {
        -1 => return Err(io::Error::last_os_error()),
        fd => unsafe { OwnedFd::from_raw_fd(fd) },
    };
    tokio::task::spawn_blocking(move || {
        let (mut at, end) = (offset, offset + u64::from(len));
        while at < end {
            let mut off = at as libc::off_t;
            let left = (end - at) as usize;
            // SAFETY: both descriptors are open for the whole call.
            let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut off, left) };
            match n {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the segment file ends at byte {at}, before byte {end}"),
                    ))
                }
                n if n > 0 => at += n as u64,
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock => {
                            let mut room = libc::pollfd {
                                fd: socket.as_raw_fd(),
                                events: libc::POLLOUT,
                                revents: 0,
                            };
                            // SAFETY: one valid pollfd.
                            match unsafe { libc::poll(&mut room, 1, SEND_FILE_STALL_MAX_MS) } {
                                0 => {
                                    return Err(io::Error::new(
                                        io::ErrorKind::TimedOut,
                                        "the reader took no bytes",
                                    ))
                                }
                                -1 => {
                                    let e = io::Error::last_os_error();
                                    if e.kind() != io::ErrorKind::Interrupted {
                                        return Err(e);
                                    }
                                }
                                _ => {}
                            }
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

/// The address other nodes reach this one at: `--advertise-addr` (a
/// `HOST:PORT` that resolves, not a wildcard address or port 0), or the
/// native listener's address `listening` (refused when it is a wildcard
/// and the node joins a cluster).
pub fn advertised_addr(
    advertise: Option<&str>,
    listening: std::net::SocketAddr,
    joins: bool,
) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    match advertise {
        Some(a) => {
            let addrs: Vec<std::net::SocketAddr> = a
                .to_socket_addrs()
                .map_err(|e| format!("--advertise-addr {a:?}: not a HOST:PORT address ({e})"))?
                .collect();
            if addrs.is_empty() || addrs.iter().any(|s| s.ip().is_unspecified() || s.port() == 0) {
                return Err(format!(
                    "--advertise-addr {a}: other nodes cannot reach a wildcard address or port 0"
                ));
            }
            Ok(a.to_owned())
        }
        None if listening.ip().is_unspecified() && joins => Err(format!(
            "--listen {listening} is a wildcard address, which other nodes cannot reach: \
             give the address they should use with --advertise-addr"
        )),
        None => Ok(listening.to_string()),
    }
}

/// Starts the node's part of the cluster: after the listener is bound, since
/// a joining node must answer the leader that adds it.
async fn start_cluster(
    node: &Arc<Node>,
    listening: std::net::SocketAddr,
) -> Result<Arc<crate::cluster::Cluster>, NodeError> {
    let advertise =
        advertised_addr(node.config.advertise.as_deref(), listening, node.config.join.is_some())
            .map_err(NodeError::Start)?;
    let config = crate::cluster::ClusterConfig {
        dir: node.config.data_dir.join("cluster"),
        advertise,
        join: node.config.join.clone(),
        password: node.config.password.as_ref().map(|p| p.expose().to_vec()),
        timing: node.config.raft_timing,
        dead_after_secs: node.config.dead_after_secs,
    };
    let cluster =
        crate::cluster::Cluster::start(config, node.catalog.identity_store(), node.syncer.clone())
            .await?;
    node.set_cluster(cluster.clone());
    node.follow_meta(cluster.clone());
    cluster.follow_placement();
    Ok(cluster)
}

/// A server running on its own thread, for tests and embedding.
pub struct ServerHandle {
    pub addr: SocketAddr,
    /// The node being served.
    pub node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), NodeError>>>,
}

impl ServerHandle {
    /// Binds `config.listen` (port 0 picks a free port) and starts serving on
    /// a new thread. Returns once the node serves.
    ///
    /// Errors: the address cannot be bound, or the node did not start (its
    /// error).
    pub fn start(mut config: NodeConfig) -> Result<ServerHandle, NodeError> {
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| NodeError::Internal(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener.local_addr().map_err(|e| NodeError::Internal(e.to_string()))?;
        config.listen = addr;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // A std channel: the caller may be on an async runtime's thread,
        // where a tokio channel's blocking receive panics.
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel::<Arc<Node>>(1);
        let thread = std::thread::Builder::new()
            .name("monotable-server".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let stopped = async {
                        let _ = stop_rx.await;
                    };
                    serve_inner(config, listener, Extra::default(), stopped, Some(started_tx)).await
                })
            })
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        match started_rx.recv() {
            Ok(node) => Ok(ServerHandle { addr, node, stop: Some(stop_tx), thread: Some(thread) }),
            Err(_) => Err(thread
                .join()
                .map_err(|_| NodeError::Internal("server thread panicked".into()))?
                .err()
                .unwrap_or_else(|| NodeError::Internal("the server stopped at start".into()))),
        }
    }

    /// Shuts the server down gracefully and waits for it.
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => {
                t.join().map_err(|_| NodeError::Internal("server thread panicked".into()))?
            }
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
