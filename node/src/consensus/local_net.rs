//! An in-process network of nodes for tests and measurements: a
//! [`Transport`] per node that hands each call straight to the target
//! node's [`Group::handle_rpc`] (or its [`Quiescence::handle_rpc`]), counts
//! the messages, and can cut a node off as if its process had died.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::futures_lite::BoxedFuture;
use super::quiescence::{Quiescence, NODE_GROUP};
use super::{encode, Group, GroupId, NodeId, RaftRpcReply, Transport, TransportError};

#[derive(Default)]
struct LocalNode {
    groups: RwLock<HashMap<GroupId, Group>>,
    quiescence: RwLock<Option<Quiescence>>,
    down: AtomicBool,
}

/// The nodes of one in-process cluster. Shared by the transports it makes.
#[derive(Default)]
pub struct LocalNet {
    nodes: RwLock<HashMap<NodeId, Arc<LocalNode>>>,
    messages: AtomicU64,
    /// Messages per group ([`NODE_GROUP`] for node-level ones).
    per_group: Mutex<HashMap<GroupId, u64>>,
}

impl LocalNet {
    pub fn new() -> Arc<LocalNet> {
        Arc::new(LocalNet::default())
    }

    fn node(&self, node: NodeId) -> Arc<LocalNode> {
        if let Some(n) = self.nodes.read().unwrap_or_else(|p| p.into_inner()).get(&node) {
            return n.clone();
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.entry(node).or_default().clone()
    }

    /// The transport node `from` sends through.
    pub fn transport(self: &Arc<Self>, from: NodeId) -> Arc<dyn Transport> {
        self.node(from);
        Arc::new(LocalTransport { net: self.clone(), from })
    }

    /// Makes `group` (a replica on `node`) reachable by the other nodes.
    pub fn add_group(&self, node: NodeId, group: Group) {
        let n = self.node(node);
        n.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group.id(), group);
    }

    /// Routes node-level messages to `node` to `quiescence` (in place of
    /// the one before, as after a restart of the node).
    pub fn set_quiescence(&self, node: NodeId, quiescence: Quiescence) {
        *self.node(node).quiescence.write().unwrap_or_else(|p| p.into_inner()) = Some(quiescence);
    }

    /// A node that is down neither sends nor receives: every call from or
    /// to it fails as [`TransportError::Unreachable`].
    pub fn set_down(&self, node: NodeId, down: bool) {
        self.node(node).down.store(down, Ordering::SeqCst);
    }

    /// Calls delivered or attempted so far, every group's and the
    /// node-level ones.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Calls attempted for `group` so far.
    pub fn group_messages(&self, group: GroupId) -> u64 {
        self.per_group.lock().unwrap_or_else(|p| p.into_inner()).get(&group).copied().unwrap_or(0)
    }
}

struct LocalTransport {
    net: Arc<LocalNet>,
    from: NodeId,
}

impl Transport for LocalTransport {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        group: GroupId,
        rpc: Vec<u8>,
    ) -> BoxedFuture<Result<Vec<u8>, TransportError>> {
        let net = self.net.clone();
        let from = net.node(self.from);
        let to = net.node(target);
        let addr = addr.to_owned();
        net.messages.fetch_add(1, Ordering::Relaxed);
        *net.per_group.lock().unwrap_or_else(|p| p.into_inner()).entry(group).or_default() += 1;
        Box::pin(async move {
            if from.down.load(Ordering::SeqCst) || to.down.load(Ordering::SeqCst) {
                return Err(TransportError::Unreachable {
                    node: target,
                    addr,
                    reason: "node is down".into(),
                });
            }
            let network = |reason: String| TransportError::Network { node: target, reason };
            if group == NODE_GROUP {
                let q = to.quiescence.read().unwrap_or_else(|p| p.into_inner()).clone();
                return match q {
                    Some(q) => q.handle_rpc(&rpc).map_err(network),
                    None => Err(network("no quiescence on the node".into())),
                };
            }
            let g = to.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned();
            match g {
                Some(g) => g.handle_rpc(&rpc).await.map_err(network),
                None => Ok(encode(&RaftRpcReply::NoGroup)),
            }
        })
    }
}
