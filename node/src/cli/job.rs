//! `monotable job ...`: run, list and cancel batch map-reduce jobs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use monotable_client::{
    Client, JobInput, JobOutput, JobSpec, JobStatus, MapFunction, ReduceFunction,
};
use monotable_proto::limits::JOB_MEMORY_BUDGET_DEFAULT_BYTES;
use monotable_proto::Bytes;

use crate::json::key_to_json;

#[derive(Subcommand)]
pub enum JobCmd {
    /// Run a batch map-reduce job on the node and follow it to its end
    /// (Ctrl-C cancels it). Map functions are those of mappers, reduce
    /// functions those of reducers; the output holds one row per emitted
    /// key: key = the emitted key, value = its reduction.
    Run(Box<RunArgs>),
    /// The node's jobs: running, then the last that ended.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running job; it leaves no output in a range.
    Cancel { name: String },
}

#[derive(clap::Args)]
pub struct RunArgs {
    name: String,
    /// `range:NAME` (read at one snapshot) or
    /// `redis://[:PASSWORD@]HOST:PORT/DB[?match=PATTERN]` (SCAN and typed
    /// reads; keys matching the glob PATTERN only).
    #[arg(long)]
    input: String,
    /// `range:NAME` (replaced whole when the job succeeds) or
    /// `redis://[:PASSWORD@]HOST:PORT/DB[?hash=H][&prefix=P]` (one string
    /// per row, or the fields of hash H; keys prefixed with P).
    #[arg(long)]
    output: String,
    /// A Lua 5.4 file defining `map(key, value)`, which calls
    /// `emit(key, value)` (the same as `mapper create --lua`).
    #[arg(long, required_unless_present = "map_field", conflicts_with = "map_field")]
    map_lua: Option<PathBuf>,
    /// Emit this field of each record (dot-separated path) as the key.
    #[arg(long)]
    map_field: Option<String>,
    /// With --map-field: emit this field as the value (default: nil).
    #[arg(long, requires = "map_field")]
    value_field: Option<String>,
    /// count, sum, min, max, stats or count_distinct.
    #[arg(long, required_unless_present = "reduce_lua", conflicts_with = "reduce_lua")]
    reduce_builtin: Option<String>,
    /// A Lua 5.4 file defining `reduce(keys, values, rereduce)` (the same
    /// as `reducer create --lua`).
    #[arg(long)]
    reduce_lua: Option<PathBuf>,
    /// Bytes the shuffle may hold in memory, shared by the tasks (64MiB,
    /// 1GiB, ...); past it, sorted runs spill.
    #[arg(long, value_parser = super::parse_size, default_value_t = JOB_MEMORY_BUDGET_DEFAULT_BYTES)]
    memory_budget: u64,
    /// Directory on the node for spilled runs (default: DATA_DIR/jobs).
    #[arg(long)]
    spill_dir: Option<String>,
    /// `disk`, or `redis://HOST:PORT`: spilled runs go to that Redis
    /// server, one database per task (each flushed before use: give the
    /// job a server of its own).
    #[arg(long, default_value = "disk")]
    intermediate: String,
    /// Map tasks at once (default: the node's cores).
    #[arg(long, default_value_t = 0)]
    tasks: u32,
    /// Replace an output range that holds rows (or a Redis output hash
    /// that exists); without it the job is refused.
    #[arg(long)]
    replace: bool,
    /// Return once the job runs instead of following it.
    #[arg(long)]
    detach: bool,
}

/// Splits `url?a=x&b=y` into the URL and its parameters.
fn split_query(url: &str) -> (&str, Vec<(&str, &str)>) {
    match url.split_once('?') {
        None => (url, Vec::new()),
        Some((base, q)) => {
            let params = q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .collect();
            (base, params)
        }
    }
}

