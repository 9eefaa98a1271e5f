//! Pub/sub: PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE and
//! PUBSUB CHANNELS / NUMSUB / NUMPAT / HELP, with Redis 7.0's replies.
//!
//! A node's [`Hub`] maps channels and patterns to the connections
//! subscribed to them. A connection's [`Subscriptions`] hold its mailbox,
//! an unbounded queue the hub pushes messages into: PUBLISH never waits on
//! a subscriber. A subscriber that lets more than
//! [`SUBSCRIBER_PENDING_MAX_BYTES`] of messages pile up is disconnected,
//! as Redis does past `client-output-buffer-limit pubsub 32mb`.
//!
//! The connection writes queued messages between batches of replies, and
//! before each command's reply ([`Subscriptions::drain`]): a message
//! published before an UNSUBSCRIBE ran reaches the client before that
//! UNSUBSCRIBE's confirmation, as in Redis. Messages are encoded in the
//! connection's protocol: arrays in RESP2, push types in RESP3.
//!
//! On a cluster a PUBLISH reaches the subscribers of every node: the node
//! it was sent to delivers it to its own and relays it to each other live
//! member ([`Relay`], `Command::RespPublish`), and returns how many it
//! reached itself (as PUBLISH in a Redis Cluster counts the receiving
//! node's subscribers only). A relay keeps the order of the messages
//! published through one node, per receiving node; a message is relayed
//! at most once (one that a peer does not take, being down, is dropped,
//! as pub/sub promises no more), and at most [`RELAY_PENDING_MAX_BYTES`]
//! wait for one peer.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::reply::Reply;
use super::state::{Conn, RespState};

/// Bytes of messages one subscriber may have waiting before it is
/// disconnected (Redis: `client-output-buffer-limit pubsub 32mb`).
pub const SUBSCRIBER_PENDING_MAX_BYTES: usize = 32 << 20;

/// Bytes of messages waiting to be relayed to one peer, at most; more are
/// dropped (a peer that is down or slow must not hold the node's memory).
pub const RELAY_PENDING_MAX_BYTES: usize = 64 << 20;

/// Relays messages published here to the cluster's other nodes: one queue
/// and one sending task per peer address, so each peer gets this node's
/// messages in the order they were published.
#[derive(Default)]
pub struct Relay {
    queues: Mutex<HashMap<String, Arc<RelayQueue>>>,
}

struct RelayQueue {
    tx: mpsc::UnboundedSender<(Vec<u8>, Vec<u8>)>,
    pending: AtomicUsize,
}

impl Relay {
    /// Sends `channel`/`message` to every live member of the cluster but
    /// this node, in the background. Does nothing off a cluster.
    pub fn relay(&self, node: &crate::node::Node, channel: &[u8], message: &[u8]) {
        let Ok(cluster) = node.cluster() else { return };
        let me = cluster.node_id();
        let Some(peers) = cluster.with_meta(|m| {
            m.live_members()
                .filter(|(id, _)| Some(*id) != me)
                .map(|(_, n)| n.addr.clone())
                .collect::<Vec<String>>()
        }) else {
            return;
        };
        for addr in peers {
            let queue = self.queue(cluster, addr);
            let size = channel.len() + message.len();
            if queue.pending.fetch_add(size, Ordering::AcqRel) + size > RELAY_PENDING_MAX_BYTES {
                queue.pending.fetch_sub(size, Ordering::AcqRel);
                tracing::debug!("a peer's pub/sub relay queue is full; message dropped");
                continue;
            }
            let _ = queue.tx.send((channel.to_vec(), message.to_vec()));
        }
    }

