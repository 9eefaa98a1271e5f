//! The RESP listener: one task per connection, commands run in order
//! (pipelined requests are answered in order, replies coalesced into one
//! write per read).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::commands::{execute, RespState};
use super::parse::{parse, Parsed};
use super::reply::Reply;
use crate::config::CONNECTIONS_MAX;
use crate::node::Node;

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Accepts RESP connections until `closing` turns true.
pub async fn serve(node: Arc<Node>, listener: TcpListener, mut closing: watch::Receiver<bool>) {
    let state = Arc::new(RespState::new(node));
    let open = Arc::new(AtomicUsize::new(0));
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

/// Time between passes of the background expirer.
const EXPIRE_INTERVAL_MS: u64 = 100;

/// Removes expired keys in the background until `closing` turns true.
async fn expire_keys(state: Arc<RespState>, mut closing: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(EXPIRE_INTERVAL_MS));
    loop {
        tokio::select! {
            _ = closing.changed() => return,
            _ = tick.tick() => {
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
        let _ =
            std::io::Write::write_all(&mut &std_stream, b"-ERR max number of clients reached\r\n");
        return;
    }
    let (state, open, closing) = (state.clone(), open.clone(), closing.clone());
    state.node.next_worker().spawn_fn(move || {
        actix_rt::spawn(async move {
            if let Ok(stream) = TcpStream::from_std(std_stream) {
                state.clients.fetch_add(1, Ordering::Relaxed);
                connection(state.clone(), closing, stream, peer).await;
                state.clients.fetch_sub(1, Ordering::Relaxed);
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    });
}

async fn connection(
    state: Arc<RespState>,
    mut closing: watch::Receiver<bool>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let mut conn = state.new_conn(peer.ip());
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
    let mut chunk = vec![0u8; READ_BUFFER_BYTES];
    let mut out = Vec::new();
    loop {
        let n = tokio::select! {
            _ = closing.changed() => return,
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        let mut close = false;
        // The replies of this batch of commands, sent once all of it is durable.
        let mut replies: Vec<Reply> = Vec::new();
        let mut pending = Vec::new();
        loop {
            match parse(&buf[used..]) {
                Parsed::Incomplete => break,
                Parsed::Empty(n) => used += n,
                Parsed::Error(message) => {
                    tracing::debug!(%peer, %message, "RESP protocol error; closing");
                    replies.push(Reply::err(format!("ERR {message}")));
                    close = true;
                    break;
                }
                Parsed::Command(args, n) => {
                    used += n;
                    let (reply, durability) = execute(&state, &mut conn, args).await;
                    pending.push((replies.len(), durability));
                    replies.push(reply);
                    if conn.closing {
                        close = true;
                        break;
                    }
                }
            }
        }
        buf.drain(..used);
        // Durable first: each command's own writes, then everything any of
        // them read (all of it is at or below the last seq handed out).
        for (i, durability) in pending {
            for ack in durability {
                if let Err(e) = crate::node::answer(ack).await {
                    replies[i] = Reply::err(format!("ERR {e}"));
                }
            }
        }
        if !replies.is_empty() {
            let clock = &state.node.clock;
            clock.wait_stable(clock.last_allocated()).await;
        }
        for reply in &replies {
            reply.write(conn.proto, &mut out);
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
