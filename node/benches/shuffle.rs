//! The shuffle alone, as GNU sort sees it: text lines `KEY<TAB>VALUE` in
//! a file are counted per key through the job's ExtendedHashtable (the
//! built-in `count`, one table per task under an equal share of the
//! budget, spilled runs merged at the end) and written in key order as
//! `KEY<TAB>COUNT` lines to a file. Nothing else of a job is timed: no
//! range is read, no map function runs, no output range is built.
//!
//! ```text
//! cargo bench -p monotable-node --bench shuffle -- INPUT OUTPUT BUDGET_BYTES [TASKS] [SPILL_DIR]
//! ```
//!
//! Prints one line: seconds, records/s, runs spilled, spilled bytes and
//! the tables' peak bytes. `deploy/bench-jobs.sh` runs it beside
//! `sort -S BUDGET` on the same file.

use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use monotable_node::shuffle::runs::RunStore;
use monotable_node::shuffle::table::{ExtendedHashtable, Merged};
use monotable_node::view::reduction::{Builtin, Reduction};

type Table = ExtendedHashtable<Builtin>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.len() < 3 {
        eprintln!("usage: shuffle INPUT OUTPUT BUDGET_BYTES [TASKS] [SPILL_DIR]");
        std::process::exit(2);
    }
    let input = PathBuf::from(&args[0]);
    let output = PathBuf::from(&args[1]);
    let budget: usize = args[2].parse().expect("BUDGET_BYTES: a number of bytes");
    let tasks: usize = args.get(3).map_or(2, |t| t.parse().expect("TASKS: a number"));
    let spill = args.get(4).map_or_else(std::env::temp_dir, PathBuf::from);
    let spill = spill.join(format!("monotable-shuffle-bench-{}", std::process::id()));

    let start = Instant::now();
    let size = std::fs::metadata(&input).expect("INPUT").len();
    let reducer = Arc::new(Builtin::Count);
    let parts: Vec<(Table, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (input, reducer) = (&input, reducer.clone());
                let store = RunStore::disk(spill.join(format!("task-{t}"))).expect("spill dir");
                let table = ExtendedHashtable::new(reducer, budget / tasks, store);
                let (from, to) =
                    (size * t as u64 / tasks as u64, size * (t + 1) as u64 / tasks as u64);
                s.spawn(move || count_lines(input, from, to, table))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a task")).collect()
    });
    let records: u64 = parts.iter().map(|(_, n)| n).sum();
    let merged = parts.into_iter().map(|(t, _)| t.finish().expect("finish")).collect();
    let mut all = Merged::merge_all(reducer, merged).expect("merge");
    let mut out =
        BufWriter::with_capacity(1 << 20, std::fs::File::create(&output).expect("OUTPUT"));
    while let Some((key, p)) = all.next_entry().expect("merge") {
        let Reduction::Count(n) = p else { unreachable!("count reduces to counts") };
        out.write_all(&key).expect("write");
        writeln!(out, "\t{n}").expect("write");
    }
    out.flush().expect("write");
    let stats = all.stats();
    drop(all);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{secs:.2} s, {:.0} records/s, {records} records, {} runs ({:.1} MiB), peak {:.1} MiB",
        records as f64 / secs,
        stats.spills,
        stats.spilled_bytes as f64 / (1 << 20) as f64,
        stats.peak_bytes as f64 / (1 << 20) as f64,
    );
    let _ = std::fs::remove_dir_all(&spill);
}

/// Inserts the keys of the lines that start in `[from, to)` of `input`
/// (a line belongs to the part its first byte is in), each counted once.
fn count_lines(input: &Path, from: u64, to: u64, mut table: Table) -> (Table, u64) {
    let mut f = std::fs::File::open(input).expect("INPUT");
    let mut at = from;
    if from > 0 {
        // Skip to the first line that starts at or after `from`.
        f.seek(SeekFrom::Start(from - 1)).expect("seek");
        let mut r = BufReader::new(&mut f);
        let mut partial = Vec::new();
        at += r.read_until(b'\n', &mut partial).expect("read") as u64 - 1;
        f.seek(SeekFrom::Start(at)).expect("seek");
    }
    let mut r = BufReader::with_capacity(1 << 20, f.take(u64::MAX));
    let mut line = Vec::new();
    let mut n = 0;
    while at < to {
        line.clear();
        let read = r.read_until(b'\n', &mut line).expect("read");
        if read == 0 {
            break;
        }
        at += read as u64;
        let key = line.split(|&b| b == b'\t').next().expect("a key");
        table.insert(key, Reduction::Count(1)).expect("insert");
        n += 1;
    }
    (table, n)
}