    fn queue(&self, cluster: &Arc<crate::cluster::Cluster>, addr: String) -> Arc<RelayQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(&addr).filter(|q| !q.tx.is_closed()) {
            return q.clone();
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Vec<u8>)>();
        let queue = Arc::new(RelayQueue { tx, pending: AtomicUsize::new(0) });
        queues.insert(addr.clone(), queue.clone());
        let (weak, cluster) = (Arc::downgrade(&queue), Arc::downgrade(cluster));
        tokio::spawn(async move {
            while let Some((channel, message)) = rx.recv().await {
                let size = channel.len() + message.len();
                if let Some(q) = weak.upgrade() {
                    q.pending.fetch_sub(size, Ordering::AcqRel);
                }
                let Some(cluster) = cluster.upgrade() else { return };
                let command = monotable_proto::Command::RespPublish {
                    channel: channel.into(),
                    message: message.into(),
                };
                let sent = cluster.peers().call(&addr, |c| async move { c.forward(command).await });
                if let Err(e) = sent.await {
                    tracing::debug!(peer = %addr, error = %e, "pub/sub message not relayed");
                }
            }
        });
        queue
    }
}

/// One message queued for a connection.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Body,
}

/// What a queued message is.
#[derive(Debug, Clone)]
pub enum Body {
    /// Published on `channel` (matching `pattern`, for a PSUBSCRIBEr).
    Published { pattern: Option<Arc<[u8]>>, channel: Arc<[u8]>, payload: Arc<[u8]> },
    /// A MONITOR line.
    Monitor(Arc<[u8]>),
    /// A CLIENT TRACKING invalidation of `keys` (`None`: all); sent to a
    /// redirect target if `redirected` (see [`super::tracking`]).
    Invalidate { keys: Option<Vec<Vec<u8>>>, redirected: bool },
    /// The client a tracking client redirects to went away.
    RedirectBroken(u64),
}

impl Message {
    pub fn new(body: Body) -> Message {
        Message { body }
    }

    fn bytes(&self) -> usize {
        64 + match &self.body {
            Body::Published { pattern, channel, payload } => {
                channel.len() + payload.len() + pattern.as_ref().map_or(0, |p| p.len())
            }
            Body::Monitor(line) => line.len(),
            Body::Invalidate { keys, .. } => {
                keys.as_ref().map_or(0, |k| k.iter().map(|k| k.len() + 16).sum())
            }
            Body::RedirectBroken(_) => 0,
        }
    }

    /// The message as Redis sends it to a connection speaking `proto`
    /// (`subscribed`: in pub/sub mode): `message` or `pmessage`, a monitor
    /// line, a tracking push; `None` when Redis sends nothing (a tracking
    /// message to a RESP2 connection that cannot take it).
    pub fn reply(&self, proto: u8, subscribed: bool) -> Option<Reply> {
        let bulk = |b: &[u8]| Reply::bulk(b.to_vec());
        Some(match &self.body {
            Body::Monitor(line) => Reply::Status(String::from_utf8_lossy(line).into_owned()),
            Body::Published { pattern: None, channel, payload } => {
                Reply::Push(vec![bulk(b"message"), bulk(channel), bulk(payload)])
            }
            Body::Published { pattern: Some(p), channel, payload } => {
                Reply::Push(vec![bulk(b"pmessage"), bulk(p), bulk(channel), bulk(payload)])
            }
            body => return super::tracking::reply(body, proto, subscribed),
        })
    }
}

/// Where the hub puts a subscriber's messages.
struct Mailbox {
    tx: mpsc::UnboundedSender<Message>,
    /// Bytes queued and not yet taken by the connection.
    pending: AtomicUsize,
    /// Past [`SUBSCRIBER_PENDING_MAX_BYTES`]: the connection is to close.
    overflowed: AtomicBool,
}

impl Mailbox {
    /// Queues `m`; false if it overflowed (or the connection is gone).
    fn push(&self, m: Message) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let size = m.bytes();
        if self.pending.fetch_add(size, Ordering::AcqRel) + size > SUBSCRIBER_PENDING_MAX_BYTES {
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        self.tx.send(m).is_ok()
    }
}

#[derive(Default)]
struct Registry {
    /// Channel -> subscribed connections (by client id).
    channels: HashMap<Vec<u8>, HashMap<u64, Arc<Mailbox>>>,
    /// Pattern -> subscribed connections.
    patterns: HashMap<Vec<u8>, HashMap<u64, Arc<Mailbox>>>,
}

