//! LATENCY (DOCTOR, GRAPH, HISTORY, LATEST, RESET, HISTOGRAM, HELP) and
//! INFO's latencystats, as Redis 7.0's `latency.c`.
//!
//! Two things are kept, per node and in memory (gone at a restart, as in
//! Redis):
//!
//! - per command and subcommand, a histogram of how long each call took
//!   ([`Histogram`]): power-of-two buckets from 1,024 ns up, the buckets
//!   Redis's LATENCY HISTOGRAM reports (it reads its HdrHistogram of
//!   nanoseconds in log-2 steps from 1,024; the counts here are per
//!   bucket, not per HdrHistogram sub-bucket, so a percentile is the upper
//!   bound of the bucket it falls in). CONFIG RESETSTAT empties them;
//! - with `latency-monitor-threshold` above 0 (milliseconds), latency
//!   events ([`Monitor`]): a command (`command`, or `fast-command` for one
//!   flagged fast) or an expiry pass (`expire-cycle`) that took at least
//!   the threshold adds a sample to its event's series: the last 160
//!   seconds that had one, the highest per second, and the highest ever.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::args::lower;
use super::reply::Reply;
use super::state::RespState;

pub use crate::counters::Histogram;

/// Samples kept per event (Redis's `LATENCY_TS_LEN`).
const SERIES_LEN: usize = 160;

/// One event's samples: (unix seconds, milliseconds), oldest first from
/// `next`, and the highest ever.
struct Series {
    samples: [(u64, u64); SERIES_LEN],
    next: usize,
    max: u64,
}

impl Series {
    fn ordered(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..SERIES_LEN).map(|j| self.samples[(self.next + j) % SERIES_LEN]).filter(|s| s.0 != 0)
    }

    fn last(&self) -> (u64, u64) {
        self.samples[(self.next + SERIES_LEN - 1) % SERIES_LEN]
    }
}

