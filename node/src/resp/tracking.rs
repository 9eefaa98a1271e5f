//! CLIENT TRACKING: server-assisted client-side caching, as Redis 7.0's
//! `tracking.c` (<https://redis.io/docs/manual/client-side-caching/>).
//!
//! In the default mode the node remembers, per key, the clients that read
//! it with a read-only command (the command's keys by its key specs); the
//! first write of the key sends each of them one invalidation and forgets
//! them. In BCAST mode a client names key prefixes instead and is told of
//! every key written under them, the keys a command wrote gathered in one
//! message once the command ends. OPTIN and OPTOUT with CLIENT CACHING
//! choose which reads are remembered; NOLOOP leaves out a client's own
//! writes; REDIRECT sends the messages to another connection (in RESP2,
//! one subscribed to anything, as a `message` on `__redis__:invalidate`).
//! FLUSHDB and FLUSHALL send every tracking client a null invalidation.
//! Past `tracking-table-max-keys` remembered keys (default 1,000,000),
//! keys are let go, each with its invalidation.
//!
//! Messages go to a connection's mailbox (see [`super::pubsub`]); those
//! for the client whose command caused them wait until that command has
//! replied ([`Tracking::take_own`]), as Redis writes them after the reply.
//!
//! The table is per node and sees the writes of the node's own (not
//! replicated) databases: on a cluster, writes to a replicated database go
//! through Raft (see [`super::cluster`]) and invalidate nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::pubsub::{Body, Hub, Message};
use super::reply::Reply;

/// One client's tracking options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Client id the messages go to (0: the client itself).
    pub redirect: u64,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// CLIENT CACHING YES (with OPTIN) or NO (with OPTOUT), for the next
    /// command.
    pub caching: bool,
    /// The redirect client went away.
    pub broken: bool,
    pub prefixes: BTreeSet<Vec<u8>>,
}

/// A BCAST prefix: its clients, and the keys written under it since the
/// last broadcast with the client that wrote each last.
#[derive(Default)]
struct Prefix {
    clients: BTreeSet<u64>,
    keys: BTreeMap<Vec<u8>, u64>,
}

#[derive(Default)]
struct Inner {
    /// Key -> clients that read it (default mode).
    table: HashMap<Vec<u8>, BTreeSet<u64>>,
    /// Client ids across the table (INFO's `tracking_total_items`).
    items: usize,
    prefixes: BTreeMap<Vec<u8>, Prefix>,
    clients: HashMap<u64, Options>,
    /// Messages for a client whose own command caused them, sent after
    /// its reply.
    own: HashMap<u64, Vec<Message>>,
}

/// The node's tracking table and its tracking clients.
#[derive(Default)]
pub struct Tracking {
    /// Whether there are tracking clients or remembered keys (keys of
    /// clients gone stay until written or flushed, as in Redis): false
    /// lets every command pass this by with one load.
    on: AtomicBool,
    inner: Mutex<Inner>,
}

/// Messages and the client id each goes to.
type Deliveries = Vec<(u64, Message)>;

impl Tracking {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes whether anything is left to do (see `on`), as a change of
    /// `inner` ends.
    fn settle(&self, inner: &Inner) {
        let on = !inner.clients.is_empty() || !inner.table.is_empty();
        self.on.store(on, Ordering::Relaxed);
    }

