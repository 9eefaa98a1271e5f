//! `monotable redis ...`: import from, export to and mirror into Redis.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use monotable_client::{Client, SinkSource};

use crate::bridge::export::{export, ExportAs, ExportOptions};
use crate::bridge::import::{import, ImportOptions};
use crate::bridge::redis_io::Target;
use crate::bridge::verify::verify;

/// Exit status when `--verify` finds differences.
pub const EXIT_DIFFERENT: i32 = 3;

#[derive(Subcommand)]
pub enum RedisCmd {
    /// Copy a Redis database into a range: every key of the five types,
    /// with its TTL. Resumes where an interrupted run stopped.
    Import(ImportArgs),
    /// Compare a Redis database with a range key by key (type, value,
    /// TTL); exit 3 listing the differences if any.
    Verify(PairArgs),
    /// Write a range into a Redis database: a Redis database range as its
    /// Redis types, any other range (or a view's rows) as strings or as
    /// one hash.
    Export(ExportArgs),
    /// Keep a Redis database equal to a range or a view, continuously.
    Sink {
        #[command(subcommand)]
        command: SinkCmd,
    },
}

/// Which Redis keys and which range an import or a verify pairs up.
#[derive(Args)]
pub struct PairArgs {
    /// The Redis database: redis://[:PASSWORD@]HOST:PORT/DB.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    url: String,
    /// Only keys matching this glob pattern (as SCAN MATCH).
    #[arg(long = "match")]
    pattern: Option<String>,
    /// The range (default: redis.DB, the range the RESP endpoint serves as
    /// database DB).
    #[arg(long)]
    range: Option<String>,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pair: PairArgs,
    /// Keys asked for per SCAN call.
    #[arg(long, default_value_t = 1000)]
    scan_count: usize,
    /// Ignore the progress of an interrupted run and start over.
    #[arg(long)]
    restart: bool,
    /// Afterwards, compare both sides key by key; exit 3 listing the
    /// differences if any.
    #[arg(long)]
    verify: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum As {
    /// Redis types (for a Redis database range).
    Redis,
    /// One string per row.
    Strings,
    /// One hash (named by --hash-key), a field per row.
    Hash,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The range to export.
    #[arg(long, required_unless_present = "view", conflicts_with = "view")]
    range: Option<String>,
    /// A mapper whose rows to export.
    #[arg(long)]
    view: Option<String>,
    /// The Redis database to write: redis://[:PASSWORD@]HOST:PORT/DB.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    url: String,
    /// Prepended to every Redis key written.
    #[arg(long, default_value = "")]
    prefix: String,
    /// How rows become Redis keys (default: redis for a range named
    /// redis.N, strings otherwise).
    #[arg(long = "as", value_enum)]
    mode: Option<As>,
    /// The hash to write with --as hash.
    #[arg(long, required_if_eq("mode", "hash"))]
    hash_key: Option<String>,
}

#[derive(Subcommand)]
pub enum SinkCmd {
    /// Register a sink: it copies the source into Redis, deletes what the
    /// source does not hold, then follows every change. It survives
    /// restarts of the node and of Redis.
    Create {
        name: String,
        /// The range to mirror (a Redis database range, redis.N, goes with
        /// its Redis types; any other as one string per row).
        #[arg(long, required_unless_present = "view", conflicts_with = "view")]
        range: Option<String>,
        /// A mapper whose rows to mirror, one string per row.
        #[arg(long)]
        view: Option<String>,
        /// The Redis database to keep equal: redis://[:PASSWORD@]HOST:PORT/DB.
        #[arg(long)]
        url: String,
        /// Prepended to every Redis key the sink writes; the sink owns the
        /// keys with this prefix (all keys without one).
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Drop a sink; what it wrote stays in Redis.
    Drop { name: String },
}

/// Runs `verify` and prints its report; the exit status says whether the
/// two sides are equal.
async fn compare(
    c: &Client,
    url: &str,
    range: Option<String>,
    pattern: Option<String>,
    out: &mut impl Write,
) -> Result<i32> {
    let target = Target::parse(url)?;
    let range = range.unwrap_or_else(|| crate::bridge::import::default_range(&target));
    let report = verify(c, &target, &range, pattern.as_deref()).await?;
    if report.skipped_bookkeeping > 0 {
        writeln!(
            out,
            "verify: skipped {} sink bookkeeping key(s) (monotable:sink-fence:*, monotable:sink-owners)",
            report.skipped_bookkeeping
        )?;
    }
    if report.differences_total == 0 {
        writeln!(out, "verify: {} keys, no differences", report.keys)?;
        return Ok(0);
    }
    writeln!(out, "verify: {} of {} keys differ:", report.differences_total, report.keys)?;
    for d in &report.differences {
        writeln!(out, "  {d}")?;
    }
    if report.differences_total > report.differences.len() as u64 {
        writeln!(out, "  ...")?;
    }
    Ok(EXIT_DIFFERENT)
}

pub async fn run(cmd: RedisCmd, c: &Client, out: &mut impl Write) -> Result<i32> {
    let progress = std::io::stderr().is_terminal();
    match cmd {
        RedisCmd::Import(a) => {
            let PairArgs { url, pattern, range } = a.pair;
            let summary = import(
                c,
                ImportOptions {
                    url: url.clone(),
                    pattern: pattern.clone(),
                    range,
                    scan_count: a.scan_count.max(1),
                    restart: a.restart,
                    progress,
                },
            )
            .await?;
            write!(out, "{summary}")?;
            if a.verify {
                return compare(c, &url, Some(summary.range), pattern, out).await;
            }
        }
        RedisCmd::Verify(a) => return compare(c, &a.url, a.range, a.pattern, out).await,
        RedisCmd::Export(a) => {
            let range = match (&a.range, &a.view) {
                (Some(r), _) => r.clone(),
                (None, Some(v)) => match c.list_views().await?.into_iter().find(|s| &s.name == v) {
                    Some(s) if s.kind == "mapper" => s.target,
                    Some(s) => bail!("{v:?} is a {}: export a mapper's rows or a range", s.kind),
                    None => bail!("view {v:?} does not exist"),
                },
                (None, None) => unreachable!("clap requires one"),
            };
            let redis_range = crate::resp::keyspace::database_of_range(&range).is_some();
            let mode = match a.mode.unwrap_or(if redis_range { As::Redis } else { As::Strings }) {
                As::Redis => ExportAs::Redis,
                As::Strings => ExportAs::Strings,
                As::Hash => ExportAs::Hash(a.hash_key.unwrap_or_default().into_bytes()),
            };
            let summary = export(
                c,
                ExportOptions { range, url: a.url, prefix: a.prefix.into_bytes(), mode, progress },
            )
            .await?;
            write!(out, "{summary}")?;
        }
        RedisCmd::Sink { command } => match command {
            SinkCmd::Create { name, range, view, url, prefix } => {
                let source = match (range, view) {
                    (Some(r), _) => SinkSource::Range(r),
                    (None, Some(v)) => SinkSource::View(v),
                    (None, None) => unreachable!("clap requires one"),
                };
                c.create_sink(&name, source, &url, prefix.as_bytes()).await?;
                writeln!(out, "created sink {name}")?;
            }
            SinkCmd::Drop { name } => {
                c.drop_sink(&name).await?;
                writeln!(out, "dropped sink {name}")?;
            }
        },
    }
    Ok(0)
}
