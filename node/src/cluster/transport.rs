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

impl Peers {
    /// Asks each of `nodes` (id, address) for its [`NodeInfo`] at once,
    /// each within `timeout`; the answers of the nodes that gave one as
    /// the id expected (another node at the address does not count).
    pub async fn probe(
        &self,
        nodes: impl IntoIterator<Item = (NodeId, String)>,
        timeout: Duration,
    ) -> HashMap<NodeId, monotable_proto::NodeInfo> {
        let mut probes = tokio::task::JoinSet::new();
        for (id, addr) in nodes {
            let peers = self.clone();
            probes.spawn(async move {
                let probe = peers.call(&addr, |c| async move { c.node_info().await });
                let info = tokio::time::timeout(timeout, probe).await;
                (id, info.ok().and_then(|i| i.ok()).filter(|i| i.id == id))
            });
        }
        let mut answers = HashMap::new();
        while let Some(done) = probes.join_next().await {
            if let Ok((id, Some(info))) = done {
                answers.insert(id, info);
            }
        }
        answers
    }
}

impl Peers {
    /// The members (voters and learners) of group `group` as its leader
    /// says, asking every one of `addrs` at once (`GroupMembers`), each
    /// within `timeout`; `None` when no leader answered.
    pub async fn leader_members(
        &self,
        group: GroupId,
        addrs: impl IntoIterator<Item = String>,
        timeout: Duration,
    ) -> Option<Vec<NodeId>> {
        let mut asks = tokio::task::JoinSet::new();
        for addr in addrs {
            let peers = self.clone();
            asks.spawn(async move {
                let command = monotable_proto::Command::GroupMembers { group };
                let ask = peers.call(&addr, |c| async move { c.forward(command).await });
                tokio::time::timeout(timeout, ask).await
            });
        }
        while let Some(answer) = asks.join_next().await {
            if let Ok(Ok(Ok(monotable_proto::Reply::Members { leader: true, members }))) = answer {
                return Some(members);
            }
        }
        None
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
#[derive(Clone)]
pub struct SegmentReads {
    pub peers: Peers,
    /// The cluster's id, which the owner checks.
    pub cluster: u64,
}

/// A read outside the contract of [`SegmentReader::read`], refused before
/// anything goes on the wire.
fn out_of_bounds(region: &RegionRef, offset: u64, len: u32) -> Option<ReadError> {
    let end = offset.checked_add(u64::from(len));
    (len == 0 || len > SEGMENT_READ_MAX_BYTES || end.is_none_or(|end| end > region.len)).then_some(
        ReadError::OutOfBounds { region: region.region, offset, len, region_len: region.len },
    )
}

/// A failed call about `region` as a read error: `SnapshotNotFound` says
/// the region is gone.
fn read_error(region: &RegionRef, e: PeerError) -> ReadError {
    match e {
        PeerError::Server(info) if info.code == ErrorCode::SnapshotNotFound => {
            ReadError::Gone { owner: region.owner, region: region.region }
        }
        e => ReadError::Failed { owner: region.owner, reason: e.to_string() },
    }
}

impl SegmentReader for SegmentReads {
    fn read(
        &self,
        region: &RegionRef,
        offset: u64,
        len: u32,
    ) -> BoxedFuture<Result<Vec<u8>, ReadError>> {
        if let Some(out) = out_of_bounds(region, offset, len) {
            return Box::pin(async move { Err(out) });
        }
        let (peers, cluster, region) = (self.peers.clone(), self.cluster, region.clone());
        Box::pin(async move {
            let at = (region.incarnation, region.region);
            let call = peers
                .call(&region.owner_addr, |c| async move {
                    c.segment_read(cluster, at, offset, len).await
                })
                .await;
            call.map_err(|e| read_error(&region, e))
        })
    }
}

#[cfg(feature = "rdma")]
pub use rdma_reads::RdmaSegmentReads;

#[cfg(feature = "rdma")]
mod rdma_reads {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::{out_of_bounds, read_error, Peers, SegmentReads};
    use crate::consensus::futures_lite::BoxedFuture;
    use crate::segments::rdma::{Pending, RdmaConn, Verbs};
    use crate::segments::regions::REGION_LEASE_MS;
    use crate::segments::{ReadError, RegionRef, SegmentReader};

    /// How long an owner that RDMA failed with is read over TCP before
    /// RDMA is tried with it again.
    pub const RDMA_FALLBACK_MS: u64 = 60_000;
    /// A region's key is asked for again after this long, which renews
    /// the region's lease on its owner (who sees no READs).
    const KEY_RENEW_MS: u64 = REGION_LEASE_MS / 4;

    /// The RDMA transport of segment reads: RDMA READs of the regions the
    /// owner exposes (`RdmaConnect` and `RdmaRegion` on the native protocol
    /// set them up), each owner over TCP ([`SegmentReads`]) for
    /// [`RDMA_FALLBACK_MS`] after RDMA with it failed (an owner without
    /// RDMA refuses the connection at once).
    #[derive(Clone)]
    pub struct RdmaSegmentReads {
        inner: Arc<Inner>,
    }

    struct Inner {
        verbs: Arc<Verbs>,
        tcp: SegmentReads,
        /// By owner address. A std mutex: held to look up or replace, never
        /// across an await or a READ.
        owners: Mutex<HashMap<String, Owner>>,
        /// By (incarnation, region).
        keys: Mutex<HashMap<(u64, u64), Key>>,
    }

    #[derive(Clone)]
    enum Owner {
        Rdma(Arc<Mutex<RdmaConn>>),
        Tcp { until: Instant },
    }

    /// Where a region is readable, and when that was asked.
    #[derive(Clone, Copy)]
    struct Key {
        addr: u64,
        rkey: u32,
        len: u64,
        asked: Instant,
    }

    impl RdmaSegmentReads {
        pub fn new(verbs: Arc<Verbs>, tcp: SegmentReads) -> Self {
            let inner = Inner { verbs, tcp, owners: Mutex::default(), keys: Mutex::default() };
            RdmaSegmentReads { inner: Arc::new(inner) }
        }

        fn peers(&self) -> &Peers {
            &self.inner.tcp.peers
        }

        /// Reads owner `addr`'s segments over TCP for a while.
        fn fall_back(&self, addr: &str, reason: &str) {
            let until = Instant::now() + Duration::from_millis(RDMA_FALLBACK_MS);
            let mut owners = self.inner.owners.lock().unwrap_or_else(|p| p.into_inner());
            let was_rdma = !matches!(owners.get(addr), Some(Owner::Tcp { .. }));
            owners.insert(addr.to_owned(), Owner::Tcp { until });
            if was_rdma {
                tracing::warn!(
                    owner = addr,
                    reason,
                    "RDMA READ from this node is not possible: reading its segments over TCP \
                     for {RDMA_FALLBACK_MS} ms"
                );
            }
        }

        /// The connection to owner `addr`, made on first use; `None` while
        /// the owner is read over TCP.
        async fn conn(&self, addr: &str) -> Option<Arc<Mutex<RdmaConn>>> {
            let known =
                self.inner.owners.lock().unwrap_or_else(|p| p.into_inner()).get(addr).cloned();
            match known {
                Some(Owner::Rdma(conn)) => return Some(conn),
                Some(Owner::Tcp { until }) if Instant::now() < until => return None,
                _ => {}
            }
            let pending = match Pending::new(self.inner.verbs.clone()) {
                Ok(p) => p,
                Err(reason) => {
                    self.fall_back(addr, &reason);
                    return None;
                }
            };
            let (cluster, endpoint) = (self.inner.tcp.cluster, pending.endpoint);
            let answer = self
                .peers()
                .call(addr, |c| async move { c.rdma_connect(cluster, endpoint).await })
                .await;
            let conn = match answer {
                Ok(owner) => pending.connect(&owner),
                Err(e) => Err(e.to_string()),
            };
            match conn {
                Ok(conn) => {
                    let conn = Arc::new(Mutex::new(conn));
                    self.inner
                        .owners
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(addr.to_owned(), Owner::Rdma(conn.clone()));
                    Some(conn)
                }
                Err(reason) => {
                    self.fall_back(addr, &reason);
                    None
                }
            }
        }

        /// Where `region` is readable up to at least `end` (or as far as
        /// its owner has written), asked again when older than
        /// [`KEY_RENEW_MS`] or shorter than `end`.
        async fn key(&self, region: &RegionRef, end: u64) -> Result<Key, ReadError> {
            let at = (region.incarnation, region.region);
            let known = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner()).get(&at).copied();
            if let Some(k) = known {
                let fresh = k.asked.elapsed() < Duration::from_millis(KEY_RENEW_MS);
                if fresh && k.len >= end {
                    return Ok(k);
                }
            }
            let cluster = self.inner.tcp.cluster;
            let (addr, rkey, len) = self
                .peers()
                .call(&region.owner_addr, |c| async move { c.rdma_region(cluster, at).await })
                .await
                .map_err(|e| read_error(region, e))?;
            let key = Key { addr, rkey, len, asked: Instant::now() };
            let mut keys = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.retain(|_, k| k.asked.elapsed() < Duration::from_millis(REGION_LEASE_MS));
            keys.insert(at, key);
            Ok(key)
        }

        /// One READ of `region`; `Ok(None)` when its owner is read over TCP
        /// (now, or from this failure on).
        async fn rdma_read(
            &self,
            region: &RegionRef,
            offset: u64,
            len: u32,
        ) -> Result<Option<Vec<u8>>, ReadError> {
            let addr = &region.owner_addr;
            let Some(conn) = self.conn(addr).await else { return Ok(None) };
            let key = match self.key(region, offset + u64::from(len)).await {
                Ok(key) => key,
                Err(gone @ ReadError::Gone { .. }) => return Err(gone),
                Err(e) => {
                    self.fall_back(addr, &e.to_string());
                    return Ok(None);
                }
            };
            // Not written yet: a short read, as over TCP.
            if offset >= key.len {
                return Ok(Some(Vec::new()));
            }
            let n = u32::try_from((key.len - offset).min(u64::from(len))).expect("at most len");
            let read = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                conn.read(key.addr + offset, key.rkey, n)
            })
            .await
            .unwrap_or_else(|e| Err(format!("the READ's thread failed: {e}")));
            match read {
                Ok(bytes) => Ok(Some(bytes)),
                Err(reason) => {
                    // A queue pair in error stays so: the next try connects anew.
                    self.fall_back(addr, &reason);
                    Ok(None)
                }
            }
        }
    }

    impl SegmentReader for RdmaSegmentReads {
        fn read(
            &self,
            region: &RegionRef,
            offset: u64,
            len: u32,
        ) -> BoxedFuture<Result<Vec<u8>, ReadError>> {
            if let Some(out) = out_of_bounds(region, offset, len) {
                return Box::pin(async move { Err(out) });
            }
            let (this, region) = (self.clone(), region.clone());
            Box::pin(async move {
                match this.rdma_read(&region, offset, len).await? {
                    Some(bytes) => Ok(bytes),
                    None => this.inner.tcp.read(&region, offset, len).await,
                }
            })
        }
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
        // A node without an RDMA device (none here) refuses RDMA set-up
        // with an answer, and the reader reads over TCP instead.
        let peers = Peers::new(Some(b"sesame".to_vec()));
        let addr = server.addr.to_string();
        let endpoint = monotable_proto::RdmaEndpoint { lid: 0, gid: [0; 16], qp_num: 7, psn: 1 };
        let cluster_id = cluster.meta().expect("a member").cluster;
        for (asked_cluster, want) in
            [(cluster_id, "read its segments over TCP"), (1, "another cluster")]
        {
            let connect = runtime.block_on(
                peers.call(&addr, |c| async move { c.rdma_connect(asked_cluster, endpoint).await }),
            );
            let region =
                runtime
                    .block_on(peers.call(&addr, |c| async move {
                        c.rdma_region(asked_cluster, (0, 1)).await
                    }));
            for refused in [connect.map(|_| ()), region.map(|_| ())] {
                match refused {
                    Err(PeerError::Server(info)) => {
                        assert_eq!(info.code, ErrorCode::BadRequest);
                        assert!(info.message.contains(want), "{}", info.message);
                        assert!(!info.message.contains(&format!("{cluster_id:016x}")));
                    }
                    other => panic!("RDMA set-up on a node without RDMA: {other:?}"),
                }
            }
        }
        drop(runtime);
        server.stop().expect("stops");
    }
}
