//! Node-to-node calls over the native protocol: Raft RPCs of every group,
//! segment reads and the cluster's own requests share one connection per
//! peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monotable_client::{Client, Options};

use crate::consensus::futures_lite::BoxedFuture;
use crate::consensus::{GroupId, NodeId, Transport, TransportError};
use crate::segments::{ReadError, RegionRef, SegmentReader, SEGMENT_READ_MAX_BYTES};
use monotable_proto::ErrorCode;

/// How long a peer has to accept a connection.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// How long a peer has to answer one call.
pub const PEER_CALL_TIMEOUT_MS: u64 = 5_000;

/// Connections to peers, one per address, made on first use and dropped
/// when a call on them fails. Clones share them.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's cluster and node id, once known (0 before), sent with
    /// every Raft message.
    ids: Mutex<(u64, u64)>,
    /// The cluster's password (`serve --requirepass`), which peers check
    /// like any client's.
    password: Option<Vec<u8>>,
    clients: Mutex<HashMap<String, Client>>,
}

impl Peers {
    pub fn new(password: Option<Vec<u8>>) -> Self {
        Peers {
            inner: Arc::new(Inner {
                ids: Mutex::new((0, 0)),
                password,
                clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sets the cluster and node id this node sends Raft messages as.
    pub fn set_ids(&self, cluster: u64, node: u64) {
        *self.inner.ids.lock().unwrap_or_else(|p| p.into_inner()) = (cluster, node);
    }

    fn ids(&self) -> (u64, u64) {
        *self.inner.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection to the node at `addr`: the open one, or a new one if
    /// there is none or it is known closed (so that a request is not
    /// handed to a dead connection, which would leave its fate unknown).
    pub async fn client(&self, addr: &str) -> Result<Client, monotable_client::Error> {
        if let Some(c) = self.clients().get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let mut options =
            Options::new().connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS));
        if let Some(p) = &self.inner.password {
            options = options.password(p);
        }
        let client = Client::connect_with(addr, options).await?;
        self.clients().insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// Drops the connection to `addr`, so the next call makes a new one.
    pub fn forget(&self, addr: &str) {
        self.clients().remove(addr);
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.inner.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `call` on the connection to `addr` within the call timeout; a
    /// failed or timed-out call drops the connection.
    pub async fn call<T, F, Fut>(&self, addr: &str, call: F) -> Result<T, PeerError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, monotable_client::Error>>,
    {
        let client = self.client(addr).await.map_err(PeerError::Connect)?;
        let result =
            tokio::time::timeout(Duration::from_millis(PEER_CALL_TIMEOUT_MS), call(client))
                .await
                .unwrap_or_else(|_| {
                    Err(monotable_client::Error::Timeout(format!(
                        "no answer within {PEER_CALL_TIMEOUT_MS} ms"
                    )))
                });
        match result {
            Ok(v) => Ok(v),
            // The peer answered with an error: the connection is fine.
            Err(monotable_client::Error::Server(info)) => Err(PeerError::Server(info)),
            Err(e) => {
                self.forget(addr);
                Err(PeerError::Call(e))
            }
        }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Connect(monotable_client::Error),
    #[error("{0}")]
    Call(monotable_client::Error),
    #[error("{}", .0.message)]
    Server(monotable_proto::ErrorInfo),
}

impl Transport for Peers {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        group: GroupId,
        rpc: Vec<u8>,
    ) -> BoxedFuture<Result<Vec<u8>, TransportError>> {
        let peers = self.clone();
        let addr = addr.to_owned();
        let (cluster, me) = self.ids();
        Box::pin(async move {
            let ids = (cluster, me, target);
            let call = peers.call(&addr, |c| async move { c.raft_rpc(group, rpc, ids).await });
            call.await.map_err(|e| match e {
                // Nothing there, or a node that refuses the message (of
                // another cluster or node id, or this node removed): Raft
                // backs off.
                PeerError::Connect(_) | PeerError::Server(_) => TransportError::Unreachable {
                    node: target,
                    addr: addr.clone(),
                    reason: e.to_string(),
                },
                e => TransportError::Network { node: target, reason: e.to_string() },
            })
        })
    }
}

/// The TCP transport of segment reads: `SegmentRead` requests on the
/// native protocol, served by the owner from the file
/// ([`super::Cluster::read_segment`]).
pub struct SegmentReads {
    pub peers: Peers,
    /// The cluster's id, which the owner checks.
    pub cluster: u64,
}

impl SegmentReader for SegmentReads {
    fn read(
        &self,
        region: &RegionRef,
        offset: u64,
        len: u32,
    ) -> BoxedFuture<Result<Vec<u8>, ReadError>> {
        let (peers, cluster, region) = (self.peers.clone(), self.cluster, region.clone());
        let out =
            ReadError::OutOfBounds { region: region.region, offset, len, region_len: region.len };
        let end = offset.checked_add(u64::from(len));
        if len == 0 || len > SEGMENT_READ_MAX_BYTES || end.is_none_or(|end| end > region.len) {
            return Box::pin(async move { Err(out) });
        }
        Box::pin(async move {
            let (owner, at) = (region.owner, (region.incarnation, region.region));
            let call = peers
                .call(&region.owner_addr, |c| async move {
                    c.segment_read(cluster, at, offset, len).await
                })
                .await;
            call.map_err(|e| match e {
                PeerError::Server(info) if info.code == ErrorCode::SnapshotNotFound => {
                    ReadError::Gone { owner, region: region.region }
                }
                e => ReadError::Failed { owner, reason: e.to_string() },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TCP transport keeps the [`SegmentReader`] contract: a real node
    /// serves its regions over the native protocol, read through a peer
    /// connection as another node would, with a password.
    #[test]
    fn the_tcp_transport_keeps_the_segment_reader_contract() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut config = crate::config::NodeConfig::for_tests(&dir.path().join("node"));
        config.password = crate::auth::Secret::new(b"sesame".to_vec());
        let server = crate::server::ServerHandle::start(config).expect("a node");
        let cluster = server.node.cluster().expect("a cluster of one").clone();
        let copies = cluster.snapshot_copies().expect("a member");
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(crate::segments::contract_tests::check_contract(
            copies.reader.clone(),
            &copies.regions,
            dir.path(),
        ));
        // Another cluster's reads are refused.
        let stranger: Arc<dyn SegmentReader> =
            Arc::new(SegmentReads { peers: Peers::new(Some(b"sesame".to_vec())), cluster: 1 });
        let region = RegionRef {
            owner: 1,
            owner_addr: server.addr.to_string(),
            incarnation: 0,
            region: 1,
            segment: 1,
            len: 64,
        };
        let refused = runtime.block_on(stranger.read(&region, 0, 8));
        assert!(matches!(refused, Err(ReadError::Failed { .. })), "{refused:?}");
        drop(runtime);
        server.stop().expect("stops");
    }
}
