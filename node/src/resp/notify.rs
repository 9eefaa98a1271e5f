//! Keyspace notifications: with `notify-keyspace-events` set, each write
//! of a key is published to pub/sub, as Redis 7.0 publishes it
//! (`notify.c`, <https://redis.io/docs/manual/keyspace-notifications/>).
//!
//! An event has a class (one of the flag letters: `g` generic, `$`
//! string, `l` list, `s` set, `h` hash, `z` zset, `t` stream, `x`
//! expired, `n` new;
//! `A` is all of them but `n`, as in Redis) and a name (`set`, `lpush`,
//! `del`, `expired`, ...). With `K` it is published to
//! `__keyspace@DB__:KEY` (message: the name), with `E` to
//! `__keyevent@DB__:NAME` (message: the key).
//!
//! Command handlers raise their events with [`super::keyspace::Db::notify`]
//! once their writes are applied, with the names and in the order Redis's
//! commands use; `new` is raised by the write path itself when a key row
//! is written where no live key was, and `expired` where an expired key
//! is removed. Outside a transaction an event is published at once; inside
//! MULTI/EXEC or a script, or on a replicated database's leader, events
//! wait with the writes and are published once those are applied, in the
//! order they were raised (none for a transaction that is discarded).
//! On a cluster they reach every node's subscribers, as PUBLISH does.
//!
//! Not raised: `evicted` (`e`: nothing is evicted), `keymiss` (`m`),
//! module events (`d`). Their letters are accepted and kept.

use std::sync::atomic::{AtomicU32, Ordering};

use super::state::RespState;

pub const KEYSPACE: u32 = 1 << 0;
pub const KEYEVENT: u32 = 1 << 1;
pub const GENERIC: u32 = 1 << 2;
pub const STRING: u32 = 1 << 3;
pub const LIST: u32 = 1 << 4;
pub const SET: u32 = 1 << 5;
pub const HASH: u32 = 1 << 6;
pub const ZSET: u32 = 1 << 7;
pub const EXPIRED: u32 = 1 << 8;
pub const EVICTED: u32 = 1 << 9;
pub const STREAM: u32 = 1 << 10;
pub const KEY_MISS: u32 = 1 << 11;
pub const MODULE: u32 = 1 << 13;
pub const NEW: u32 = 1 << 14;
/// `A`: every class but `m` and `n`.
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// The letters and their flags, in the order Redis writes them back
/// (after `A` or the classes: `K`, `E`, `m`).
const CLASS_LETTERS: [(u8, u32); 11] = [
    (b'g', GENERIC),
    (b'$', STRING),
    (b'l', LIST),
    (b's', SET),
    (b'h', HASH),
    (b'z', ZSET),
    (b'x', EXPIRED),
    (b'e', EVICTED),
    (b't', STREAM),
    (b'd', MODULE),
    (b'n', NEW),
];

/// Redis's error for a letter that names no class.
pub const INVALID_CLASS: &str = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.";

/// The flags `text` names (Redis's `keyspaceEventsStringToFlags`); `None`
/// when a character names no class.
pub fn parse(text: &[u8]) -> Option<u32> {
    let mut flags = 0;
    for &c in text {
        flags |= match c {
            b'A' => ALL,
            b'K' => KEYSPACE,
            b'E' => KEYEVENT,
            b'm' => KEY_MISS,
            c => CLASS_LETTERS.iter().find(|(l, _)| *l == c)?.1,
        };
    }
    Some(flags)
}

/// The canonical text of `flags`, as CONFIG GET shows it (Redis's
/// `keyspaceEventsFlagsToString`): `A` when every class of `A` is on.
pub fn format(flags: u32) -> String {
    let mut out = String::new();
    if flags & ALL == ALL {
        // Alone, as in Redis 7.0: with `n` on too, the text leaves it out
        // (the flags keep it).
        out.push('A');
    } else {
        for (letter, flag) in CLASS_LETTERS {
            if flags & flag != 0 {
                out.push(letter as char);
            }
        }
    }
    for (letter, flag) in [('K', KEYSPACE), ('E', KEYEVENT), ('m', KEY_MISS)] {
        if flags & flag != 0 {
            out.push(letter);
        }
    }
    out
}

