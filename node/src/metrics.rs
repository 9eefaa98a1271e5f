//! The node's figures for `GET /metrics`, in the OpenMetrics text format
//! (the format Prometheus scrapes; encoded by `prometheus-client`).
//!
//! Nothing here sits on a request's path: the layers count in atomics
//! where things happen ([`crate::counters`], the group commit's
//! `CommitStats`, the chunk actors' `MaintenanceCounts`, each protocol's
//! command counters), and a scrape reads them into an [`Exposition`],
//! with the state that is cheaper to read than to count (chunks and their
//! sizes, views, Raft groups, memory) gathered at the scrape by
//! [`node_figures`]. The protocol endpoints add their own
//! ([`Exposition::commands`]); the HTTP listener ([`crate::http`])
//! assembles the whole and encodes it.
//!
//! Every name starts with `monotable_`. Units follow OpenMetrics: a name
//! ends with its unit (`_seconds`, `_bytes`), and counters with `_total`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::counters::{CommandStat, Histogram, BUCKETS};
use crate::node::Node;

/// The `Content-Type` of [`Exposition::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Sample {
    Counter(u64),
    Gauge(f64),
    Histogram { sum: f64, count: u64, buckets: Vec<(f64, u64)> },
}

#[derive(Debug)]
struct Family {
    help: String,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Labels, Sample)>,
}

/// Figures gathered for one scrape: families of samples by name (without
/// the `monotable_` prefix, the unit or `_total`).
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
}

/// Label pairs with their values escaped as OpenMetrics asks (`\\`,
/// `\"`, `\n`): `prometheus-client` writes values as given, and names of
/// ranges and views may hold any of them.
fn labels(pairs: &[(&str, &str)]) -> Labels {
    let escape = |v: &str| {
        let mut out = String::with_capacity(v.len());
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out
    };
    pairs.iter().map(|(k, v)| ((*k).to_owned(), escape(v))).collect()
}

impl Exposition {
    fn family(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        kind: MetricType,
    ) -> &mut Family {
        self.families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            unit,
            kind,
            samples: Vec::new(),
        })
    }

    /// A counter sample (`NAME_total`).
    pub fn counter(&mut self, name: &str, help: &str, labels_: &[(&str, &str)], v: u64) {
        self.counter_in(name, help, None, labels_, v);
    }

    /// A counter sample in `unit` (`NAME_UNIT_total`).
    pub fn counter_in(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        labels_: &[(&str, &str)],
        v: u64,
    ) {
        let f = self.family(name, help, unit, MetricType::Counter);
        f.samples.push((labels(labels_), Sample::Counter(v)));
    }

    /// A gauge sample, in `unit` if given.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        labels_: &[(&str, &str)],
        v: f64,
    ) {
        let f = self.family(name, help, unit, MetricType::Gauge);
        f.samples.push((labels(labels_), Sample::Gauge(v)));
    }

    /// A histogram sample: `buckets` are (upper bound, events in that
    /// bucket, not cumulative), the last bound `f64::MAX` (`+Inf`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        labels_: &[(&str, &str)],
        sum: f64,
        buckets: Vec<(f64, u64)>,
    ) {
        let count = buckets.iter().map(|b| b.1).sum();
        let f = self.family(name, help, unit, MetricType::Histogram);
        f.samples.push((labels(labels_), Sample::Histogram { sum, count, buckets }));
    }

    /// The figures of a protocol's commands: `requests_total`,
    /// `request_errors_total` and `request_duration_seconds` labelled with
    /// the protocol and the command, for each command that was called.
    pub fn commands<'a>(
        &mut self,
        protocol: &str,
        commands: impl IntoIterator<Item = (&'a str, &'a CommandStat)>,
    ) {
        for (name, stat) in commands {
            let calls = stat.calls.load(Ordering::Relaxed);
            let rejected = stat.rejected.load(Ordering::Relaxed);
            if calls == 0 && rejected == 0 {
                continue;
            }
            let failed = stat.failed.load(Ordering::Relaxed);
            let l = [("protocol", protocol), ("command", name)];
            self.counter("requests", "Requests served, by protocol and command.", &l, calls);
            self.counter(
                "request_errors",
                "Requests answered with an error or refused, by protocol and command.",
                &l,
                failed + rejected,
            );
            let usec = stat.usec.load(Ordering::Relaxed);
            self.histogram(
                "request_duration",
                "How long requests took to serve, by protocol and command.",
                Some(Unit::Seconds),
                &l,
                usec as f64 / 1e6,
                latency_buckets(&stat.histogram),
            );
        }
    }

    /// The whole exposition as OpenMetrics text (ends with `# EOF`).
    pub fn encode(self) -> String {
        let mut registry = Registry::with_prefix("monotable");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

fn latency_buckets(h: &Histogram) -> Vec<(f64, u64)> {
    let counts = h.counts();
    (0..BUCKETS).map(|b| (Histogram::bucket_seconds(b), counts[b])).collect()
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, f) in &self.families {
            let mut metric = encoder.encode_descriptor(name, &f.help, f.unit.as_ref(), f.kind)?;
            for (labels, sample) in &f.samples {
                if labels.is_empty() {
                    put(&mut metric, sample)?;
                } else {
                    put(&mut metric.encode_family(labels)?, sample)?;
                }
            }
        }
        Ok(())
    }
}