impl Registry {
    fn map(&mut self, kind: Kind) -> &mut HashMap<Vec<u8>, HashMap<u64, Arc<Mailbox>>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }

    fn remove(&mut self, kind: Kind, name: &[u8], id: u64) {
        let map = self.map(kind);
        if let Some(subs) = map.get_mut(name) {
            subs.remove(&id);
            if subs.is_empty() {
                map.remove(name);
            }
        }
    }
}

/// The node's channels and patterns and who listens to them, and its
/// monitors ([`super::monitor`]).
#[derive(Default)]
pub struct Hub {
    registry: Mutex<Registry>,
    /// MONITOR connections by client id: a std Mutex, taken to feed a line
    /// only when [`Hub::has_monitors`].
    monitors: Mutex<HashMap<u64, Arc<Mailbox>>>,
    /// How many monitors there are: one atomic load per command when none.
    monitor_count: AtomicUsize,
    /// Every connection's mailbox by client id (messages sent to one
    /// connection: tracking invalidations).
    mailboxes: Mutex<HashMap<u64, Arc<Mailbox>>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers `payload` on `channel` to this node's subscribers of the
    /// channel and of every pattern matching it; how many it reached.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        let mut registry = self.lock();
        let (channel_arc, payload_arc): (Arc<[u8]>, Arc<[u8]>) = (channel.into(), payload.into());
        let mut reached = 0;
        // Subscribers past their limit, to be let go (their connections
        // close when they next run).
        let mut cut: Vec<(Kind, Vec<u8>, u64)> = Vec::new();
        if let Some(subs) = registry.channels.get(channel) {
            for (id, mailbox) in subs {
                let m = Message::new(Body::Published {
                    pattern: None,
                    channel: channel_arc.clone(),
                    payload: payload_arc.clone(),
                });
                match mailbox.push(m) {
                    true => reached += 1,
                    false => cut.push((Kind::Channel, channel.to_vec(), *id)),
                }
            }
        }
        for (pattern, subs) in &registry.patterns {
            if !super::glob::matches(pattern, channel) {
                continue;
            }
            let shared: Arc<[u8]> = pattern.as_slice().into();
            for (id, mailbox) in subs {
                let m = Message::new(Body::Published {
                    pattern: Some(shared.clone()),
                    channel: channel_arc.clone(),
                    payload: payload_arc.clone(),
                });
                match mailbox.push(m) {
                    true => reached += 1,
                    false => cut.push((Kind::Pattern, pattern.clone(), *id)),
                }
            }
        }
        for (kind, name, id) in cut {
            registry.remove(kind, &name, id);
        }
        reached
    }

    fn mailboxes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Mailbox>>> {
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether client `id`'s connection is open.
    pub fn has_mailbox(&self, id: u64) -> bool {
        self.mailboxes().contains_key(&id)
    }

    /// Queues each message for its client's connection (one gone, or past
    /// its bound, does not get it).
    pub fn deliver_all(&self, messages: Vec<(u64, Message)>) {
        if messages.is_empty() {
            return;
        }
        let mailboxes = self.mailboxes();
        for (id, m) in messages {
            if let Some(mailbox) = mailboxes.get(&id) {
                mailbox.push(m);
            }
        }
    }

    /// Whether any connection is in MONITOR mode.
    pub fn has_monitors(&self) -> bool {
        self.monitor_count.load(Ordering::Relaxed) > 0
    }

    /// Queues `line` for every monitor; one past its bound is let go.
    pub fn feed_monitors(&self, line: String) {
        let payload: Arc<[u8]> = line.into_bytes().into();
        let mut monitors = self.monitors.lock().unwrap_or_else(|p| p.into_inner());
        monitors.retain(|_, mailbox| mailbox.push(Message::new(Body::Monitor(payload.clone()))));
        self.monitor_count.store(monitors.len(), Ordering::Relaxed);
    }

    fn set_monitor(&self, id: u64, mailbox: Option<Arc<Mailbox>>) {
        let mut monitors = self.monitors.lock().unwrap_or_else(|p| p.into_inner());
        match mailbox {
            Some(m) => monitors.insert(id, m),
            None => monitors.remove(&id),
        };
        self.monitor_count.store(monitors.len(), Ordering::Relaxed);
    }

    /// Channels with at least one subscriber, matching `pattern` if given.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        let registry = self.lock();
        let mut out: Vec<Vec<u8>> = registry
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| super::glob::matches(p, c)))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Subscribers of `channel` (not counting patterns).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.lock().channels.get(channel).map_or(0, HashMap::len)
    }

    /// Distinct patterns subscribed to.
    pub fn numpat(&self) -> usize {
        self.lock().patterns.len()
    }
}

