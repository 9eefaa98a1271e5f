//! The error replies more than one command gives, in Redis's words, and
//! the one place a node error becomes a reply ([`internal`]). Below the
//! dispatcher: the command modules take these from here, never from
//! [`super::commands`].

use super::reply::Reply;
use crate::error::NodeError;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const SYNTAX: &str = "ERR syntax error";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
pub const NOAUTH: &str = "NOAUTH Authentication required.";

/// Redis's reply to a command it does not know: the name and the first
/// 32 arguments (128 characters of each).
pub fn unknown_command(args: &[Vec<u8>]) -> Reply {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&args[0])
    );
    for a in args.iter().skip(1).take(32) {
        let a = String::from_utf8_lossy(a);
        msg.push_str(&format!("'{}' ", a.chars().take(128).collect::<String>()));
    }
    Reply::err(msg)
}

/// Redis's reply to a subcommand `sub` that `command` (as the client
/// spelled it) does not have (its first 128 bytes, as Redis's `%.128s`).
pub fn unknown_subcommand(command: &[u8], sub: &[u8]) -> Reply {
    Reply::err(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        String::from_utf8_lossy(&sub[..sub.len().min(128)]),
        String::from_utf8_lossy(command).to_ascii_uppercase()
    ))
}

/// A known subcommand called with arguments it does not take, in Redis's
/// words (`addReplySubcommandSyntaxError`).
pub fn subcommand_syntax(command: &[u8], sub: &[u8]) -> Reply {
    Reply::err(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        String::from_utf8_lossy(&sub[..sub.len().min(128)]),
        String::from_utf8_lossy(command).to_ascii_uppercase()
    ))
}

/// The one place a node error becomes a reply. Keys and values over the
/// node's limits are the client's doing: their message names the limit.
pub fn internal(e: NodeError) -> Reply {
    match e {
        NodeError::Client { code: monotable_proto::ErrorCode::KeyTooLarge, message } => {
            // The limit applies to the stored row key, which is longer than
            // the Redis key (or field) the client sent.
            Reply::err(format!(
                "ERR key or element too long: {message} (a row key holds the Redis key, its type \
                 tag and, for an element, the element; each NUL byte takes two)"
            ))
        }
        NodeError::Client { code: monotable_proto::ErrorCode::ValueTooLarge, message } => {
            Reply::err(format!("ERR {message}"))
        }
        e => Reply::err(format!("ERR {e}")),
    }
}

/// A command reached a module that does not run it: the table's handler
/// column and the module disagree (a bug, reported rather than panicking).
pub fn misrouted(name: &str) -> NodeError {
    NodeError::Internal(format!("command {name} reached a module that does not run it"))
}