fn put(m: &mut MetricEncoder<'_>, sample: &Sample) -> Result<(), std::fmt::Error> {
    match sample {
        Sample::Counter(v) => m.encode_counter::<NoLabelSet, _, u64>(v, None),
        Sample::Gauge(v) => m.encode_gauge(v),
        Sample::Histogram { sum, count, buckets } => {
            m.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
        }
    }
}

/// Logs a warning when a request took `serve --slow-request-ms` or
/// longer: the protocol, the command and the client, never the
/// arguments (they may hold data or secrets).
pub fn log_if_slow(
    config: &crate::config::NodeConfig,
    protocol: &str,
    command: &str,
    client: std::net::SocketAddr,
    took: std::time::Duration,
) {
    let ms = took.as_millis();
    if config.slow_request_ms > 0 && ms >= u128::from(config.slow_request_ms) {
        tracing::warn!(protocol, command, %client, ms = ms as u64, "slow request");
    }
}

/// `n` bytes in the largest binary unit that keeps it at or above 1.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// The resident memory of this process, from `/proc/self/statm` (0 if
/// unknown).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Adds the node's own figures: storage (the group commit, chunk
/// maintenance, chunks and their sizes per range), views, Raft groups and
/// memory.
pub async fn node_figures(node: &Arc<Node>, e: &mut Exposition) {
    storage_figures(node, e);
    view_figures(node, e).await;
    raft_figures(node, e);
    e.gauge(
        "resident_memory",
        "Resident memory of the node's process.",
        Some(Unit::Bytes),
        &[],
        rss_bytes() as f64,
    );
    e.gauge(
        "lua_memory_reserved",
        "Memory reserved by the Lua VMs of views and scripts, out of --lua-memory-max-bytes.",
        Some(Unit::Bytes),
        &[],
        node.lua_memory_reserved_bytes() as f64,
    );
}

fn storage_figures(node: &Arc<Node>, e: &mut Exposition) {
    let s = &node.syncer.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    e.counter(
        "fsyncs",
        "fdatasync and syncfs calls made by the group commit.",
        &[],
        load(&s.syncs),
    );
    e.counter(
        "group_commit_rounds",
        "Group commit rounds that synced something.",
        &[],
        load(&s.rounds),
    );
    e.counter_in(
        "log_written",
        "Bytes written to chunk logs: new writes, and the copies of compactions, splits and merges.",
        Some(Unit::Bytes),
        &[],
        load(&crate::storage::chunk_log::WRITTEN_BYTES),
    );
    let (buckets, sum) = s.round_chunks.snapshot();
    e.histogram(
        "group_commit_chunks",
        "Chunks synced together per group commit round.",
        None,
        &[],
        sum as f64,
        buckets,
    );
    let m = &node.maintenance;
    e.counter("compactions", "Chunk compactions finished.", &[], load(&m.compactions));
    e.counter("splits", "Chunk splits finished.", &[], load(&m.splits));
    e.counter("merges", "Pairs of chunks merged into one.", &[], load(&m.merges));
    let router = node.router_read();
    for range in router.ranges() {
        let (mut chunks, mut unavailable, mut live, mut log) = (0u64, 0u64, 0u64, 0u64);
        for route in range.chunks.values() {
            chunks += 1;
            match route.cell.with_chunk(|c| Ok((c.live_bytes(), c.log_bytes()))) {
                Ok((l, g)) => {
                    live += l;
                    log += g;
                }
                Err(crate::error::NodeError::Moved) => {}
                Err(_) => unavailable += 1,
            }
        }
        let l = [("range", range.meta.name.as_str())];
        e.gauge("chunks", "Chunks of each range on this node.", None, &l, chunks as f64);
        e.gauge(
            "chunks_unavailable",
            "Chunks of each range that cannot serve (damaged, or failed to sync).",
            None,
            &l,
            unavailable as f64,
        );
        e.gauge(
            "range_live",
            "Bytes of the newest version of each key, per range.",
            Some(Unit::Bytes),
            &l,
            live as f64,
        );
        e.gauge(
            "range_log",
            "Bytes of log on disk, per range (all versions kept).",
            Some(Unit::Bytes),
            &l,
            log as f64,
        );
    }
}

