//! `INFO [section ...]` in Redis 7.0's format (`# Section` headers,
//! `field:value` lines, `\r\n` between sections) and its section rules:
//! no argument or `default` gives the default sections, `all` adds
//! commandstats and latencystats, `everything` adds modules; names are
//! matched without regard to case, unknown ones give nothing, and
//! sections come in Redis's order whatever the order asked.
//!
//! Values are Monotable's own: `redis_version` is the Redis release whose
//! behaviour the endpoint follows (7.0.15); memory is the process's
//! resident size (`/proc/self/statm`; Monotable has no allocator
//! accounting, so `used_memory` is the RSS too); CPU from `getrusage`
//! (the `_main_thread` fields are the calling worker thread's, as
//! Monotable has no one main thread); persistence fields say no RDB nor
//! AOF exists (writes go through Monotable's journal, `monotable_fsync`);
//! replication fields are a master's with no replicas (Monotable's own
//! replication is Raft, not Redis's). `keyspace_hits`/`misses` and
//! `evicted_keys` are not counted (0). Latencystats
//! has no lines (no per-command histograms are kept).

use std::sync::atomic::Ordering;

use super::keyspace::{key_rows_prefix, now_ms, Db, Value, DATABASES};
use super::reply::Reply;
use super::state::RespState;

/// The Redis release whose behaviour the endpoint implements.
pub const REDIS_VERSION: &str = "7.0.15";

/// Every section, in the order INFO gives them.
const ORDER: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "latencystats",
    "cluster",
    "keyspace",
];

/// The sections INFO and `INFO default` give.
const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];

/// The sections `args` (INFO's arguments) ask for, in INFO's order.
pub fn sections(args: &[Vec<u8>]) -> Vec<&'static str> {
    let asked: Vec<String> = args.iter().map(|a| super::args::lower(a)).collect();
    let wanted = |s: &str| {
        if asked.is_empty() {
            return DEFAULT.contains(&s);
        }
        // No module adds sections here, so `all` and `everything` agree.
        asked.iter().any(|a| {
            a == s || a == "all" || a == "everything" || (a == "default" && DEFAULT.contains(&s))
        })
    };
    ORDER.iter().copied().filter(|s| wanted(s)).collect()
}

pub use crate::metrics::rss_bytes;

/// Total memory of the machine, from `/proc/meminfo` (0 if unknown).
fn system_memory_bytes() -> u64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// (user, system) CPU seconds of `who` (`RUSAGE_SELF`, `_CHILDREN`,
/// `_THREAD`).
fn cpu_seconds(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage writes the struct it is given; zeroed is a valid
    // rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// Bytes as Redis's `bytesToHuman` writes them (`894.85K`).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    let units = [(1u64 << 50, "P"), (1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (size, unit) in units {
        if bytes >= size {
            return format!("{:.2}{unit}", b / size as f64);
        }
    }
    format!("{bytes}B")
}

fn os() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    let kernel = read("/proc/sys/kernel/ostype").unwrap_or_else(|_| "Linux".into());
    let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{kernel} {release} {}", std::env::consts::ARCH)
}

/// INFO's reply (a verbatim string in RESP3).
pub async fn info(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let mut out = String::new();
    for (i, section) in sections(args).into_iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let (header, lines) = section_lines(state, section).await;
        out.push_str(&format!("# {header}\r\n"));
        for line in lines {
            out.push_str(&line);
            out.push_str("\r\n");
        }
    }
    Reply::Verbatim(out)
}

async fn section_lines(state: &RespState, section: &str) -> (&'static str, Vec<String>) {
    match section {
        "server" => ("Server", server(state)),
        "clients" => ("Clients", clients(state)),
        "memory" => ("Memory", memory(state)),
        "persistence" => ("Persistence", persistence(state)),
        "stats" => ("Stats", stats(state)),
        "replication" => ("Replication", replication(state)),
        "cpu" => ("CPU", cpu()),
        "modules" => ("Modules", Vec::new()),
        "commandstats" => ("Commandstats", state.stats.command_lines()),
        "errorstats" => ("Errorstats", state.stats.error_lines()),
        "latencystats" => ("Latencystats", super::latency::info_lines(state)),
        "cluster" => ("Cluster", vec!["cluster_enabled:0".to_owned()]),
        _ => ("Keyspace", keyspace(state).await),
    }
}

