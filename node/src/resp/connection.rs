//! The connection commands: PING, ECHO, QUIT, SELECT, HELLO, AUTH,
//! RESET, and the way to CLIENT ([`super::clients`]) and INFO
//! ([`super::info`]). Each node answers them itself (their `per_node`
//! column in [`super::table`]).

use super::args::{lower, parse_i64};
use super::errors::{misrouted, SYNTAX, WRONGPASS};
use super::keyspace::DATABASES;
use super::reply::Reply;
use super::state::{Conn, RespState};
use crate::error::NodeResult;

/// Runs one of this module's commands, its arity checked.
pub async fn run(
    state: &RespState,
    conn: &mut Conn,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    Ok(match name {
        "ping" if conn.in_subscribed_context() => Reply::Array(vec![
            Reply::bulk(&b"pong"[..]),
            Reply::bulk(args.get(1).cloned().unwrap_or_default()),
        ]),
        "ping" => match args.len() {
            1 => Reply::Simple("PONG"),
            2 => Reply::bulk(args[1].clone()),
            _ => Reply::wrong_arity("ping"),
        },
        "echo" => Reply::bulk(args[1].clone()),
        "quit" => {
            conn.closing = true;
            Reply::ok()
        }
        "select" => match super::args::in_range(&args[1], i32::MIN.into(), i32::MAX.into()) {
            Ok(i) if (0..i64::from(DATABASES)).contains(&i) => {
                conn.db = i as u32;
                Reply::ok()
            }
            Ok(_) => Reply::err("ERR DB index is out of range"),
            Err(reply) => reply,
        },
        "hello" => hello(state, conn, args).await,
        "auth" => {
            let (user, pass) = match args.len() {
                2 if state.acl.default_user().nopass() => {
                    return Ok(Reply::err(
                        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                    ))
                }
                2 => (&b"default"[..], &args[1][..]),
                3 => (&args[1][..], &args[2][..]),
                _ => return Ok(Reply::err(SYNTAX)),
            };
            if state.check_credentials(conn, &args[0], user, pass).await {
                Reply::ok()
            } else {
                Reply::err(WRONGPASS)
            }
        }
        "reset" => {
            // The connection stays what CLIENT LIST shows, nameless again.
            let info = conn.info.clone();
            // RESET itself is still running: counted, logged and shown.
            let running = conn.running.take();
            state.tracking.disable(conn.id);
            *conn = Conn::new(conn.id, conn.peer, false);
            state.log_in_as_default(conn);
            conn.subs = Some(super::pubsub::Subscriptions::new(state.pubsub.clone(), conn.id));
            conn.running = running;
            info.set_name(None);
            for flag in [
                super::clients::FLAG_NO_EVICT,
                super::clients::FLAG_TRACKING,
                super::clients::FLAG_TRACKING_BCAST,
            ] {
                info.set_flag(flag, false);
            }
            info.set_user(&conn.info.user());
            conn.info = info;
            Reply::Simple("RESET")
        }
        "info" => super::info::info(state, &args[1..]).await,
        "client" => super::clients::client(state, conn, args),
        other => return Err(misrouted(other)),
    })
}

async fn hello(state: &RespState, conn: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let mut i = 1;
    let mut proto = conn.proto;
    if let Some(v) = args.get(1) {
        match parse_i64(v) {
            Some(p @ 2..=3) => proto = p as u8,
            Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
            None => return Reply::err("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        match lower(&args[i]).as_str() {
            "setname" if i + 1 < args.len() => {
                if args[i + 1].iter().any(|&b| b <= b' ' || b > b'~') {
                    return Reply::err(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                name = Some(args[i + 1].clone());
                i += 2;
            }
            "auth" if i + 2 < args.len() => {
                if !state.check_credentials(conn, &args[0], &args[i + 1], &args[i + 2]).await {
                    return Reply::err(WRONGPASS);
                }
                i += 3;
            }
            other => {
                return Reply::err(format!("ERR Syntax error in HELLO option '{other}'"));
            }
        }
    }
    if !conn.authenticated {
        return Reply::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    conn.proto = proto;
    if name.is_some() {
        conn.name = name;
        conn.info.set_name(conn.name.clone());
    }
    let s = |x: &str| Reply::bulk(x.as_bytes().to_vec());
    Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(super::info::REDIS_VERSION)),
        (s("proto"), Reply::Int(i64::from(conn.proto))),
        (s("id"), Reply::Int(conn.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
    ])
}
