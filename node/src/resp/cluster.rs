//! Redis databases on a cluster: every node answers RESP clients that know
//! nothing of the cluster, for every database.
//!
//! Where a database lives ([`placement`]):
//!
//! - On a node alone (no cluster, or a cluster of one live member), and for
//!   a `redis.N` range a node made for itself before the cluster grew:
//!   an ordinary range of that node, served as on a single node. Only that
//!   node serves it: another node asked to write to the database fails to
//!   create it with an error naming the node that holds it (no second,
//!   silent copy).
//! - Otherwise a database that does not exist yet is created by its first
//!   write as a replicated range `redis.N` of min(3, members) replicas,
//!   through the meta range
//!   ([`crate::node::Node::create_redis_database`]); reads of a database
//!   not made yet answer as for an empty one (also where another
//!   node holds it as its own: only a write finds that out, which would
//!   cost every read a question to every node).
//!
//! A command for a replicated database runs on the leader of its chunk.
//! Any other node forwards the whole command ([`Command::RespForward`]) and
//! relays the leader's encoded reply. The leader waits for one read barrier
//! (Raft's read index), then runs the command with the single-node code,
//! under its stripe locks (a MULTI/EXEC alone, under the endpoint's gate),
//! with every write held back in an overlay, which the command's later
//! reads see; then it proposes the command's writes as one atomic write
//! on the chunk's Raft group (one entry, or one write of an entry that
//! gathers the writes of commands arriving together:
//! [`crate::write_batch`]) and replies once it is committed and applied. Writes
//! are never applied to the local chunk directly, and a command that fails
//! proposes nothing.
//!
//! Why this is linearizable across leader changes: a command's reads come
//! after a read barrier, which confirms with a majority that this node
//! still leads and waits until it applied every committed entry; its
//! writes are one proposal, made while it holds the keys' stripes, so no
//! other command on those keys runs on this leader between its reads and
//! its write. A deposed leader's proposal either fails (a majority has moved
//! to a newer term and refuses its entry) or was appended by a majority
//! and is then committed before the new leader's first read: the new
//! leader's read barrier commits an entry of its own term, which commits
//! every entry before it. So every command takes effect at one point between
//! its start and its reply, in Raft's log order.
//!
//! A command on a replica that no longer believes it leads proposes
//! nothing and runs again on the leader. A proposal refused with
//! `NotLeader`, one that timed out, or a forwarded command whose
//! connection broke, may have been applied (openraft refuses so also an
//! entry that a new leader may still commit): it fails with an error
//! saying its outcome is unknown (`ErrorCode::OutcomeUnknown`), never sent
//! again.
//!
//! Commands a client pipelines on a replicated database (those that have
//! arrived together) run at the leader as one unit ([`run_pipeline`]), up
//! to [`PIPELINE_COMMANDS_MAX`] commands or [`PIPELINE_BYTES_MAX`] bytes: one
//! forward, one read barrier, their writes one proposal, their replies once
//! it is committed. A per-node command (PING, SELECT, ...) ends such a unit.
//!
//! MULTI/EXEC on a replicated database: the queued commands go to the
//! leader as one unit and run there alone, their writes one proposal (all
//! or none). SELECT inside such a MULTI fails the EXEC (a transaction runs
//! on one database's leader). WATCH fails with an error on any database
//! that is or would be replicated: its versions live in one node's memory,
//! and the leader may change between WATCH and EXEC.
//!
//! The background expirer removes due keys of a replicated database only
//! on the leader of its chunk, through the same path. CLIENT, INFO,
//! HELLO, AUTH, SELECT, COMMAND, TIME, FLUSHALL, the `mt.*` commands and
//! the like stay per node (the `per_node` column of [`super::table`]). A
//! SCAN cursor is a position in the keys' hashed order, the same on every
//! replica, so an iteration goes on across a leader change. FLUSHALL on a node while any database is replicated fails,
//! naming it: each database has its own leader (FLUSHDB each).

use std::time::{Duration, Instant};

use monotable_proto::{Bytes, Command, ErrorCode, WriteOp};

use super::commands::{run_held, Work};
use super::keyspace::range_name;
use super::reply::Reply;
use super::state::RespState;
use crate::cluster::meta::MetaRange;
use crate::consensus::{ConsensusError, Group};
use crate::error::{NodeError, NodeResult};
use crate::replica::{encode_command, ChunkCommand};