/// Which of a connection's subscriptions a command changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
}

impl Kind {
    fn subscribed_word(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
        }
    }

    fn unsubscribed_word(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
        }
    }
}

/// One connection's channels and patterns, and its mailbox. Dropped (the
/// connection closed, or RESET), it leaves every channel and pattern.
pub struct Subscriptions {
    id: u64,
    hub: Arc<Hub>,
    mailbox: Arc<Mailbox>,
    rx: mpsc::UnboundedReceiver<Message>,
    /// In name order (Redis's is its hash table's: UNSUBSCRIBE without
    /// names confirms in another order).
    channels: BTreeSet<Vec<u8>>,
    /// In the order subscribed, as Redis keeps them.
    patterns: Vec<Vec<u8>>,
    /// In MONITOR mode.
    monitoring: bool,
}

impl Subscriptions {
    /// Subscriptions of client `id` on `hub` (none yet).
    pub fn new(hub: Arc<Hub>, id: u64) -> Subscriptions {
        let (tx, rx) = mpsc::unbounded_channel();
        let mailbox = Arc::new(Mailbox {
            tx,
            pending: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
        });
        hub.mailboxes().insert(id, mailbox.clone());
        Subscriptions {
            id,
            hub,
            mailbox,
            rx,
            channels: BTreeSet::new(),
            patterns: Vec::new(),
            monitoring: false,
        }
    }

    /// Enters MONITOR mode: the mailbox gets every monitor line.
    pub fn monitor(&mut self) {
        if !self.monitoring {
            self.monitoring = true;
            self.hub.set_monitor(self.id, Some(self.mailbox.clone()));
        }
    }

    /// In MONITOR mode.
    pub fn is_monitor(&self) -> bool {
        self.monitoring
    }

    /// Channels and patterns subscribed to (Redis's subscription count).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// (channels, patterns) subscribed to, as CLIENT LIST's `sub` and `psub`.
    pub fn counts(&self) -> (usize, usize) {
        (self.channels.len(), self.patterns.len())
    }