    /// Whether any client tracks or any key is remembered: writes must be
    /// looked at.
    pub fn any(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Client `id`'s options, if it tracks.
    pub fn options(&self, id: u64) -> Option<Options> {
        if !self.any() {
            return None;
        }
        self.lock().clients.get(&id).cloned()
    }

    /// CLIENT TRACKING ON with `options` (REDIRECT, BCAST, OPTIN, OPTOUT,
    /// NOLOOP) and `prefixes`, checked as Redis checks them against each
    /// other and the client's current mode; the error text otherwise.
    pub fn enable(&self, id: u64, new: Options, prefixes: Vec<Vec<u8>>) -> Result<(), String> {
        let mut inner = self.lock();
        let current = inner.clients.get(&id).cloned();
        if !new.bcast && !prefixes.is_empty() {
            return Err("ERR PREFIX option requires BCAST mode to be enabled".into());
        }
        if current.as_ref().is_some_and(|c| c.bcast != new.bcast) {
            return Err("ERR You can't switch BCAST mode on/off before disabling tracking for \
                        this client, and then re-enabling it with a different mode."
                .into());
        }
        if new.bcast && (new.optin || new.optout) {
            return Err("ERR OPTIN and OPTOUT are not compatible with BCAST".into());
        }
        if new.optin && new.optout {
            return Err("ERR You can't specify both OPTIN mode and OPTOUT mode".into());
        }
        if current.as_ref().is_some_and(|c| (new.optin && c.optout) || (new.optout && c.optin)) {
            return Err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for \
                        this client, and then re-enabling it with a different mode."
                .into());
        }
        if new.bcast {
            let held = current.as_ref().map(|c| c.prefixes.clone()).unwrap_or_default();
            overlapping(&held, &prefixes)?;
        }
        let mut options = Options {
            redirect: new.redirect,
            bcast: new.bcast,
            optin: new.optin,
            optout: new.optout,
            noloop: new.noloop,
            caching: current.as_ref().is_some_and(|c| c.caching),
            broken: false,
            prefixes: current.map(|c| c.prefixes).unwrap_or_default(),
        };
        if new.bcast {
            let wanted = if prefixes.is_empty() { vec![Vec::new()] } else { prefixes };
            for p in wanted {
                inner.prefixes.entry(p.clone()).or_default().clients.insert(id);
                options.prefixes.insert(p);
            }
        }
        inner.clients.insert(id, options);
        self.settle(&inner);
        Ok(())
    }

    /// CLIENT TRACKING OFF (and a connection's end, and RESET).
    pub fn disable(&self, id: u64) {
        if !self.any() {
            return;
        }
        let mut inner = self.lock();
        let Some(options) = inner.clients.remove(&id) else { return };
        self.settle(&inner);
        for p in options.prefixes {
            if let Some(prefix) = inner.prefixes.get_mut(&p) {
                prefix.clients.remove(&id);
                if prefix.clients.is_empty() {
                    inner.prefixes.remove(&p);
                }
            }
        }
        inner.own.remove(&id);
    }