/// Forwards a command may take before reaching a leader (two nodes with
/// stale views of the leader could otherwise pass it back and forth).
const FORWARD_HOPS_MAX: u8 = 4;

/// How long a command waits for its database's replica to run here or for
/// a leader to be elected.
const LEADER_WAIT_MAX_MS: u64 = 15_000;

/// Where database `N` lives, as this node sees it.
#[derive(Debug, Clone)]
pub enum Placement {
    /// An ordinary range of this node (existing or not).
    Local,
    /// Not made yet, on a cluster of two or more members: its first write
    /// creates it as a replicated range.
    Unmade,
    /// A replicated range.
    Replicated(MetaRange),
}

/// Where database `db` lives (see the module docs).
pub fn placement(node: &crate::node::Node, db: u32) -> Placement {
    let Ok(cluster) = node.cluster() else { return Placement::Local };
    let name = range_name(db);
    let local = node.router_read().range(&name).map(|r| r.meta.id);
    if local.is_some_and(|id| !crate::replicated::is_replicated(id)) {
        return Placement::Local;
    }
    decide(local, cluster.with_meta(|m| (m.ranges.get(&name).cloned(), m.live_members().count())))
}

/// [`placement`] from what this node holds of the database's range (its
/// id) and what its meta replica says (the replicated range of that name,
/// and the cluster's members), if it has joined.
fn decide(local: Option<u64>, meta: Option<(Option<MetaRange>, usize)>) -> Placement {
    if local.is_some_and(|id| !crate::replicated::is_replicated(id)) {
        return Placement::Local;
    }
    match meta {
        Some((Some(range), _)) => Placement::Replicated(range),
        // A replica of a range the meta range dropped counts as missing.
        Some((None, members)) if members >= 2 => Placement::Unmade,
        _ => Placement::Local,
    }
}

fn unavailable(message: impl Into<String>) -> NodeError {
    NodeError::client(ErrorCode::ClusterUnavailable, message)
}

/// Runs `work` on database `db`, a replicated range, at its leader; the
/// reply in protocol version `proto`, or an error reply.
pub async fn run(state: &RespState, db: u32, proto: u8, work: Work) -> Reply {
    // May wait on other nodes: nothing of the connection's burst is held
    // meanwhile (see `stripes`).
    super::stripes::release_held();
    if let Work::Multi(queue) = &work {
        if queue.iter().any(|c| c[0].eq_ignore_ascii_case(b"select")) {
            return Reply::err(format!(
                "EXECABORT Transaction discarded: SELECT inside MULTI on database {db}, which is \
                 replicated: a transaction runs on one database's leader"
            ));
        }
    }
    match run_at_leader(state, db, proto, &work, 0).await {
        Ok(bytes) => Reply::Raw(bytes),
        Err(e) => Reply::err(format!("ERR {e}")),
    }
}

/// Most commands of one pipeline run as one unit ([`run_pipeline`]).
pub const PIPELINE_COMMANDS_MAX: usize = 256;
/// Most bytes of arguments of one pipeline run as one unit.
pub const PIPELINE_BYTES_MAX: usize = 1 << 20;

/// Runs `commands`, which a client pipelined on database `db` (each one
/// [`super::commands::runs_replicated`]), at the database's leader as one
/// unit: one forward from a node that does not lead, one read barrier,
/// then the commands one after another under their stripes, each seeing
/// the writes of those before it, and their writes proposed as one Raft
/// entry. Their replies, encoded in protocol `proto` one after another,
/// come once it is committed; if it cannot be, every command gets the same
/// error (an unknown outcome when the entry may have been applied).
///
/// Why: run one at a time, each command waited for its own Raft round
/// before the next could start, so a pipelining client got one command
/// per round trip (about 80 a second on a debug build) however deep its
/// pipeline. Taking effect together, at one point between the first
/// command's arrival and the last reply, is a valid order for commands
/// the client had all sent before reading any reply.
pub async fn run_pipeline(
    state: &RespState,
    db: u32,
    proto: u8,
    mut commands: Vec<Vec<Vec<u8>>>,
) -> Vec<u8> {
    let n = commands.len();
    let reply = if n == 1 {
        run(state, db, proto, Work::Command(commands.remove(0))).await
    } else {
        super::stripes::release_held();
        match run_at_leader(state, db, proto, &Work::Pipeline(commands), 0).await {
            Ok(bytes) => return bytes,
            Err(e) => {
                let mut out = Vec::new();
                for _ in 0..n {
                    Reply::err(format!("ERR {e}")).write(proto, &mut out);
                }
                return out;
            }
        }
    };
    let mut out = Vec::new();
    reply.write(proto, &mut out);
    out
}

