//! Monotable's own commands on the Redis protocol, so Redis clients reach
//! ranges and views. Keys are given and shown in the JSON form `scan` uses;
//! replies are JSON text.
//!
//! - `MT.SCAN range [START key] [END key] [PREFIX key] [COUNT n]`: an array
//!   of `{"key":..,"value":..}` (at most `COUNT`, default 100 records).
//! - `MT.AGG reducer [START key] [END key] [PREFIX key] [GROUPLEVEL n]
//!   [FRESH] [TIMEOUT ms] [CURSOR c] [COUNT n]`: the reduction as JSON, or
//!   with `GROUPLEVEL` an array of `{"key":..,"value":..}`, an error when
//!   they do not fit one page. With `CURSOR` (`0` to begin), one page of
//!   at most `COUNT` groups as Redis's SCAN answers: `[next-cursor,
//!   [groups]]`, the next cursor `0` once every group was returned.
//! - `MT.VIEWS`: an array with the status of every view, as `monotable
//!   views --json` prints it.

use serde_json::json;

use super::reply::Reply;
use crate::json::{key_arg, key_to_json, prefix_arg, value_to_json};
use crate::node::Node;

const SCAN_COUNT_DEFAULT: u32 = 100;

struct Options {
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    /// A `PREFIX` as scan bounds (see [`crate::json::prefix_arg`]).
    prefix: Option<(Vec<u8>, Option<Vec<u8>>)>,
    count: Option<u32>,
    group_level: Option<u32>,
    fresh: bool,
    timeout_ms: u64,
    /// `CURSOR`: `Some(None)` for `0` (the first page), else the key the
    /// page starts at.
    cursor: Option<Option<Vec<u8>>>,
}

fn options(args: &[Vec<u8>], allowed: &[&str]) -> Result<Options, Reply> {
    let mut o = Options {
        start: None,
        end: None,
        prefix: None,
        count: None,
        group_level: None,
        fresh: false,
        timeout_ms: monotable_proto::limits::AGGREGATE_TIMEOUT_DEFAULT_MS,
        cursor: None,
    };
    let mut i = 0;
    while i < args.len() {
        let name = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        if !allowed.contains(&name.as_str()) {
            return Err(Reply::err("ERR syntax error"));
        }
        if name == "FRESH" {
            o.fresh = true;
            i += 1;
            continue;
        }
        let Some(value) = args.get(i + 1) else { return Err(Reply::err("ERR syntax error")) };
        let text = String::from_utf8_lossy(value);
        let key = || key_arg(&text).map_err(|e| Reply::err(format!("ERR invalid key {text}: {e}")));
        let number = || -> Result<u64, Reply> {
            text.parse().map_err(|_| Reply::err("ERR value is not an integer or out of range"))
        };
        match name.as_str() {
            "START" => o.start = Some(key()?),
            "END" => o.end = Some(key()?),
            "PREFIX" => {
                o.prefix = Some(
                    prefix_arg(&text)
                        .map_err(|e| Reply::err(format!("ERR invalid key {text}: {e}")))?,
                )
            }
            "COUNT" => o.count = Some(number()?.min(u64::from(u32::MAX)) as u32),
            "GROUPLEVEL" => o.group_level = Some(number()?.min(u64::from(u32::MAX)) as u32),
            "CURSOR" => {
                o.cursor = Some(match text.as_ref() {
                    "0" => None,
                    c => Some(hex_decode(c).ok_or_else(|| Reply::err("ERR invalid cursor"))?),
                })
            }
            _ => o.timeout_ms = number()?,
        }
        i += 2;
    }
    if o.prefix.is_some() && (o.start.is_some() || o.end.is_some()) {
        return Err(Reply::err("ERR PREFIX cannot be combined with START or END"));
    }
    Ok(o)
}

impl Options {
    /// The first key and the exclusive end of what the options select.
    fn bounds(&self) -> (Option<monotable_proto::Bytes>, Option<monotable_proto::Bytes>) {
        match &self.prefix {
            Some((start, end)) => (Some(start.clone().into()), end.clone().map(Into::into)),
            None => (self.start.clone().map(Into::into), self.end.clone().map(Into::into)),
        }
    }
}

/// A cursor as `MT.AGG` shows it: the key the next page starts at, in hex
/// (never `0`, which begins and ends a listing).
fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn json_bulk(j: &serde_json::Value) -> Reply {
    Reply::Bulk(j.to_string().into_bytes())
}