/// The node's `notify-keyspace-events`, read by every write that may
/// raise an event: one atomic load when it is off.
#[derive(Default)]
pub struct Flags(AtomicU32);

impl Flags {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, flags: u32) {
        self.0.store(flags, Ordering::Relaxed)
    }

    /// Whether an event of `class` is published now: its class is on, and
    /// `K` or `E`.
    pub fn wants(&self, class: u32) -> bool {
        let flags = self.get();
        flags & class != 0 && flags & (KEYSPACE | KEYEVENT) != 0
    }
}

/// One event of a key, raised by a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `K` and `E` as they were when it was raised.
    pub targets: u32,
    pub db: u32,
    pub name: &'static str,
    pub key: Vec<u8>,
}

impl Event {
    /// `name` of `key` in database `db`, if `state`'s flags want `class`.
    pub fn raised(
        state: &RespState,
        class: u32,
        name: &'static str,
        db: u32,
        key: &[u8],
    ) -> Option<Event> {
        state.notify.wants(class).then(|| Event {
            targets: state.notify.get() & (KEYSPACE | KEYEVENT),
            db,
            name,
            key: key.to_vec(),
        })
    }

    /// The (channel, message) pairs it is published as.
    fn messages(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(2);
        if self.targets & KEYSPACE != 0 {
            let mut channel = format!("__keyspace@{}__:", self.db).into_bytes();
            channel.extend_from_slice(&self.key);
            out.push((channel, self.name.as_bytes().to_vec()));
        }
        if self.targets & KEYEVENT != 0 {
            let channel = format!("__keyevent@{}__:{}", self.db, self.name).into_bytes();
            out.push((channel, self.key.clone()));
        }
        out
    }
}

/// Publishes `events` in order, to this node's subscribers and (on a
/// cluster) the other nodes', as PUBLISH does.
pub fn publish(state: &RespState, events: impl IntoIterator<Item = Event>) {
    for event in events {
        for (channel, message) in event.messages() {
            state.relay.relay(&state.node, &channel, &message);
            state.pubsub.publish(&channel, &message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_and_write_as_redis_writes_them() {
        for (text, canonical) in [
            ("", ""),
            ("KEA", "AKE"),
            ("Ag$lshzxeKEtmdn", "AKEm"),
            ("Kx", "xK"),
            ("E$lg", "g$lE"),
            ("nK", "nK"),
            ("g$lshzxetd", "A"),
            ("KKK", "K"),
            ("m", "m"),
        ] {
            let flags = parse(text.as_bytes()).expect(text);
            assert_eq!(format(flags), canonical, "{text}");
            let dropped = if flags & ALL == ALL { NEW } else { 0 };
            assert_eq!(parse(canonical.as_bytes()), Some(flags & !dropped), "{text}");
        }
        assert_eq!(parse(b"KEz?"), None);
        assert_eq!(parse(b"a"), None);
        assert_eq!(parse(b"A"), Some(ALL));
        assert_eq!(format(parse(b"An").expect("valid")), "A");
    }

    #[test]
    fn an_event_goes_to_the_channels_its_targets_name() {
        let event = |targets| Event { targets, db: 3, name: "lpush", key: b"k\0ey".to_vec() };
        assert_eq!(
            event(KEYSPACE | KEYEVENT).messages(),
            vec![
                (b"__keyspace@3__:k\0ey".to_vec(), b"lpush".to_vec()),
                (b"__keyevent@3__:lpush".to_vec(), b"k\0ey".to_vec()),
            ]
        );
        assert_eq!(event(KEYEVENT).messages().len(), 1);
        assert!(event(0).messages().is_empty());
    }
}