fn server(state: &RespState) -> Vec<String> {
    let uptime = state.started.elapsed().as_secs();
    let port = state.resp_addr.get().map_or(0, |a| a.port());
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
    vec![
        format!("redis_version:{REDIS_VERSION}"),
        "redis_git_sha1:00000000".into(),
        "redis_git_dirty:0".into(),
        format!("redis_build_id:monotable-{}", env!("CARGO_PKG_VERSION")),
        "redis_mode:standalone".into(),
        format!("os:{}", os()),
        format!("arch_bits:{}", usize::BITS),
        "monotonic_clock:POSIX clock_gettime".into(),
        "multiplexing_api:epoll".into(),
        "atomicvar_api:c11-builtin".into(),
        "gcc_version:0.0.0".into(),
        format!("process_id:{}", std::process::id()),
        "process_supervised:no".into(),
        format!("run_id:{}", state.run_id),
        format!("tcp_port:{port}"),
        format!("server_time_usec:{}", now_ms() * 1000),
        format!("uptime_in_seconds:{uptime}"),
        format!("uptime_in_days:{}", uptime / 86_400),
        format!("hz:{}", state.config.int("hz")),
        format!("configured_hz:{}", state.config.int("hz")),
        format!("lru_clock:{}", (now_ms() / 1000) & ((1 << 24) - 1)),
        format!("executable:{exe}"),
        "config_file:".into(),
        "io_threads_active:0".into(),
        format!("monotable_version:{}", env!("CARGO_PKG_VERSION")),
    ]
}

fn clients(state: &RespState) -> Vec<String> {
    let all = state.clients.all();
    let blocked = all.iter().filter(|c| c.has(super::clients::FLAG_BLOCKED)).count();
    vec![
        format!("connected_clients:{}", all.len()),
        "cluster_connections:0".into(),
        format!("maxclients:{}", crate::config::CONNECTIONS_MAX),
        "client_recent_max_input_buffer:0".into(),
        "client_recent_max_output_buffer:0".into(),
        format!("blocked_clients:{blocked}"),
        format!("tracking_clients:{}", state.tracking.counts().0),
        format!("clients_in_timeout_table:{blocked}"),
    ]
}

fn memory(state: &RespState) -> Vec<String> {
    let rss = rss_bytes();
    let peak = state.peak_rss(rss);
    let system = system_memory_bytes();
    let maxmemory = state.config.int("maxmemory").max(0) as u64;
    let (scripts, script_bytes) = state.scripts.cached();
    let script_bytes = script_bytes as u64;
    let startup = state.startup_rss;
    let dataset = rss.saturating_sub(startup);
    let percent = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    vec![
        format!("used_memory:{rss}"),
        format!("used_memory_human:{}", human(rss)),
        format!("used_memory_rss:{rss}"),
        format!("used_memory_rss_human:{}", human(rss)),
        format!("used_memory_peak:{peak}"),
        format!("used_memory_peak_human:{}", human(peak)),
        format!("used_memory_peak_perc:{:.2}%", percent(rss, peak)),
        format!("used_memory_overhead:{startup}"),
        format!("used_memory_startup:{startup}"),
        format!("used_memory_dataset:{dataset}"),
        format!("used_memory_dataset_perc:{:.2}%", percent(dataset, rss)),
        format!("allocator_allocated:{rss}"),
        format!("allocator_active:{rss}"),
        format!("allocator_resident:{rss}"),
        format!("total_system_memory:{system}"),
        format!("total_system_memory_human:{}", human(system)),
        "used_memory_lua:0".into(),
        "used_memory_vm_eval:0".into(),
        "used_memory_lua_human:0B".into(),
        format!("used_memory_scripts_eval:{script_bytes}"),
        format!("number_of_cached_scripts:{scripts}"),
        "number_of_functions:0".into(),
        "number_of_libraries:0".into(),
        "used_memory_vm_functions:0".into(),
        "used_memory_vm_total:0".into(),
        "used_memory_vm_total_human:0B".into(),
        "used_memory_functions:0".into(),
        format!("used_memory_scripts:{script_bytes}"),
        format!("used_memory_scripts_human:{}", human(script_bytes)),
        format!("maxmemory:{maxmemory}"),
        format!("maxmemory_human:{}", human(maxmemory)),
        format!("maxmemory_policy:{}", state.config.text("maxmemory-policy")),
        "allocator_frag_ratio:1.00".into(),
        "allocator_frag_bytes:0".into(),
        "allocator_rss_ratio:1.00".into(),
        "allocator_rss_bytes:0".into(),
        "rss_overhead_ratio:1.00".into(),
        "rss_overhead_bytes:0".into(),
        "mem_fragmentation_ratio:1.00".into(),
        "mem_fragmentation_bytes:0".into(),
        "mem_not_counted_for_evict:0".into(),
        "mem_replication_backlog:0".into(),
        "mem_total_replication_buffers:0".into(),
        "mem_clients_slaves:0".into(),
        "mem_clients_normal:0".into(),
        "mem_cluster_links:0".into(),
        "mem_aof_buffer:0".into(),
        "mem_allocator:mimalloc".into(),
        "active_defrag_running:0".into(),
        "lazyfree_pending_objects:0".into(),
        "lazyfreed_objects:0".into(),
    ]
}

