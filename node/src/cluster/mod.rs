//! The cluster: which nodes there are, and the meta range they all
//! replicate.
//!
//! Every node is the same. `serve` without `--join` on an empty data
//! directory founds a cluster of one: the node takes id 1 and starts the
//! meta range's Raft group with itself as its only voter. `serve --join
//! ADDR` on an empty data directory asks the node at ADDR for an id
//! ([`MetaCommand::Join`], decided by the meta range's leader, wherever it
//! is), records it in the catalog, starts its replica of the meta range and
//! asks the leader to make it a voter. A node that has an id resumes its
//! replica at start and ignores `--join`.
//!
//! # Layout
//!
//! - this file: [`Cluster`], start and join, requests that must run on
//!   the meta range's leader (forwarded there from any node), status.
//! - [`meta`]: the meta range's state machine.
//! - [`placement`]: each chunk's leader brings its group's voters to the
//!   replicas the meta range lists (replica moves after `cluster remove`).
//! - [`transport`]: connections to peers over the native protocol, which
//!   carry Raft RPCs and forwarded requests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use monotable_proto::{ClusterStatus, ErrorCode, NodeInfo, NodeStatus};

use crate::catalog::{ClusterIdentity, IdentityStore};
use crate::consensus::log_store::LogStore;
use crate::consensus::machine_store::MachineStore;
use crate::consensus::{
    encode, ConsensusError, Group, GroupConfig, GroupId, NodeId, RaftRpcReply, SyncPoint, Timing,
};
use crate::error::{NodeError, NodeResult};
use crate::replica_snapshot::SnapshotCopies;
use crate::segments::{ReadError, Regions, SegmentReader};

pub mod balance;
pub mod meta;
pub mod placement;
pub mod transport;

use meta::{MetaCommand, MetaMachine, MetaReply};
use transport::{PeerError, Peers};

/// The Raft group of the meta range. Chunk ids, which name the chunks'
/// groups, start at 1.
pub const META_GROUP: GroupId = 0;

/// The meta range builds a snapshot (and purges its log) every this many
/// entries.
const META_SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;

/// How long a request that must reach the meta leader waits for one to be
/// elected before failing with [`ErrorCode::ClusterUnavailable`].
const LEADER_WAIT_MAX_MS: u64 = 10_000;

/// Pause between attempts of a join that could not reach the cluster.
const JOIN_RETRY_MS: u64 = 1_000;

/// Pause between attempts of a join whose password the seed refused.
const JOIN_AUTH_RETRY_MS: u64 = 30_000;

/// How long `cluster status` waits for each node's answer.
const STATUS_PROBE_TIMEOUT_MS: u64 = 1_000;

/// Refuses a `--join` address that cannot name another node.
pub fn check_seed(seed: &str, advertise: &str) -> NodeResult<()> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = seed
        .to_socket_addrs()
        .map_err(|e| NodeError::Start(format!("--join {seed}: not an address ({e})")))?
        .collect();
    if addrs.iter().any(|a| a.port() == 0) {
        return Err(NodeError::Start(format!("--join {seed}: port 0 names no node")));
    }
    if seed == advertise || addrs.iter().any(|a| a.to_string() == advertise) {
        return Err(NodeError::Start(format!(
            "--join {seed} is this node's own address; name another node of the cluster"
        )));
    }
    Ok(())
}

/// The copy of this node's identity in the cluster directory.
const IDENTITY_FILE: &str = "IDENTITY";

