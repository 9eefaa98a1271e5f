//! How long it takes to make small appends to N files durable, by each way
//! the group commit can: fdatasync each file in turn, fdatasync each file
//! on its own thread, one syncfs, or one fdatasync of a single log that
//! holds a copy of every append (a write-ahead log). The numbers behind
//! `--sync-method` (node/src/group_commit.rs); run on the file system the
//! data directory would use:
//!
//! ```sh
//! cargo run --release -p monotable-node --example sync_methods -- DIR [ROUNDS]
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

const APPEND_BYTES: usize = 100;

fn open(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).expect("open")
}

fn syncfs(f: &File) {
    // SAFETY: the descriptor is open for the duration of the call.
    let r = unsafe { libc::syncfs(f.as_raw_fd()) };
    assert_eq!(r, 0, "syncfs: {}", std::io::Error::last_os_error());
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: sync_methods DIR [ROUNDS]");
    let rounds: u32 = args.next().map_or(200, |r| r.parse().expect("ROUNDS is a number"));
    let dir = Path::new(&dir).join("sync-methods");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let data = [b'x'; APPEND_BYTES];
    println!("| files | fdatasync each (ms) | fdatasync, a thread each (ms) | syncfs (ms) | one log (ms) |");
    println!("|---|---|---|---|---|");
    for n in [1usize, 2, 4, 16, 32] {
        let mut files: Vec<File> = (0..n).map(|i| open(&dir.join(format!("f{i}")))).collect();
        let mut log = open(&dir.join("log"));
        for f in &files {
            f.sync_all().expect("sync");
        }
        let per_round = |start: Instant| start.elapsed().as_secs_f64() * 1e3 / f64::from(rounds);
        let append = |files: &mut Vec<File>| {
            for f in files.iter_mut() {
                f.write_all(&data).expect("write");
            }
        };
        let start = Instant::now();
        for _ in 0..rounds {
            append(&mut files);
            for f in &files {
                f.sync_data().expect("fdatasync");
            }
        }
        let each = per_round(start);
        let start = Instant::now();
        for _ in 0..rounds {
            append(&mut files);
            std::thread::scope(|s| {
                for f in &files {
                    s.spawn(move || f.sync_data().expect("fdatasync"));
                }
            });
        }
        let threads = per_round(start);
        let start = Instant::now();
        for _ in 0..rounds {
            append(&mut files);
            syncfs(&files[0]);
        }
        let fs = per_round(start);
        let start = Instant::now();
        for _ in 0..rounds {
            append(&mut files);
            for _ in 0..n {
                log.write_all(&data).expect("write");
            }
            log.sync_data().expect("fdatasync");
        }
        let wal = per_round(start);
        println!("| {n} | {each:.3} | {threads:.3} | {fs:.3} | {wal:.3} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