fn persistence(state: &RespState) -> Vec<String> {
    let [changes, in_progress, last_save, last_status, last_secs, current_secs, saves] =
        state.saves.info();
    vec![
        "loading:0".into(),
        "async_loading:0".into(),
        "current_cow_peak:0".into(),
        "current_cow_size:0".into(),
        "current_cow_size_age:0".into(),
        "current_fork_perc:0.00".into(),
        "current_save_keys_processed:0".into(),
        "current_save_keys_total:0".into(),
        changes,
        in_progress,
        last_save,
        last_status,
        last_secs,
        current_secs,
        saves,
        "rdb_last_cow_size:0".into(),
        "rdb_last_load_keys_expired:0".into(),
        "rdb_last_load_keys_loaded:0".into(),
        "aof_enabled:0".into(),
        "aof_rewrite_in_progress:0".into(),
        "aof_rewrite_scheduled:0".into(),
        "aof_last_rewrite_time_sec:-1".into(),
        "aof_current_rewrite_time_sec:-1".into(),
        "aof_last_bgrewrite_status:ok".into(),
        "aof_rewrites:0".into(),
        "aof_rewrites_consecutive_failures:0".into(),
        "aof_last_write_status:ok".into(),
        "aof_last_cow_size:0".into(),
        "module_fork_in_progress:0".into(),
        "module_fork_last_cow_size:0".into(),
        format!("monotable_fsync:{:?}", state.node.config.fsync),
    ]
}

fn stats(state: &RespState) -> Vec<String> {
    let s = &state.stats;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (ops, input, output) = s.instantaneous();
    let tracking = state.tracking.counts();
    vec![
        format!("total_connections_received:{}", n(&s.connections_received)),
        format!("total_commands_processed:{}", n(&s.total_commands)),
        format!("instantaneous_ops_per_sec:{}", ops.round() as u64),
        format!("total_net_input_bytes:{}", n(&s.net_input_bytes)),
        format!("total_net_output_bytes:{}", n(&s.net_output_bytes)),
        "total_net_repl_input_bytes:0".into(),
        "total_net_repl_output_bytes:0".into(),
        format!("instantaneous_input_kbps:{:.2}", input / 1024.0),
        format!("instantaneous_output_kbps:{:.2}", output / 1024.0),
        "instantaneous_input_repl_kbps:0.00".into(),
        "instantaneous_output_repl_kbps:0.00".into(),
        format!("rejected_connections:{}", n(&s.rejected_connections)),
        "sync_full:0".into(),
        "sync_partial_ok:0".into(),
        "sync_partial_err:0".into(),
        format!("expired_keys:{}", n(&s.expired_keys)),
        "expired_stale_perc:0.00".into(),
        "expired_time_cap_reached_count:0".into(),
        "expire_cycle_cpu_milliseconds:0".into(),
        "evicted_keys:0".into(),
        "evicted_clients:0".into(),
        "total_eviction_exceeded_time:0".into(),
        "current_eviction_exceeded_time:0".into(),
        "keyspace_hits:0".into(),
        "keyspace_misses:0".into(),
        format!("pubsub_channels:{}", state.pubsub.channels(None).len()),
        format!("pubsub_patterns:{}", state.pubsub.numpat()),
        "pubsubshard_channels:0".into(),
        "latest_fork_usec:0".into(),
        "total_forks:0".into(),
        "migrate_cached_sockets:0".into(),
        "slave_expires_tracked_keys:0".into(),
        "active_defrag_hits:0".into(),
        "active_defrag_misses:0".into(),
        "active_defrag_key_hits:0".into(),
        "active_defrag_key_misses:0".into(),
        "total_active_defrag_time:0".into(),
        "current_active_defrag_time:0".into(),
        format!("tracking_total_keys:{}", tracking.1),
        format!("tracking_total_items:{}", tracking.2),
        format!("tracking_total_prefixes:{}", tracking.3),
        "unexpected_error_replies:0".into(),
        format!("total_error_replies:{}", n(&s.total_errors)),
        "dump_payload_sanitizations:0".into(),
        format!("total_reads_processed:{}", n(&s.reads)),
        format!("total_writes_processed:{}", n(&s.writes)),
        "io_threaded_reads_processed:0".into(),
        "io_threaded_writes_processed:0".into(),
        "reply_buffer_shrinks:0".into(),
        "reply_buffer_expands:0".into(),
    ]
}