/// Reads the identity copy; `None` if there is none.
fn read_identity(path: &std::path::Path) -> NodeResult<Option<ClusterIdentity>> {
    match std::fs::read(path) {
        Ok(bytes) => rmp_serde::from_slice(&bytes).map(Some).map_err(|e| {
            NodeError::Start(format!("{} is damaged ({e}); it names this node", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Start(format!("{}: {e}", path.display()))),
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A runtime dropped on an async thread would panic; this one's
        // threads are told to stop and left to finish on their own.
        let runtime = self.raft_runtime.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

/// Threads that run this node's Raft groups.
const RAFT_THREADS: usize = 2;

/// How to run this node's part of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where the meta range's replica lives (`<data-dir>/cluster`).
    pub dir: PathBuf,
    /// The address other nodes reach this one at (native protocol).
    pub advertise: String,
    /// `serve --join`: a node of the cluster to join.
    pub join: Option<String>,
    pub password: Option<Vec<u8>>,
    pub timing: Timing,
    /// A member silent this long (seconds) is drained and removed; 0
    /// never ([`balance`]).
    pub dead_after_secs: u64,
}

/// This node's membership of the cluster.
pub struct Cluster {
    config: ClusterConfig,
    peers: Peers,
    sync: Arc<dyn SyncPoint>,
    /// Set once this node has an id and runs its meta replica.
    member: OnceLock<Member>,
    /// Switches the timers of idle groups off; started with the meta
    /// replica.
    quiescence: OnceLock<crate::consensus::Quiescence>,
    /// The runtime the node's Raft groups run on (their own threads, not
    /// the thread that accepts connections); taken at shutdown.
    raft_runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    raft_handle: tokio::runtime::Handle,
    /// The Raft groups of this node's chunk replicas, by chunk id.
    groups: std::sync::RwLock<std::collections::HashMap<GroupId, Group>>,
    /// See [`Cluster::replicas_wanted`].
    replicas_wanted: tokio::sync::Notify,
}

struct Member {
    id: NodeId,
    /// The cluster's id.
    cluster: u64,
    meta: Group,
    state: MetaMachine,
    /// The segment regions this node serves to replicas copying its
    /// chunks' logs ([`crate::segments`]), the reader of other nodes', and
    /// the copies under way.
    copies: Arc<SnapshotCopies>,
    /// The regions exposed to RDMA READs, when this node has a device.
    #[cfg(feature = "rdma")]
    rdma: Option<Arc<crate::segments::rdma::RdmaOwner>>,
}

fn unavailable(message: impl Into<String>) -> NodeError {
    NodeError::client(ErrorCode::ClusterUnavailable, message)
}

/// A segment read refused, as the reader's transport maps it back.
fn read_refusal(e: ReadError) -> NodeError {
    let code = match e {
        ReadError::Gone { .. } => ErrorCode::SnapshotNotFound,
        ReadError::OutOfBounds { .. } => ErrorCode::BadRequest,
        ReadError::Failed { .. } => ErrorCode::Internal,
    };
    NodeError::client(code, e.to_string())
}

/// The answer of a node that cannot serve RDMA READs.
fn no_rdma() -> NodeError {
    let why = if cfg!(feature = "rdma") {
        "this node has no RDMA device"
    } else {
        "this node was built without RDMA (cargo feature `rdma`)"
    };
    NodeError::client(ErrorCode::BadRequest, format!("{why}: read its segments over TCP"))
}

/// The segment reader of a node built with RDMA: RDMA READs when a device
/// opens (each owner over TCP when RDMA with it fails), else TCP; and the
/// owner's side, exposing this node's regions, when a device opened.
#[cfg(feature = "rdma")]
fn rdma_transport(
    tcp: transport::SegmentReads,
    regions: &Arc<Regions>,
) -> (Arc<dyn SegmentReader>, Option<Arc<crate::segments::rdma::RdmaOwner>>) {
    match crate::segments::rdma::Verbs::open() {
        Ok(verbs) => {
            let verbs = Arc::new(verbs);
            tracing::info!(device = verbs.name(), "segment reads use RDMA READ");
            let owner = crate::segments::rdma::RdmaOwner::new(verbs.clone(), regions.clone());
            (Arc::new(transport::RdmaSegmentReads::new(verbs, tcp)), Some(Arc::new(owner)))
        }
        Err(reason) => {
            tracing::info!(%reason, "no RDMA device: segment reads use TCP");
            (Arc::new(tcp), None)
        }
    }
}

fn consensus_error(e: ConsensusError) -> NodeError {
    match e {
        ConsensusError::NotLeader { .. } | ConsensusError::Timeout(_) => unavailable(e.to_string()),
        // Another membership change is under way: retry once it is done.
        ConsensusError::Membership(m) => {
            unavailable(format!("another membership change is under way; retry ({m})"))
        }
        ConsensusError::Fatal(m) => NodeError::Internal(format!("meta range: {m}")),
    }
}

fn peer_error(addr: &str, e: PeerError) -> NodeError {
    match e {
        PeerError::Server(info)
        | PeerError::Connect(monotable_client::Error::Server(info))
        | PeerError::Connect(monotable_client::Error::Handshake(info)) => {
            NodeError::client(info.code, format!("node at {addr}: {}", info.message))
        }
        e => unavailable(format!("node at {addr}: {e}")),
    }
}

/// How long [`Cluster::catch_up_meta`] waits for this node's meta replica.
/// Only a replica that is behind waits: one that is not returns at once.
/// A loaded node applies seconds behind (a follower answered "range does
/// not exist" for a range created through another node a moment before,
/// after a 2 s wait, under a CI machine's load).
pub const META_CATCH_UP_MAX_MS: u64 = 10_000;

/// Where a request for the meta leader goes.
enum Leader<'a> {
    Here(&'a Group),
    At(String),
}

impl Cluster {
    /// Starts this node's part of the cluster: resumes its meta replica, or
    /// founds a cluster, or (with `config.join`) starts joining in the
    /// background; the node serves meanwhile, and requests that need the
    /// cluster fail with [`ErrorCode::ClusterUnavailable`] until it has
    /// joined.
    ///
    /// Errors: the catalog cannot record the identity; the meta replica's
    /// storage cannot be opened; the node has meta storage but no identity
    /// (a catalog rebuilt by `--recover-catalog` loses it: rejoining under
    /// a new id would be unsafe).
    pub async fn start(
        config: ClusterConfig,
        identities: IdentityStore,
        sync: Arc<dyn SyncPoint>,
    ) -> NodeResult<Arc<Cluster>> {
        // Nothing is written before the settings are known to work.
        config.timing.validate().map_err(NodeError::Start)?;
        if let Some(seed) = &config.join {
            check_seed(seed, &config.advertise)?;
        }
        let copy = config.dir.join(IDENTITY_FILE);
        let identity = match identities.get().map_err(|e| NodeError::Start(e.to_string()))? {
            Some(i) => Some(i),
            // A catalog rebuilt by --recover-catalog: the copy beside the
            // meta replica says who this node is.
            None => match read_identity(&copy)? {
                Some(i) => {
                    identities.set(&i).map_err(|e| NodeError::Start(e.to_string()))?;
                    tracing::warn!(node = ?i.node, file = %copy.display(), "cluster identity restored into the catalog");
                    Some(i)
                }
                None => None,
            },
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RAFT_THREADS)
            .thread_name("monotable-raft")
            .enable_all()
            .build()
            .map_err(|e| NodeError::Start(format!("cannot start the Raft threads: {e}")))?;
        let raft_handle = runtime.handle().clone();
        let cluster = Arc::new(Cluster {
            raft_runtime: std::sync::Mutex::new(Some(runtime)),
            raft_handle,
            peers: Peers::new(config.password.clone()),
            config,
            sync,
            member: OnceLock::new(),
            quiescence: OnceLock::new(),
            groups: Default::default(),
            replicas_wanted: Default::default(),
        });
        let meta_dir = cluster.meta_dir();
        match identity {
            Some(ClusterIdentity { node: Some(id), cluster: cluster_id, .. }) => {
                if let Some(join) = &cluster.config.join {
                    tracing::info!(node = id, %join, "already a member of a cluster; --join ignored");
                }
                cluster.run_meta(id, cluster_id).await?;
                tracing::info!(node = id, "resumed cluster membership");
                let this = cluster.clone();
                tokio::spawn(async move { this.check_address(id).await });
                if id == 1 {
                    // A founder that stopped before its registration
                    // committed registers now (idempotent by token).
                    let (this, token) = (cluster.clone(), identity.map_or(0, |i| i.join_token));
                    tokio::spawn(async move { this.ensure_founded(token).await });
                }
            }
            identity => {
                if meta_dir.exists() {
                    return Err(NodeError::Start(format!(
                        "{} holds this node's replica of the cluster's meta range, but the \
                         catalog has no node id and its copy in the cluster directory is \
                         gone; this node cannot safely rejoin under a new id: \
                         remove it from the cluster (`monotable cluster remove`) and start it \
                         on an empty data directory",
                        meta_dir.display()
                    )));
                }
                let join_token = match identity {
                    Some(i) => i.join_token,
                    None => {
                        let token = rand::random::<u64>().max(1);
                        let identity =
                            ClusterIdentity { join_token: token, node: None, cluster: 0 };
                        identities.set(&identity).map_err(|e| NodeError::Start(e.to_string()))?;
                        token
                    }
                };
                match cluster.config.join.clone() {
                    None => {
                        cluster.found(&identities, join_token).await?;
                    }
                    Some(seed) => {
                        let this = cluster.clone();
                        tokio::spawn(
                            async move { this.join(&identities, &seed, join_token).await },
                        );
                    }
                }
            }
        }
        Ok(cluster)
    }

    /// Records the identity in the catalog and, as a copy that survives a
    /// rebuilt catalog, in the cluster directory.
    fn record_identity(
        &self,
        identities: &IdentityStore,
        identity: ClusterIdentity,
    ) -> NodeResult<()> {
        identities.set(&identity).map_err(|e| NodeError::Internal(e.to_string()))?;
        std::fs::create_dir_all(&self.config.dir)
            .map_err(|e| NodeError::Internal(format!("{}: {e}", self.config.dir.display())))?;
        let bytes = rmp_serde::to_vec(&identity).expect("identities encode");
        crate::storage::chunk_log::write_file_durably(&self.config.dir, IDENTITY_FILE, &bytes)
            .map_err(|e| NodeError::Internal(e.to_string()))
    }

    fn meta_dir(&self) -> PathBuf {
        self.config.dir.join("meta")
    }

    /// Starts this node's meta replica under `id`.
    async fn run_meta(&self, id: NodeId, cluster: u64) -> NodeResult<&Member> {
        self.peers.set_ids(cluster, id);
        let dir = self.meta_dir();
        let start = |e: String| NodeError::Start(format!("meta range at {}: {e}", dir.display()));
        let log = LogStore::open(&dir.join("log"), self.sync.clone())
            .map_err(|e| start(e.to_string()))?;
        let state = MetaMachine::default();
        let machine = MachineStore::open(&dir.join("machine"), Box::new(state.clone()))
            .map_err(|e| start(e.to_string()))?;
        log.unpurge_to_snapshot(machine.last_applied()).map_err(|e| start(e.to_string()))?;
        let config = GroupConfig {
            group: META_GROUP,
            node: id,
            timing: self.config.timing,
            snapshot_every_entries: META_SNAPSHOT_EVERY_ENTRIES,
            snapshot_gate: None,
        };
        let meta =
            self.start_group(config, log, machine).await.map_err(|e| start(e.to_string()))?;
        let quiescence = self.quiescence.get_or_init(|| {
            let _on_raft_threads = self.raft_handle.enter();
            crate::consensus::Quiescence::start(
                id,
                self.config.timing,
                Arc::new(self.peers.clone()),
            )
        });
        meta.join_quiescence(quiescence);
        let regions = Arc::new(Regions::new(id, self.config.advertise.clone()));
        let tcp = transport::SegmentReads { peers: self.peers.clone(), cluster };
        #[cfg(feature = "rdma")]
        let (reader, rdma) = rdma_transport(tcp, &regions);
        #[cfg(not(feature = "rdma"))]
        let reader: Arc<dyn SegmentReader> = Arc::new(tcp);
        let copies = Arc::new(SnapshotCopies::new(regions, reader));
        let _ = self.member.set(Member {
            id,
            cluster,
            meta,
            state,
            copies,
            #[cfg(feature = "rdma")]
            rdma,
        });
        Ok(self.member.get().expect("just set"))
    }

    /// Founds a cluster of one: id 1, the only voter of the meta range.
    async fn found(&self, identities: &IdentityStore, join_token: u64) -> NodeResult<()> {
        let cluster = rand::random::<u64>().max(1);
        self.record_identity(identities, ClusterIdentity { join_token, node: Some(1), cluster })?;
        let member = self.run_meta(1, cluster).await?;
        let voters = BTreeMap::from([(1, self.config.advertise.clone())]);
        member.meta.initialize(voters).await.map_err(|e| NodeError::Start(e.to_string()))?;
        let found = MetaCommand::Found { addr: self.config.advertise.clone(), join_token, cluster };
        self.propose(found).await?;
        tracing::info!(
            node = 1,
            cluster = format!("{cluster:016x}"),
            "founded a cluster of one node"
        );
        Ok(())
    }

    /// Warns when the cluster knows this node under another address than
    /// the one it advertises now: the other nodes cannot reach it.
    async fn check_address(&self, id: NodeId) {
        for _ in 0..100 {
            let known = self.meta().and_then(|m| m.nodes.get(&id).map(|n| n.addr.clone()));
            if let Some(known) = known {
                if known != self.config.advertise {
                    tracing::warn!(
                        node = id,
                        %known,
                        advertised = %self.config.advertise,
                        "the cluster knows this node at another address, where the other \
                         nodes will look for it: start it with --listen (or \
                         --advertise-addr) {known}"
                    );
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Registers the founding node if the meta range does not list it yet.
    async fn ensure_founded(&self, join_token: u64) {
        let Ok(member) = self.member() else { return };
        // A founder that stopped before its meta range was initialized has
        // an empty Raft log and no vote: no other node can have joined
        // through it, so it founds again.
        if member.meta.status().voters.is_empty() {
            let voters = BTreeMap::from([(member.id, self.config.advertise.clone())]);
            if let Err(e) = member.meta.initialize(voters).await {
                tracing::warn!(error = %e, "initializing the meta range failed");
            }
        }
        let registered = || member.state.state().nodes.values().any(|n| n.join_token == join_token);
        // Applying the log after a restart may take a moment; only the
        // leader (which has applied everything committed) decides.
        for _ in 0..100 {
            if registered() {
                return;
            }
            if let Ok(Leader::Here(_)) = self.leader().await {
                if member.meta.read_barrier().await.is_ok() && !registered() {
                    let found = MetaCommand::Found {
                        addr: self.config.advertise.clone(),
                        join_token,
                        cluster: member.cluster,
                    };
                    if let Err(e) = self.propose(found).await {
                        tracing::warn!(error = %e, "registering the founding node failed");
                    }
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Joins the cluster the node at `seed` belongs to, retrying until it
    /// succeeds (the seed or the meta leader may be down for a while).
    async fn join(&self, identities: &IdentityStore, seed: &str, join_token: u64) {
        let addr = self.config.advertise.clone();
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match self.join_once(identities, seed, &addr, join_token).await {
                Ok(id) => {
                    tracing::info!(node = id, %seed, "joined the cluster");
                    return;
                }
                Err(e) => {
                    let code = e.to_info().code;
                    if matches!(code, ErrorCode::AuthFailed | ErrorCode::NoAuth) {
                        // Not going away by itself: every node of a cluster
                        // needs the same --requirepass. Slowly, so as not to
                        // lock the seed's address out.
                        tracing::error!(%seed, error = %e, "the seed refused this node's password; give every node of the cluster the same --requirepass");
                        tokio::time::sleep(Duration::from_millis(JOIN_AUTH_RETRY_MS)).await;
                    } else {
                        tracing::warn!(%seed, attempt, error = %e, "joining the cluster failed; retrying");
                        tokio::time::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
                    }
                }
            }
        }
    }

    async fn join_once(
        &self,
        identities: &IdentityStore,
        seed: &str,
        addr: &str,
        join_token: u64,
    ) -> NodeResult<NodeId> {
        let id = match self.member.get() {
            Some(m) => m.id,
            None => {
                let (id, cluster) = self
                    .peers
                    .call(seed, |c| async move { c.cluster_join(addr, join_token).await })
                    .await
                    .map_err(|e| peer_error(seed, e))?;
                let identity = ClusterIdentity { join_token, node: Some(id), cluster };
                self.record_identity(identities, identity)?;
                self.run_meta(id, cluster).await?;
                id
            }
        };
        self.peers
            .call(seed, |c| async move { c.cluster_add_voter(id, addr).await })
            .await
            .map_err(|e| peer_error(seed, e))?;
        Ok(id)
    }

    /// This node's id, once it has one.
    pub fn node_id(&self) -> Option<NodeId> {
        self.member.get().map(|m| m.id)
    }

    fn member(&self) -> NodeResult<&Member> {
        self.member.get().ok_or_else(|| unavailable("this node has not joined its cluster yet"))
    }

    /// Finds the meta leader, waiting for an election if there is none.
    async fn leader(&self) -> NodeResult<Leader<'_>> {
        let member = self.member()?;
        let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MAX_MS);
        loop {
            // A removed node stops its replica of the meta range: whoever
            // asked it (taking it for the leader) asks again elsewhere.
            if member.state.state().nodes.get(&member.id).is_some_and(|n| n.removed) {
                return Err(unavailable(format!(
                    "node {} was removed from the cluster; ask another node",
                    member.id
                )));
            }
            let status = member.meta.status();
            match status.leader {
                Some(id) if id == member.id && status.state == "leader" => {
                    return Ok(Leader::Here(&member.meta))
                }
                Some(id) if id != member.id => {
                    let addr = status.voters.get(&id).or_else(|| status.learners.get(&id));
                    if let Some(addr) = addr {
                        return Ok(Leader::At(addr.clone()));
                    }
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(unavailable(format!(
                    "the cluster's meta range has no leader after {LEADER_WAIT_MAX_MS} ms \
                     (is a majority of its nodes up?)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log index of the last command this node's meta replica applied
    /// (read from the machine itself: openraft's metrics may lag it, and a
    /// reply to a proposal leaves once the machine applied it).
    pub fn meta_applied(&self) -> Option<u64> {
        self.with_meta(|m| m.applied)
    }

    /// Waits (up to [`META_CATCH_UP_MAX_MS`]) until this node's meta
    /// replica has applied everything the meta range's leader had applied
    /// when asked: after it, a range created (or dropped) through any node
    /// before the call is seen here. Returns whether it caught up.
    pub async fn catch_up_meta(&self) -> bool {
        let Ok(member) = self.member() else { return false };
        let target = match self.leader().await {
            Ok(Leader::Here(group)) => return group.read_barrier().await.is_ok(),
            Ok(Leader::At(addr)) => {
                match self.peers.call(&addr, |c| async move { c.node_info().await }).await {
                    Ok(info) => info.meta_applied,
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        };
        let deadline = Instant::now() + Duration::from_millis(META_CATCH_UP_MAX_MS);
        loop {
            if Some(member.state.state().applied) >= target {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Proposes a meta command on this node, which must lead the meta range.
    async fn propose_here(group: &Group, command: &MetaCommand) -> NodeResult<MetaReply> {
        let bytes = group
            .propose(rmp_serde::to_vec(command).expect("meta commands encode"))
            .await
            .map_err(consensus_error)?;
        rmp_serde::from_slice(&bytes)
            .map_err(|e| NodeError::Internal(format!("undecodable meta reply: {e}")))
    }

    /// Proposes `command` on the meta range, on its leader wherever it is
    /// (forwarded with `Command::MetaPropose`), retrying while leadership
    /// moves. Every copy carries one token ([`MetaCommand::Once`]), so a
    /// copy sent again after an answer was lost (a timeout, a leader that
    /// died after proposing it) is applied once and answered as the first.
    async fn propose(&self, command: MetaCommand) -> NodeResult<MetaReply> {
        let command = MetaCommand::Once { token: rand::random(), command: Box::new(command) };
        let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MAX_MS);
        let encoded = rmp_serde::to_vec(&command).expect("meta commands encode");
        loop {
            let attempt = match self.leader().await? {
                Leader::Here(group) => Self::propose_here(group, &command).await,
                Leader::At(addr) => {
                    let bytes = encoded.clone();
                    self.peers
                        .call(&addr, |c| async move {
                            c.forward(monotable_proto::Command::MetaPropose {
                                command: bytes.into(),
                            })
                            .await
                        })
                        .await
                        .map_err(|e| peer_error(&addr, e))
                        .and_then(|reply| match reply {
                            monotable_proto::Reply::Raft(b) => {
                                rmp_serde::from_slice(&b).map_err(|e| {
                                    NodeError::Internal(format!("undecodable meta reply: {e}"))
                                })
                            }
                            other => {
                                Err(NodeError::Internal(format!("unexpected reply {other:?}")))
                            }
                        })
                }
            };
            match attempt {
                Err(e)
                    if Instant::now() < deadline
                        && e.to_info().code == ErrorCode::ClusterUnavailable =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r => return r,
            }
        }
    }

    /// `Command::MetaPropose`: proposes an encoded meta command here, if
    /// this node leads the meta range (a forwarded proposal is not
    /// forwarded again).
    pub async fn propose_encoded(&self, command: &[u8]) -> NodeResult<Vec<u8>> {
        let command: MetaCommand = rmp_serde::from_slice(command).map_err(|e| {
            NodeError::client(ErrorCode::BadRequest, format!("undecodable meta command: {e}"))
        })?;
        let group = match self.leader().await? {
            Leader::Here(group) => group,
            Leader::At(addr) => {
                return Err(unavailable(format!("the meta leader is at {addr}, not here")))
            }
        };
        let reply = Self::propose_here(group, &command).await?;
        Ok(rmp_serde::to_vec(&reply).expect("meta replies encode"))
    }

    /// `Command::ClusterJoin`: gives a joining node its id, on the meta
    /// leader (forwarded there from any node).
    pub async fn join_request(&self, addr: String, join_token: u64) -> NodeResult<(NodeId, u64)> {
        self.retrying(|| self.join_request_once(addr.clone(), join_token)).await
    }

    async fn join_request_once(&self, addr: String, join_token: u64) -> NodeResult<(NodeId, u64)> {
        match self.leader().await? {
            Leader::Here(_) => match self.propose(MetaCommand::Join { addr, join_token }).await? {
                MetaReply::Node(id) => Ok((id, self.member()?.cluster)),
                MetaReply::Refused(m) => Err(NodeError::client(ErrorCode::BadRequest, m)),
                _ => Err(NodeError::Internal("a join answered no node id".into())),
            },
            Leader::At(leader) => self
                .peers
                .call(&leader, |c| {
                    let addr = addr.clone();
                    async move { c.cluster_join(&addr, join_token).await }
                })
                .await
                .map_err(|e| peer_error(&leader, e)),
        }
    }

    /// `Command::ClusterAddVoter`: makes a registered node a voter of the
    /// meta range, on the leader (forwarded there from any node). Returns
    /// once the node has caught up and the membership change committed.
    pub async fn add_voter(&self, node: NodeId, addr: String) -> NodeResult<()> {
        self.retrying(|| self.add_voter_once(node, addr.clone())).await
    }

    async fn add_voter_once(&self, node: NodeId, addr: String) -> NodeResult<()> {
        match self.leader().await? {
            Leader::Here(group) => {
                let registered = self.member()?.state.state().nodes.get(&node).cloned();
                match registered {
                    Some(r) if !r.removed && r.addr == addr => {}
                    _ => {
                        return Err(NodeError::client(
                            ErrorCode::BadRequest,
                            format!("node {node} at {addr} has not joined through ClusterJoin"),
                        ))
                    }
                }
                group.add_voter(node, addr).await.map_err(consensus_error)
            }
            Leader::At(leader) => self
                .peers
                .call(&leader, |c| {
                    let addr = addr.clone();
                    async move { c.cluster_add_voter(node, &addr).await }
                })
                .await
                .map_err(|e| peer_error(&leader, e)),
        }
    }

    /// `Command::ClusterRemove`: takes `node` out of the meta range and
    /// marks it removed, on the leader (forwarded there from any node).
    pub async fn remove(&self, node: NodeId) -> NodeResult<()> {
        self.retrying(|| self.remove_once(node)).await
    }

    /// Runs `attempt` again while it fails with `ClusterUnavailable` (the
    /// leader moved or is being elected), up to the leader wait.
    async fn retrying<T, F, Fut>(&self, attempt: F) -> NodeResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = NodeResult<T>>,
    {
        let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MAX_MS);
        loop {
            match attempt().await {
                Err(e)
                    if e.to_info().code == ErrorCode::ClusterUnavailable
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r => return r,
            }
        }
    }

    async fn remove_once(&self, node: NodeId) -> NodeResult<()> {
        match self.leader().await? {
            Leader::Here(group) => {
                let known = self.member()?.state.state().nodes.get(&node).cloned();
                let Some(record) = known else {
                    return Err(NodeError::client(
                        ErrorCode::BadRequest,
                        format!("the cluster has no node {node}"),
                    ));
                };
                let status = group.status();
                let member =
                    status.voters.contains_key(&node) || status.learners.contains_key(&node);
                if member && !status.voters.keys().any(|v| *v != node) {
                    return Err(NodeError::client(
                        ErrorCode::BadRequest,
                        format!("node {node} is the cluster's last voter"),
                    ));
                }
                // A node that holds replicas is drained first: they move
                // to other nodes ([`balance`]), which then remove it.
                let listed = self
                    .with_meta(|m| m.ranges.values().any(|r| r.replicas.contains(&node)))
                    .unwrap_or(false);
                if listed && !record.removed {
                    return match self.propose(MetaCommand::Drain { node }).await? {
                        MetaReply::Refused(m) => Err(NodeError::client(ErrorCode::BadRequest, m)),
                        _ => Ok(()),
                    };
                }
                // Marked removed first, so its join token can never rejoin
                // even if the membership change below is cut short; a
                // repeated removal finishes what is left.
                if !record.removed {
                    if let MetaReply::Refused(m) =
                        self.propose(MetaCommand::Remove { node }).await?
                    {
                        return Err(NodeError::client(ErrorCode::BadRequest, m));
                    }
                }
                if member {
                    group.remove_member(node).await.map_err(consensus_error)?;
                }
                Ok(())
            }
            Leader::At(leader) => self
                .peers
                .call(&leader, |c| async move { c.cluster_remove(node).await })
                .await
                .map_err(|e| peer_error(&leader, e)),
        }
    }

    /// Answers a Raft RPC for one of this node's groups, sent by node
    /// `from` of cluster `cluster` to node `to`.
    ///
    /// Errors: the message is for another cluster or another node id (a
    /// node that took over a member's address must not answer for it), or
    /// comes from a node removed from the cluster.
    pub async fn handle_rpc(
        &self,
        group: GroupId,
        rpc: &[u8],
        (cluster, from, to): (u64, u64, u64),
    ) -> NodeResult<Vec<u8>> {
        let Some(member) = self.member.get() else {
            return Ok(encode(&RaftRpcReply::NoGroup));
        };
        let refuse = |why: String| Err(NodeError::client(ErrorCode::BadRequest, why));
        if cluster != member.cluster || to != member.id {
            return refuse(format!(
                "a raft message for node {to} of cluster {cluster:016x} reached node {} of \
                 cluster {:016x}",
                member.id, member.cluster
            ));
        }
        if member.state.state().nodes.get(&from).is_some_and(|n| n.removed) {
            return refuse(format!("node {from} was removed from the cluster"));
        }
        if group == crate::consensus::NODE_GROUP {
            return match self.quiescence.get() {
                Some(q) => {
                    q.handle_rpc(rpc).map_err(|e| NodeError::client(ErrorCode::BadRequest, e))
                }
                None => Ok(encode(&RaftRpcReply::NoGroup)),
            };
        }
        let target = match group {
            META_GROUP => member.meta.clone(),
            id => match self.group(id) {
                Some(g) => g,
                None => return Ok(encode(&RaftRpcReply::NoGroup)),
            },
        };
        target.handle_rpc(rpc).await.map_err(|e| NodeError::client(ErrorCode::BadRequest, e))
    }

    /// Serves `SegmentRead` (a segment read of another node, see
    /// [`crate::segments`]) from the file: the bytes asked for, left in
    /// the region's file ([`Regions::slice`]) for the connection to send
    /// with `sendfile`, so they never pass through this node's memory.
    ///
    /// Errors: a read of another cluster, before this node is a member,
    /// or of a region that is gone (`SnapshotNotFound`), outside its
    /// region (`BadRequest`), or whose file cannot be looked at
    /// (`Internal`).
    pub fn segment_slice(
        &self,
        cluster: u64,
        (incarnation, region): (u64, u64),
        offset: u64,
        len: u32,
    ) -> NodeResult<(Arc<std::fs::File>, u32)> {
        let regions = &self.member_of(cluster, "a segment read")?.copies.regions;
        regions.slice(incarnation, region, offset, len).map_err(read_refusal)
    }

    /// This node's membership, for a node-to-node request (`what`) of
    /// cluster `cluster`.
    ///
    /// Errors: before this node is a member (`ClusterUnavailable`), or a
    /// request of another cluster (`BadRequest`, not naming this one).
    fn member_of(&self, cluster: u64, what: &str) -> NodeResult<&Member> {
        let member = self.member.get().ok_or_else(|| unavailable("this node is not a member"))?;
        if cluster != member.cluster {
            return Err(NodeError::client(
                ErrorCode::BadRequest,
                format!("{what} for cluster {cluster:016x} reached another cluster"),
            ));
        }
        Ok(member)
    }

    /// Serves `RdmaConnect`: a queue pair connected to `reader`'s.
    ///
    /// Errors: as [`Cluster::read_segment`]'s membership checks;
    /// `BadRequest` on a node without RDMA (the reader then reads over
    /// TCP); `Internal` if the verbs fail.
    pub async fn rdma_connect(
        &self,
        cluster: u64,
        reader: monotable_proto::RdmaEndpoint,
    ) -> NodeResult<monotable_proto::RdmaEndpoint> {
        let member = self.member_of(cluster, "an RDMA connection")?;
        #[cfg(feature = "rdma")]
        if let Some(owner) = member.rdma.clone() {
            return tokio::task::spawn_blocking(move || owner.connect(&reader))
                .await
                .map_err(|e| NodeError::Internal(format!("RDMA connect: {e}")))?
                .map_err(|e| NodeError::Internal(format!("RDMA connect: {e}")));
        }
        let _ = (member, reader);
        Err(no_rdma())
    }

    /// Serves `RdmaRegion`: exposes a region to RDMA READs, renewing its
    /// lease; `(addr, rkey, len)`.
    ///
    /// Errors: as [`Cluster::read_segment`]; `BadRequest` on a node without
    /// RDMA.
    pub async fn rdma_region(
        &self,
        cluster: u64,
        (incarnation, region): (u64, u64),
    ) -> NodeResult<(u64, u32, u64)> {
        let member = self.member_of(cluster, "an RDMA region")?;
        #[cfg(feature = "rdma")]
        if let Some(owner) = member.rdma.clone() {
            return tokio::task::spawn_blocking(move || owner.expose(incarnation, region))
                .await
                .map_err(|e| NodeError::Internal(format!("RDMA region: {e}")))?
                .map_err(read_refusal);
        }
        let _ = (member, incarnation, region);
        Err(no_rdma())
    }

    /// The copies of chunk segments this node has under way.
    pub fn copies_under_way(&self) -> Vec<monotable_proto::CopyStatus> {
        let Some(copies) = self.snapshot_copies() else { return Vec::new() };
        copies
            .under_way()
            .into_iter()
            .map(|(chunk, p)| monotable_proto::CopyStatus {
                chunk,
                from: p.source,
                copied_bytes: p.copied_bytes(),
                total_bytes: p.total_bytes(),
                rate_bytes_per_sec: p.rate_bytes_per_sec(),
                elapsed_ms: p.started.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// This node's segment regions, a reader of other nodes' (over the
    /// native protocol) and the copies under way, once the node is a
    /// member.
    pub fn snapshot_copies(&self) -> Option<Arc<SnapshotCopies>> {
        Some(self.member.get()?.copies.clone())
    }

    /// The Raft group of chunk replica `id` on this node.
    pub fn group(&self, id: GroupId) -> Option<Group> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// Registers a chunk replica's group, so RPCs for it reach it, and
    /// lets it go quiet when idle.
    pub fn add_group(&self, group: Group) {
        if let Some(q) = self.quiescence.get() {
            group.join_quiescence(q);
        }
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group.id(), group);
    }

    /// Unregisters a chunk replica's group and returns it.
    pub fn remove_group(&self, id: GroupId) -> Option<Group> {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&id)
    }

    /// Notified when a chunk replica of this node was unregistered to be
    /// started again (see [`placement`]); whoever starts replicas waits on
    /// it besides the meta range's changes.
    pub fn replicas_wanted(&self) -> &tokio::sync::Notify {
        &self.replicas_wanted
    }

    /// Shuts down (in the background) this node's replica of chunk `id`, so
    /// that it stops serving at once and the others elect a leader; it stays
    /// registered, and [`placement`] starts it again.
    pub fn stop_replica(&self, id: GroupId) {
        if let Some(group) = self.group(id) {
            self.raft_handle.spawn(async move { group.shutdown().await });
        }
    }

    /// The meta range's group (this node's replica of it); `None` until
    /// the node founded or joined its cluster.
    pub fn meta_group(&self) -> Option<Group> {
        self.member.get().map(|m| m.meta.clone())
    }

    /// The groups of this node's chunk replicas.
    pub fn groups(&self) -> Vec<Group> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Starts a Raft group of this node on the node's Raft threads.
    pub async fn start_group(
        &self,
        config: GroupConfig,
        log: LogStore,
        machine: impl crate::consensus::StateMachineStore,
    ) -> Result<Group, ConsensusError> {
        Group::start_on(&self.raft_handle, config, log, machine, Arc::new(self.peers.clone())).await
    }

    /// The connections to peers.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Raft's timers on this node.
    pub fn timing(&self) -> Timing {
        self.config.timing
    }

    /// What this node's meta replica has applied (a copy).
    pub fn meta(&self) -> Option<meta::MetaState> {
        self.with_meta(meta::MetaState::clone)
    }

    /// Runs `f` on what this node's meta replica has applied, without
    /// copying it (for the request path).
    pub fn with_meta<T>(&self, f: impl FnOnce(&meta::MetaState) -> T) -> Option<T> {
        self.member.get().map(|m| f(&m.state.state()))
    }

    /// Changes whenever this node's meta replica applies a command.
    pub fn meta_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.member.get().map(|m| m.state.changes())
    }

    /// Proposes `command` on the meta range, through its leader.
    pub async fn propose_meta(&self, command: MetaCommand) -> NodeResult<MetaReply> {
        self.propose(command).await
    }

    /// The sync point the groups of this node share.
    pub fn sync_point(&self) -> Arc<dyn SyncPoint> {
        self.sync.clone()
    }

    /// The cluster as this node sees it; `local` is this node's own info.
    /// Every other registered node is asked for its info (one second each,
    /// in parallel); one that does not answer is reported not live.
    pub async fn status(&self, local: NodeInfo) -> NodeResult<ClusterStatus> {
        let member = self.member()?;
        if member.state.state().nodes.get(&member.id).is_some_and(|n| n.removed) {
            return Err(NodeError::client(
                ErrorCode::BadRequest,
                format!(
                    "this node (node {}) was removed from the cluster; to bring it back, start \
                     it on an empty data directory with --join",
                    member.id
                ),
            ));
        }
        let meta = member.meta.status();
        let nodes: Vec<(NodeId, meta::NodeRecord)> =
            member.state.state().live_members().map(|(id, n)| (id, n.clone())).collect();
        let others = nodes.iter().filter(|(id, _)| *id != member.id);
        let timeout = Duration::from_millis(STATUS_PROBE_TIMEOUT_MS);
        let mut answers =
            self.peers.probe(others.map(|(id, r)| (*id, r.addr.clone())), timeout).await;
        let infos: Vec<Option<NodeInfo>> = nodes
            .iter()
            .map(|(id, _)| if *id == member.id { Some(local.clone()) } else { answers.remove(id) })
            .collect();
        let nodes = nodes
            .into_iter()
            .zip(infos)
            .map(|((id, record), info)| NodeStatus {
                id,
                addr: record.addr,
                live: info.is_some(),
                meta_role: if meta.leader == Some(id) {
                    "leader"
                } else if meta.voters.contains_key(&id) {
                    "voter"
                } else if meta.learners.contains_key(&id) {
                    "learner"
                } else {
                    "none"
                }
                .to_owned(),
                info,
                draining: record.draining,
            })
            .collect();
        Ok(ClusterStatus {
            answered_by: member.id,
            meta_leader: meta.leader,
            meta_term: meta.term,
            nodes,
        })
    }

    /// Whether [`Cluster::shutdown`] ran.
    pub fn is_shut_down(&self) -> bool {
        self.raft_runtime.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Once the meta range says this node was removed from the cluster and
    /// its own replica of the meta range no longer counts it a member,
    /// stops that replica, then each chunk replica whose Raft group has
    /// left this node out (as the replica or the group's leader says) or
    /// that stopped; returns whether none is left running. A chunk group
    /// that still counts this node keeps its replica until its leader has
    /// moved it away: until then it may count towards a majority, and
    /// entries it acknowledged would be lost with it. Left running after
    /// that, a group would campaign for ever, refused by every member.
    pub async fn stop_if_removed(&self) -> bool {
        let Some(member) = self.member.get() else { return false };
        let removed = member.state.state().nodes.get(&member.id).is_some_and(|n| n.removed);
        // Not before the meta range's membership left it out: a leader
        // removing itself finishes that change first.
        if !removed && !self.removed_while_away(member).await {
            return false;
        }
        if member.meta.stopped().is_none() {
            let meta = member.meta.status();
            let still_member =
                meta.voters.contains_key(&member.id) || meta.learners.contains_key(&member.id);
            if still_member && !self.left_meta_group(member).await {
                return false;
            }
            tracing::warn!(
                node = member.id,
                "this node was removed from the cluster: its Raft groups stop as each moves its \
                 replica away (start it on an empty data directory with --join to bring it back)"
            );
            member.meta.shutdown().await;
        }
        let ask = Duration::from_millis(transport::PEER_CALL_TIMEOUT_MS);
        let mut running = 0;
        for g in self.groups() {
            let status = g.status();
            let listed =
                |id: &NodeId| status.voters.contains_key(id) || status.learners.contains_key(id);
            let released = g.stopped().is_some()
                || !listed(&member.id)
                || match status.leader {
                    Some(leader) if leader == member.id => false,
                    _ => {
                        let others = status
                            .voters
                            .iter()
                            .chain(&status.learners)
                            .filter(|(id, _)| **id != member.id)
                            .map(|(_, addr)| addr.clone());
                        self.peers
                            .leader_members(g.id(), others, ask)
                            .await
                            .is_some_and(|m| !m.contains(&member.id))
                    }
                };
            if released {
                if let Some(g) = self.remove_group(g.id()) {
                    g.shutdown().await;
                }
            } else {
                running += 1;
            }
        }
        if running > 0 {
            return false;
        }
        if let Some(q) = self.quiescence.get() {
            q.stop();
        }
        tracing::warn!(node = member.id, "every Raft group of this removed node has stopped");
        true
    }

    /// Whether this node was removed while it was down (or cut off): its
    /// replica of the meta range, which never applied the removal, hears
    /// from no leader (the members refuse it), and the leader the other
    /// members follow counts it out. `false` while this replica has a
    /// leader, or no other member answers.
    async fn removed_while_away(&self, member: &Member) -> bool {
        if member.meta.stopped().is_some() {
            return true;
        }
        if member.meta.status().leader.is_some() {
            return false;
        }
        self.meta_leader_members(member).await.is_some_and(|m| !m.contains(&member.id))
    }

    /// The meta range's members as its leader counts them, asked of every
    /// other live member at once; `None` when no leader answered.
    async fn meta_leader_members(&self, member: &Member) -> Option<Vec<NodeId>> {
        let others: Vec<String> = member
            .state
            .state()
            .live_members()
            .filter(|(id, _)| *id != member.id)
            .map(|(_, n)| n.addr.clone())
            .collect();
        let ask = Duration::from_millis(transport::PEER_CALL_TIMEOUT_MS);
        self.peers.leader_members(META_GROUP, others, ask).await
    }

    /// Whether the meta range's leader (asked with `GroupMembers`) counts
    /// this node out of the meta range's group: a removed follower may
    /// never hear of the configuration that left it out.
    async fn left_meta_group(&self, member: &Member) -> bool {
        match self.meta_leader_members(member).await {
            Some(members) => !members.contains(&member.id),
            None => {
                tracing::info!(
                    node = member.id,
                    "removed from the cluster, but no meta leader answered yet"
                );
                false
            }
        }
    }

    /// This node's replica of group `id`: the meta range's, or a chunk's.
    pub fn group_or_meta(&self, id: GroupId) -> Option<Group> {
        match id {
            META_GROUP => self.member.get().map(|m| m.meta.clone()),
            id => self.group(id),
        }
    }

    /// Stops the Raft groups of this node, then their threads.
    pub async fn shutdown(&self) {
        if let Some(q) = self.quiescence.get() {
            q.stop();
        }
        for g in self.groups() {
            g.shutdown().await;
        }
        if let Some(m) = self.member.get() {
            m.meta.shutdown().await;
        }
        let runtime = self.raft_runtime.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}
