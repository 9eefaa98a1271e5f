//! `monotable redis import`: copies a Redis database into a Redis database
//! range.
//!
//! A reader task walks the source with SCAN and reads each page's keys
//! whole (pipelined TYPE + PTTL, then pipelined typed reads); up to
//! [`PAGES_IN_FLIGHT_MAX`] pages are written at once, each replacing its
//! keys in the range, and once a page and every page before it are durable
//! the SCAN cursor after it is recorded in the range's progress row
//! `("import", SOURCE, PATTERN)`. Run again after an interruption, the
//! import goes on from that cursor (SCAN may return a key twice; importing
//! a key again is harmless). The row is removed when the import finishes.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use monotable_client::Client;
use monotable_proto::limits::check_row_size;
use monotable_proto::tuple::{self, Element};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::monotable_io::{ensure_range, read_items, replace_items, show, Writer};
use super::ownership::is_bookkeeping;
use super::redis_io::{read_items as read_redis, scan_page, Read, Target};
use super::BridgeError;

/// Pages read ahead of the writer.
const PAGES_AHEAD_MAX: usize = 4;

/// Pages written at once: their writes share the node's group commits.
const PAGES_IN_FLIGHT_MAX: usize = 4;

pub struct ImportOptions {
    pub url: String,
    pub pattern: Option<String>,
    /// Default: `redis.<DB>` for the URL's database.
    pub range: Option<String>,
    /// SCAN's COUNT: keys asked for per page.
    pub scan_count: usize,
    /// Start from the beginning even if an earlier run left progress.
    pub restart: bool,
    pub progress: bool,
}

/// Counts kept across runs of one import.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub cursor: u64,
    pub keys: u64,
    /// Keys per type: string, hash, set, list, zset.
    pub by_type: [u64; 5],
    pub elements: u64,
    pub bytes: u64,
    /// Keys that vanished or expired between SCAN and their read.
    pub gone: u64,
    /// Keys of other types (streams, modules), with their type.
    pub unsupported: Vec<(Vec<u8>, String)>,
    /// Keys with a row over Monotable's key or value limits, with the limit
    /// they pass: left out, the rest of the import goes on.
    #[serde(default)]
    pub too_large: Vec<(Vec<u8>, String)>,
    /// A sink's keys in its target (fence keys, its owners' record:
    /// [`super::ownership::is_bookkeeping`]): no data, left out.
    #[serde(default)]
    pub bookkeeping: u64,
    pub elapsed_ms: u64,
}

pub struct ImportSummary {
    pub range: String,
    pub resumed_from: Option<u64>,
    pub progress: Progress,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.progress;
        let secs = (p.elapsed_ms as f64 / 1000.0).max(0.001);
        let mb = p.bytes as f64 / 1e6;
        let names = ["string", "hash", "set", "list", "zset"];
        let types: Vec<String> = names
            .iter()
            .zip(p.by_type)
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        writeln!(
            f,
            "imported {} keys ({}) with {} elements, {:.1} MB into range {} in {:.1} s: {:.0} keys/s, {:.1} MB/s",
            p.keys,
            if types.is_empty() { "none".into() } else { types.join(", ") },
            p.elements,
            mb,
            self.range,
            secs,
            p.keys as f64 / secs,
            mb / secs
        )?;
        if let Some(cursor) = self.resumed_from {
            writeln!(f, "resumed an earlier run at SCAN cursor {cursor}")?;
        }
        if p.gone > 0 {
            writeln!(f, "skipped {} keys deleted or expired while the import ran", p.gone)?;
        }
        if p.bookkeeping > 0 {
            writeln!(
                f,
                "skipped {} sink bookkeeping key(s) (monotable:sink-fence:*, monotable:sink-owners)",
                p.bookkeeping
            )?;
        }
        if !p.unsupported.is_empty() {
            let list: Vec<String> =
                p.unsupported.iter().take(10).map(|(k, t)| format!("{} ({t})", show(k))).collect();
            writeln!(
                f,
                "skipped {} keys of unsupported types: {}{}",
                p.unsupported.len(),
                list.join(", "),
                if p.unsupported.len() > 10 { ", ..." } else { "" }
            )?;
        }
        if !p.too_large.is_empty() {
            let list: Vec<String> = p
                .too_large
                .iter()
                .take(10)
                .map(|(k, why)| format!("{} ({why})", show(k)))
                .collect();
            writeln!(
                f,
                "skipped {} keys over the size limits: {}{}",
                p.too_large.len(),
                list.join(", "),
                if p.too_large.len() > 10 { ", ..." } else { "" }
            )?;
        }
        Ok(())
    }
}

/// The range a URL's database imports into by default.
pub fn default_range(target: &Target) -> String {
    crate::resp::keyspace::range_name(target.db.max(0) as u32)
}

fn progress_row(target: &Target, pattern: Option<&str>) -> Vec<u8> {
    tuple::encode(&[
        Element::String("import".into()),
        Element::String(target.display.clone()),
        Element::String(pattern.unwrap_or("").into()),
    ])
    .expect("a URL within the size limit encodes")
}

struct Page {
    cursor: u64,
    read: Read,
    /// Keys of `read` left out for a row over the limits.
    too_large: Vec<(Vec<u8>, String)>,
    /// Sinks' bookkeeping keys the SCAN returned, left out.
    bookkeeping: u64,
}