/// Creates database `db` as a replicated range (its first write, on a
/// cluster), then runs `work` there.
pub async fn create_and_run(state: &RespState, db: u32, proto: u8, work: Work) -> Reply {
    if let Err(e) = state.node.create_redis_database(&range_name(db)).await {
        return Reply::err(format!("ERR Redis database {db}: {e}"));
    }
    run(state, db, proto, work).await
}

/// Answers [`Command::RespForward`] from another node.
pub async fn serve_forward(
    state: &RespState,
    command: Command,
) -> NodeResult<monotable_proto::Reply> {
    let Command::RespForward { db, commands, multi, proto, hops } = command else {
        return Err(NodeError::Internal("not a RespForward".into()));
    };
    let mut commands: Vec<Vec<Vec<u8>>> =
        commands.into_iter().map(|c| c.into_iter().map(Bytes::into_vec).collect()).collect();
    // An empty MULTI/EXEC is a transaction of no command (Redis: `*0`).
    // Postmortem: refused as "an empty Redis command" when forwarded.
    if (commands.is_empty() && !multi) || commands.iter().any(Vec::is_empty) {
        return Err(NodeError::client(ErrorCode::BadRequest, "an empty Redis command"));
    }
    let work = if multi {
        Work::Multi(commands)
    } else if commands.len() == 1 {
        Work::Command(commands.remove(0))
    } else if commands.len() <= PIPELINE_COMMANDS_MAX {
        Work::Pipeline(commands)
    } else {
        return Err(NodeError::client(
            ErrorCode::BadRequest,
            format!("a forwarded pipeline holds {PIPELINE_COMMANDS_MAX} commands at most"),
        ));
    };
    let bytes = run_at_leader(state, db, proto.clamp(2, 3), &work, hops).await?;
    Ok(monotable_proto::Reply::Resp(bytes.into()))
}

fn forwarded(work: &Work, db: u32, proto: u8, hops: u8) -> Command {
    let encode = |c: &Vec<Vec<u8>>| c.iter().map(|a| Bytes::from(a.clone())).collect();
    let (commands, multi) = match work {
        Work::Command(c) => (vec![encode(c)], false),
        Work::Multi(q) => (q.iter().map(encode).collect(), true),
        Work::Pipeline(q) => (q.iter().map(encode).collect(), false),
        Work::Expire => (Vec::new(), false),
    };
    Command::RespForward { db, commands, multi, proto, hops: hops + 1 }
}

fn resp_bytes(reply: monotable_proto::Reply) -> NodeResult<Vec<u8>> {
    match reply {
        monotable_proto::Reply::Resp(b) => Ok(b.into_vec()),
        other => Err(NodeError::Internal(format!("a forwarded Redis command got {other:?}"))),
    }
}

/// Why running on the leader did not give a reply.
enum Lead {
    /// Raft refused the proposal before taking it: nothing was written.
    NotLeader,
    Failed(NodeError),
}