/// `range:NAME` or a Redis URL with `?match=PATTERN`.
pub fn parse_input(s: &str) -> Result<JobInput> {
    if let Some(range) = s.strip_prefix("range:") {
        return Ok(JobInput::Range(range.to_owned()));
    }
    if s.starts_with("redis://") || s.starts_with("rediss://") {
        let (url, params) = split_query(s);
        let mut pattern = None;
        for (k, v) in params {
            match k {
                "match" if !v.is_empty() => pattern = Some(v.to_owned()),
                "match" => {
                    bail!("--input {s:?}: ?match= is empty (leave it out to read every key)")
                }
                other => bail!("unknown parameter {other:?} in --input (use ?match=PATTERN)"),
            }
        }
        return Ok(JobInput::Redis { url: url.to_owned(), pattern });
    }
    bail!("--input {s:?}: use range:NAME or redis://HOST:PORT/DB[?match=PATTERN]")
}

/// `range:NAME` or a Redis URL with `?hash=H&prefix=P`.
pub fn parse_output(s: &str) -> Result<JobOutput> {
    if let Some(range) = s.strip_prefix("range:") {
        return Ok(JobOutput::Range(range.to_owned()));
    }
    if s.starts_with("redis://") || s.starts_with("rediss://") {
        let (url, params) = split_query(s);
        let (mut hash, mut prefix) = (None, Vec::new());
        for (k, v) in params {
            match k {
                "hash" if !v.is_empty() => hash = Some(Bytes::from(v.as_bytes().to_vec())),
                "prefix" => prefix = v.as_bytes().to_vec(),
                other => bail!("bad parameter {other:?} in --output (use ?hash=H&prefix=P)"),
            }
        }
        return Ok(JobOutput::Redis { url: url.to_owned(), hash, prefix: Bytes::from(prefix) });
    }
    bail!("--output {s:?}: use range:NAME or redis://HOST:PORT/DB[?hash=H][&prefix=P]")
}

