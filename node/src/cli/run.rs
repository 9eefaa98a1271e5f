//! Running the client commands: connect, call, print.

use std::io::Write;

use anyhow::{Context, Result};
use monotable_client::{Client, Options, RangeOptions, Scan};

use serde_json::json;

use super::{
    bench, bench_views, load, report, ClientOpts, ClusterCmd, Cmd, MapperCmd, RangeCmd, ReducerCmd,
    ScanArgs, EXIT_NOT_FOUND,
};
use crate::json;

pub(super) fn client_main(cmd: Cmd) -> i32 {
    // One thread, as redis-benchmark has: client commands wait on the
    // network, and for `bench` a single thread spends far less CPU per
    // request (no cross-thread wakeups) on a machine it shares with the node.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report(&e.into()),
    };
    match runtime.block_on(run_client(cmd)) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Connects as `opts` say: address, password, timeouts. Every client
/// command connects through here.
pub(super) async fn connect(opts: &ClientOpts) -> Result<Client> {
    let timeout = std::time::Duration::from_millis(opts.connect_timeout_ms);
    let mut options = Options::new().connect_timeout(timeout).handshake_timeout(timeout);
    let password = match &opts.password_file {
        Some(path) => Some(super::read_password_file(path)?),
        None => opts.password.clone(),
    };
    if let Some(password) = password {
        options = options.password(password);
    }
    Client::connect_with(opts.addr.as_str(), options)
        .await
        .with_context(|| format!("cannot reach monotable at {}", opts.addr))
}

