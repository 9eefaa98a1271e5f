//! The `ACL` command over [`super::acl`]: SETUSER, GETUSER, DELUSER,
//! USERS, LIST, WHOAMI, CAT, GENPASS, DRYRUN, LOG, LOAD, SAVE and HELP,
//! with Redis 7.0's replies and errors. Each node answers it itself: the
//! users are the node's own.

use rand::RngCore;

use super::acl::Denied;
use super::args::{lower, parse_i64};
use super::errors::subcommand_syntax;
use super::reply::Reply;
use super::state::{Conn, RespState};

/// `ACL GENPASS`'s largest size, in bits (Redis's `GENPASS_MAX_BITS`).
const GENPASS_BITS_MAX: i64 = 4096;

/// ACL's help, word for word as Redis 7.0 gives it.
const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOAD",
    "    Reload users from the ACL file.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "SAVE",
    "    Save the current config to the ACL file.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Create or modify a user with the specified attributes.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Prints this help.",
];

/// Runs `ACL ...` (`args[0]` is ACL; the subcommand and its arity are
/// checked by the dispatcher).
pub fn run(state: &RespState, conn: &Conn, args: &[Vec<u8>]) -> Reply {
    let sub = lower(&args[1]);
    let bulk = |b: Vec<u8>| Reply::Bulk(b);
    let text = |s: &str| Reply::bulk(s.as_bytes().to_vec());
    match sub.as_str() {
        "setuser" => {
            let before = state.acl.user(&args[2]);
            match state.acl.set_user(&args[2], &args[3..]) {
                Ok(()) => {
                    let now = state.acl.user(&args[2]);
                    if let (Some(before), Some(now)) = (before, now) {
                        if before.channels_narrowed(&now) {
                            close_subscribers(state, &args[2]);
                        }
                    }
                    Reply::ok()
                }
                Err(e) => Reply::err(e),
            }
        }
        "deluser" => match state.acl.delete_users(&args[2..]) {
            Ok(n) => {
                // Their connections close, as Redis's
                // ACLFreeUserAndKillClients closes them.
                for info in state.clients.all() {
                    if args[2..].contains(&info.user()) {
                        info.kill();
                    }
                }
                Reply::Int(n as i64)
            }
            Err(e) => Reply::err(e),
        },
        "getuser" => {
            let Some(user) = state.acl.user(&args[2]) else { return Reply::Null };
            let view = user.view();
            let selector = |(commands, keys, channels): &(String, Vec<u8>, Vec<u8>)| {
                vec![
                    (text("commands"), text(commands)),
                    (text("keys"), bulk(keys.clone())),
                    (text("channels"), bulk(channels.clone())),
                ]
            };
            let mut fields = vec![
                (text("flags"), Reply::Set(view.flags.iter().map(|f| text(f)).collect())),
                (text("passwords"), Reply::Array(view.passwords.iter().map(|p| text(p)).collect())),
            ];
            fields.extend(selector(&view.selectors[0]));
            let others = view.selectors[1..].iter().map(|s| Reply::Map(selector(s))).collect();
            fields.push((text("selectors"), Reply::Array(others)));
            Reply::Map(fields)
        }
        "users" => Reply::Array(state.acl.names().into_iter().map(bulk).collect()),
        "list" => Reply::Array(
            state
                .acl
                .all()
                .into_iter()
                .map(|u| bulk([&b"user "[..], &u.name, b" ", &u.describe()].concat()))
                .collect(),
        ),
        "whoami" => match &conn.acl {
            Some(session) => bulk(session.user.name.clone()),
            None => Reply::Null,
        },
        "load" => match state.acl.load() {
            Ok(()) => {
                // Connections of users the file no longer has close.
                for info in state.clients.all() {
                    if state.acl.user(&info.user()).is_none() {
                        info.kill();
                    }
                }
                Reply::ok()
            }
            Err(e) => Reply::err(e),
        },
        "save" => match state.acl.save() {
            Ok(()) => Reply::ok(),
            Err(e) => Reply::err(e),
        },
        "cat" if args.len() == 2 => {
            Reply::Array(super::acl::CATEGORIES.iter().map(|c| text(c)).collect())
        }
        "cat" if args.len() == 3 => match super::acl::commands_in(&lower(&args[2])) {
            Some(names) => Reply::Array(names.into_iter().map(text).collect()),
            None => {
                let name = &args[2][..args[2].len().min(128)];
                Reply::err(format!("ERR Unknown category '{}'", String::from_utf8_lossy(name)))
            }
        },
        "genpass" if args.len() <= 3 => {
            let bits = match args.get(2).map(|b| parse_i64(b)) {
                None => 256,
                Some(Some(bits)) => bits,
                Some(None) => return Reply::err("ERR value is not an integer or out of range"),
            };
            if !(1..=GENPASS_BITS_MAX).contains(&bits) {
                return Reply::err(format!(
                    "ERR ACL GENPASS argument must be the number of bits for the output \
                     password, a positive number up to {GENPASS_BITS_MAX}"
                ));
            }
            let chars = (bits as usize).div_ceil(4);
            let mut bytes = vec![0u8; chars.div_ceil(2)];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            text(&hex[..chars])
        }
        "log" if args.len() <= 3 => log(state, args.get(2)),
        "dryrun" => dryrun(state, &args[2..]),
        "help" => Reply::Array(HELP.iter().map(|l| Reply::Simple(l)).collect()),
        _ => subcommand_syntax(&args[0], &args[1]),
    }
}

