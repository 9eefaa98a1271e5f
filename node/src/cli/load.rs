//! `monotable load`: JSON lines into a range, in pipelined batches.

use std::io::{BufRead, BufReader, IsTerminal};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use monotable_client::{Batch, Client};
use tokio::task::JoinSet;

use super::json;

/// Batches in flight at once.
const LOAD_BATCHES_IN_FLIGHT_MAX: usize = 8;

fn parse_line(line: &str, number: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    // The fields as JSON text: the key's integers are then read exactly
    // ([`json::key_from_json_text`]).
    let doc: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_str(line).with_context(|| format!("line {number}: not JSON"))?;
    let key = doc.get("key").ok_or_else(|| anyhow!("line {number}: no \"key\" field"))?;
    let value = doc.get("value").ok_or_else(|| anyhow!("line {number}: no \"value\" field"))?;
    let value: serde_json::Value =
        serde_json::from_str(value.get()).with_context(|| format!("line {number}: not JSON"))?;
    let value = &value;
    let key =
        json::key_from_json_text(key.get()).with_context(|| format!("line {number}: bad key"))?;
    Ok((key, json::value_from_json(value)))
}

pub async fn run(client: &Client, range: &str, file: &str, batch_size: usize) -> Result<()> {
    let input: Box<dyn BufRead> = if file == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {file}"))?,
        ))
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos} records loaded ({per_sec}) {elapsed}")
                .expect("static template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut in_flight: JoinSet<Result<usize>> = JoinSet::new();
    let mut batch = Batch::new();
    let mut loaded = 0usize;
    let reaped = |res: Option<Result<Result<usize>, tokio::task::JoinError>>,
                  loaded: &mut usize|
     -> Result<()> {
        if let Some(res) = res {
            let n = res.context("load task failed")??;
            *loaded += n;
            bar.inc(n as u64);
        }
        Ok(())
    };
    for (i, line) in input.lines().enumerate() {
        let line = line.context("reading input")?;
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = match parse_line(&line, i + 1) {
            Ok(kv) => kv,
            Err(e) => {
                while let Some(res) = in_flight.join_next().await {
                    reaped(Some(res), &mut loaded)?;
                }
                bail!("{e:#} ({loaded} records before it were loaded)");
            }
        };
        batch = batch.put(key, value);
        if batch.len() >= batch_size {
            if in_flight.len() >= LOAD_BATCHES_IN_FLIGHT_MAX {
                reaped(in_flight.join_next().await, &mut loaded)?;
            }
            let c = client.clone();
            let r = range.to_owned();
            let b = std::mem::take(&mut batch);
            let n = b.len();
            in_flight.spawn(async move { c.write(&r, b).await.map(|_| n).map_err(Into::into) });
        }
    }
    if !batch.is_empty() {
        let n = batch.len();
        client.write(range, batch).await?;
        loaded += n;
        bar.inc(n as u64);
    }
    while let Some(res) = in_flight.join_next().await {
        reaped(Some(res), &mut loaded)?;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {loaded} records into {range} in {secs:.2} s ({:.0} records/s)",
        loaded as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use monotable_proto::tuple::{self, Element};

    /// Postmortem: a loaded key went through serde_json's Value, which
    /// rounds integers beyond 64 bits to floats: another key was stored.
    #[test]
    fn loaded_keys_keep_wide_integers_exact() {
        let (key, _) =
            parse_line(r#"{"value": 1, "key": ["a", -18446744073709551615]}"#, 1).expect("line");
        let want = tuple::encode(&["a".into(), Element::Int(-(u64::MAX as i128))]).expect("key");
        assert_eq!(key, want);
        assert!(parse_line(r#"{"key": 18446744073709551616, "value": 1}"#, 2).is_err());
        assert!(parse_line(r#"{"key": 1}"#, 3).is_err());
        let (key, _) = parse_line(r#"{"key": {"$float": "nan"}, "value": null}"#, 4).expect("nan");
        assert_eq!(key, tuple::encode(&[Element::Float(f64::NAN)]).expect("key"));
    }
}
