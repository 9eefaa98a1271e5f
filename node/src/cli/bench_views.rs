//! `monotable bench-views`: what live views cost, at a given number of
//! source records.
//!
//! 1. Loads `--records` records `{"g": i % 100, "v": i}` into a fresh range.
//! 2. Registers a field mapper (key `g`, value `v`) and times its backfill.
//! 3. Registers a `sum` reducer on the index and waits for it to load.
//! 4. Incremental cost: updates one random record, then asks a fresh total;
//!    the time from the update's acknowledgement to the answer. Next to it,
//!    recomputing the same total from scratch (a scan of the source).
//! 5. Sub-range aggregate latency over random key ranges.
//! 6. Steady-state mapping: a burst of pipelined updates, timed until the
//!    mapper has reflected the last one.
//! 7. Freshness: under a steady write load, the time from a write's
//!    acknowledgement until the reducer's watermark covers it.
//! 8. The same backfill with an equivalent Lua mapper.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use monotable_client::{
    tuple, AggregateReply, AggregateRequest, Batch, Client, Element, MapFunction, RangeOptions,
    Scan,
};

use super::ClientOpts;

#[derive(Args)]
pub struct BenchViewsArgs {
    #[command(flatten)]
    client: ClientOpts,
    /// Source records.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Samples for the latency measurements.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Updates in the steady-state burst.
    #[arg(long, default_value_t = 20_000)]
    burst: u64,
    /// Skip the Lua mapper backfill.
    #[arg(long)]
    no_lua: bool,
    /// Largest chunk of the source range (and of the index, which takes
    /// the source's options), in bytes; smaller chunks make the reduce tree
    /// deeper.
    #[arg(long, default_value_t = RangeOptions::default().chunk_size_max_bytes)]
    chunk_size: u64,
    /// Keep the ranges and views at the end (to measure a restart).
    #[arg(long)]
    keep: bool,
}

fn key(i: u64) -> Vec<u8> {
    tuple::encode(&[Element::Int(i128::from(i))]).expect("small ints encode")
}

