//! `monotable bench`: a load generator in the style of `redis-benchmark`.
//!
//! `--connections` clients each keep `--pipeline` requests in flight; every
//! request's latency is recorded and the run reports throughput and
//! percentiles. Keys are `key:NNNNNNNNNNNN` drawn at random from
//! `--keyspace` keys, values are `--value-size` random bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use monotable_client::{Client, ErrorCode, RangeOptions, Scan};
use serde_json::json;

use super::ClientOpts;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    client: ClientOpts,
    /// Range to write to; created if missing.
    #[arg(long, default_value = "bench")]
    range: String,
    /// Client connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Requests per test.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    requests: u64,
    /// Bytes per value.
    #[arg(long, short = 'd', default_value_t = 100)]
    value_size: usize,
    /// Distinct keys to draw from.
    #[arg(long, short = 'r', default_value_t = 100_000)]
    keyspace: u64,
    /// Tests to run, comma-separated: put, get, scan.
    #[arg(long, short = 't', default_value = "put,get,scan")]
    tests: String,
    /// Use keys 0, 1, 2, ... in order instead of random ones (to load a
    /// given number of distinct keys).
    #[arg(long)]
    sequential: bool,
    /// Records per scan request.
    #[arg(long, default_value_t = 100)]
    scan_length: u32,
    /// Print one JSON object per test instead of text.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV in the columns `redis-benchmark --csv` uses.
    #[arg(long)]
    csv: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Test {
    Put,
    Get,
    Scan,
}

/// xorshift64*: fast, and good enough to spread keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

struct Outcome {
    latencies_us: Vec<u32>,
    records: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(client: Client, args: Arc<BenchArgsShared>, test: Test, seed: u64) -> Outcome {
    let mut rng = Rng(seed | 1);
    let mut out = Outcome { latencies_us: Vec::new(), records: 0, errors: 0, first_error: None };
    let value: Vec<u8> = (0..args.value_size).map(|_| rng.next() as u8).collect();
    loop {
        let n = args.issued.fetch_add(1, Ordering::Relaxed);
        if n >= args.requests {
            break;
        }
        let k = key(if args.sequential { n % args.keyspace } else { rng.next() % args.keyspace });
        let started = Instant::now();
        let result = match test {
            Test::Put => client.put(&args.range, &k, &value).await.map(|_| 1),
            Test::Get => client.get(&args.range, &k).await.map(|v| u64::from(v.is_some())),
            Test::Scan => client
                .scan(&args.range, &Scan::all().start(&k).limit(args.scan_length))
                .await
                .map(|p| p.records.len() as u64),
        };
        let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        match result {
            Ok(n) => {
                out.records += n;
                out.latencies_us.push(us);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

struct BenchArgsShared {
    range: String,
    requests: u64,
    keyspace: u64,
    value_size: usize,
    scan_length: u32,
    sequential: bool,
    issued: AtomicU64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.connections == 0 || args.pipeline == 0 || args.keyspace == 0 {
        bail!("--connections, --pipeline and --keyspace must be at least 1");
    }
    let mut tests = Vec::new();
    for t in args.tests.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        tests.push(match t {
            "put" | "set" => Test::Put,
            "get" => Test::Get,
            "scan" => Test::Scan,
            other => bail!("unknown test {other:?}; use put, get, scan"),
        });
    }
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(super::run::connect(&args.client).await?);
    }
    match clients[0].create_range(&args.range, RangeOptions::default()).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(ErrorCode::RangeExists) => {}
        Err(e) => return Err(e.into()),
    }
    let mut csv_header_printed = false;
    for test in tests {
        let shared = Arc::new(BenchArgsShared {
            range: args.range.clone(),
            requests: args.requests,
            keyspace: args.keyspace,
            value_size: args.value_size,
            scan_length: args.scan_length,
            sequential: args.sequential,
            issued: AtomicU64::new(0),
        });
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (ci, client) in clients.iter().enumerate() {
            for p in 0..args.pipeline {
                let seed =
                    0x9E37_79B9_7F4A_7C15u64.wrapping_mul((ci * args.pipeline + p + 1) as u64);
                tasks.spawn(worker(client.clone(), shared.clone(), test, seed));
            }
        }
        let mut latencies = Vec::with_capacity(args.requests as usize);
        let (mut records, mut errors, mut first_error) = (0u64, 0u64, None);
        while let Some(done) = tasks.join_next().await {
            let o = done.context("bench task failed")?;
            latencies.extend(o.latencies_us);
            records += o.records;
            errors += o.errors;
            first_error = first_error.or(o.first_error);
        }
        let elapsed = started.elapsed().max(Duration::from_micros(1)).as_secs_f64();
        latencies.sort_unstable();
        let ops = latencies.len() as f64 / elapsed;
        let name = format!("{test:?}").to_lowercase();
        let (p50, p99, max) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
        if args.csv {
            if !csv_header_printed {
                println!(
                    "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\""
                );
                csv_header_printed = true;
            }
            let avg = latencies.iter().map(|&l| f64::from(l)).sum::<f64>()
                / latencies.len().max(1) as f64
                / 1000.0;
            println!(
                "\"{}\",\"{ops:.2}\",\"{avg:.3}\",\"{:.3}\",\"{p50:.3}\",\"{:.3}\",\"{p99:.3}\",\"{max:.3}\"",
                name.to_uppercase(),
                percentile(&latencies, 0.0),
                percentile(&latencies, 0.95),
            );
            if test == Test::Scan {
                println!(
                    "\"SCAN_RECORDS\",\"{:.2}\",\"{avg:.3}\",\"{:.3}\",\"{p50:.3}\",\"{:.3}\",\"{p99:.3}\",\"{max:.3}\"",
                    records as f64 / elapsed,
                    percentile(&latencies, 0.0),
                    percentile(&latencies, 0.95),
                );
            }
        } else if args.json {
            println!(
                "{}",
                json!({
                    "test": name, "requests": latencies.len(), "errors": errors,
                    "connections": args.connections, "pipeline": args.pipeline,
                    "value_size": args.value_size, "seconds": elapsed, "ops_per_sec": ops,
                    "records_per_sec": records as f64 / elapsed,
                    "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                })
            );
        } else {
            let extra = if test == Test::Scan {
                format!(", {:.0} records/s", records as f64 / elapsed)
            } else {
                String::new()
            };
            println!(
                "{name}: {} requests, {} connections, pipeline {}, {} B values: {ops:.0} ops/s{extra}, p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
                latencies.len(),
                args.connections,
                args.pipeline,
                args.value_size,
            );
        }
        if errors > 0 {
            eprintln!("{name}: {errors} errors, first: {}", first_error.unwrap_or_default());
        }
    }
    Ok(())
}