    /// Subscribes to each of `names`: one confirmation each, as Redis
    /// sends them.
    pub fn subscribe(&mut self, kind: Kind, names: &[Vec<u8>]) -> Vec<Reply> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let added = match kind {
                Kind::Channel => self.channels.insert(name.clone()),
                Kind::Pattern if self.patterns.contains(name) => false,
                Kind::Pattern => {
                    self.patterns.push(name.clone());
                    true
                }
            };
            if added {
                let mut registry = self.hub.lock();
                let subs = registry.map(kind).entry(name.clone()).or_default();
                subs.insert(self.id, self.mailbox.clone());
            }
            out.push(self.confirmation(kind.subscribed_word(), Some(name)));
        }
        out
    }

    /// Unsubscribes from each of `names`, or from all of `kind` when
    /// `names` is empty: one confirmation each (one with a null name when
    /// there was none to leave).
    pub fn unsubscribe(&mut self, kind: Kind, names: &[Vec<u8>]) -> Vec<Reply> {
        let names: Vec<Vec<u8>> = if names.is_empty() {
            match kind {
                Kind::Channel => self.channels.iter().cloned().collect(),
                Kind::Pattern => self.patterns.to_vec(),
            }
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            return vec![self.confirmation(kind.unsubscribed_word(), None)];
        }
        names
            .iter()
            .map(|name| {
                self.leave(kind, name);
                self.confirmation(kind.unsubscribed_word(), Some(name))
            })
            .collect()
    }

    fn leave(&mut self, kind: Kind, name: &[u8]) {
        let removed = match kind {
            Kind::Channel => self.channels.remove(name),
            Kind::Pattern => {
                let at = self.patterns.iter().position(|p| p == name);
                at.map(|i| self.patterns.remove(i)).is_some()
            }
        };
        if !removed {
            return;
        }
        self.hub.lock().remove(kind, name, self.id);
    }

    fn confirmation(&self, word: &[u8], name: Option<&[u8]>) -> Reply {
        Reply::Push(vec![
            Reply::bulk(word.to_vec()),
            name.map_or(Reply::Null, |n| Reply::bulk(n.to_vec())),
            Reply::Int(self.count() as i64),
        ])
    }

    /// Whether more than [`SUBSCRIBER_PENDING_MAX_BYTES`] piled up: the
    /// connection is to be closed.
    pub fn overflowed(&self) -> bool {
        self.mailbox.overflowed.load(Ordering::Relaxed)
    }

    /// Appends the messages queued now, encoded in protocol `proto`.
    pub fn drain(&mut self, proto: u8, out: &mut Vec<u8>) {
        while let Ok(m) = self.rx.try_recv() {
            self.mailbox.pending.fetch_sub(m.bytes(), Ordering::AcqRel);
            self.write(&m, proto, out);
        }
    }

    /// Appends `m` as this connection (speaking `proto`, subscribed or
    /// not) is sent it; some messages are nothing to it (see
    /// [`Message::reply`]).
    pub fn write(&self, m: &Message, proto: u8, out: &mut Vec<u8>) {
        if let Some(reply) = m.reply(proto, self.count() > 0) {
            reply.write(proto, out);
        }
    }

    /// Waits until a message is queued.
    pub async fn ready(&mut self) -> Option<Message> {
        let m = self.rx.recv().await?;
        self.mailbox.pending.fetch_sub(m.bytes(), Ordering::AcqRel);
        Some(m)
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        {
            let mut mailboxes = self.hub.mailboxes();
            if mailboxes.get(&self.id).is_some_and(|m| Arc::ptr_eq(m, &self.mailbox)) {
                mailboxes.remove(&self.id);
            }
        }
        if self.monitoring {
            self.hub.set_monitor(self.id, None);
        }
        let channels: Vec<Vec<u8>> = self.channels.iter().cloned().collect();
        for c in channels {
            self.leave(Kind::Channel, &c);
        }
        let patterns = self.patterns.clone();
        for p in patterns {
            self.leave(Kind::Pattern, &p);
        }
    }
}

/// PUBSUB's subcommands (arity as Redis 7.0 checks it: CHANNELS takes
/// one optional pattern, NUMPAT and HELP nothing).
pub fn pubsub(hub: &Hub, args: &[Vec<u8>]) -> Reply {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let fits = match sub.as_str() {
        // Past the table's arity, Redis's own check answers so.
        "channels" | "shardchannels" if args.len() > 3 => {
            return super::errors::subcommand_syntax(&args[0], &args[1])
        }
        "channels" | "shardchannels" | "numsub" | "shardnumsub" => true,
        "numpat" | "help" => args.len() == 2,
        _ => return super::errors::unknown_subcommand(b"pubsub", &args[1]),
    };
    if !fits {
        return Reply::wrong_arity(&format!("pubsub|{sub}"));
    }
    let counts = |count: &dyn Fn(&[u8]) -> usize| {
        let mut out = Vec::new();
        for c in &args[2..] {
            out.push(Reply::bulk(c.clone()));
            out.push(Reply::Int(count(c) as i64));
        }
        Reply::Array(out)
    };
    match sub.as_str() {
        "channels" => Reply::Array(
            hub.channels(args.get(2).map(Vec::as_slice)).into_iter().map(Reply::bulk).collect(),
        ),
        "numsub" => counts(&|c| hub.numsub(c)),
        "numpat" => Reply::Int(hub.numpat() as i64),
        // Shard channels (SSUBSCRIBE) are not served: none is active.
        "shardchannels" => Reply::Array(Vec::new()),
        "shardnumsub" => counts(&|_| 0),
        _ => Reply::Array(
            [
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
                "HELP",
                "    Prints this help.",
            ]
            .iter()
            .map(|l| Reply::Simple(l))
            .collect(),
        ),
    }
}

