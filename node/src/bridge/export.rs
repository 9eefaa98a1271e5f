//! `monotable redis export`: writes a range into a Redis database, at one
//! snapshot, pipelined.
//!
//! A Redis database range goes back as its Redis types, with expiries;
//! keys that expired but are not yet removed are left out. Any other range
//! (or a view's rows) goes as strings, one per row, or as the fields of one
//! hash (see [`super::rows`] for how rows read as text).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use monotable_client::{Client, Scan};

use super::monotable_io::{key_rows, read_item};
use super::redis_io::{prefixed, queue_item, send, Target};
use super::rows::render_value;
use super::BridgeError;
use crate::resp::keyspace::{last_bytes, now_ms};

/// Keys (or rows) per pipeline sent to Redis.
const PIPELINE_KEYS_MAX: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum ExportAs {
    /// The range holds Redis data: write its keys with their types.
    Redis,
    /// One string per row.
    Strings,
    /// Every row a field of this hash.
    Hash(Vec<u8>),
}

pub struct ExportOptions {
    pub range: String,
    pub url: String,
    pub prefix: Vec<u8>,
    pub mode: ExportAs,
    pub progress: bool,
}

pub struct ExportSummary {
    /// Redis keys written (hash fields, with `ExportAs::Hash`).
    pub written: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
    /// Streams passed over (the bridge does not write them to Redis).
    pub streams_skipped: u64,
    /// Rows not written because their key renders as an earlier row's
    /// ([`super::rows::Renderings`]): `"1"` and `1`, say.
    pub collisions: u64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = (self.elapsed_ms as f64 / 1000.0).max(0.001);
        let mb = self.bytes as f64 / 1e6;
        writeln!(
            f,
            "exported {} keys, {mb:.1} MB in {secs:.1} s: {:.0} keys/s, {:.1} MB/s",
            self.written,
            self.written as f64 / secs,
            mb / secs
        )?;
        if self.collisions > 0 {
            writeln!(
                f,
                "skipped {} rows whose key renders as the same Redis key as an earlier row's \
                 (a string key is written unquoted: \"1\" and 1 are both 1)",
                self.collisions
            )?;
        }
        if self.streams_skipped > 0 {
            writeln!(f, "skipped {} streams (streams are not exported)", self.streams_skipped)?;
        }
        Ok(())
    }
}

pub async fn export(client: &Client, opts: ExportOptions) -> Result<ExportSummary, BridgeError> {
    let target = Target::parse(&opts.url)?;
    let mut con = target.connect().await?;
    let records: u64 =
        client.describe_range(&opts.range).await?.chunks.iter().map(|c| c.records).sum();
    let bar = if opts.progress { ProgressBar::new(records) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} keys {per_sec}")
            .expect("a valid template"),
    );
    let snapshot = client.snapshot().await?;
    let started = Instant::now();
    let result = async {
        let mut summary = ExportSummary {
            written: 0,
            bytes: 0,
            elapsed_ms: 0,
            streams_skipped: 0,
            collisions: 0,
        };
        let mut renderings = super::rows::Renderings::default();
        let mut pipe = redis::pipe();
        let mut queued = 0;
        if let ExportAs::Hash(h) = &opts.mode {
            pipe.cmd("DEL").arg(prefixed(&opts.prefix, h)).ignore();
        }
        let now = now_ms();
        let mut rows = match opts.mode {
            ExportAs::Redis => key_rows(client, &opts.range, Some(snapshot)),
            _ => client.scan_stream(&opts.range, Scan::all().at(snapshot)),
        };
        while let Some(r) = rows.next().await {
            let r = r?;
            match &opts.mode {
                ExportAs::Redis => {
                    let key =
                        last_bytes(&r.key).map_err(|e| BridgeError::Damaged(e.to_string()))?;
                    let head = crate::resp::keyspace::Value::decode(&r.value);
                    if head.is_some_and(|h| h.kind == crate::resp::keyspace::KIND_STREAM) {
                        summary.streams_skipped += 1;
                        continue;
                    }
                    let item =
                        read_item(client, &opts.range, key.clone(), &r.value, Some(snapshot))
                            .await?;
                    if item.expire_at_ms.is_some_and(|at| at <= now) {
                        continue;
                    }
                    summary.bytes += key.len() as u64 + item.data.payload_bytes();
                    queue_item(&mut pipe, &prefixed(&opts.prefix, &key), Some(&item));
                }
                ExportAs::Strings => {
                    let Some(k) = renderings.render(&r.key) else {
                        summary.collisions += 1;
                        continue;
                    };
                    let v = render_value(&r.value);
                    summary.bytes += (k.len() + v.len()) as u64;
                    pipe.cmd("SET").arg(prefixed(&opts.prefix, &k)).arg(v).ignore();
                }
                ExportAs::Hash(h) => {
                    let Some(k) = renderings.render(&r.key) else {
                        summary.collisions += 1;
                        continue;
                    };
                    let v = render_value(&r.value);
                    summary.bytes += (k.len() + v.len()) as u64;
                    pipe.cmd("HSET").arg(prefixed(&opts.prefix, h)).arg(k).arg(v).ignore();
                }
            }
            summary.written += 1;
            queued += 1;
            if queued >= PIPELINE_KEYS_MAX {
                send(&pipe, &mut con).await?;
                pipe.clear();
                queued = 0;
                bar.set_position(summary.written);
            }
        }
        send(&pipe, &mut con).await?;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
    .await;
    bar.finish_and_clear();
    client.release_snapshot(snapshot).await?;
    result
}