fn replication(state: &RespState) -> Vec<String> {
    vec![
        "role:master".into(),
        "connected_slaves:0".into(),
        "master_failover_state:no-failover".into(),
        format!("master_replid:{}", state.run_id),
        "master_replid2:0000000000000000000000000000000000000000".into(),
        "master_repl_offset:0".into(),
        "second_repl_offset:-1".into(),
        "repl_backlog_active:0".into(),
        "repl_backlog_size:1048576".into(),
        "repl_backlog_first_byte_offset:0".into(),
        "repl_backlog_histlen:0".into(),
    ]
}

fn cpu() -> Vec<String> {
    let (user, sys) = cpu_seconds(libc::RUSAGE_SELF);
    let (user_children, sys_children) = cpu_seconds(libc::RUSAGE_CHILDREN);
    let (user_thread, sys_thread) = cpu_seconds(libc::RUSAGE_THREAD);
    vec![
        format!("used_cpu_sys:{sys:.6}"),
        format!("used_cpu_user:{user:.6}"),
        format!("used_cpu_sys_children:{sys_children:.6}"),
        format!("used_cpu_user_children:{user_children:.6}"),
        format!("used_cpu_sys_main_thread:{sys_thread:.6}"),
        format!("used_cpu_user_main_thread:{user_thread:.6}"),
    ]
}

/// `dbN:keys=K,expires=E,avg_ttl=T` for each database with keys. Counting
/// is not O(1) here: Monotable keeps no key count per database, so this
/// reads every key row of the node's databases (O(keys), a page at a
/// time); `avg_ttl` is the exact mean of the keys with an expiry. A
/// database the node cannot read (another node's replicated range) is
/// left out.
async fn keyspace(state: &RespState) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = key_rows_prefix();
    let end = monotable_proto::keys::tuple_prefix_end(&prefix);
    let now = now_ms();
    for dbi in 0..DATABASES {
        let db = Db::new(state, dbi, None);
        // The TTLs' sum in 128 bits: three keys expiring near i64::MAX
        // pass a u64.
        let (mut keys, mut expires, mut ttl_sum) = (0u64, 0u64, 0u128);
        let visited = db
            .visit_rows(prefix.clone(), end.clone(), false, |_, bytes| {
                if let Some(v) = Value::decode(&bytes) {
                    match v.expire_at_ms {
                        None => keys += 1,
                        Some(at) if at > now => {
                            keys += 1;
                            expires += 1;
                            ttl_sum += u128::from(at - now);
                        }
                        Some(_) => {}
                    }
                }
                Ok(true)
            })
            .await;
        if visited.is_ok() && keys > 0 {
            let avg_ttl = ttl_sum.checked_div(u128::from(expires)).unwrap_or(0);
            out.push(format!("db{dbi}:keys={keys},expires={expires},avg_ttl={avg_ttl}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<Vec<u8>> {
        w.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn sections_follow_redis_rules() {
        assert_eq!(sections(&[]), DEFAULT);
        assert_eq!(sections(&words(&["default"])), DEFAULT);
        let all = sections(&words(&["all"]));
        assert!(all.contains(&"commandstats") && all.contains(&"latencystats"));
        assert_eq!(all.len(), ORDER.len());
        assert_eq!(sections(&words(&["everything"])), ORDER);
        assert_eq!(sections(&words(&["KEYSPACE", "server"])), ["server", "keyspace"]);
        assert_eq!(sections(&words(&["commandstats"])), ["commandstats"]);
        assert!(sections(&words(&["nosuch"])).is_empty());
        assert_eq!(sections(&words(&["nosuch", "cpu", "cpu"])), ["cpu"]);
    }

    #[test]
    fn human_sizes_are_redis_s() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(916_328), "894.85K");
        assert_eq!(human(12_165_120), "11.60M");
        assert_eq!(human(25_276_059_648), "23.54G");
    }

    #[test]
    fn process_figures_are_read() {
        assert!(rss_bytes() > 0);
        assert!(system_memory_bytes() > rss_bytes());
        let (user, sys) = cpu_seconds(libc::RUSAGE_SELF);
        assert!(user >= 0.0 && sys >= 0.0);
    }
}