async fn run_at_leader(
    state: &RespState,
    db: u32,
    proto: u8,
    work: &Work,
    hops: u8,
) -> NodeResult<Vec<u8>> {
    if hops >= FORWARD_HOPS_MAX {
        return Err(unavailable(format!(
            "Redis database {db}: forwarded {hops} times without reaching its leader"
        )));
    }
    let node = &state.node;
    let cluster = node.cluster()?.clone();
    let me = cluster.node_id().ok_or_else(|| unavailable("this node has not joined"))?;
    let name = range_name(db);
    let forward = forwarded(work, db, proto, hops);
    let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MAX_MS);
    loop {
        let Some(range) = cluster.with_meta(|m| m.ranges.get(&name).cloned()).flatten() else {
            return Err(NodeError::client(
                ErrorCode::RangeNotFound,
                format!("Redis database {db} is not a replicated range (dropped meanwhile)"),
            ));
        };
        if !range.replicas.contains(&me) {
            return resp_bytes(node.forward_to_replica(&cluster, &range, forward).await?);
        }
        let Some(group) = range.group_of(0).and_then(|g| cluster.group(g)) else {
            // The replica runs once this node applied the meta range's
            // record of it.
            if Instant::now() > deadline {
                return Err(unavailable(format!("this node's replica of {name} is not running")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // The term the command's reads are made in: its writes apply only
        // in that term (`ChunkCommand::Fenced`).
        let term = group.term();
        let at_leader =
            node.on_leader(&group, me, &forward, |g| async move { g.read_barrier().await }).await?;
        if let Some(reply) = at_leader {
            return resp_bytes(reply);
        }
        let led = if group.term() == term {
            lead(state, db, proto, work, &group, term).await
        } else {
            // Leadership changed during the barrier: run again.
            Err(Lead::NotLeader)
        };
        match led {
            Ok(bytes) => return Ok(bytes),
            Err(Lead::NotLeader) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(Lead::NotLeader) => {
                return Err(unavailable(format!("{name}: no leader took the command in time")))
            }
            Err(Lead::Failed(e)) => return Err(e),
        }
    }
}

/// Runs `work` on this node, the leader of database `db`'s chunk (after
/// a read barrier), and proposes its writes as one entry; the encoded
/// reply once they are committed and applied.
async fn lead(
    state: &RespState,
    db: u32,
    proto: u8,
    work: &Work,
    group: &Group,
    term: u64,
) -> Result<Vec<u8>, Lead> {
    // A connection never waits while it holds stripes (see `stripes`).
    super::stripes::release_held();
    // The stripes the command takes are held until the burst ends: after
    // its proposal, so nothing on its keys runs between its reads and its
    // write.
    super::stripes::with_burst(async {
        let (_shared, _alone);
        if work.runs_alone() {
            _alone = state.gate.write().await;
        } else {
            _shared = state.gate.read().await;
        }
        let held = run_held(state, db, proto, work).await.map_err(Lead::Failed)?;
        let reply = held.reply;
        if !held.ops.is_empty() {
            propose(state, group, held.ops, term).await?;
        }
        super::notify::publish(state, held.events);
        let mut out = Vec::new();
        reply.write(proto, &mut out);
        Ok(out)
    })
    .await
}

/// Proposes one atomic write of the chunk's rows to its Raft group,
/// through the replica's write batcher (in one entry with other commands'
/// writes arriving meanwhile, each still atomic and answered on its own),
/// to apply only if appended in `term`, the term its reads were made in
/// (refused otherwise, applying nothing, and run again at the leader).
///
/// Only a replica that believes it leads proposes, and a proposal refused
/// with `NotLeader` after that is never run again: openraft answers so
/// also for an entry its log dropped in favour of a new leader's, which
/// another replica may still commit (a second run would apply it twice).
/// Postmortem: the command ran again after any `NotLeader`, so an INCR
/// could be applied twice across a leader change.
async fn propose(
    state: &RespState,
    group: &Group,
    ops: Vec<WriteOp>,
    term: u64,
) -> Result<(), Lead> {
    if !group.is_leader() {
        return Err(Lead::NotLeader);
    }
    let outcome = match state.node.replicated.replica(group.id()) {
        Some(replica) => replica.batcher().write(group, ops, Some(term)).await,
        None => {
            let writes = vec![(Some(term), ops)];
            let proposal = encode_command(&ChunkCommand::Fenced { writes });
            group.propose(proposal).await.map(|bytes| {
                crate::replica::decode_replies(&bytes).and_then(|mut r| {
                    r.pop().unwrap_or_else(|| {
                        Err(monotable_proto::ErrorInfo {
                            code: ErrorCode::Internal,
                            message: "no reply to a fenced write".into(),
                        })
                    })
                })
            })
        }
    };
    match outcome {
        Ok(reply) => match reply {
            Ok(_) => Ok(()),
            // Not applied: computed in a term that ended first.
            Err(info) if info.code == ErrorCode::StaleTerm => Err(Lead::NotLeader),
            Err(info) => Err(Lead::Failed(NodeError::client(info.code, info.message))),
        },
        Err(
            e @ (ConsensusError::NotLeader { .. }
            | ConsensusError::Timeout(_)
            | ConsensusError::Fatal(_)),
        ) => Err(Lead::Failed(NodeError::client(
            ErrorCode::OutcomeUnknown,
            format!("chunk {}: {e}; the write may or may not have been applied", group.id()),
        ))),
        Err(e) => Err(Lead::Failed(NodeError::Internal(format!("chunk {}: {e}", group.id())))),
    }
}

/// One pass of the expirer over database `db`, a replicated range: only on
/// the leader of its chunk (elsewhere nothing); the keys removed.
pub async fn expire(state: &RespState, db: u32, range: &MetaRange) -> NodeResult<usize> {
    let cluster = state.node.cluster()?;
    let Some(group) = range.group_of(0).and_then(|g| cluster.group(g)) else { return Ok(0) };
    if group.status().leader != cluster.node_id() {
        return Ok(0);
    }
    // Nothing due here (this replica may lag; the next pass sees it): no
    // read barrier, so an idle database's Raft group stays quiet.
    let (start, end) = super::keyspace::expiry_rows_due(super::keyspace::now_ms());
    let due = state
        .node
        .scan_range_applied(monotable_proto::ScanRequest {
            range: range_name(db),
            start: Some(start.into()),
            end: Some(end.into()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    if due.records.is_empty() {
        return Ok(0);
    }
    let term = group.term();
    if group.read_barrier().await.is_err() || group.term() != term {
        return Ok(0);
    }
    match lead(state, db, 2, &Work::Expire, &group, term).await {
        Ok(bytes) => Ok(parse_int(&bytes).unwrap_or(0)),
        Err(Lead::NotLeader) => Ok(0),
        Err(Lead::Failed(e)) => Err(e),
    }
}

/// The value of an encoded integer reply (`:N\r\n`).
fn parse_int(bytes: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(bytes.strip_prefix(b":")?).ok()?;
    text.trim_end().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicated() -> MetaRange {
        MetaRange {
            id: crate::cluster::meta::REPLICATED_ID_BASE,
            options: Default::default(),
            replicas: vec![1, 2, 3],
            chunks: Vec::new(),
            seed: vec![1, 2, 3],
            rides_on: None,
            wanted: 3,
            departed: Vec::new(),
        }
    }

    #[test]
    fn where_a_database_lives() {
        let ours = Some(7);
        let range = replicated();
        // A node's own range is served by it, even on a cluster that has a
        // replicated range of that name (made before the cluster grew).
        assert!(matches!(decide(ours, Some((Some(range.clone()), 3))), Placement::Local));
        assert!(matches!(decide(ours, Some((None, 3))), Placement::Local));
        // Alone (no cluster, or one member): today's local ranges.
        assert!(matches!(decide(None, None), Placement::Local));
        assert!(matches!(decide(None, Some((None, 1))), Placement::Local));
        // On a cluster: made replicated by the first write.
        assert!(matches!(decide(None, Some((None, 2))), Placement::Unmade));
        assert!(matches!(decide(None, Some((Some(range.clone()), 3))), Placement::Replicated(_)));
        // This node's replica, as the meta range has it; a dropped one is
        // made again.
        let replica = Some(range.id);
        assert!(matches!(decide(replica, Some((Some(range), 3))), Placement::Replicated(_)));
        assert!(matches!(decide(replica, Some((None, 3))), Placement::Unmade));
    }

    #[test]
    fn a_forward_carries_the_whole_transaction() {
        let queue =
            vec![vec![b"incr".to_vec(), b"a".to_vec()], vec![b"get".to_vec(), b"a".to_vec()]];
        let Command::RespForward { db, commands, multi, proto, hops } =
            forwarded(&Work::Multi(queue), 3, 3, 1)
        else {
            panic!("a RespForward")
        };
        assert_eq!((db, multi, proto, hops), (3, true, 3, 2));
        assert_eq!(commands.len(), 2);
        assert_eq!(&commands[1][1][..], b"a");
    }

    #[test]
    fn expirer_counts_parse() {
        assert_eq!(parse_int(b":12\r\n"), Some(12));
        assert_eq!(parse_int(b"-ERR x\r\n"), None);
    }
}