/// Commands a RESP2 connection with subscriptions may run (Redis's
/// "subscribed context").
pub fn allowed_when_subscribed(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "sunsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

/// Whether `name` changes a connection's subscriptions.
pub fn subscribes(name: &str) -> bool {
    matches!(name, "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe")
}

/// Runs one of this module's commands (its arity checked) for `conn`.
pub fn run(state: &RespState, conn: &mut Conn, name: &str, args: &[Vec<u8>]) -> Reply {
    match name {
        "publish" => {
            state.relay.relay(&state.node, &args[1], &args[2]);
            Reply::Int(state.pubsub.publish(&args[1], &args[2]) as i64)
        }
        "pubsub" => pubsub(&state.pubsub, args),
        _ => {
            let kind = if name.starts_with('p') { Kind::Pattern } else { Kind::Channel };
            let (hub, id) = (state.pubsub.clone(), conn.id);
            let subs = conn.subs.get_or_insert_with(|| Subscriptions::new(hub, id));
            let replies = match name {
                "subscribe" | "psubscribe" => subs.subscribe(kind, &args[1..]),
                _ => subs.unsubscribe(kind, &args[1..]),
            };
            // One reply each, one after another.
            let mut out = Vec::new();
            for r in replies {
                r.write(conn.proto, &mut out);
            }
            Reply::Raw(out)
        }
    }
}

#[cfg(test)]
type Counts = std::collections::BTreeMap<Vec<u8>, usize>;

/// A sorted view of a registry, for tests.
#[cfg(test)]
fn snapshot(hub: &Hub) -> (Counts, Counts) {
    let r = hub.lock();
    (
        r.channels.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
        r.patterns.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[tokio::test]
    async fn messages_reach_channel_and_pattern_subscribers_and_drop_leaves() {
        let hub = Arc::new(Hub::default());
        let mut a = Subscriptions::new(hub.clone(), 1);
        let mut c = Subscriptions::new(hub.clone(), 2);
        a.subscribe(Kind::Channel, &[b("news"), b("news")]);
        c.subscribe(Kind::Pattern, &[b("n*")]);
        assert_eq!(a.count(), 1, "a channel counts once");
        assert_eq!(hub.publish(b"news", b"hi\0there"), 2);
        assert_eq!(hub.publish(b"other", b"x"), 0);
        let mut out = Vec::new();
        a.drain(2, &mut out);
        assert_eq!(out, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$8\r\nhi\0there\r\n");
        let mut out = Vec::new();
        c.drain(3, &mut out);
        assert_eq!(out, b">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$8\r\nhi\0there\r\n");
        assert_eq!(hub.numsub(b"news"), 1);
        assert_eq!(hub.numpat(), 1);
        drop(a);
        drop(c);
        assert_eq!(snapshot(&hub), (Counts::new(), Counts::new()), "nothing left");
        assert_eq!(hub.publish(b"news", b"x"), 0);
    }

    #[test]
    fn unsubscribe_without_names_leaves_all_and_confirms_each() {
        let hub = Arc::new(Hub::default());
        let mut s = Subscriptions::new(hub.clone(), 1);
        s.subscribe(Kind::Channel, &[b("a"), b("b")]);
        s.subscribe(Kind::Pattern, &[b("p*")]);
        let r = s.unsubscribe(Kind::Channel, &[]);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1],
            Reply::Push(vec![Reply::bulk(b("unsubscribe")), Reply::bulk(b("b")), Reply::Int(1)])
        );
        let none = s.unsubscribe(Kind::Channel, &[]);
        assert_eq!(
            none,
            vec![Reply::Push(vec![Reply::bulk(b("unsubscribe")), Reply::Null, Reply::Int(1)])]
        );
        assert_eq!(hub.channels(None), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_subscriber_that_never_reads_is_cut_off_not_the_publisher() {
        let hub = Arc::new(Hub::default());
        let mut s = Subscriptions::new(hub.clone(), 1);
        s.subscribe(Kind::Channel, &[b("c")]);
        let big = vec![b'x'; 1 << 20];
        let mut delivered = 0;
        for _ in 0..40 {
            delivered += hub.publish(b"c", &big);
        }
        assert!(delivered < 40 && s.overflowed(), "delivered {delivered}");
    }
}