fn read_source(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs `monotable job ...`; returns the exit code.
pub async fn run(command: JobCmd, c: &Client, out: &mut impl Write) -> Result<i32> {
    match command {
        JobCmd::Run(args) => run_job(*args, c, out).await,
        JobCmd::List { json } => {
            let jobs = c.jobs().await?;
            if json {
                for j in &jobs {
                    writeln!(out, "{}", job_json(j))?;
                }
            } else {
                writeln!(
                    out,
                    "{:<20} {:<9} {:<6} {:>12} {:>10} {:>8} {:>10} {:>8}  INPUT -> OUTPUT",
                    "NAME", "STATE", "PHASE", "RECORDS", "ROWS OUT", "ERRORS", "SPILLED", "SECS"
                )?;
                for j in &jobs {
                    writeln!(
                        out,
                        "{:<20} {:<9} {:<6} {:>12} {:>10} {:>8} {:>10} {:>8.1}  {} -> {}",
                        j.name,
                        j.state,
                        j.phase,
                        j.records_in,
                        j.rows_out,
                        j.map_errors + j.reduce_errors,
                        crate::metrics::human_bytes(j.spilled_bytes),
                        j.elapsed_ms as f64 / 1000.0,
                        j.input,
                        j.output
                    )?;
                }
            }
            Ok(0)
        }
        JobCmd::Cancel { name } => {
            c.cancel_job(&name).await?;
            writeln!(out, "cancelling job {name}")?;
            Ok(0)
        }
    }
}

async fn run_job(args: RunArgs, c: &Client, out: &mut impl Write) -> Result<i32> {
    let map = match (args.map_field, args.map_lua) {
        (Some(key_path), _) => MapFunction::Field { key_path, value_path: args.value_field },
        (None, Some(path)) => MapFunction::Lua { source: read_source(&path)? },
        (None, None) => unreachable!("clap requires --map-field or --map-lua"),
    };
    let reduce = match (args.reduce_builtin, args.reduce_lua) {
        (Some(b), _) => ReduceFunction::Builtin(b),
        (None, Some(path)) => ReduceFunction::Lua { source: read_source(&path)? },
        (None, None) => unreachable!("clap requires --reduce-builtin or --reduce-lua"),
    };
    let intermediate = match args.intermediate.as_str() {
        "disk" => None,
        url if url.starts_with("redis://") || url.starts_with("rediss://") => Some(url.to_owned()),
        other => bail!("--intermediate {other:?}: use disk or redis://HOST:PORT"),
    };
    let spec = JobSpec {
        name: args.name.clone(),
        input: parse_input(&args.input)?,
        output: parse_output(&args.output)?,
        map,
        reduce,
        memory_budget_bytes: args.memory_budget,
        spill_dir: args.spill_dir,
        intermediate,
        tasks: args.tasks,
        replace: args.replace,
    };
    c.run_job(spec).await?;
    if args.detach {
        writeln!(out, "started job {}", args.name)?;
        return Ok(0);
    }
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records {msg}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    // Ctrl-C, SIGTERM (`timeout`, a service manager) and SIGHUP (a closed
    // terminal) cancel the job this command follows.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut cancelled = false;
    let status = loop {
        let stop = tokio::select! {
            _ = &mut ctrl_c, if !cancelled => Some("Ctrl-C"),
            _ = term.recv(), if !cancelled => Some("SIGTERM"),
            _ = hup.recv(), if !cancelled => Some("SIGHUP"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => None,
        };
        if let Some(why) = stop {
            cancelled = true;
            bar.println(format!("cancelling the job ({why})"));
            c.cancel_job(&args.name).await.ok();
        }
        let jobs = c.jobs().await?;
        let Some(s) = jobs.into_iter().find(|j| j.name == args.name) else {
            bail!("job {} is gone from the node's list (did the node restart?)", args.name);
        };
        bar.set_length(s.records_total.max(s.records_in));
        bar.set_position(s.records_in);
        bar.set_message(format!(
            "{:.0}/s | {} | spilled {} in {} runs | errors {}",
            s.records_in as f64 / (s.elapsed_ms.max(1) as f64 / 1000.0),
            s.phase,
            crate::metrics::human_bytes(s.spilled_bytes),
            s.spills,
            s.map_errors + s.reduce_errors
        ));
        if s.state != "running" {
            break s;
        }
    };
    bar.finish_and_clear();
    write!(out, "{}", summary(&status))?;
    Ok(if status.state == "done" { 0 } else { 2 })
}

/// What `job run` prints at the end.
pub fn summary(s: &JobStatus) -> String {
    let secs = (s.elapsed_ms as f64 / 1000.0).max(0.001);
    let mut text = format!(
        "job {} {}: {} records in {:.1} s ({:.0} records/s), {} rows emitted, {} rows out\n\
         map {:.1} s, merge and write {:.1} s; shuffle: {} tasks, {} runs spilled ({}), peak {} in memory\n",
        s.name,
        s.state,
        s.records_in,
        secs,
        s.records_in as f64 / secs,
        s.rows_emitted,
        s.rows_out,
        s.map_ms as f64 / 1000.0,
        s.merge_ms as f64 / 1000.0,
        s.tasks,
        s.spills,
        crate::metrics::human_bytes(s.spilled_bytes),
        crate::metrics::human_bytes(s.peak_memory_bytes),
    );
    if s.map_errors + s.reduce_errors > 0 {
        text.push_str(&format!(
            "errors: {} records failed to map, {} rows or keys failed to reduce (left out); first ones:\n",
            s.map_errors, s.reduce_errors
        ));
        for e in &s.errors {
            text.push_str(&format!("  {}: {}\n", key_to_json(&e.key), e.error));
        }
    }
    if let Some(e) = &s.error {
        text.push_str(&format!("error: {e}\n"));
    }
    text
}

pub fn job_json(s: &JobStatus) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "state": s.state,
        "phase": s.phase,
        "input": s.input,
        "output": s.output,
        "records_in": s.records_in,
        "records_total": s.records_total,
        "rows_emitted": s.rows_emitted,
        "rows_out": s.rows_out,
        "map_errors": s.map_errors,
        "reduce_errors": s.reduce_errors,
        "errors": s.errors.iter().map(|e| serde_json::json!({
            "key": key_to_json(&e.key),
            "error": e.error,
        })).collect::<Vec<_>>(),
        "spills": s.spills,
        "spilled_bytes": s.spilled_bytes,
        "peak_memory_bytes": s.peak_memory_bytes,
        "tasks": s.tasks,
        "elapsed_ms": s.elapsed_ms,
        "map_ms": s.map_ms,
        "merge_ms": s.merge_ms,
        "error": s.error,
    })
}