async fn run_client(cmd: Cmd) -> Result<i32> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match cmd {
        Cmd::Serve(_) => unreachable!("handled by main"),
        Cmd::Range { command, client } => {
            let c = connect(&client).await?;
            match command {
                RangeCmd::Create { name, chunk_size, replicas } => {
                    let mut options = RangeOptions::default();
                    if let Some(size) = chunk_size {
                        options.chunk_size_max_bytes = size;
                    }
                    match replicas {
                        Some(n) => {
                            warn_if_capped(&c, n).await;
                            c.create_range_replicated(&name, options, n).await?
                        }
                        None => c.create_range(&name, options).await?,
                    }
                    writeln!(out, "created range {name}")?;
                }
                RangeCmd::List { json } => {
                    let ranges = c.list_ranges().await?;
                    if json {
                        for r in &ranges {
                            writeln!(out, "{}", range_json(r))?;
                        }
                    } else {
                        writeln!(
                            out,
                            "{:<24} {:>8} {:>12} {:>14} {:>14} {:>12}",
                            "NAME", "CHUNKS", "RECORDS", "LIVE_BYTES", "LOG_BYTES", "CHUNK_SIZE"
                        )?;
                        for r in &ranges {
                            let (records, live, log) =
                                r.chunks.iter().fold((0, 0, 0), |(a, b, c), ch| {
                                    (a + ch.records, b + ch.live_bytes, c + ch.log_bytes)
                                });
                            writeln!(
                                out,
                                "{:<24} {:>8} {:>12} {:>14} {:>14} {:>12}",
                                r.name,
                                r.chunks.len(),
                                records,
                                live,
                                log,
                                r.options.chunk_size_max_bytes
                            )?;
                            for ch in r.chunks.iter().filter(|c| c.unavailable.is_some()) {
                                writeln!(
                                    out,
                                    "  chunk {} UNAVAILABLE: {}",
                                    ch.id,
                                    ch.unavailable.as_deref().unwrap_or("")
                                )?;
                            }
                        }
                    }
                }
                RangeCmd::Describe { name } => {
                    let r = c.describe_range(&name).await?;
                    writeln!(out, "{}", serde_json::to_string_pretty(&range_json(&r))?)?;
                }
                RangeCmd::Compact { name } => {
                    c.compact_range(&name).await?;
                    writeln!(out, "compacted range {name}")?;
                }
                RangeCmd::Split { name, key } => {
                    c.split_chunk(&name, json::key_arg(&key)?).await?;
                    writeln!(out, "range {name} has a chunk boundary at {key}")?;
                }
                RangeCmd::Drop { name } => {
                    c.drop_range(&name).await?;
                    writeln!(out, "dropped range {name}")?;
                }
            }
        }
        Cmd::Put { range, key, value, client } => {
            let c = connect(&client).await?;
            let key = json::key_arg(&key)?;
            c.put(&range, key, json::value_arg(&value)).await?;
        }
        Cmd::Get { range, key, client } => {
            let c = connect(&client).await?;
            let key_bytes = json::key_arg(&key)?;
            match c.get(&range, key_bytes).await? {
                Some(v) => writeln!(out, "{}", json::value_to_json(&v))?,
                None => {
                    eprintln!("key {key} not found in range {range}");
                    return Ok(EXIT_NOT_FOUND);
                }
            }
        }
        Cmd::Del { range, key, client } => {
            let c = connect(&client).await?;
            c.delete(&range, json::key_arg(&key)?).await?;
        }
        Cmd::Scan(args) => scan(args, &mut out).await?,
        Cmd::Load { range, file, batch, client } => {
            let c = connect(&client).await?;
            load::run(&c, &range, &file, batch.clamp(1, monotable_proto::limits::BATCH_OPS_MAX))
                .await?;
        }
        Cmd::Bench(args) => bench::run(args).await?,
        Cmd::BenchViews(args) => bench_views::run(args).await?,
        Cmd::Mapper { command, client } => {
            let c = connect(&client).await?;
            match command {
                MapperCmd::Create { name, source, target, field, value_field, lua } => {
                    let function = match (field, lua) {
                        (Some(key_path), _) => monotable_client::MapFunction::Field {
                            key_path,
                            value_path: value_field,
                        },
                        (None, Some(path)) => {
                            monotable_client::MapFunction::Lua { source: read_source(&path)? }
                        }
                        (None, None) => unreachable!("clap requires --field or --lua"),
                    };
                    c.create_mapper(&name, &source, &target, function).await?;
                    writeln!(out, "created mapper {name}")?;
                }
                MapperCmd::Drop { name } => {
                    c.drop_mapper(&name).await?;
                    writeln!(out, "dropped mapper {name}")?;
                }
            }
        }
        Cmd::Reducer { command, client } => {
            let c = connect(&client).await?;
            match command {
                ReducerCmd::Create { name, range, builtin, lua } => {
                    let function = match (builtin, lua) {
                        (Some(b), _) => monotable_client::ReduceFunction::Builtin(b),
                        (None, Some(path)) => {
                            monotable_client::ReduceFunction::Lua { source: read_source(&path)? }
                        }
                        (None, None) => unreachable!("clap requires --builtin or --lua"),
                    };
                    c.create_reducer_with(&name, &range, function).await?;
                    writeln!(out, "created reducer {name}")?;
                }
                ReducerCmd::Drop { name } => {
                    c.drop_reducer(&name).await?;
                    writeln!(out, "dropped reducer {name}")?;
                }
            }
        }
        Cmd::Agg(args) => {
            let c = connect(&args.client).await?;
            let key = |k: &Option<String>| -> Result<Option<monotable_proto::Bytes>> {
                Ok(match k {
                    Some(k) => Some(json::key_arg(k)?.into()),
                    None => None,
                })
            };
            let (start, end) = match &args.bounds.prefix {
                Some(p) => {
                    let (start, end) = json::prefix_arg(p)?;
                    (Some(start.into()), end.map(Into::into))
                }
                None => (key(&args.bounds.start)?, key(&args.bounds.end)?),
            };
            let request = monotable_client::AggregateRequest {
                reducer: args.reducer.clone(),
                start,
                end,
                prefix: None,
                group_level: args.group_level,
                fresh: args.fresh,
                timeout_ms: args.timeout_ms,
                // One more than --limit: enough to tell whether more follow.
                limit: args
                    .limit
                    .map_or(0, |n| n.saturating_add(1).min(u64::from(u32::MAX)) as u32),
                ..Default::default()
            };
            if args.group_level.is_none() {
                match c.aggregate(request).await? {
                    monotable_client::AggregateReply::Total(v) => {
                        writeln!(out, "{}", json::value_to_json(&v))?
                    }
                    monotable_client::AggregateReply::Groups { .. } => {
                        anyhow::bail!("the server answered groups to an ungrouped aggregate")
                    }
                }
            } else {
                // Every group, page by page; with --limit N, N of them and
                // an error when more follow.
                let mut groups = c.aggregate_groups(request);
                let mut printed = 0u64;
                while let Some(group) = groups.next().await {
                    let (k, v) = group?;
                    if args.limit.is_some_and(|n| printed >= n) {
                        out.flush()?;
                        anyhow::bail!(
                            "more than --limit {printed} groups; raise --limit, or narrow the \
                             range with --start/--end/--prefix"
                        );
                    }
                    let line =
                        json!({"key": json::key_to_json(&k), "value": json::value_to_json(&v)});
                    writeln!(out, "{line}")?;
                    printed += 1;
                }
            }
        }
        Cmd::Job { command, client } => {
            let c = connect(&client).await?;
            let code = super::job::run(command, &c, &mut out).await?;
            out.flush()?;
            return Ok(code);
        }
        Cmd::Redis { command, client } => {
            let c = connect(&client).await?;
            let code = super::redis::run(command, &c, &mut out).await?;
            out.flush()?;
            return Ok(code);
        }
        Cmd::Cluster { command, client } => {
            let c = connect(&client).await?;
            match command {
                ClusterCmd::Status { json } => {
                    let status = c.cluster_status().await?;
                    if json {
                        writeln!(out, "{}", cluster_json(&status))?;
                    } else {
                        write_cluster_table(&mut out, &status)?;
                    }
                }
                ClusterCmd::Remove { node } => {
                    c.cluster_remove(node).await?;
                    // The answering node may not have applied the drain
                    // yet (the meta range's leader decided it).
                    let mut status = c.cluster_status().await?;
                    for _ in 0..20 {
                        match status.nodes.iter().find(|n| n.id == node) {
                            Some(n) if !n.draining => {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                status = c.cluster_status().await?;
                            }
                            _ => break,
                        }
                    }
                    match status.nodes.iter().find(|n| n.id == node) {
                        Some(n) if n.draining => writeln!(
                            out,
                            "node {node} is draining: its replicas move to other nodes, then it \
                             leaves the cluster (see `cluster status`)"
                        )?,
                        _ => writeln!(out, "OK")?,
                    }
                }
            }
        }
        Cmd::Backup { dir, client } => {
            let c = connect(&client).await?;
            super::backup::backup(&c, &dir).await?;
        }
        Cmd::Restore { dir, check: true, .. } => {
            let manifest = super::backup::verify(&dir)?;
            write!(out, "{manifest}")?;
            writeln!(out, "the backup in {} is whole", dir.display())?;
        }
        Cmd::Restore { dir, sinks, no_wait, replicas, client, .. } => {
            let c = connect(&client).await?;
            let options = super::backup::RestoreOptions { sinks, no_wait, replicas };
            super::backup::restore(&c, &dir, options).await?;
        }
        Cmd::Views { json, client } => {
            let c = connect(&client).await?;
            let views = c.list_views().await?;
            if json {
                for v in &views {
                    writeln!(out, "{}", view_json(v))?;
                }
            } else {
                writeln!(
                    out,
                    "{:<20} {:<8} {:<16} {:<16} {:>12} {:>8} {:>8} {:>12}  FUNCTION",
                    "NAME",
                    "KIND",
                    "SOURCE",
                    "TARGET",
                    "WATERMARK",
                    "PENDING",
                    "ERRORS",
                    "BACKFILL"
                )?;
                for v in &views {
                    let backfill =
                        v.backfill.map_or("done".to_owned(), |(d, t)| format!("{d}/{t}"));
                    writeln!(
                        out,
                        "{:<20} {:<8} {:<16} {:<16} {:>12} {:>8} {:>8} {:>12}  {}",
                        v.name,
                        v.kind,
                        v.source,
                        v.target,
                        v.watermark,
                        v.pending_changes,
                        v.errors,
                        backfill,
                        v.function
                    )?;
                    if let Some(t) = &v.tree {
                        let saved = t.saved.map_or("not yet".to_owned(), |s| format!("at seq {s}"));
                        writeln!(
                            out,
                            "  reduce tree: {} levels, {} of {} chunk trees in memory, saved {saved}",
                            t.levels, t.chunks_in_memory, t.chunks
                        )?;
                    }
                    if let Some(e) = &v.last_error {
                        let key =
                            v.last_error_key.as_ref().map(|k| json::key_to_json(k).to_string());
                        writeln!(out, "  last error: {e} (key {})", key.unwrap_or_default())?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(0)
}

pub(crate) fn view_json(v: &monotable_client::ViewStatus) -> serde_json::Value {
    json!({
        "name": v.name,
        "kind": v.kind,
        "source": v.source,
        "target": v.target,
        "function": v.function,
        "watermark": v.watermark,
        "pending_changes": v.pending_changes,
        "rows_written": v.rows_written,
        "errors": v.errors,
        "last_error": v.last_error,
        "last_error_key": v.last_error_key.as_ref().map(|k| json::key_to_json(k)),
        "backfill": v.backfill.map(|(done, total)| json!({"done": done, "total": total})),
        "tree": v.tree.as_ref().map(|t| json!({
            "levels": t.levels,
            "chunks": t.chunks,
            "chunks_in_memory": t.chunks_in_memory,
            "saved": t.saved,
        })),
    })
}

fn range_json(r: &monotable_client::RangeInfo) -> serde_json::Value {
    json!({
        "name": r.name,
        "id": r.id,
        "chunk_size": r.options.chunk_size_max_bytes,
        "chunks": r.chunks.iter().map(|c| json!({
            "id": c.id,
            "start": json::key_to_json(&c.start),
            "end": c.end.as_ref().map(|e| json::key_to_json(e)),
            "records": c.records,
            "live_bytes": c.live_bytes,
            "log_bytes": c.log_bytes,
            "last_seq": c.last_seq,
            "unavailable": c.unavailable,
            "replicas": c.replicas,
            "leader": c.leader,
            "voters": c.voters,
        })).collect::<Vec<_>>(),
    })
}

async fn scan(args: ScanArgs, out: &mut impl Write) -> Result<()> {
    let c = connect(&args.client).await?;
    let mut scan = Scan::all();
    if let Some(s) = &args.bounds.start {
        scan = scan.start(json::key_arg(s)?);
    }
    if let Some(e) = &args.bounds.end {
        scan = scan.end(json::key_arg(e)?);
    }
    if let Some(p) = &args.bounds.prefix {
        let (start, end) = json::prefix_arg(p)?;
        scan = scan.start(start);
        if let Some(end) = end {
            scan = scan.end(end);
        }
    }
    if args.reverse {
        scan = scan.reverse();
    }
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    if remaining < u64::from(monotable_proto::limits::SCAN_LIMIT_MAX) {
        scan = scan.limit(remaining as u32);
    }
    let mut stream = c.scan_stream(&args.range, scan);
    while remaining > 0 {
        let Some(record) = stream.next().await else {
            break;
        };
        let record = record?;
        let line = json!({"key": json::key_to_json(&record.key), "value": json::value_to_json(&record.value)});
        if let Err(e) = writeln!(out, "{line}") {
            // A closed pipe (`| head`) ends the scan quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
        remaining -= 1;
    }
    Ok(())
}

/// The text of a Lua file given on the command line.
fn read_source(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Says so on stderr when a range asks for more replicas than the cluster
/// has live nodes (the node caps the number).
async fn warn_if_capped(c: &Client, replicas: u32) {
    if replicas <= 1 {
        return;
    }
    if let Ok(status) = c.cluster_status().await {
        let live = status.nodes.iter().filter(|n| n.live).count();
        if (replicas as usize) > live {
            eprintln!(
                "warning: {replicas} replicas asked for, but the cluster has {live} live node(s): \
                 the range gets {live}"
            );
        }
    }
}

/// `cluster status --json`: one document with every node.
fn cluster_json(status: &monotable_client::ClusterStatus) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = status
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "addr": n.addr,
                "live": n.live,
                "draining": n.draining,
                "meta_role": n.meta_role,
                "chunk_replicas": n.info.as_ref().map(|i| i.chunk_replicas),
                "chunk_leaders": n.info.as_ref().map(|i| i.chunk_leaders),
                "version": n.info.as_ref().map(|i| i.server_version.clone()),
                "copies": n.info.as_ref().map(|i| {
                    i.copies
                        .iter()
                        .map(|c| {
                            serde_json::json!({
                                "chunk": c.chunk,
                                "from": c.from,
                                "copied_bytes": c.copied_bytes,
                                "total_bytes": c.total_bytes,
                                "rate_bytes_per_sec": c.rate_bytes_per_sec,
                                "elapsed_ms": c.elapsed_ms,
                            })
                        })
                        .collect::<Vec<_>>()
                }),
            })
        })
        .collect();
    serde_json::json!({
        "answered_by": status.answered_by,
        "meta_leader": status.meta_leader,
        "meta_term": status.meta_term,
        "nodes": nodes,
    })
}

/// `cluster status` as a table.
fn write_cluster_table(
    out: &mut impl Write,
    status: &monotable_client::ClusterStatus,
) -> std::io::Result<()> {
    let leader = status.meta_leader.map_or("none".to_owned(), |l| l.to_string());
    writeln!(
        out,
        "answered by node {}; meta range leader: {leader} (term {})",
        status.answered_by, status.meta_term
    )?;
    writeln!(
        out,
        "{:<6} {:<24} {:<6} {:<8} {:<8} {:>8} {:>8}  VERSION",
        "NODE", "ADDRESS", "LIVE", "DRAINING", "META", "REPLICAS", "LEADERS"
    )?;
    for n in &status.nodes {
        let (replicas, leaders, version) = match &n.info {
            Some(i) => (
                i.chunk_replicas.to_string(),
                i.chunk_leaders.to_string(),
                i.server_version.clone(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        writeln!(
            out,
            "{:<6} {:<24} {:<6} {:<8} {:<8} {:>8} {:>8}  {version}",
            n.id,
            n.addr,
            if n.live { "yes" } else { "no" },
            if n.draining { "yes" } else { "no" },
            n.meta_role,
            replicas,
            leaders
        )?;
    }
    let copies: Vec<(u64, &monotable_proto::CopyStatus)> = status
        .nodes
        .iter()
        .flat_map(|n| n.info.iter().flat_map(move |i| i.copies.iter().map(move |c| (n.id, c))))
        .collect();
    if !copies.is_empty() {
        writeln!(out, "replica copies under way:")?;
        writeln!(
            out,
            "{:<8} {:<6} {:<6} {:>12} {:>12} {:>6} {:>12}",
            "CHUNK", "TO", "FROM", "COPIED", "TOTAL", "DONE", "RATE"
        )?;
        for (to, c) in copies {
            let done = match c.total_bytes {
                0 => 100,
                t => c.copied_bytes.min(t) * 100 / t,
            };
            writeln!(
                out,
                "{:<8} {:<6} {:<6} {:>12} {:>12} {:>5}% {:>10}/s",
                c.chunk,
                to,
                c.from,
                crate::metrics::human_bytes(c.copied_bytes),
                crate::metrics::human_bytes(c.total_bytes),
                done,
                crate::metrics::human_bytes(c.rate_bytes_per_sec)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cluster status` lists the copies under way with bytes, share done
    /// and rate, under the nodes.
    #[test]
    fn the_status_table_shows_copies_under_way() {
        let info = |copies| monotable_proto::NodeInfo {
            id: 2,
            server_version: "v".into(),
            chunk_replicas: 3,
            chunk_leaders: 0,
            meta_applied: Some(9),
            copies,
            replica_groups: 3,
        };
        let copy = monotable_proto::CopyStatus {
            chunk: 4611686018427387905,
            from: 1,
            copied_bytes: 3 << 20,
            total_bytes: 12 << 20,
            rate_bytes_per_sec: 1536,
            elapsed_ms: 2048,
        };
        let node = |copies| monotable_proto::NodeStatus {
            id: 2,
            addr: "127.0.0.1:1".into(),
            live: true,
            meta_role: "voter".into(),
            info: Some(info(copies)),
            draining: false,
        };
        let status = |copies| monotable_client::ClusterStatus {
            answered_by: 2,
            meta_leader: Some(1),
            meta_term: 3,
            nodes: vec![node(copies)],
        };
        let mut out = Vec::new();
        write_cluster_table(&mut out, &status(vec![copy.clone()])).expect("written");
        let table = String::from_utf8(out).expect("utf-8");
        let line = table.lines().last().expect("a line");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            ["4611686018427387905", "2", "1", "3.0", "MiB", "12.0", "MiB", "25%", "1.5", "KiB/s"],
            "{table}"
        );
        let mut out = Vec::new();
        write_cluster_table(&mut out, &status(Vec::new())).expect("written");
        assert!(!String::from_utf8(out).expect("utf-8").contains("copies"), "none under way");
        let json = cluster_json(&status(vec![copy]));
        assert_eq!(json["nodes"][0]["copies"][0]["copied_bytes"], 3 << 20);
        assert_eq!(crate::metrics::human_bytes(1023), "1023 B");
    }
}