async fn view_figures(node: &Arc<Node>, e: &mut Exposition) {
    for v in node.view_statuses().await {
        let l =
            [("view", v.name.as_str()), ("kind", v.kind.as_str()), ("source", v.source.as_str())];
        e.gauge(
            "view_pending_changes",
            "Changes to a view's source not yet reflected in it.",
            None,
            &l,
            v.pending_changes as f64,
        );
        e.gauge(
            "view_watermark",
            "The seq up to which every change to a view's source is reflected.",
            None,
            &l,
            v.watermark as f64,
        );
        // Gauges, as `views` shows them: a mapper's rows written and a
        // view's errors survive restarts, and a reducer's rows are the
        // rows of its range now (they go down with deletions).
        e.gauge(
            "view_rows",
            "Rows a mapper wrote, or the rows of a reducer's range, as `monotable views` shows them.",
            None,
            &l,
            v.rows_written as f64,
        );
        e.gauge(
            "view_errors",
            "Records a view's function failed on, as `monotable views` shows them.",
            None,
            &l,
            v.errors as f64,
        );
        let (done, total) = v.backfill.unwrap_or((0, 0));
        e.gauge(
            "view_backfilling",
            "1 while a view backfills (builds over the data that was there), else 0.",
            None,
            &l,
            f64::from(u8::from(v.backfill.is_some())),
        );
        let progress = if total == 0 { 0.0 } else { done as f64 / total as f64 };
        e.gauge(
            "view_backfill_progress",
            "Fraction of a view's backfill done (0 when not backfilling or unknown).",
            None,
            &l,
            progress,
        );
        if let Some(tree) = &v.tree {
            e.gauge(
                "reduce_tree_levels",
                "Levels of a reducer's reduce tree: the range, then one meta-range per level.",
                None,
                &l,
                f64::from(tree.levels),
            );
        }
    }
}

fn raft_figures(node: &Arc<Node>, e: &mut Exposition) {
    let Ok(cluster) = node.cluster() else { return };
    let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    let meta = cluster.meta_group().map(|g| (g, "meta"));
    let chunks = cluster.groups().into_iter().map(|g| (g, "chunk"));
    for (group, kind) in meta.into_iter().chain(chunks) {
        let s = group.status();
        *by_state.entry(s.state).or_default() += 1;
        let id = s.group.to_string();
        let l = [("group", id.as_str()), ("kind", kind)];
        e.gauge(
            "raft_term",
            "The Raft term of each group this node holds a replica of.",
            None,
            &l,
            s.term as f64,
        );
        e.gauge(
            "raft_leader",
            "1 where this node's replica leads its group, else 0.",
            None,
            &l,
            f64::from(u8::from(s.leader == Some(s.node))),
        );
        let lag = s.last_log_index.unwrap_or(0).saturating_sub(s.last_applied_index.unwrap_or(0));
        let last = s.last_log_index.unwrap_or(0);
        for (follower, matched) in &s.matched {
            let f = follower.to_string();
            e.gauge(
                "raft_follower_lag",
                "On a group's leader: log entries each follower has yet to receive.",
                None,
                &[("group", id.as_str()), ("kind", kind), ("follower", f.as_str())],
                last.saturating_sub(matched.unwrap_or(0)) as f64,
            );
        }
        e.gauge(
            "raft_apply_lag",
            "Log entries this replica holds but has not applied, per group.",
            None,
            &l,
            lag as f64,
        );
    }
    for (state, n) in by_state {
        e.gauge(
            "raft_groups",
            "Raft groups of this node (the meta range's and its chunks'), by its replica's state.",
            None,
            &[("state", state)],
            n as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_gauges_and_histograms_as_openmetrics() {
        let mut e = Exposition::default();
        e.counter("fsyncs", "Syncs.", &[], 3);
        e.gauge("chunks", "Chunks.", None, &[("range", "a\"b\\c\nd")], 2.0);
        e.histogram("size", "Sizes.", None, &[], 5.0, vec![(1.0, 1), (2.0, 2), (f64::MAX, 0)]);
        let text = e.encode();
        assert!(text.contains("# TYPE monotable_fsyncs counter\n"), "{text}");
        assert!(text.contains("monotable_fsyncs_total 3\n"), "{text}");
        assert!(text.contains("monotable_chunks{range=\"a\\\"b\\\\c\\nd\"} 2.0\n"), "{text}");
        assert!(text.contains("monotable_size_bucket{le=\"2.0\"} 3\n"), "{text}");
        assert!(text.contains("monotable_size_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
