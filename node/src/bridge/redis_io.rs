//! Talking to a Redis server: connecting by URL, reading keys whole with
//! pipelined typed reads, and queueing the commands that write a key.

use redis::aio::MultiplexedConnection;
use redis::{Pipeline, Value as RValue};

use super::item::{Data, Item};
use super::BridgeError;
use crate::resp::keyspace::now_ms;

/// Elements sent per write command, so no single command is huge.
pub const ELEMENTS_PER_COMMAND_MAX: usize = 512;

/// Connecting to a Redis server gives up after this long.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// A request to Redis that has no reply after this long fails (and the
/// caller reconnects): a stuck server must not stall a sink for ever.
const RESPONSE_TIMEOUT_MS: u64 = 60_000;

/// A Redis server and database, from a `redis://[:PASSWORD@]HOST:PORT/DB`
/// URL.
#[derive(Clone)]
pub struct Target {
    client: redis::Client,
    /// The database number the URL names (0 without one).
    pub db: i64,
    /// The URL without its password, for messages and progress records.
    pub display: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, BridgeError> {
        let client = redis::Client::open(url)
            .map_err(|e| BridgeError::Redis(format!("bad Redis URL {url:?}: {e}")))?;
        let info = client.get_connection_info();
        let db = info.redis_settings().db();
        let display = format!("redis://{}/{db}", info.addr());
        Ok(Target { client, db, display })
    }

    pub async fn connect(&self) -> Result<MultiplexedConnection, BridgeError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_millis(CONNECT_TIMEOUT_MS)))
            .set_response_timeout(Some(std::time::Duration::from_millis(RESPONSE_TIMEOUT_MS)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| BridgeError::Redis(format!("{}: {e}", self.display)))
    }
}

/// A connection to `target` that answered PING: a sink or a job is
/// refused at once when its Redis cannot be reached, rather than retried
/// for ever.
///
/// Errors: `BadRequest` naming the server and why.
pub async fn reachable(target: &Target) -> crate::error::NodeResult<MultiplexedConnection> {
    let bad =
        |m: String| crate::error::NodeError::client(monotable_proto::ErrorCode::BadRequest, m);
    let mut con = target.connect().await.map_err(|e| bad(e.to_string()))?;
    redis::cmd("PING")
        .query_async::<()>(&mut con)
        .await
        .map_err(|e| bad(format!("{}: {e}", target.display)))?;
    Ok(con)
}

impl From<redis::RedisError> for BridgeError {
    fn from(e: redis::RedisError) -> Self {
        let unreachable = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout();
        if unreachable {
            BridgeError::Redis(e.to_string())
        } else {
            BridgeError::RedisReply(e.to_string())
        }
    }
}

/// The server's `run_id`: a new one means it restarted. A server that
/// reports none (some Redis-compatible servers) reads as one that never
/// restarts.
pub async fn run_id(con: &mut MultiplexedConnection) -> Result<String, BridgeError> {
    let info: String = redis::cmd("INFO").arg("server").query_async(con).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map_or_else(|| "none".to_owned(), |id| id.trim().to_owned()))
}

/// One SCAN step: the next cursor (0 at the end) and the keys it returned.
pub async fn scan_page(
    con: &mut MultiplexedConnection,
    cursor: u64,
    pattern: Option<&str>,
    count: usize,
) -> Result<(u64, Vec<Vec<u8>>), BridgeError> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor);
    if let Some(p) = pattern {
        cmd.arg("MATCH").arg(p);
    }
    cmd.arg("COUNT").arg(count);
    Ok(cmd.query_async(con).await?)
}

/// What a batch of keys read as: the items, and the keys skipped because
/// they vanished or expired meanwhile, or hold a type other than the five.
#[derive(Default)]
pub struct Read {
    pub items: Vec<Item>,
    pub gone: u64,
    pub unsupported: Vec<(Vec<u8>, String)>,
}

/// Collections larger than this are read a page at a time (HSCAN, SSCAN,
/// ZSCAN, LRANGE ranges) rather than with one command, so a huge key does
/// not stall the Redis server while it builds one huge reply.
pub const COLLECTION_PAGE_ELEMENTS: usize = 10_000;