/// The latency monitor's events.
#[derive(Default)]
pub struct Monitor {
    /// `latency-monitor-threshold` in milliseconds (0: off), kept here to
    /// be read per command.
    threshold_ms: AtomicU64,
    events: Mutex<BTreeMap<String, Series>>,
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Monitor {
    fn events(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Series>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_threshold(&self, ms: i64) {
        self.threshold_ms.store(ms.max(0) as u64, Ordering::Relaxed);
    }

    /// Adds a sample of `event` if `took` reaches the threshold (Redis's
    /// `latencyAddSampleIfNeeded`).
    pub fn sample(&self, event: &str, took: std::time::Duration) {
        let threshold = self.threshold_ms.load(Ordering::Relaxed);
        let ms = took.as_millis() as u64;
        if threshold == 0 || ms < threshold {
            return;
        }
        let now = unix_secs();
        let mut events = self.events();
        let s = events.entry(event.to_owned()).or_insert_with(|| Series {
            samples: [(0, 0); SERIES_LEN],
            next: 0,
            max: 0,
        });
        s.max = s.max.max(ms);
        let prev = (s.next + SERIES_LEN - 1) % SERIES_LEN;
        if s.samples[prev].0 == now {
            s.samples[prev].1 = s.samples[prev].1.max(ms);
            return;
        }
        s.samples[s.next] = (now, ms);
        s.next = (s.next + 1) % SERIES_LEN;
    }
}

/// LATENCY's help, word for word as Redis 7.0 gives it.
const HELP: &[&str] = &[
    "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DOCTOR",
    "    Return a human readable latency analysis report.",
    "GRAPH <event>",
    "    Return an ASCII latency graph for the <event> class.",
    "HISTORY <event>",
    "    Return time-latency samples for the <event> class.",
    "LATEST",
    "    Return the latest latency samples for all events.",
    "RESET [<event> ...]",
    "    Reset latency data of one or more <event> classes.",
    "    (default: reset all data for all event classes)",
    "HISTOGRAM [COMMAND ...]",
    "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
    "    If no commands are specified then all histograms are replied.",
    "HELP",
    "    Prints this help.",
];

/// Runs LATENCY (its subcommand and arity checked).
pub fn run(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let monitor = &state.latency;
    match lower(&args[1]).as_str() {
        "history" => {
            let events = monitor.events();
            let name = String::from_utf8_lossy(&args[2]);
            Reply::Array(events.get(name.as_ref()).map_or_else(Vec::new, |s| {
                s.ordered()
                    .map(|(t, ms)| Reply::Array(vec![Reply::Int(t as i64), Reply::Int(ms as i64)]))
                    .collect()
            }))
        }
        "latest" => Reply::Array(
            monitor
                .events()
                .iter()
                .map(|(name, s)| {
                    let (t, ms) = s.last();
                    Reply::Array(vec![
                        Reply::bulk(name.as_str()),
                        Reply::Int(t as i64),
                        Reply::Int(ms as i64),
                        Reply::Int(s.max as i64),
                    ])
                })
                .collect(),
        ),
        "reset" => {
            let mut events = monitor.events();
            if args.len() == 2 {
                let n = events.len();
                events.clear();
                return Reply::Int(n as i64);
            }
            let mut n = 0;
            for a in &args[2..] {
                let name = String::from_utf8_lossy(a).to_ascii_lowercase();
                let found: Vec<String> =
                    events.keys().filter(|k| k.to_ascii_lowercase() == name).cloned().collect();
                for k in found {
                    events.remove(&k);
                    n += 1;
                }
            }
            Reply::Int(n)
        }
        "graph" => {
            let events = monitor.events();
            let name = String::from_utf8_lossy(&args[2]).into_owned();
            match events.get(&name) {
                Some(s) => Reply::Verbatim(graph(&name, s)),
                None => Reply::err(format!("ERR No samples available for event '{name}'")),
            }
        }
        "doctor" => Reply::Verbatim(doctor(state)),
        "histogram" => histogram(state, &args[2..]),
        _ => Reply::Array(HELP.iter().map(|l| Reply::Simple(l)).collect()),
    }
}

/// LATENCY HISTOGRAM [command ...]: per command (and subcommand) that
/// has calls, `calls` and `histogram_usec`; a container names its
/// subcommands'.
fn histogram(state: &RespState, names: &[Vec<u8>]) -> Reply {
    let slots: Vec<u32> = if names.is_empty() {
        (0..state.stats.slot_count()).collect()
    } else {
        names.iter().flat_map(|n| state.stats.slots_named(&lower(n))).collect()
    };
    let mut pairs = Vec::new();
    for slot in slots {
        let h = state.stats.histogram(slot);
        let calls = h.total();
        if calls == 0 {
            continue;
        }
        let name = state.stats.name(slot).unwrap_or("unknown");
        let cdf = h
            .cdf()
            .into_iter()
            .map(|(us, n)| (Reply::Int(us as i64), Reply::Int(n as i64)))
            .collect();
        pairs.push((
            Reply::bulk(name),
            Reply::Map(vec![
                (Reply::bulk("calls"), Reply::Int(calls as i64)),
                (Reply::bulk("histogram_usec"), Reply::Map(cdf)),
            ]),
        ));
    }
    Reply::Map(pairs)
}

/// INFO latencystats: Redis's `latency_percentiles_usec_` lines at p50,
/// p99 and p99.9.
pub fn info_lines(state: &RespState) -> Vec<String> {
    let mut out = Vec::new();
    for slot in 0..state.stats.slot_count() {
        let h = state.stats.histogram(slot);
        if h.total() == 0 {
            continue;
        }
        let name = state.stats.name(slot).unwrap_or("unknown");
        out.push(format!(
            "latency_percentiles_usec_{name}:p50={:.3},p99={:.3},p99.9={:.3}",
            h.percentile(50.0),
            h.percentile(99.0),
            h.percentile(99.9)
        ));
    }
    out
}

/// LATENCY GRAPH's ASCII graph (Redis's `latencyCommandGenSparkeline`
/// and `sparkline.c`, filled, four rows).
fn graph(event: &str, s: &Series) -> String {
    let now = unix_secs();
    let samples: Vec<(u64, String)> = s
        .ordered()
        .map(|(t, ms)| {
            let ago = now.saturating_sub(t);
            let label = match ago {
                0..=59 => format!("{ago}s"),
                60..=3599 => format!("{}m", ago / 60),
                3600..=86_399 => format!("{}h", ago / 3600),
                _ => format!("{}d", ago / 86_400),
            };
            (ms, label)
        })
        .collect();
    let min = samples.iter().map(|s| s.0).min().unwrap_or(0);
    let max = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let mut out = format!(
        "{event} - high {max} ms, low {min} ms (all time high {} ms)\n{}\n",
        s.max,
        "-".repeat(80)
    );
    for (j, part) in samples.chunks(80).enumerate() {
        if j != 0 {
            out.push('\n');
        }
        sparkline(&mut out, part, min, max, 4);
    }
    out
}

/// Redis's `sparklineRenderRange` with SPARKLINE_FILL.
fn sparkline(out: &mut String, samples: &[(u64, String)], min: u64, max: u64, rows: usize) {
    const CHARS: &[u8] = b"_o#";
    let steps = CHARS.len() * rows;
    let relmax = if max == min { 1.0 } else { (max - min) as f64 };
    let mut row = 0;
    loop {
        let mut line = vec![b' '; samples.len()];
        let mut more = false;
        for (j, (value, label)) in samples.iter().enumerate() {
            let relval = (value - min) as f64;
            let step = (((relval * steps as f64) as i64) as f64 / relmax) as usize;
            let step = step.min(steps - 1);
            if row < rows {
                more = true;
                let idx = step as i64 - ((rows - row - 1) * CHARS.len()) as i64;
                if (0..CHARS.len() as i64).contains(&idx) {
                    line[j] = CHARS[idx as usize];
                } else if idx >= CHARS.len() as i64 {
                    line[j] = b'|';
                }
            } else {
                // One blank line before the labels.
                if row - rows < 1 {
                    more = true;
                    break;
                }
                let at = row - rows - 1;
                if let Some(&c) = label.as_bytes().get(at) {
                    more = true;
                    line[j] = c;
                }
            }
        }
        if !more {
            break;
        }
        row += 1;
        out.push_str(&String::from_utf8_lossy(&line));
        out.push('\n');
    }
}

/// LATENCY DOCTOR's report, in Redis's words for the events Monotable
/// records.
fn doctor(state: &RespState) -> String {
    let monitor = &state.latency;
    let events = monitor.events();
    let threshold = monitor.threshold_ms.load(Ordering::Relaxed);
    if events.is_empty() && threshold == 0 {
        return "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis \
                instance. You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" \
                in order to enable it. If we weren't in a deep space mission I'd suggest to take \
                a look at https://redis.io/topics/latency-monitor.\n"
            .into();
    }
    let mut report = String::new();
    let (mut slowlog, mut large, mut scheduler, mut advices) = (false, false, false, 0);
    let (mut slowlog_enable, mut slowlog_tune, mut hz) = (false, false, false);
    let now = unix_secs();
    for (n, (event, s)) in events.iter().enumerate() {
        if n == 0 {
            report.push_str(
                "Dave, I have observed latency spikes in this Redis instance. You don't mind \
                 talking about it, do you Dave?\n\n",
            );
        }
        let samples: Vec<(u64, u64)> = s.ordered().collect();
        let count = samples.len() as u64;
        let avg = samples.iter().map(|x| x.1).sum::<u64>() / count.max(1);
        let mad = samples.iter().map(|x| x.1.abs_diff(avg)).sum::<u64>() / count.max(1);
        let oldest = samples.iter().map(|x| x.0).min().unwrap_or(now);
        let period = now.saturating_sub(oldest).max(1);
        report.push_str(&format!(
            "{}. {event}: {count} latency spikes (average {avg}ms, mean deviation {mad}ms, period \
             {:.2} sec). Worst all time event {}ms.",
            n + 1,
            period as f64 / count.max(1) as f64,
            s.max
        ));
        match event.as_str() {
            "command" => {
                // Redis's `createLatencyReport`: is the Slow Log on, and
                // does it log what the monitor sees?
                let slower_than = state.config.int("slowlog-log-slower-than");
                if slower_than < 0 {
                    slowlog_enable = true;
                    advices += 1;
                } else if slower_than / 1000 > threshold as i64 {
                    slowlog_tune = true;
                    advices += 1;
                }
                slowlog = true;
                large = true;
                advices += 2;
            }
            "fast-command" => {
                scheduler = true;
                advices += 1;
            }
            "expire-cycle" => {
                hz = true;
                large = true;
                advices += 2;
            }
            _ => {}
        }
        report.push('\n');
    }
    if events.is_empty() {
        report.push_str(
            "Dave, no latency spike was observed during the lifetime of this Redis instance, not \
             in the slightest bit. I honestly think you ought to sit down calmly, take a stress \
             pill, and think things over.\n",
        );
        return report;
    }
    if advices == 0 {
        report.push_str(
            "\nWhile there are latency events logged, I'm not able to suggest any easy fix. \
             Please use the Redis community to get some help, providing this report in your help \
             request.\n",
        );
        return report;
    }
    report.push_str("\nI have a few advices for you:\n\n");
    let slower_than = threshold.saturating_mul(1000);
    if slowlog_enable {
        report.push_str(&format!(
            "- There are latency issues with potentially slow commands you are using. Try to \
             enable the Slow Log Redis feature using the command 'CONFIG SET \
             slowlog-log-slower-than {slower_than}'. If the Slow log is disabled Redis is not \
             able to log slow commands execution for you.\n"
        ));
    }
    if slowlog_tune {
        report.push_str(&format!(
            "- Your current Slow Log configuration only logs events that are slower than your \
             configured latency monitor threshold. Please use 'CONFIG SET \
             slowlog-log-slower-than {slower_than}'.\n"
        ));
    }
    if slowlog {
        report.push_str(
            "- Check your Slow Log to understand what are the commands you are running which are \
             too slow to execute. Please check https://redis.io/commands/slowlog for more \
             information.\n",
        );
    }
    if scheduler {
        report.push_str(
            "- The system is slow to execute Redis code paths not containing system calls. This \
             usually means the system does not provide Redis CPU time to run for long periods. \
             You should try to:\n  1) Lower the system load.\n  2) Use a computer / VM just for \
             Redis if you are running other software in the same system.\n  3) Check if you have \
             a \"noisy neighbour\" problem.\n  4) Check with 'redis-cli --intrinsic-latency 100' \
             what is the intrinsic latency in your system.\n  5) Check if the problem is \
             allocator-related by recompiling Redis with MALLOC=libc, if you are using Jemalloc. \
             However this may create fragmentation problems.\n",
        );
    }
    if hz && state.config.int("hz") < 100 {
        report.push_str(
            "- In order to make the Redis keys expiring process more incremental, try to set \
             the 'hz' configuration parameter to 100 using 'CONFIG SET hz 100'.\n",
        );
    }
    if large {
        report.push_str(
            "- Deleting, expiring or evicting (because of maxmemory policy) large objects is a \
             blocking operation. If you have very large objects that are often deleted, expired, \
             or evicted, try to fragment those objects into multiple smaller objects.\n",
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_fall_in_redis_log_buckets() {
        let h = Histogram::default();
        for ns in [500, 1024, 1025, 3000, 1_000_000] {
            h.record(Duration::from_nanos(ns));
        }
        assert_eq!(h.total(), 5);
        // 1,024 ns and below: bucket 0 (1 us); 1,025: bucket 1 (2 us);
        // 3,000: bucket 2 (4 us); 1 ms: bucket 10 (1,056 us: 2^20 ns and
        // its HdrHistogram sub-bucket of 8,192 ns).
        assert_eq!(h.cdf(), vec![(1, 2), (2, 3), (4, 4), (1056, 5)]);
        assert_eq!(Histogram::bucket_micros(8), 264);
        assert!((h.percentile(50.0) - 2.063).abs() < 1e-9, "{}", h.percentile(50.0));
        assert!((h.percentile(100.0) - 1056.767).abs() < 1e-9);
    }

    #[test]
    fn samples_of_one_second_keep_the_highest() {
        let m = Monitor::default();
        m.sample("command", Duration::from_millis(500));
        m.set_threshold(100);
        m.sample("command", Duration::from_millis(50));
        m.sample("command", Duration::from_millis(150));
        m.sample("command", Duration::from_millis(300));
        let events = m.events();
        let s = &events["command"];
        assert_eq!(s.ordered().count(), 1);
        assert_eq!((s.last().1, s.max), (300, 300));
    }
}