    /// CLIENT CACHING YES|NO: the error text when the mode does not allow it.
    pub fn caching(&self, id: u64, yes: bool) -> Result<(), &'static str> {
        let mut inner = self.lock();
        let Some(c) = inner.clients.get_mut(&id) else {
            return Err("ERR CLIENT CACHING can be called only when the client is in tracking \
                        mode with OPTIN or OPTOUT mode enabled");
        };
        match yes {
            true if !c.optin => {
                Err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
            }
            false if !c.optout => {
                Err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
            }
            _ => {
                c.caching = true;
                Ok(())
            }
        }
    }

    /// A command of client `id` ended (not CLIENT, not inside MULTI):
    /// CLIENT CACHING applied to it only.
    pub fn command_done(&self, id: u64) {
        if !self.any() {
            return;
        }
        if let Some(c) = self.lock().clients.get_mut(&id) {
            c.caching = false;
        }
    }

    /// Client `id` read `keys` with a read-only command: it is told when
    /// they change (default mode; as OPTIN/OPTOUT and CLIENT CACHING say).
    /// Past `max_keys` remembered keys, some are let go with their
    /// invalidations (sent through `hub`).
    pub fn remember(&self, hub: &Hub, id: u64, keys: Vec<Vec<u8>>, max_keys: usize) {
        if !self.any() || keys.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let Some(c) = inner.clients.get(&id) else { return };
        if c.bcast || (c.optin && !c.caching) || (c.optout && c.caching) {
            return;
        }
        for key in keys {
            if inner.table.entry(key).or_default().insert(id) {
                inner.items += 1;
            }
        }
        self.settle(&inner);
        drop(inner);
        self.limit(hub, max_keys);
    }

    /// Lets go of remembered keys past `max_keys` (0: no bound), any of
    /// them (as Redis's random walk), each with its invalidation. Run as
    /// keys are remembered and, for a lowered bound, by the node's
    /// periodic tick (Redis's `trackingLimitUsedSlots`).
    pub fn limit(&self, hub: &Hub, max_keys: usize) {
        if !self.any() {
            return;
        }
        let mut inner = self.lock();
        if max_keys == 0 || inner.table.len() <= max_keys {
            return;
        }
        let over = inner.table.len() - max_keys;
        let gone: Vec<Vec<u8>> = inner.table.keys().take(over).cloned().collect();
        let mut out = Vec::new();
        for key in gone {
            invalidate_key(&mut inner, None, &key, &mut out);
        }
        self.settle(&inner);
        let out = route(&mut inner, hub, None, out);
        drop(inner);
        hub.deliver_all(out);
    }

    /// `keys` were written by client `writer` (`None`: the node itself,
    /// as its expirer): each client that read one is told (once, then
    /// forgotten), and the BCAST prefixes they fall under note them.
    pub fn invalidate(&self, hub: &Hub, writer: Option<u64>, keys: &[Vec<u8>]) {
        if !self.any() || keys.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let mut out = Vec::new();
        for key in keys {
            for (p, prefix) in inner.prefixes.iter_mut() {
                if key.starts_with(p) {
                    prefix.keys.insert(key.clone(), writer.unwrap_or(0));
                }
            }
            invalidate_key(&mut inner, writer, key, &mut out);
        }
        self.settle(&inner);
        let own = route(&mut inner, hub, writer, out);
        drop(inner);
        hub.deliver_all(own);
        if writer.is_none() {
            self.broadcast(hub);
        }
    }

    /// FLUSHDB or FLUSHALL by `writer`: every tracking client is told that
    /// everything changed (a null invalidation), and the table is emptied.
    pub fn flushed(&self, hub: &Hub, writer: Option<u64>) {
        let mut inner = self.lock();
        // Emptied whether or not anyone tracks now: keys of clients that
        // turned tracking off stay in the table until then, as in Redis.
        inner.table.clear();
        inner.items = 0;
        self.settle(&inner);
        let out: Vec<(u64, Message)> =
            inner.clients.keys().map(|&id| (id, invalidation(None))).collect();
        let own = route(&mut inner, hub, writer, out);
        drop(inner);
        hub.deliver_all(own);
    }

    /// Sends each BCAST client the keys written under its prefixes since
    /// the last broadcast (one message per prefix; with NOLOOP, without
    /// its own writes). Called once a command ends.
    pub fn broadcast(&self, hub: &Hub) {
        if !self.any() {
            return;
        }
        let mut inner = self.lock();
        if inner.prefixes.values().all(|p| p.keys.is_empty()) {
            return;
        }
        let mut out = Vec::new();
        let noloop: HashMap<u64, bool> =
            inner.clients.iter().map(|(&id, c)| (id, c.noloop)).collect();
        for prefix in inner.prefixes.values_mut() {
            let keys = std::mem::take(&mut prefix.keys);
            if keys.is_empty() {
                continue;
            }
            for &id in &prefix.clients {
                let mine = |writer: u64| noloop.get(&id).copied().unwrap_or(false) && writer == id;
                let sent: Vec<Vec<u8>> =
                    keys.iter().filter(|(_, &w)| !mine(w)).map(|(k, _)| k.clone()).collect();
                if !sent.is_empty() {
                    out.push((id, invalidation(Some(sent))));
                }
            }
        }
        let out = route(&mut inner, hub, None, out);
        drop(inner);
        hub.deliver_all(out);
    }

    /// The messages for client `id` that its own command caused, to send
    /// after that command's reply.
    pub fn take_own(&self, id: u64) -> Vec<Message> {
        if !self.any() {
            return Vec::new();
        }
        self.lock().own.remove(&id).unwrap_or_default()
    }

    /// (tracking clients, keys remembered, client ids across them, BCAST
    /// prefixes), for INFO.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let inner = self.lock();
        (inner.clients.len(), inner.table.len(), inner.items, inner.prefixes.len())
    }
}

/// Redis's check that no two prefixes of a client overlap (one a prefix
/// of the other): the error text otherwise.
fn overlapping(held: &BTreeSet<Vec<u8>>, new: &[Vec<u8>]) -> Result<(), String> {
    let overlap = |a: &[u8], b: &[u8]| {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    };
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (i, p) in new.iter().enumerate() {
        if let Some(h) = held.iter().find(|h| overlap(h, p)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single \
                 client must not overlap.",
                show(p),
                show(h)
            ));
        }
        if let Some(q) = new[i + 1..].iter().find(|q| overlap(p, q)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a \
                 single client must not overlap.",
                show(p),
                show(q)
            ));
        }
    }
    Ok(())
}

/// An invalidation of `keys` (`None`: every key, after a flush).
fn invalidation(keys: Option<Vec<Vec<u8>>>) -> Message {
    Message::new(Body::Invalidate { keys, redirected: false })
}