impl Progress {
    /// Counts a page that is now durable, and moves the cursor past it.
    fn add(&mut self, page: Page) {
        for item in &page.read.items {
            self.by_type[item.data.kind() as usize] += 1;
            self.elements += item.data.len() as u64;
            self.bytes += (item.key.len() as u64) + item.data.payload_bytes();
        }
        self.keys += page.read.items.len() as u64;
        self.gone += page.read.gone;
        self.unsupported.extend(page.read.unsupported);
        self.too_large.extend(page.too_large);
        self.bookkeeping += page.bookkeeping;
        self.cursor = page.cursor;
    }
}

/// Replaces a page's keys in the range; returns the page once durable.
async fn write_page(client: Client, range: String, mut page: Page) -> Result<Page, BridgeError> {
    let items = std::mem::take(&mut page.read.items);
    for item in items {
        match item.rows().iter().find_map(|(row, value)| check_row_size(row, Some(value)).err()) {
            Some(refused) => page.too_large.push((item.key, refused.message)),
            None => page.read.items.push(item),
        }
    }
    let keys: Vec<Vec<u8>> = page.read.items.iter().map(|i| i.key.clone()).collect();
    let old = read_items(&client, &range, &keys, false).await?;
    let mut writer = Writer::new(&client, &range);
    replace_items(&mut writer, old, &page.read.items).await?;
    writer.flush().await?;
    Ok(page)
}

pub async fn import(client: &Client, opts: ImportOptions) -> Result<ImportSummary, BridgeError> {
    let target = Target::parse(&opts.url)?;
    let mut con = target.connect().await?;
    let range = opts.range.clone().unwrap_or_else(|| default_range(&target));
    ensure_range(client, &range).await?;
    let row = progress_row(&target, opts.pattern.as_deref());
    let saved = match client.get(&range, &row).await? {
        Some(bytes) if !opts.restart => Some(
            rmp_serde::from_slice::<Progress>(&bytes)
                .map_err(|e| BridgeError::Damaged(format!("import progress row: {e}")))?,
        ),
        _ => None,
    };
    let resumed_from = saved.as_ref().map(|p| p.cursor);
    let mut progress = saved.unwrap_or_default();
    let total: u64 = redis::cmd("DBSIZE").query_async(&mut con).await?;
    let bar = if opts.progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} keys {per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    bar.set_position(progress.keys);
    bar.reset_eta();

    let (tx, mut rx) = mpsc::channel::<Result<Page, BridgeError>>(PAGES_AHEAD_MAX);
    let reader = {
        let mut con = con.clone();
        let (pattern, count, start) = (opts.pattern.clone(), opts.scan_count, progress.cursor);
        tokio::spawn(async move {
            let mut cursor = start;
            loop {
                let page = async {
                    let (next, mut keys) =
                        scan_page(&mut con, cursor, pattern.as_deref(), count).await?;
                    // Postmortem: an import of a sink's target took in its
                    // fence and owners' keys, which a sink of the range
                    // then wrote over another sink's in its own target.
                    let scanned = keys.len();
                    keys.retain(|k| !is_bookkeeping(k));
                    let bookkeeping = (scanned - keys.len()) as u64;
                    let read = read_redis(&mut con, &keys).await?;
                    Ok(Page { cursor: next, read, too_large: Vec::new(), bookkeeping })
                }
                .await;
                let done = matches!(&page, Ok(p) if p.cursor == 0) || page.is_err();
                if let Ok(p) = &page {
                    cursor = p.cursor;
                }
                if tx.send(page).await.is_err() || done {
                    return;
                }
            }
        })
    };

    let started = Instant::now();
    let elapsed_before = progress.elapsed_ms;
    let mut finished = false;
    // Pages being written, oldest first. A page's cursor is recorded only
    // once it and every page before it are durable.
    let mut in_flight: VecDeque<tokio::task::JoinHandle<Result<Page, BridgeError>>> =
        VecDeque::new();
    let mut keys_in_flight: HashSet<Vec<u8>> = HashSet::new();
    loop {
        // `None`: the reader sent its last page and ended.
        let page = rx.recv().await.transpose()?;
        // SCAN may return a key in two pages: never write one key from two
        // pages at once.
        let overlaps = page
            .as_ref()
            .is_some_and(|p| p.read.items.iter().any(|i| keys_in_flight.contains(&i.key)));
        while !in_flight.is_empty()
            && (page.is_none() || overlaps || in_flight.len() >= PAGES_IN_FLIGHT_MAX)
        {
            let task = in_flight.pop_front().expect("not empty");
            let written = task.await.map_err(|e| BridgeError::Redis(e.to_string()))??;
            for item in &written.read.items {
                keys_in_flight.remove(&item.key);
            }
            finished = written.cursor == 0;
            progress.add(written);
            progress.elapsed_ms = elapsed_before + started.elapsed().as_millis() as u64;
            bar.set_position(progress.keys);
            if !finished {
                let bytes = rmp_serde::to_vec(&progress).expect("progress serializes");
                client.put(&range, &row, bytes).await?;
            }
        }
        let Some(page) = page else { break };
        keys_in_flight.extend(page.read.items.iter().map(|i| i.key.clone()));
        in_flight.push_back(tokio::spawn(write_page(client.clone(), range.clone(), page)));
    }
    reader.abort();
    if !finished {
        return Err(BridgeError::Redis("the reader stopped before the end of the SCAN".into()));
    }
    client.delete(&range, &row).await?;
    bar.finish_and_clear();
    progress.elapsed_ms = progress.elapsed_ms.max(1);
    Ok(ImportSummary { range, resumed_from, progress })
}