/// Closes the subscribed connections of user `name`, whose channels were
/// narrowed: they may hold channels it lost (Redis closes them so).
fn close_subscribers(state: &RespState, name: &[u8]) {
    use std::sync::atomic::Ordering;
    for info in state.clients.all() {
        let subscribed = info.sub.load(Ordering::Relaxed) + info.psub.load(Ordering::Relaxed) > 0;
        if subscribed && info.user() == name {
            info.kill();
        }
    }
}

/// `ACL LOG [count | RESET]`.
fn log(state: &RespState, arg: Option<&Vec<u8>>) -> Reply {
    let count = match arg {
        None => 10,
        Some(a) if a.eq_ignore_ascii_case(b"reset") => {
            state.acl.reset_log();
            return Reply::ok();
        }
        Some(a) => match parse_i64(a) {
            Some(n) => n.max(0) as usize,
            None => return Reply::err("ERR value is not an integer or out of range"),
        },
    };
    let text = |s: &str| Reply::bulk(s.as_bytes().to_vec());
    Reply::Array(
        state
            .acl
            .log_entries(count)
            .into_iter()
            .map(|e| {
                Reply::Map(vec![
                    (text("count"), Reply::Int(e.count as i64)),
                    (text("reason"), text(e.reason)),
                    (text("context"), text(e.context.name())),
                    (text("object"), Reply::Bulk(e.object)),
                    (text("username"), Reply::Bulk(e.username)),
                    (
                        text("age-seconds"),
                        Reply::Double(e.at.elapsed().as_millis() as f64 / 1000.0),
                    ),
                    (text("client-info"), text(&e.client_info)),
                ])
            })
            .collect(),
    )
}

/// `ACL DRYRUN user command args...`: `OK`, or a bulk string saying why
/// the user may not run it.
fn dryrun(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let Some(user) = state.acl.user(&args[0]) else {
        return Reply::err(format!("ERR User '{}' not found", String::from_utf8_lossy(&args[0])));
    };
    let full = &args[1..];
    let Some(command) = super::introspect::command_of(full) else {
        return Reply::err(format!(
            "ERR Command '{}' not found",
            String::from_utf8_lossy(&full[0])
        ));
    };
    if !command.arity_fits(full.len()) {
        return Reply::err(format!("ERR wrong number of arguments for '{}' command", command.name));
    }
    match user.check(command, full) {
        Ok(()) => Reply::ok(),
        Err(Denied::Command) => Reply::bulk(
            format!("This user has no permissions to run the '{}' command", command.name)
                .into_bytes(),
        ),
        Err(Denied::Key(i)) => Reply::bulk(
            format!(
                "This user has no permissions to access the '{}' key",
                String::from_utf8_lossy(&full[i])
            )
            .into_bytes(),
        ),
        Err(Denied::Channel(i)) => Reply::bulk(
            format!(
                "This user has no permissions to access the '{}' channel",
                String::from_utf8_lossy(&full[i])
            )
            .into_bytes(),
        ),
    }
}