fn record(i: u64, v: u64) -> Vec<u8> {
    let doc = serde_json::json!({"g": i % 100, "v": v});
    rmp_serde::to_vec(&doc).expect("json encodes")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Waits until the named view has finished loading and reached `seq`.
async fn wait_view(c: &Client, name: &str, seq: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let views = c.list_views().await?;
        let v = views.iter().find(|v| v.name == name).context("view vanished")?;
        if v.backfill.is_none() && v.watermark >= seq {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("view {name} did not catch up");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn fresh_total(c: &Client, reducer: &str) -> Result<()> {
    let reply = c
        .aggregate(AggregateRequest {
            reducer: reducer.into(),
            fresh: true,
            timeout_ms: 60_000,
            ..AggregateRequest::default()
        })
        .await?;
    match reply {
        AggregateReply::Total(_) => Ok(()),
        AggregateReply::Groups { .. } => bail!("unexpected groups"),
    }
}

async fn drop_quietly(c: &Client, p: &str) {
    for r in [format!("{p}_sum"), format!("{p}_lua_sum")] {
        let _ = c.drop_reducer(&r).await;
    }
    for m in [format!("{p}_map"), format!("{p}_lua_map")] {
        let _ = c.drop_mapper(&m).await;
    }
    for r in [format!("{p}_idx"), format!("{p}_lua_idx"), format!("{p}_src")] {
        let _ = c.drop_range(&r).await;
    }
}

pub async fn run(args: BenchViewsArgs) -> Result<()> {
    let c = super::run::connect(&args.client).await?;
    let n = args.records.max(1);
    let p = format!("bv{n}");
    let (src, idx, map, red) =
        (format!("{p}_src"), format!("{p}_idx"), format!("{p}_map"), format!("{p}_sum"));
    drop_quietly(&c, &p).await;
    c.create_range(&src, RangeOptions { chunk_size_max_bytes: args.chunk_size }).await?;

    // 1. Load, pipelined batches of 1,000.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for start in (0..n).step_by(1000) {
        if tasks.len() >= 16 {
            tasks.join_next().await.context("load task")???;
        }
        let c = c.clone();
        let src = src.clone();
        tasks.spawn(async move {
            let batch = (start..(start + 1000).min(n))
                .fold(Batch::new(), |b, i| b.put(key(i), record(i, i)));
            c.write(&src, batch).await.map(|_| ()).map_err(anyhow::Error::from)
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.context("load task")??;
    }
    println!("records: {n}; loaded in {:.2} s", started.elapsed().as_secs_f64());

    // 2. Backfill.
    let started = Instant::now();
    let f = MapFunction::Field { key_path: "g".into(), value_path: Some("v".into()) };
    c.create_mapper(&map, &src, &idx, f).await?;
    wait_view(&c, &map, 0).await?;
    let secs = started.elapsed().as_secs_f64();
    println!("backfill, built-in field mapper: {:.0} records/s ({secs:.2} s)", n as f64 / secs);

    // 3. Reducer.
    let started = Instant::now();
    c.create_reducer(&red, &idx, "sum").await?;
    wait_view(&c, &red, 0).await?;
    println!("reducer load: {:.2} s", started.elapsed().as_secs_f64());

    // 4. Incremental cost, and recomputation from scratch.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n);
    let mut lat = Vec::with_capacity(args.samples);
    for s in 0..args.samples {
        let i = rng.below(n);
        c.put(&src, key(i), record(i, n + s as u64)).await?;
        let t = Instant::now();
        fresh_total(&c, &red).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let started = Instant::now();
    let mut stream = c.scan_stream(&src, Scan::all());
    let mut total = 0u64;
    while let Some(r) = stream.next().await {
        let r = r?;
        let doc: serde_json::Value = rmp_serde::from_slice(&r.value)?;
        total += doc["v"].as_u64().unwrap_or(0);
    }
    let scratch = started.elapsed();
    println!(
        "update -> fresh total: p50 {:.3} ms, p99 {:.3} ms; recompute from scratch: {:.1} ms (sum {total})",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        scratch.as_secs_f64() * 1000.0
    );

    // 5. Sub-range aggregates over random ranges of the index.
    let mut lat = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let (a, b) = (rng.below(100), rng.below(100));
        let (lo, hi) = (a.min(b), a.max(b) + 1);
        let bound = |g: u64, i: u64| {
            tuple::encode(&[Element::Int(i128::from(g)), Element::Int(i128::from(i))])
        };
        let start = bound(lo, rng.below(n))?;
        let end = bound(hi, rng.below(n))?;
        let t = Instant::now();
        c.aggregate(AggregateRequest {
            reducer: red.clone(),
            start: Some(start.into()),
            end: Some(end.into()),
            ..AggregateRequest::default()
        })
        .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!("sub-range aggregate: p50 {:.3} ms, p99 {:.3} ms", pct(&lat, 0.5), pct(&lat, 0.99));

    // 6. Steady-state mapping: a pipelined burst of updates.
    let burst = args.burst.min(n);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_seq = 0;
    for start in (0..burst).step_by(100) {
        if tasks.len() >= 64 {
            last_seq = last_seq.max(tasks.join_next().await.context("burst task")???);
        }
        let c = c.clone();
        let src = src.clone();
        let base = rng.below(n);
        tasks.spawn(async move {
            let mut seq = 0;
            for i in start..(start + 100).min(burst) {
                let k = (base + i * 7919) % n;
                seq = seq.max(c.put(&src, key(k), record(k, i)).await?.seq);
            }
            Ok::<_, anyhow::Error>(seq)
        });
    }
    while let Some(t) = tasks.join_next().await {
        last_seq = last_seq.max(t.context("burst task")??);
    }
    wait_view(&c, &map, last_seq).await?;
    let secs = started.elapsed().as_secs_f64();
    println!("steady-state mapping: {:.0} updates/s ({burst} updates in {secs:.2} s, write to reflected)", burst as f64 / secs);

    // 7. Freshness under a steady write load.
    let writer = {
        let c = c.clone();
        let src = src.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let k = (i * 104_729) % n;
                if c.put(&src, key(k), record(k, i)).await.is_err() {
                    return;
                }
                i += 1;
            }
        })
    };
    let mut lat = Vec::with_capacity(args.samples);
    for s in 0..args.samples {
        let i = rng.below(n);
        let seq = c.put(&src, key(i), record(i, 2 * n + s as u64)).await?.seq;
        let t = Instant::now();
        wait_view(&c, &red, seq).await?;
        lat.push(t.elapsed());
    }
    writer.abort();
    lat.sort();
    println!(
        "freshness under load (ack -> reducer watermark): p50 {:.3} ms, p99 {:.3} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );

    // 8. Lua mapper backfill over the same records.
    if !args.no_lua {
        let lua_map = format!("{p}_lua_map");
        let source = "function map(key, value) emit(value.g, value.v) end".to_owned();
        let started = Instant::now();
        c.create_mapper(&lua_map, &src, &format!("{p}_lua_idx"), MapFunction::Lua { source })
            .await?;
        wait_view(&c, &lua_map, 0).await?;
        let secs = started.elapsed().as_secs_f64();
        println!("backfill, Lua mapper: {:.0} records/s ({secs:.2} s)", n as f64 / secs);
    }
    if !args.keep {
        drop_quietly(&c, &p).await;
    }
    Ok(())
}