/// Reads `keys` whole: one pipeline of TYPE and PTTL, one of GET (strings)
/// and sizes (collections), one of whole reads of the collections up to
/// [`COLLECTION_PAGE_ELEMENTS`]; larger ones page by page. A key that
/// changes type meanwhile is read again.
pub async fn read_items(
    con: &mut MultiplexedConnection,
    keys: &[Vec<u8>],
) -> Result<Read, BridgeError> {
    let mut out = Read::default();
    let mut todo: Vec<Vec<u8>> = keys.to_vec();
    for _ in 0..3 {
        if todo.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        for k in &todo {
            pipe.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        let heads: Vec<RValue> = pipe.query_async(con).await?;
        let now = now_ms();
        let mut typed = Vec::with_capacity(todo.len());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (k, pair) in todo.iter().zip(heads.chunks(2)) {
            let kind = status_text(&pair[0]);
            let ttl = match &pair[1] {
                RValue::Int(t) => *t,
                _ => -1,
            };
            if ttl == -2 || kind == "none" {
                out.gone += 1;
                continue;
            }
            let expire_at_ms = (ttl >= 0).then(|| now + ttl as u64);
            match kind.as_str() {
                "string" => pipe.cmd("GET").arg(k),
                "hash" => pipe.cmd("HLEN").arg(k),
                "set" => pipe.cmd("SCARD").arg(k),
                "list" => pipe.cmd("LLEN").arg(k),
                "zset" => pipe.cmd("ZCARD").arg(k),
                _ => {
                    out.unsupported.push((k.clone(), kind));
                    continue;
                }
            };
            typed.push((k.clone(), kind, expire_at_ms));
        }
        if typed.is_empty() {
            break;
        }
        let firsts: Vec<RValue> = pipe.query_async(con).await?;
        todo.clear();
        let mut whole = redis::pipe();
        whole.ignore_errors();
        let mut pending = Vec::new();
        for ((key, kind, expire_at_ms), value) in typed.into_iter().zip(firsts) {
            if matches!(value, RValue::ServerError(_)) {
                // Changed type since TYPE: read it again.
                todo.push(key);
                continue;
            }
            if kind == "string" {
                match to_data(&kind, value)? {
                    Some(data) => out.items.push(Item { key, data, expire_at_ms }),
                    None => out.gone += 1,
                }
                continue;
            }
            let size: usize = parse(value)?;
            if size > COLLECTION_PAGE_ELEMENTS {
                match read_paged(con, &key, &kind).await? {
                    Some(data) if !data.is_empty() => {
                        out.items.push(Item { key, data, expire_at_ms })
                    }
                    Some(_) => out.gone += 1,
                    None => todo.push(key),
                }
                continue;
            }
            match kind.as_str() {
                "hash" => whole.cmd("HGETALL").arg(&key),
                "set" => whole.cmd("SMEMBERS").arg(&key),
                "list" => whole.cmd("LRANGE").arg(&key).arg(0).arg(-1),
                _ => whole.cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES"),
            };
            pending.push((key, kind, expire_at_ms));
        }
        if pending.is_empty() {
            continue;
        }
        let values: Vec<RValue> = whole.query_async(con).await?;
        for ((key, kind, expire_at_ms), value) in pending.into_iter().zip(values) {
            if matches!(value, RValue::ServerError(_)) {
                todo.push(key);
                continue;
            }
            match to_data(&kind, value)? {
                Some(data) if !data.is_empty() => out.items.push(Item { key, data, expire_at_ms }),
                _ => out.gone += 1,
            }
        }
    }
    out.gone += todo.len() as u64;
    Ok(out)
}

/// A large collection, a page at a time: HSCAN, SSCAN and ZSCAN (whose
/// repeats are folded), LRANGE over consecutive index ranges. `None` when
/// the key changed type meanwhile.
async fn read_paged(
    con: &mut MultiplexedConnection,
    key: &[u8],
    kind: &str,
) -> Result<Option<Data>, BridgeError> {
    let page = COLLECTION_PAGE_ELEMENTS;
    if kind == "list" {
        let mut elements: Vec<Vec<u8>> = Vec::new();
        loop {
            let start = elements.len();
            let mut cmd = redis::cmd("LRANGE");
            cmd.arg(key).arg(start).arg(start + page - 1);
            let Some(reply) = unless_wrong_type(&cmd, con).await? else { return Ok(None) };
            let got: Vec<Vec<u8>> = parse(reply)?;
            let done = got.len() < page;
            elements.extend(got);
            if done {
                return Ok(Some(Data::List(elements)));
            }
        }
    }
    let command = match kind {
        "hash" => "HSCAN",
        "set" => "SSCAN",
        _ => "ZSCAN",
    };
    let mut fields: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd(command);
        cmd.arg(key).arg(cursor).arg("COUNT").arg(page);
        let Some(reply) = unless_wrong_type(&cmd, con).await? else { return Ok(None) };
        let (next, items): (u64, Vec<Vec<u8>>) = parse(reply)?;
        if kind == "set" {
            fields.extend(items.into_iter().map(|m| (m, Vec::new())));
        } else {
            let mut it = items.into_iter();
            while let (Some(a), Some(b)) = (it.next(), it.next()) {
                fields.insert(a, b);
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(Some(match kind {
        "hash" => Data::Hash(fields.into_iter().collect()),
        "set" => Data::Set(fields.into_keys().collect()),
        _ => Data::ZSet(
            fields
                .into_iter()
                .map(|(m, s)| {
                    let score = std::str::from_utf8(&s)
                        .ok()
                        .and_then(|t| match t {
                            "inf" | "+inf" => Some(f64::INFINITY),
                            "-inf" => Some(f64::NEG_INFINITY),
                            t => t.parse().ok(),
                        })
                        .ok_or_else(|| BridgeError::Redis(format!("bad score {s:?}")))?;
                    Ok((m, score))
                })
                .collect::<Result<_, BridgeError>>()?,
        ),
    }))
}

/// A command's reply; `None` for WRONGTYPE (the key changed type, and the
/// caller reads it again).
async fn unless_wrong_type(
    cmd: &redis::Cmd,
    con: &mut MultiplexedConnection,
) -> Result<Option<RValue>, BridgeError> {
    match cmd.query_async(con).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn status_text(v: &RValue) -> String {
    match v {
        RValue::SimpleString(s) => s.clone(),
        RValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        RValue::Okay => "OK".into(),
        _ => String::new(),
    }
}

fn parse<T: redis::FromRedisValue>(v: RValue) -> Result<T, BridgeError> {
    redis::from_redis_value(v).map_err(|e| BridgeError::Redis(e.to_string()))
}

/// A typed read's reply as data; `None` when the key is gone.
fn to_data(kind: &str, value: RValue) -> Result<Option<Data>, BridgeError> {
    if value == RValue::Nil {
        return Ok(None);
    }
    Ok(Some(match kind {
        "string" => Data::String(parse(value)?),
        "hash" => Data::Hash(parse(value)?),
        "set" => Data::Set(parse(value)?),
        "list" => Data::List(parse(value)?),
        _ => Data::ZSet(parse(value)?),
    }))
}

/// Queues the commands that make `key` hold `item` (or nothing): DEL, the
/// typed writes, PEXPIREAT. Replies are ignored; a failing command fails
/// the pipeline's query.
pub fn queue_item(pipe: &mut Pipeline, key: &[u8], item: Option<&Item>) {
    pipe.cmd("DEL").arg(key).ignore();
    let Some(item) = item else { return };
    match &item.data {
        Data::String(v) => {
            pipe.cmd("SET").arg(key).arg(v).ignore();
        }
        Data::Hash(fields) => {
            for part in fields.chunks(ELEMENTS_PER_COMMAND_MAX) {
                let cmd = pipe.cmd("HSET").arg(key);
                for (f, v) in part {
                    cmd.arg(f).arg(v);
                }
                cmd.ignore();
            }
        }
        Data::Set(members) => {
            for part in members.chunks(ELEMENTS_PER_COMMAND_MAX) {
                pipe.cmd("SADD").arg(key).arg(part).ignore();
            }
        }
        Data::List(elements) => {
            for part in elements.chunks(ELEMENTS_PER_COMMAND_MAX) {
                pipe.cmd("RPUSH").arg(key).arg(part).ignore();
            }
        }
        Data::ZSet(members) => {
            for part in members.chunks(ELEMENTS_PER_COMMAND_MAX) {
                let cmd = pipe.cmd("ZADD").arg(key);
                for (m, score) in part {
                    cmd.arg(format_score(*score)).arg(m);
                }
                cmd.ignore();
            }
        }
    }
    if let Some(at) = item.expire_at_ms {
        pipe.cmd("PEXPIREAT").arg(key).arg(at).ignore();
    }
}

/// `prefix` followed by `key`: the Redis key an export or a sink writes.
pub fn prefixed(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    [prefix, key].concat()
}

/// Sends a pipeline whose replies are ignored (nothing, when it is empty).
pub async fn send(pipe: &Pipeline, con: &mut MultiplexedConnection) -> Result<(), BridgeError> {
    if !pipe.is_empty() {
        pipe.query_async::<()>(con).await?;
    }
    Ok(())
}

/// A score as Redis parses it back exactly (`inf`, `-inf` included).
pub fn format_score(score: f64) -> String {
    if score.is_infinite() {
        if score > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{score:?}")
    }
}