/// Tells the clients that read `key` it changed, and forgets them
/// (Redis's `trackingInvalidateKey`).
fn invalidate_key(inner: &mut Inner, writer: Option<u64>, key: &[u8], out: &mut Deliveries) {
    let Some(ids) = inner.table.remove(key) else { return };
    inner.items -= ids.len();
    for id in ids {
        let Some(c) = inner.clients.get(&id) else { continue };
        // A client that switched to BCAST is not told of older reads.
        if c.bcast || (c.noloop && writer == Some(id)) {
            continue;
        }
        out.push((id, invalidation(Some(vec![key.to_vec()]))));
    }
}

/// Sends each (tracking client, message) where it goes: to the client's
/// redirect target (or, that one gone, a `tracking-redir-broken` to the
/// client), kept for after the reply when that is `writer`'s own
/// connection; the (client id, message) pairs for other connections.
fn route(inner: &mut Inner, hub: &Hub, writer: Option<u64>, out: Deliveries) -> Deliveries {
    let mut deliveries = Vec::with_capacity(out.len());
    for (id, mut m) in out {
        let Some(c) = inner.clients.get_mut(&id) else { continue };
        let target = if c.redirect != 0 && !hub.has_mailbox(c.redirect) {
            c.broken = true;
            m = Message::new(Body::RedirectBroken(c.redirect));
            id
        } else if c.redirect != 0 {
            if let Body::Invalidate { redirected, .. } = &mut m.body {
                *redirected = true;
            }
            c.redirect
        } else {
            id
        };
        if Some(target) == writer {
            inner.own.entry(target).or_default().push(m);
        } else {
            deliveries.push((target, m));
        }
    }
    deliveries
}

/// What a tracking message is sent as on a connection speaking `proto`
/// (`subscribed`: in pub/sub mode): a RESP3 push, a pub/sub `message` on
/// `__redis__:invalidate` to a RESP2 redirect target in pub/sub mode, or
/// nothing (RESP2 has no pushes), as Redis's `sendTrackingMessage`.
pub fn reply(body: &Body, proto: u8, subscribed: bool) -> Option<Reply> {
    match body {
        Body::Invalidate { keys, redirected } => {
            let keys = match keys {
                Some(k) => Reply::Array(k.iter().map(|k| Reply::Bulk(k.clone())).collect()),
                None => Reply::Null,
            };
            if proto >= 3 {
                Some(Reply::Push(vec![Reply::bulk("invalidate"), keys]))
            } else if *redirected && subscribed {
                Some(Reply::Push(vec![
                    Reply::bulk("message"),
                    Reply::bulk("__redis__:invalidate"),
                    keys,
                ]))
            } else {
                None
            }
        }
        Body::RedirectBroken(id) if proto >= 3 => {
            Some(Reply::Push(vec![Reply::bulk("tracking-redir-broken"), Reply::Int(*id as i64)]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(bcast: bool) -> Options {
        Options { bcast, ..Options::default() }
    }

    #[test]
    fn modes_are_checked_as_redis_checks_them() {
        let t = Tracking::default();
        assert!(t.enable(1, opts(false), vec![b"a".to_vec()]).is_err());
        t.enable(1, opts(true), vec![b"ab".to_vec()]).expect("bcast");
        let err = t.enable(1, opts(true), vec![b"a".to_vec()]).expect_err("overlap");
        assert!(err.contains("overlaps with an existing prefix 'ab'"), "{err}");
        assert!(t.enable(1, opts(false), vec![]).is_err(), "BCAST cannot be switched off");
        t.disable(1);
        assert!(!t.any());
        let both = Options { optin: true, optout: true, ..Options::default() };
        assert!(t.enable(2, both, vec![]).is_err());
        let err = t
            .enable(3, opts(true), vec![b"x".to_vec(), b"xy".to_vec()])
            .expect_err("overlap among the new ones");
        assert!(err.contains("overlaps with another provided prefix"), "{err}");
    }

    #[test]
    fn a_read_key_is_invalidated_once_and_forgotten() {
        let (t, hub) = (Tracking::default(), Hub::default());
        t.enable(1, opts(false), vec![]).expect("on");
        t.remember(&hub, 1, vec![b"k".to_vec()], 0);
        assert_eq!(t.counts(), (1, 1, 1, 0));
        // Written by client 1 itself: kept for after its reply.
        t.invalidate(&hub, Some(1), &[b"k".to_vec(), b"other".to_vec()]);
        let own = t.take_own(1);
        assert_eq!(own.len(), 1);
        assert_eq!(t.counts(), (1, 0, 0, 0));
        t.invalidate(&hub, Some(1), &[b"k".to_vec()]);
        assert!(t.take_own(1).is_empty(), "told once");
    }
}
