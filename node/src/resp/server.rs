//! The RESP listener: one task per connection, commands run in order
//! (pipelined requests are answered in order, replies coalesced into one
//! write per batch, a batch bounded by [`REPLY_BUFFER_MAX_BYTES`]). Each
//! connection is listed in [`RespState::clients`] while open and closes at
//! once when CLIENT KILL (or the idle `timeout`) picks it, even blocked or
//! subscribed; it reports each command's end to [`super::stats::finish`]
//! and holds back replies under CLIENT REPLY OFF/SKIP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::commands::execute;
use super::parse::{Parsed, RequestReader, ARG_SIZE_MAX_BYTES};
use super::reply::Reply;
use super::state::{Conn, RespState};
use crate::config::CONNECTIONS_MAX;
use monotable_proto::limits::REPLY_BUFFER_MAX_BYTES;

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Accepts RESP connections until `closing` turns true. `state` is the
/// node's one Redis endpoint state (also answering commands other nodes
/// forward, see [`super::cluster`]).
pub async fn serve(
    state: Arc<RespState>,
    listener: TcpListener,
    mut closing: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    if let Ok(addr) = listener.local_addr() {
        let _ = state.resp_addr.set(addr);
    }
    actix_rt::spawn(expire_keys(state.clone(), closing.clone()));
    loop {
        tokio::select! {
            _ = closing.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept(&state, &open, &closing, stream, peer),
                Err(e) => {
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Time between passes of the background expirer, by CONFIG's `hz`
/// (passes per second, 1 to 500 as Redis clamps it; default 10: 100 ms).
fn expire_interval(state: &RespState) -> Duration {
    let hz = state.config.int("hz").clamp(1, 500) as u64;
    Duration::from_millis(1000 / hz)
}

/// Removes expired keys in the background until `closing` turns true;
/// on the same tick, samples INFO's rates and closes connections idle past
/// CONFIG's `timeout` (Redis does both in its `serverCron`).
async fn expire_keys(state: Arc<RespState>, mut closing: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = closing.changed() => return,
            _ = tokio::time::sleep(expire_interval(&state)) => {
                state.stats.sample();
                if let Some(timeout) = state.config.idle_timeout() {
                    state.clients.close_idle(timeout);
                }
                if state.tracking.any() {
                    let max = state.config.int("tracking-table-max-keys");
                    state.tracking.limit(&state.pubsub, usize::try_from(max).unwrap_or(0));
                }
                if let Err(e) = super::keys::expire_due(&state).await {
                    tracing::debug!(error = %e, "expiring keys failed; retrying");
                }
            }
        }
    }
}

fn accept(
    state: &Arc<RespState>,
    open: &Arc<AtomicUsize>,
    closing: &watch::Receiver<bool>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let Ok(std_stream) = stream.into_std() else { return };
    if open.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
        open.fetch_sub(1, Ordering::AcqRel);
        state.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
        let _ =
            std::io::Write::write_all(&mut &std_stream, b"-ERR max number of clients reached\r\n");
        return;
    }
    let (state, open, closing) = (state.clone(), open.clone(), closing.clone());
    state.node.next_worker().spawn_fn(move || {
        actix_rt::spawn(async move {
            if let Ok(stream) = TcpStream::from_std(std_stream) {
                state.stats.connections_received.fetch_add(1, Ordering::Relaxed);
                super::blocking::recording_wakes(connection(state.clone(), closing, stream, peer))
                    .await;
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    });
}

/// Turns a connection's CLIENT TRACKING off when it ends.
struct EndTracking(Arc<RespState>, u64);

impl Drop for EndTracking {
    fn drop(&mut self) {
        self.0.tracking.disable(self.1);
    }
}

async fn connection(
    state: Arc<RespState>,
    mut closing: watch::Receiver<bool>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let mut conn = state.new_conn(peer, local, fd);
    // Its tracking ends with it, however it ends.
    let _tracking = EndTracking(state.clone(), conn.id);
    // Listed (CLIENT LIST, INFO) until this returns, or the socket closes.
    let listed = state.clients.register(conn.info.clone());
    let info = conn.info.clone();
    let mut requests = RequestReader::new();
    let mut chunk = vec![0u8; READ_BUFFER_BYTES];
    loop {
        // Runs what has arrived, a batch at a time: a batch ends when its
        // replies pass REPLY_BUFFER_MAX_BYTES, and nothing more is read or
        // run until they are written.
        loop {
            let batch = run_batch(&state, &mut conn, &mut requests, peer).await;
            // Blocked clients its writes woke run before it gets its
            // replies, as Redis serves them before replying.
            super::blocking::served().await;
            if !batch.out.is_empty() {
                if stream.write_all(&batch.out).await.is_err() {
                    return;
                }
                count_write(&state, batch.out.len());
            }
            if batch.close || info.is_killed() {
                // Unlisted first: a client that sees the socket close sees
                // it gone from CLIENT LIST.
                drop(listed);
                let _ = stream.shutdown().await;
                return;
            }
            if conn.block.is_some() {
                // A blocking command found nothing: nothing more of the
                // pipeline runs until it has its reply.
                let io = Io { stream: &mut stream, requests: &mut requests, chunk: &mut chunk };
                if !wait_blocked(&state, &mut conn, io, &mut closing).await {
                    return;
                }
                continue;
            }
            if !batch.full {
                break;
            }
            // A long pipeline lets the worker's other connections run.
            tokio::task::yield_now().await;
        }
        let n = tokio::select! {
            _ = closing.changed() => return,
            _ = info.killed() => return,
            message = next_message(&mut conn) => {
                // Published to a channel it listens to: written at once,
                // with whatever else is queued.
                let Some(message) = message else { continue };
                let out = encode_messages(&mut conn, &message);
                if out.is_empty() {
                    continue;
                }
                if stream.write_all(&out).await.is_err() || overflowed(&conn) {
                    return;
                }
                continue;
            }
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        state.stats.reads.fetch_add(1, Ordering::Relaxed);
        state.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
        requests.feed(&chunk[..n]);
    }
}

/// Whether `reply` is a RESP3 push (pub/sub confirmations), which Redis
/// sends even under CLIENT REPLY OFF or SKIP.
fn is_push(proto: u8, reply: &Reply) -> bool {
    proto >= 3
        && match reply {
            Reply::Push(_) => true,
            Reply::Raw(bytes) => bytes.first() == Some(&b'>'),
            _ => false,
        }
}

/// Counts a write of `bytes` to a client for INFO.
fn count_write(state: &RespState, bytes: usize) {
    state.stats.writes.fetch_add(1, Ordering::Relaxed);
    state.stats.net_output_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// A connection's socket and what it has read, for [`wait_blocked`].
struct Io<'a> {
    stream: &'a mut TcpStream,
    requests: &'a mut RequestReader,
    chunk: &'a mut Vec<u8>,
}

/// Waits out `conn`'s blocked command (see [`super::blocking`]): runs it
/// again when a key it waits on is written (or, on a replicated database,
/// every [`super::blocking::POLL_INTERVAL_MS`]) until it gets its reply or
/// its timeout passes, then writes the reply. Commands the client sends
/// meanwhile are kept for later. Returns false when the connection is to
/// close (the client went away, the node is shutting down).
async fn wait_blocked(
    state: &RespState,
    conn: &mut Conn,
    io: Io<'_>,
    closing: &mut watch::Receiver<bool>,
) -> bool {
    let Some(block) = conn.block.take() else { return true };
    let wake = Arc::new(super::blocking::Wake::default());
    if !block.poll {
        state.blocking.register(block.db, &block.keys, conn.id, &wake);
        // Runs once more at once: a write between the command's first run
        // and this registration signalled no one.
        // Postmortem: an LPUSH sent right after a BLPOP could land in that
        // gap, and the client waited for the next write to the key.
        wake.notify.notify_one();
    }
    // The wake-ups of the run that serves it, answered once the clients
    // that run woke in turn have run (see `blocking::served`).
    let mut acks = Vec::new();
    let deadline = block.deadline.map(tokio::time::Instant::from_std);
    let info = conn.info.clone();
    info.set_waiting(true);
    let poll = Duration::from_millis(super::blocking::POLL_INTERVAL_MS);
    let outcome = loop {
        let woken = async {
            if block.poll {
                tokio::time::sleep(poll).await
            } else {
                wake.notify.notified().await
            }
        };
        let timed_out = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // What the client sends meanwhile is kept for later, up to a bound:
        // past it, nothing more is read until the command has its reply.
        // Postmortem: a blocked client could make the node keep gigabytes.
        let reading = io.requests.buffered() < BLOCKED_REQUESTS_MAX_BYTES;
        // In this order: a client killed, unblocked, timed out or gone is
        // not served by a wake-up that came at the same time (an entry a
        // blocked XREADGROUP took would be lost with it).
        // Postmortem: an XADD right after CLIENT KILL delivered its entry
        // to the killed consumer's pending list.
        tokio::select! {
            biased;
            _ = closing.changed() => break None,
            // CLIENT KILL: closed at once, though blocked.
            _ = info.killed() => break None,
            // Neither this nor a timeout goes to the slowlog (no run of
            // the command is timed), as in Redis 7.0.
            reason = info.unblocked() => {
                let reply = if reason == super::clients::UNBLOCK_ERROR {
                    Reply::err("UNBLOCKED client unblocked via CLIENT UNBLOCK")
                } else {
                    block.timed_out()
                };
                break Some((reply, Vec::new()));
            }
            _ = timed_out => break Some((block.timed_out(), Vec::new())),
            read = io.stream.read(io.chunk), if reading => match read {
                Ok(0) | Err(_) => break None,
                Ok(n) => io.requests.feed(&io.chunk[..n]),
            },
            // A RESP3 subscriber's messages go out while it waits, as in
            // Redis, and past its bound it is closed.
            message = next_message(conn) => {
                let Some(message) = message else { continue };
                let out = encode_messages(conn, &message);
                if io.stream.write_all(&out).await.is_err() || overflowed(conn) {
                    break None;
                }
            }
            _ = woken => {
                if info.is_killed() {
                    break None;
                }
                acks = wake.take_acks();
                conn.retrying = true;
                let done = super::stripes::with_burst(execute(state, conn, &block.args)).await;
                conn.retrying = false;
                if conn.block.take().is_none() {
                    break Some(done);
                }
                // Found nothing: this run is done.
                acks.clear();
                // Blocked again: this run is not the one that serves it.
                conn.running = None;
            }
        }
    };
    info.set_waiting(false);
    if !block.poll {
        state.blocking.unregister(block.db, &block.keys, conn.id);
        // A wake-up it may have taken goes to the next in line.
        for k in &block.keys {
            state.blocking.signal(block.db, k);
        }
    }
    // Out of every line first, so a client it woke that pushes back to
    // one of its keys does not wait for it in turn; wake-ups given since
    // its run began are answered now (its own, for the next in line, among
    // them: it would wait for itself).
    drop(wake.take_acks());
    super::blocking::served().await;
    drop(acks);
    let Some((reply, durability)) = outcome else { return false };
    let read_upto = state.node.clock.last_allocated();
    let mut out = Vec::new();
    let mut failed = None;
    for ack in durability {
        if let Err(e) = ack.durable().await {
            failed = Some(Reply::err(format!("ERR {e}")));
        }
    }
    let reply = failed.unwrap_or(reply);
    super::stats::finish(state, conn, &reply, &block.args);
    if conn.reply_wanted() || is_push(conn.proto, &reply) {
        reply.write(conn.proto, &mut out);
    }
    // What its own run caused (a BLMOVE's destination it tracks) follows.
    out.extend(tracking_after_reply(state, conn));
    state.node.clock.wait_stable(read_upto).await;
    count_write(state, out.len());
    io.stream.write_all(&out).await.is_ok()
}

/// CLIENT TRACKING once a command of `conn` replied: the BCAST messages of
/// what it wrote go out, and the invalidations it caused for `conn` itself
/// are encoded to follow its reply.
fn tracking_after_reply(state: &RespState, conn: &Conn) -> Vec<u8> {
    let mut out = Vec::new();
    if !state.tracking.any() {
        return out;
    }
    state.tracking.broadcast(&state.pubsub);
    let own = state.tracking.take_own(conn.id);
    if let Some(subs) = conn.subs.as_ref() {
        for m in &own {
            subs.write(m, conn.proto, &mut out);
        }
    }
    out
}

/// Bytes of requests a blocked connection keeps before it stops reading.
const BLOCKED_REQUESTS_MAX_BYTES: usize = 16 << 20;

/// The next message published to one of `conn`'s channels or patterns
/// (never, while it has none).
/// `first` (a message that came while the connection waited) and whatever
/// else is queued, encoded for `conn`.
fn encode_messages(conn: &mut Conn, first: &super::pubsub::Message) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(subs) = conn.subs.as_mut() {
        subs.write(first, conn.proto, &mut out);
        subs.drain(conn.proto, &mut out);
    }
    out
}

async fn next_message(conn: &mut Conn) -> Option<super::pubsub::Message> {
    match conn.subs.as_mut() {
        Some(subs) => subs.ready().await,
        None => std::future::pending().await,
    }
}

/// A subscriber that let too many messages pile up: closed (see
/// [`super::pubsub::SUBSCRIBER_PENDING_MAX_BYTES`]).
fn overflowed(conn: &Conn) -> bool {
    conn.subs.as_ref().is_some_and(|s| s.overflowed())
}

/// Commands of one database gathered for [`super::cluster::run_pipeline`].
#[derive(Default)]
struct Pipeline {
    db: u32,
    commands: Vec<Vec<Vec<u8>>>,
    bytes: usize,
}

impl Pipeline {
    /// Adds a command for database `db`; returns the commands gathered
    /// when they are to run now: before it, when it is for another
    /// database, or with it, once the pipeline is full.
    fn push(&mut self, db: u32, args: Vec<Vec<u8>>) -> Option<(u32, Vec<Vec<Vec<u8>>>)> {
        let before = if db != self.db { self.take() } else { None };
        self.db = db;
        self.bytes += args.iter().map(|a| a.len() + 32).sum::<usize>();
        self.commands.push(args);
        let full = self.commands.len() >= super::cluster::PIPELINE_COMMANDS_MAX
            || self.bytes >= super::cluster::PIPELINE_BYTES_MAX;
        match before {
            Some(before) => Some(before),
            None if full => self.take(),
            None => None,
        }
    }

    /// The commands gathered, if any.
    fn take(&mut self) -> Option<(u32, Vec<Vec<Vec<u8>>>)> {
        self.bytes = 0;
        let commands = std::mem::take(&mut self.commands);
        (!commands.is_empty()).then_some((self.db, commands))
    }
}

/// Replies of one batch of commands, ready to send.
struct Batch {
    out: Vec<u8>,
    /// Close the connection once `out` is sent (QUIT, a protocol error).
    close: bool,
    /// The batch stopped at the reply limit: more commands may be waiting.
    full: bool,
}

/// Runs the complete commands buffered in `requests` until none is left
/// or the replies pass [`REPLY_BUFFER_MAX_BYTES`], and returns the replies
/// once all of it is durable.
async fn run_batch(
    state: &RespState,
    conn: &mut Conn,
    requests: &mut RequestReader,
    peer: SocketAddr,
) -> Batch {
    // Each reply is encoded as soon as its command ran, in the protocol
    // the connection speaks then (HELLO 3 answers in RESP3). The commands
    // run as one burst: key locks they take are kept for the next command
    // on the same keys (see `stripes`), all released before the wait for
    // durability.
    let (replies, pending, close, full) = super::stripes::with_burst(async {
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        let mut pending = Vec::new();
        let (mut close, mut full) = (false, false);
        // Commands for a replicated database's leader, gathered while the
        // client pipelines them (see `cluster::run_pipeline`).
        let mut pipeline = Pipeline::default();
        loop {
            if bytes >= REPLY_BUFFER_MAX_BYTES {
                full = true;
                break;
            }
            // CLIENT KILL: nothing more of it runs (a command read before
            // the kill would otherwise run after it).
            if conn.info.is_killed() {
                close = true;
                break;
            }
            let parsed = requests.next(conn.authenticated);
            if let Parsed::Command(args) = &parsed {
                // Under CLIENT REPLY OFF/SKIP each command runs on its own,
                // so that its reply can be held back.
                let replies_wanted = !conn.reply_off && conn.reply_skip == 0;
                if replies_wanted && super::commands::runs_replicated(state, conn, args) {
                    let Parsed::Command(args) = parsed else { unreachable!() };
                    super::stats::pipelined(state, conn, &args).await;
                    if let Some(out) = pipeline.push(conn.db, args) {
                        let out = super::cluster::run_pipeline(state, out.0, conn.proto, out.1).await;
                        bytes += out.len();
                        replies.push(out);
                    }
                    continue;
                }
            }
            if let Some((db, commands)) = pipeline.take() {
                let out = super::cluster::run_pipeline(state, db, conn.proto, commands).await;
                bytes += out.len();
                replies.push(out);
            }
            if let Some(subs) = conn.subs.as_mut() {
                // Messages published before this command ran go first.
                let mut pushed = Vec::new();
                subs.drain(conn.proto, &mut pushed);
                if !pushed.is_empty() {
                    bytes += pushed.len();
                    replies.push(pushed);
                }
            }
            let reply = match parsed {
                Parsed::Incomplete => break,
                Parsed::Error(message) => {
                    tracing::debug!(%peer, %message, "RESP protocol error; closing");
                    close = true;
                    Reply::err(format!("ERR {message}"))
                }
                Parsed::ArgumentTooLarge(len) => {
                    conn.refused();
                    Reply::err(format!(
                        "ERR argument of {len} bytes exceeds the limit of {ARG_SIZE_MAX_BYTES} bytes"
                    ))
                }
                Parsed::Command(args) => {
                    // What a SUBSCRIBE confirms goes before any message
                    // of its channels.
                    let subscribing = [&b"subscribe"[..], b"psubscribe"]
                        .iter()
                        .any(|n| args[0].eq_ignore_ascii_case(n));
                    // Subscription confirmations are sent whatever CLIENT
                    // REPLY says, as Redis pushes them.
                    let confirms = subscribing
                        || [&b"unsubscribe"[..], b"punsubscribe"]
                            .iter()
                            .any(|n| args[0].eq_ignore_ascii_case(n));
                    let (reply, durability) = execute(state, conn, &args).await;
                    super::stats::finish(state, conn, &reply, &args);
                    // CLIENT CACHING applies to the next command (or
                    // transaction) only.
                    if conn.multi.is_none() && !args[0].eq_ignore_ascii_case(b"client") {
                        state.tracking.command_done(conn.id);
                    }
                    if conn.block.is_some() {
                        // No reply yet (see `wait_blocked`).
                        break;
                    }
                    // Not a monitor's: the line of its own command goes
                    // after its reply, as Redis feeds monitors after the
                    // command ran.
                    // Postmortem: a monitor's PING got its own line first.
                    let drains = !subscribing && !conn.subs.as_ref().is_some_and(|s| s.is_monitor());
                    if let Some(subs) = conn.subs.as_mut().filter(|_| drains) {
                        // Messages the command published to this
                        // connection's own channels (PUBLISH, a keyspace
                        // event) go before its reply, as Redis writes them.
                        // Postmortem: a RESP3 client publishing to its own
                        // channel got `:1` before the push.
                        let mut pushed = Vec::new();
                        subs.drain(conn.proto, &mut pushed);
                        if !pushed.is_empty() {
                            bytes += pushed.len();
                            replies.push(pushed);
                        }
                    }
                    let pushed = (confirms && !matches!(reply, Reply::Error(_)))
                        || is_push(conn.proto, &reply);
                    if !conn.reply_wanted() && !pushed {
                        // CLIENT REPLY OFF or SKIP: its writes still wait
                        // for durability; nothing is sent.
                        pending.push((replies.len(), durability));
                        replies.push(Vec::new());
                        let tracked = tracking_after_reply(state, conn);
                        bytes += tracked.len();
                        replies.push(tracked);
                        close = conn.closing;
                        if close {
                            break;
                        }
                        continue;
                    }
                    pending.push((replies.len(), durability));
                    close = conn.closing;
                    reply
                }
            };
            let mut encoded = Vec::new();
            reply.write(conn.proto, &mut encoded);
            // CLIENT TRACKING's messages its command caused, after its
            // reply, as Redis writes them.
            encoded.extend(tracking_after_reply(state, conn));
            bytes += encoded.len();
            replies.push(encoded);
            if close {
                break;
            }
        }
        if let Some((db, commands)) = pipeline.take() {
            replies.push(super::cluster::run_pipeline(state, db, conn.proto, commands).await);
        }
        (replies, pending, close, full)
    })
    .await;
    // Everything the burst read was applied by now: later writes of other
    // connections cannot be in its replies, so it need not wait for them.
    let read_upto = state.node.clock.last_allocated();
    let mut replies = replies;
    // Durable first: each command's own writes, then everything any of
    // them read (all of it is at or below `read_upto`).
    for (i, durability) in pending {
        for ack in durability {
            if let Err(e) = ack.durable().await {
                let mut encoded = Vec::new();
                Reply::err(format!("ERR {e}")).write(conn.proto, &mut encoded);
                replies[i] = encoded;
            }
        }
    }
    if !replies.is_empty() {
        state.node.clock.wait_stable(read_upto).await;
    }
    Batch { out: replies.concat(), close, full }
}
