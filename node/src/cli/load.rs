//! `monotable load`: JSON lines into a range, in pipelined batches.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use monotable_client::{Batch, Client};
use tokio::task::JoinHandle;

use crate::json;

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

/// The keys of one batch.
type Keys = HashSet<Vec<u8>>;

/// Batches in flight, oldest first, each with its keys: a line whose key
/// is in one waits until that batch (and every older one) is written, so
/// the last line of a key wins whatever chunk or node applies it.
/// Postmortem: batches written side by side to a replicated range were
/// applied in any order, and an earlier line of a key could win.
struct InFlight {
    batches: VecDeque<(JoinHandle<Result<usize>>, Keys)>,
    /// Records written so far.
    loaded: usize,
    bar: ProgressBar,
}

impl InFlight {
    async fn reap_oldest(&mut self) -> Result<()> {
        let Some((task, _)) = self.batches.pop_front() else { return Ok(()) };
        let n = task.await.context("load task failed")??;
        self.loaded += n;
        self.bar.inc(n as u64);
        Ok(())
    }

    async fn drain(&mut self) -> Result<()> {
        while !self.batches.is_empty() {
            self.reap_oldest().await?;
        }
        Ok(())
    }
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
    let mut in_flight = InFlight { batches: VecDeque::new(), loaded: 0, bar };
    let mut batch = Batch::new();
    let mut keys = Keys::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.context("reading input")?;
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = match parse_line(&line, i + 1) {
            Ok(kv) => kv,
            Err(e) => {
                in_flight.drain().await?;
                bail!("{e:#} ({} records before it were loaded)", in_flight.loaded);
            }
        };
        while in_flight.batches.iter().any(|(_, k)| k.contains(&key)) {
            in_flight.reap_oldest().await?;
        }
        keys.insert(key.clone());
        batch = batch.put(key, value);
        if batch.len() >= batch_size {
            if in_flight.batches.len() >= LOAD_BATCHES_IN_FLIGHT_MAX {
                in_flight.reap_oldest().await?;
            }
            let c = client.clone();
            let r = range.to_owned();
            let b = std::mem::take(&mut batch);
            let n = b.len();
            let task =
                tokio::spawn(async move { c.write(&r, b).await.map(|_| n).map_err(Into::into) });
            in_flight.batches.push_back((task, std::mem::take(&mut keys)));
        }
    }
    in_flight.drain().await?;
    if !batch.is_empty() {
        let n = batch.len();
        client.write(range, batch).await?;
        in_flight.loaded += n;
        in_flight.bar.inc(n as u64);
    }
    let (loaded, bar) = (in_flight.loaded, in_flight.bar);
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