/// Runs an `MT.*` command, its arity checked.
pub async fn run(node: &Node, name: &str, args: &[Vec<u8>]) -> Reply {
    match name {
        "mt.views" => {
            let views = node.view_statuses().await;
            Reply::Array(views.iter().map(|v| json_bulk(&crate::cli::run::view_json(v))).collect())
        }
        "mt.scan" => {
            let o = match options(&args[2..], &["START", "END", "PREFIX", "COUNT"]) {
                Ok(o) => o,
                Err(reply) => return reply,
            };
            let req = monotable_proto::ScanRequest {
                range: String::from_utf8_lossy(&args[1]).into_owned(),
                start: o.bounds().0,
                end: o.bounds().1,
                prefix: None,
                limit: o.count.unwrap_or(SCAN_COUNT_DEFAULT),
                ..Default::default()
            };
            match node.scan_range(req).await {
                Ok(page) => Reply::Array(
                    page.records
                        .iter()
                        .map(|r| {
                            json_bulk(&json!({"key": key_to_json(&r.key), "value": value_to_json(&r.value)}))
                        })
                        .collect(),
                ),
                Err(e) => Reply::err(format!("ERR {e}")),
            }
        }
        "mt.agg" => {
            let allowed =
                ["START", "END", "PREFIX", "GROUPLEVEL", "FRESH", "TIMEOUT", "CURSOR", "COUNT"];
            let o = match options(&args[2..], &allowed) {
                Ok(o) => o,
                Err(reply) => return reply,
            };
            if (o.cursor.is_some() || o.count.is_some()) && o.group_level.is_none() {
                return Reply::err("ERR CURSOR and COUNT page the groups of GROUPLEVEL");
            }
            let req = monotable_proto::AggregateRequest {
                reducer: String::from_utf8_lossy(&args[1]).into_owned(),
                start: o.bounds().0,
                end: o.bounds().1,
                prefix: None,
                group_level: o.group_level,
                fresh: o.fresh,
                timeout_ms: o.timeout_ms,
                cursor: o.cursor.clone().flatten().map(Into::into),
                limit: o.count.unwrap_or(0),
            };
            let groups = |groups: &[(monotable_proto::Bytes, monotable_proto::Bytes)]| {
                Reply::Array(
                    groups
                        .iter()
                        .map(|(k, v)| {
                            json_bulk(&json!({"key": key_to_json(k), "value": decode(v)}))
                        })
                        .collect(),
                )
            };
            match node.aggregate_command(req).await {
                Ok(monotable_proto::AggregateReply::Total(v)) => json_bulk(&decode(&v)),
                Ok(monotable_proto::AggregateReply::Groups { groups: g, cursor }) => {
                    match (&o.cursor, cursor) {
                        (Some(_), next) => Reply::Array(vec![
                            Reply::Bulk(
                                next.map_or_else(|| "0".into(), |c| monotable_proto::keys::hex(&c))
                                    .into_bytes(),
                            ),
                            groups(&g),
                        ]),
                        (None, None) => groups(&g),
                        (None, Some(_)) => Reply::err(match o.count {
                            Some(n) => format!(
                                "ERR more than COUNT {n} groups: page them with CURSOR 0 COUNT {n}"
                            ),
                            None => format!(
                                "ERR more groups than one reply holds (at most {} groups and {} \
                                 bytes): page them with CURSOR 0 [COUNT n]",
                                monotable_proto::limits::AGGREGATE_GROUPS_MAX,
                                monotable_proto::limits::AGGREGATE_REPLY_SIZE_MAX_BYTES
                            ),
                        }),
                    }
                }
                Err(e) => Reply::err(format!("ERR {e}")),
            }
        }
        other => super::errors::internal(super::errors::misrouted(other)),
    }
}

fn decode(v: &[u8]) -> serde_json::Value {
    rmp_serde::from_slice(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_is_not_one() {
        for key in [vec![0u8], vec![0x15, 0x01, 0xff], (0..=255).collect::<Vec<u8>>()] {
            let shown = monotable_proto::keys::hex(&key);
            assert_ne!(shown, "0", "0 begins and ends a listing");
            assert_eq!(hex_decode(&shown), Some(key));
        }
        for bad in ["", "1", "abc", "zz", "0x12", "é1"] {
            assert_eq!(hex_decode(bad), None, "{bad:?}");
        }
    }
}
