//! A job from request to output, and the node's list of jobs.
//!
//! 1. **Checks** (before `RunJob` answers): names, the budget, the input
//!    and output, both functions compiled (Lua runs its top-level code),
//!    a Redis intermediate store with a database per task.
//! 2. **Map**: each task takes source chunks (or pages of a Redis SCAN)
//!    one at a time, maps their records on a blocking thread and inserts
//!    each emitted row's partial reduction into its own table. A range is
//!    read at one snapshot pinned when the job begins.
//! 3. **Merge**: the tables finish and one k-way merge over all of them
//!    yields each key once, in order; its output value is written in
//!    sorted batches.
//! 4. **Commit**: a range output was written to a staging range
//!    (`job.NAME.staging`), which now takes the output's name (the old
//!    output is dropped); a Redis hash output was written to a staging
//!    hash, now renamed. Redis string outputs are written in place: a job
//!    that fails leaves the keys it wrote so far.
//!
//! A marker file per running job (`DATA_DIR/jobs/NAME.job`) names its
//! spill directory and staging range; a node that starts after a crash
//! removes both ([`Node::clean_up_jobs`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use monotable_proto::limits::{
    check_key_size, BATCH_OPS_MAX, JOB_ERROR_SAMPLES_MAX, JOB_HISTORY_MAX,
    JOB_MEMORY_BUDGET_MIN_BYTES_PER_TASK, JOB_RUNNING_MAX, JOB_TASKS_MAX, RANGE_NAME_LEN_MAX,
};
use monotable_proto::{
    Bytes, ChunkInfo, Command, ErrorCode, JobErrorSample, JobInput, JobOutput, JobSpec, JobStatus,
    MapFunction, RangeOptions, ReduceFunction, Reply, ScanRequest, WriteOp,
};
use serde::{Deserialize, Serialize};

use super::functions::{output_key, JobReduce, LuaJobReducer};
use super::intermediate::{
    check_intermediate, flush_runs, hold_intermediate, release_intermediate, same_server,
};
use crate::bridge::redis_io::{prefixed, read_items, scan_page, Target};
use crate::bridge::rows::{render_value, Renderings};
use crate::error::{NodeError, NodeResult};
use crate::node::{validate_name, Node, Session};
use crate::shuffle::runs::{RunError, RunStore};
use crate::shuffle::table::{ExtendedHashtable, Merged, TableStats};
use crate::sorted_load::SortedLoad;
use crate::view::lua::{LuaEnv, LuaReducer};
use crate::view::map_fn::{FieldMapper, Mapper, MapperFunction};
use crate::view::reducer_fn::ReducerFunction;

/// A span of a range input's keys: `[start, end)`, `None` unbounded.
type Span = (Option<Bytes>, Option<Bytes>);

/// Fewest records a chunk's span is cut to.
const SPAN_RECORDS_MIN: u64 = 20_000;

/// Records asked for per scan page of a range input.
const SCAN_PAGE_RECORDS: u32 = 2000;
/// Keys asked for per SCAN of a Redis input.
const REDIS_SCAN_COUNT: usize = 1000;
/// Output rows per write batch, and their bytes.
const OUTPUT_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Output batches queued between the merge and the writer.
const OUTPUT_IN_FLIGHT: usize = 4;
/// Redis commands per output pipeline.
const REDIS_PIPELINE_KEYS: usize = 500;

/// The node's jobs: those running, and the last [`JOB_HISTORY_MAX`] that
/// ended.
#[derive(Default)]
pub struct Jobs {
    inner: Mutex<JobsInner>,
}

#[derive(Default)]
struct JobsInner {
    running: BTreeMap<String, Arc<Job>>,
    ended: VecDeque<JobStatus>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running job's progress, shared by its tasks.
pub struct Job {
    spec: JobSpec,
    tasks: u32,
    started: Instant,
    records_in: AtomicU64,
    records_total: AtomicU64,
    rows_emitted: AtomicU64,
    map_errors: AtomicU64,
    reduce_errors: AtomicU64,
    rows_out: AtomicU64,
    samples: Mutex<Vec<JobErrorSample>>,
    /// Each task's table, as last reported.
    tables: Mutex<Vec<TableStats>>,
    /// The phase, and when each phase after the first began (ms since
    /// the start).
    phase: Mutex<(&'static str, Vec<u64>)>,
    /// Cancelled by a client.
    cancelled: AtomicBool,
    /// Stopping: cancelled, or a part of the job failed.
    stopping: AtomicBool,
    /// Woken when the job starts stopping: waits on Redis give way.
    stopped: tokio::sync::Notify,
    /// The first failure, which the job ends with.
    failure: Mutex<Option<String>>,
    env: LuaEnv,
    /// The functions, checked.
    map_fn: MapperFunction,
    reduce_fn: ReducerFunction,
}

impl Job {
    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn check(&self) -> Result<(), String> {
        if self.cancelled() {
            Err(CANCELLED.into())
        } else if self.stopping.load(Ordering::Acquire) {
            Err(STOPPED.into())
        } else {
            Ok(())
        }
    }

    /// A part of the job failed with `e`: the job stops, and ends failed
    /// with the first such error (a part that stopped because another
    /// failed, or a cancel, is not one).
    fn fail(&self, e: &str) {
        if e != CANCELLED && e != STOPPED {
            self.failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| e.to_owned());
        }
        self.stopping.store(true, Ordering::Release);
        self.stopped.notify_waiters();
        self.env.interrupt.stop_view();
    }

    fn stop(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.fail(CANCELLED);
    }

    fn sample(&self, key: &[u8], error: String) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() < JOB_ERROR_SAMPLES_MAX {
            s.push(JobErrorSample { key: Bytes::from(key.to_vec()), error });
        }
    }

    fn map_error(&self, key: &[u8], error: String) {
        self.map_errors.fetch_add(1, Ordering::Relaxed);
        self.sample(key, format!("map: {error}"));
    }

    fn reduce_error(&self, key: &[u8], error: String) {
        self.reduce_errors.fetch_add(1, Ordering::Relaxed);
        self.sample(key, format!("reduce: {error}"));
    }

    fn set_phase(&self, phase: &'static str) {
        let at = self.started.elapsed().as_millis() as u64;
        let mut p = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        p.0 = phase;
        p.1.push(at);
    }

    fn report_table(&self, task: usize, stats: TableStats) {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = t.get_mut(task) {
            *slot = stats;
        }
    }

    fn status(&self, state: &str, error: Option<String>) -> JobStatus {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        let (phase, began) = self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
        JobStatus {
            name: self.spec.name.clone(),
            state: state.to_owned(),
            phase: if state == "running" { phase.to_owned() } else { String::new() },
            map_ms: *began.first().unwrap_or(&elapsed_ms),
            merge_ms: began.first().map_or(0, |&m| began.get(1).unwrap_or(&elapsed_ms) - m),
            input: describe_input(&self.spec.input),
            output: describe_output(&self.spec.output),
            records_in: self.records_in.load(Ordering::Relaxed),
            records_total: self.records_total.load(Ordering::Relaxed),
            rows_emitted: self.rows_emitted.load(Ordering::Relaxed),
            map_errors: self.map_errors.load(Ordering::Relaxed),
            reduce_errors: self.reduce_errors.load(Ordering::Relaxed),
            errors: self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            spills: tables.iter().map(|t| t.spills).sum(),
            spilled_bytes: tables.iter().map(|t| t.spilled_bytes).sum(),
            peak_memory_bytes: tables.iter().map(|t| t.peak_bytes as u64).sum(),
            tasks: self.tasks,
            elapsed_ms,
            error,
        }
    }
}

const CANCELLED: &str = "cancelled";

/// `fut`, or the job's stop (a cancel, a failure elsewhere) if that comes
/// first: a Redis server that stalls does not hold a cancelled job.
async fn until_stopped<T>(
    job: &Job,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    // Registered before the check: a stop in between still wakes it.
    let stopped = job.stopped.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    job.check()?;
    tokio::select! {
        out = fut => Ok(out),
        _ = stopped => Err(job.check().err().unwrap_or_else(|| STOPPED.into())),
    }
}
const STOPPED: &str = "stopped: another part of the job failed";

fn describe_input(input: &JobInput) -> String {
    match input {
        JobInput::Range(r) => format!("range:{r}"),
        JobInput::Redis { url, pattern } => {
            let shown = Target::parse(url).map(|t| t.display).unwrap_or_else(|_| url.clone());
            match pattern {
                Some(p) => format!("{shown}?match={p}"),
                None => shown,
            }
        }
    }
}

fn describe_output(output: &JobOutput) -> String {
    match output {
        JobOutput::Range(r) => format!("range:{r}"),
        JobOutput::Redis { url, hash, prefix } => {
            let mut shown = Target::parse(url).map(|t| t.display).unwrap_or_else(|_| url.clone());
            let mut params = Vec::new();
            if let Some(h) = hash {
                params.push(format!("hash={}", String::from_utf8_lossy(h)));
            }
            if !prefix.is_empty() {
                params.push(format!("prefix={}", String::from_utf8_lossy(prefix)));
            }
            if !params.is_empty() {
                shown = format!("{shown}?{}", params.join("&"));
            }
            shown
        }
    }
}

/// A job's input, checked.
enum Input {
    /// Key spans of the range's chunks when the job began.
    Range {
        name: String,
        spans: Vec<(Option<Bytes>, Option<Bytes>)>,
    },
    Redis {
        target: Target,
        pattern: Option<String>,
    },
}

/// A job's output, checked. (One per job: its size does not matter.)
#[allow(clippy::large_enum_variant)]
enum Output {
    Range {
        name: String,
        staging: String,
        options: RangeOptions,
    },
    /// `staging`: the unique hash a hash output is written to, then
    /// renamed to `prefix + hash`.
    Redis {
        target: Target,
        url: String,
        hash: Option<Vec<u8>>,
        staging: Option<Vec<u8>>,
        prefix: Vec<u8>,
    },
}

/// Where a job's tables spill.
enum Spill {
    /// `dir/task-N` per task.
    Disk { dir: PathBuf },
    /// Database N of the server per task, held under `owner`'s lock.
    Redis { url: String, owner: String },
}

/// What jobs that were running when the node stopped left outside its
/// disk ([`Node::job_leftovers`]).
pub struct JobLeftovers(Vec<Marker>);

/// What a job leaves behind if its node dies: removed at the next start.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    spill_dir: Option<PathBuf>,
    staging: Option<String>,
    /// A Redis intermediate store, the databases its runs are in, and the
    /// owner of its lock.
    #[serde(default)]
    intermediate: Option<(String, u32, String)>,
    /// A Redis hash output's staging hash: (URL, key).
    #[serde(default)]
    redis_staging: Option<(String, Vec<u8>)>,
}

fn jobs_dir(node: &Node) -> PathBuf {
    node.config.data_dir.join("jobs")
}

fn marker_path(node: &Node, name: &str) -> PathBuf {
    jobs_dir(node).join(format!("{name}.job"))
}

/// The staging range of a job's range output.
pub fn staging_range(job: &str) -> String {
    format!("job.{job}.staging")
}

/// Longest job name: its staging range name must fit.
const JOB_NAME_LEN_MAX: usize = RANGE_NAME_LEN_MAX - "job..staging".len();

impl Node {
    /// `RunJob`: checks the spec, then starts the job (see the module doc).
    pub(crate) async fn run_job(self: &Arc<Self>, spec: JobSpec) -> NodeResult<()> {
        if validate_name("job", &spec.name).is_err()
            || spec.name.len() > JOB_NAME_LEN_MAX
            || spec.name.starts_with('.')
        {
            return Err(NodeError::client(
                ErrorCode::InvalidRangeName,
                format!(
                    "invalid job name {:?}: use 1 to {JOB_NAME_LEN_MAX} characters from \
                     A-Z a-z 0-9 _ - . :, not starting with a dot",
                    spec.name
                ),
            ));
        }
        if self.jobs.lock().running.len() >= JOB_RUNNING_MAX {
            return Err(NodeError::client(
                ErrorCode::Busy,
                format!(
                    "{JOB_RUNNING_MAX} jobs are running on this node; retry once one has ended"
                ),
            ));
        }
        if let Some(total) = crate::config::memory_total_bytes() {
            if spec.memory_budget_bytes > total {
                return Err(NodeError::bad_request(format!(
                    "a memory budget of {} bytes is more than this node's memory ({total} bytes)",
                    spec.memory_budget_bytes
                )));
            }
        }
        if let Some(d) = &spec.spill_dir {
            let path = std::path::Path::new(d);
            if !path.is_absolute() || !path.is_dir() {
                return Err(NodeError::bad_request(format!(
                    "--spill-dir {d:?}: give the absolute path of an existing directory on the \
                     node (the job makes its own directory inside it)"
                )));
            }
        }
        let mut tasks = match spec.tasks {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            n if n > JOB_TASKS_MAX => {
                return Err(NodeError::bad_request(format!("--tasks {n}: at most {JOB_TASKS_MAX}")))
            }
            n => n,
        };
        let min = JOB_MEMORY_BUDGET_MIN_BYTES_PER_TASK * u64::from(tasks);
        if spec.memory_budget_bytes < min {
            return Err(NodeError::bad_request(format!(
                "a memory budget of {} bytes is too small for {tasks} tasks: at least {min} \
                 ({JOB_MEMORY_BUDGET_MIN_BYTES_PER_TASK} per task)",
                spec.memory_budget_bytes
            )));
        }
        // Each task runs its own Lua VMs, reserved from the node's pool.
        let vms = u32::from(matches!(spec.map, MapFunction::Lua { .. }))
            + u32::from(matches!(spec.reduce, ReduceFunction::Lua { .. }));
        let env = self.lua_env();
        if vms > 0 {
            let vm_bytes = crate::view::sandbox::LUA_MEMORY_MAX_BYTES;
            let fit = (env.memory.free_bytes() / (vm_bytes * vms as usize)) as u32;
            if fit == 0 {
                return Err(NodeError::bad_request(format!(
                    "the node's Lua memory has {} bytes free, less than one task's {vms} Lua VMs \
                     of {vm_bytes} bytes: wait for other Lua work to end, or raise \
                     `serve --lua-memory-max-bytes`",
                    env.memory.free_bytes()
                )));
            }
            if spec.tasks == 0 {
                tasks = tasks.min(fit);
            } else if tasks > fit {
                return Err(NodeError::bad_request(format!(
                    "{tasks} tasks need {} Lua VMs of {vm_bytes} bytes ({vms} per task); the \
                     node's Lua memory has {} bytes free: run --tasks {} or fewer, or raise \
                     `serve --lua-memory-max-bytes`",
                    tasks * vms,
                    env.memory.free_bytes(),
                    fit
                )));
            }
        }
        // Both functions compile (Lua runs its top-level code), before
        // anything is held for the job.
        let function_error = |what: &str, e: NodeError| match e {
            NodeError::Client { code, message } => {
                NodeError::client(code, format!("{what} function: {message}"))
            }
            other => other,
        };
        let map_fn = self
            .checked_map_function(spec.map.clone())
            .await
            .map_err(|e| function_error("map", e))?;
        let reduce_fn = self
            .checked_reduce_function(spec.reduce.clone())
            .await
            .map_err(|e| function_error("reduce", e))?;
        let session = Session::new(self.clone());
        let input = self.job_input(&spec.input, tasks, &session).await?;
        let tasks = match &input {
            Input::Range { spans, .. } => tasks.min(spans.len().max(1) as u32),
            Input::Redis { .. } => tasks,
        };
        let output = self.job_output(&spec.output, &spec.name, spec.replace, &session).await?;
        if let (Input::Redis { target: i, .. }, Output::Redis { target: o, .. }) = (&input, &output)
        {
            if same_server(i, o).await? && i.db == o.db {
                return Err(NodeError::bad_request(format!(
                    "the output {} is the input database: the job would read the rows it \
                     writes; write to another database",
                    o.display
                )));
            }
        }
        let spill = match &spec.intermediate {
            Some(url) => {
                let owner =
                    format!("{}@{}-{:016x}", spec.name, std::process::id(), rand::random::<u64>());
                let mut others = Vec::new();
                if let Input::Redis { target, .. } = &input {
                    others.push(("input", target));
                }
                if let Output::Redis { target, .. } = &output {
                    others.push(("output", target));
                }
                check_intermediate(url, tasks, &others, &owner).await?;
                Spill::Redis { url: url.clone(), owner }
            }
            None => {
                let base = spec.spill_dir.as_ref().map_or_else(|| jobs_dir(self), PathBuf::from);
                Spill::Disk {
                    dir: base.join(format!("job-{}-{:016x}", spec.name, rand::random::<u64>())),
                }
            }
        };
        let job = Arc::new(Job {
            tasks,
            started: Instant::now(),
            records_in: AtomicU64::new(0),
            records_total: AtomicU64::new(0),
            rows_emitted: AtomicU64::new(0),
            map_errors: AtomicU64::new(0),
            reduce_errors: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            tables: Mutex::new(vec![TableStats::default(); tasks as usize]),
            phase: Mutex::new(("map", Vec::new())),
            cancelled: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            stopped: tokio::sync::Notify::new(),
            failure: Mutex::new(None),
            env,
            map_fn,
            reduce_fn,
            spec,
        });
        {
            let mut jobs = self.jobs.lock();
            if jobs.running.contains_key(&job.spec.name) {
                return Err(NodeError::client(
                    ErrorCode::JobExists,
                    format!("job {:?} is running; cancel it or choose another name", job.spec.name),
                ));
            }
            jobs.running.insert(job.spec.name.clone(), job.clone());
        }
        let marker = Marker {
            spill_dir: match &spill {
                Spill::Disk { dir } => Some(dir.clone()),
                Spill::Redis { .. } => None,
            },
            staging: match &output {
                Output::Range { staging, .. } => Some(staging.clone()),
                Output::Redis { .. } => None,
            },
            redis_staging: match &output {
                Output::Redis { url, staging: Some(s), .. } => Some((url.clone(), s.clone())),
                _ => None,
            },
            intermediate: match &spill {
                Spill::Redis { url, owner } => Some((url.clone(), tasks, owner.clone())),
                Spill::Disk { .. } => None,
            },
        };
        if let Err(e) = write_marker(self, &job.spec.name, &marker) {
            self.jobs.lock().running.remove(&job.spec.name);
            return Err(NodeError::Internal(format!("cannot record the job: {e}")));
        }
        let node = self.clone();
        // On this connection worker's thread: the node's request futures
        // are not `Send`; the map work itself runs on blocking threads.
        actix_rt::spawn(async move {
            let name = job.spec.name.clone();
            tracing::info!(job = %name, input = %describe_input(&job.spec.input),
                output = %describe_output(&job.spec.output), tasks = job.tasks, "job started");
            let result = node.drive(&job, input, output, spill, session).await;
            if let Err(e) = std::fs::remove_file(marker_path(&node, &name)) {
                tracing::warn!(job = %name, error = %e, "removing the job's marker failed");
            }
            let status = match result {
                Ok(()) => job.status("done", None),
                Err(_) if job.cancelled() => job.status("cancelled", None),
                Err(e) => {
                    let first = job.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let e = first.unwrap_or(e);
                    tracing::warn!(job = %name, error = %e, "job failed");
                    job.status("failed", Some(e))
                }
            };
            tracing::info!(job = %name, state = %status.state, records = status.records_in,
                rows = status.rows_out, error = ?status.error, "job ended");
            let mut jobs = node.jobs.lock();
            jobs.running.remove(&name);
            jobs.ended.retain(|s| s.name != name);
            jobs.ended.push_back(status);
            while jobs.ended.len() > JOB_HISTORY_MAX {
                jobs.ended.pop_front();
            }
        });
        Ok(())
    }

    /// `ListJobs`: running jobs, then those that ended, newest last.
    pub(crate) fn job_statuses(&self) -> Vec<JobStatus> {
        let jobs = self.jobs.lock();
        let mut out: Vec<JobStatus> =
            jobs.running.values().map(|j| j.status("running", None)).collect();
        out.extend(jobs.ended.iter().cloned());
        out
    }

    /// `CancelJob`.
    pub(crate) fn cancel_job(&self, name: &str) -> NodeResult<()> {
        let jobs = self.jobs.lock();
        let Some(job) = jobs.running.get(name) else {
            let ended = jobs.ended.iter().any(|s| s.name == name);
            return Err(NodeError::client(
                ErrorCode::JobNotFound,
                if ended {
                    format!("job {name:?} has ended already")
                } else {
                    format!("no job {name:?} on this node")
                },
            ));
        };
        job.stop();
        Ok(())
    }

    /// At start, before the node serves: removes what jobs that were
    /// running left on disk here (their spill directories, under
    /// `DATA_DIR/jobs` or `--spill-dir`) and returns the rest they left
    /// (staging ranges, runs and hashes in Redis) for
    /// [`Node::clean_up_jobs`].
    pub fn job_leftovers(&self) -> JobLeftovers {
        let dir = jobs_dir(self);
        let mut markers = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else { return JobLeftovers(markers) };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "job") {
                let marker: Option<Marker> =
                    std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(mut m) = marker {
                    if let Some(d) = m.spill_dir.take() {
                        if let Err(e) = std::fs::remove_dir_all(&d) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                tracing::warn!(dir = %d.display(), error = %e,
                                    "removing a stopped job's runs failed");
                            }
                        }
                    }
                    markers.push(m);
                }
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed.or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }) {
                tracing::warn!(path = %path.display(), error = %e, "removing a job leftover failed");
            }
        }
        JobLeftovers(markers)
    }

    /// Once the node serves (its own Redis endpoint may be a job's
    /// output): removes the staging ranges, Redis runs and staging hashes
    /// of jobs that were running when it stopped. What cannot be removed
    /// now (a Redis server that does not answer) is recorded again and
    /// tried at the next start.
    pub async fn clean_up_jobs(self: &Arc<Self>, leftovers: JobLeftovers) {
        for mut m in leftovers.0 {
            if let Some(staging) = m.staging.take() {
                self.drop_staging(&staging).await;
            }
            if let Some((url, tasks, owner)) = m.intermediate.take() {
                if !flush_runs(&url, tasks, &owner).await {
                    m.intermediate = Some((url, tasks, owner));
                }
            }
            if let Some((url, key)) = m.redis_staging.take() {
                let deleted = match Target::parse(&url) {
                    Ok(t) => match t.connect().await {
                        Ok(mut con) => {
                            redis::cmd("DEL").arg(&key).query_async::<()>(&mut con).await.is_ok()
                        }
                        Err(_) => false,
                    },
                    Err(_) => true,
                };
                if !deleted {
                    m.redis_staging = Some((url, key));
                }
            }
            if m.intermediate.is_some() || m.redis_staging.is_some() {
                let name = format!("leftover-{:016x}", rand::random::<u64>());
                match write_marker(self, &name, &m) {
                    Ok(()) => tracing::warn!(
                        "a stopped job left runs or a staging hash in a Redis server that does \
                         not answer; removing them at the next start"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "recording a stopped job's leftovers failed")
                    }
                }
            } else {
                tracing::info!("removed what a stopped job left");
            }
        }
    }

    async fn drop_staging(self: &Arc<Self>, staging: &str) {
        match self
            .execute(Command::DropRange { name: staging.to_owned() }, &Session::default())
            .await
        {
            Ok(_)
            | Err(NodeError::Client { code: ErrorCode::RangeNotFound, .. })
            | Err(NodeError::ShuttingDown) => {}
            Err(e) => {
                tracing::warn!(range = staging, error = %e, "dropping a staging range failed")
            }
        }
    }

    async fn job_input(
        self: &Arc<Self>,
        input: &JobInput,
        tasks: u32,
        session: &Session,
    ) -> NodeResult<Input> {
        Ok(match input {
            JobInput::Range(name) => {
                if crate::replicated::is_redis_database(name) {
                    return Err(NodeError::bad_request(format!(
                        "range {name} holds a Redis database: read it as Redis keys with \
                         --input redis://<this node's Redis address>/N"
                    )));
                }
                let info = match self
                    .execute(Command::DescribeRange { name: name.clone() }, session)
                    .await?
                {
                    Reply::Range(info) => info,
                    other => {
                        return Err(NodeError::Internal(format!(
                            "DescribeRange answered {other:?}"
                        )))
                    }
                };
                Input::Range {
                    name: name.clone(),
                    spans: self.spans(name, &info.chunks, tasks).await,
                }
            }
            JobInput::Redis { url, pattern } => {
                Input::Redis { target: reachable(url).await?, pattern: pattern.clone() }
            }
        })
    }

    /// The key spans map tasks take one at a time: each chunk's, the
    /// larger ones cut at keys of equal rank (O(log n) each, as this node
    /// has applied them) into about four spans per task in all, so a range
    /// of few chunks still keeps every task busy. A chunk this node cannot
    /// rank stays whole.
    async fn spans(&self, range: &str, chunks: &[ChunkInfo], tasks: u32) -> Vec<Span> {
        let total: u64 = chunks.iter().map(|c| c.records).sum::<u64>().max(1);
        let want = u64::from(tasks) * 4;
        let mut spans = Vec::new();
        for c in chunks {
            let pieces =
                (c.records * want).div_ceil(total).min(c.records / SPAN_RECORDS_MIN).max(1);
            let mut start = Some(c.start.clone());
            for j in 1..pieces {
                let at = c.records * j / pieces;
                let end = c.end.as_ref().map(|e| &e[..]);
                match crate::scan::select_applied(self, range, &c.start, end, at).await {
                    Ok(Some(key)) if start.as_ref().is_some_and(|s| s[..] < key[..]) => {
                        let key = Bytes::from(key);
                        spans.push((start.replace(key.clone()), Some(key)));
                    }
                    _ => break,
                }
            }
            spans.push((start, c.end.clone()));
        }
        spans
    }

    async fn job_output(
        self: &Arc<Self>,
        output: &JobOutput,
        job: &str,
        replace: bool,
        session: &Session,
    ) -> NodeResult<Output> {
        Ok(match output {
            JobOutput::Range(name) => {
                crate::node::validate_range_name(name)?;
                if crate::replicated::is_redis_database(name) {
                    return Err(NodeError::bad_request(format!(
                        "range {name} holds a Redis database; write to redis://... instead"
                    )));
                }
                if name.starts_with("job.") && name.ends_with(".staging") {
                    return Err(NodeError::bad_request(format!(
                        "range {name}: names job.NAME.staging are jobs' staging ranges; choose \
                         another output"
                    )));
                }
                let staging = staging_range(job);
                if self.router_read().range(&staging).is_some() {
                    return Err(NodeError::bad_request(format!(
                        "range {staging} exists: it is job {job:?}'s staging range; drop it \
                         or choose another job name"
                    )));
                }
                let existing = self.router_read().range(name).map(|r| (r.meta.id, r.meta.options));
                let options = match existing {
                    Some((id, options)) => {
                        if crate::replicated::is_replicated(id) {
                            return Err(NodeError::bad_request(format!(
                                "range {name} is replicated across the cluster; a job's output \
                                 range must be an ordinary range of this node (or write to Redis)"
                            )));
                        }
                        if let Some(view) = self.range_in_views(id) {
                            return Err(NodeError::bad_request(format!(
                                "view {view:?} reads or writes range {name}; a job cannot \
                                 replace it (drop the view, or choose another output)"
                            )));
                        }
                        if !replace {
                            let info = self.describe_range(name).await?;
                            let records: u64 = info.chunks.iter().map(|c| c.records).sum();
                            if records > 0 {
                                return Err(NodeError::bad_request(format!(
                                    "range {name} exists and holds {records} records: pass \
                                     --replace to replace it whole with the job's output"
                                )));
                            }
                        }
                        options
                    }
                    None => {
                        if self
                            .execute(Command::DescribeRange { name: name.clone() }, session)
                            .await
                            .is_ok()
                        {
                            return Err(NodeError::bad_request(format!(
                                "range {name} is replicated across the cluster; a job's output \
                                 range must be an ordinary range of this node (or write to Redis)"
                            )));
                        }
                        RangeOptions::default()
                    }
                };
                Output::Range { name: name.clone(), staging, options }
            }
            JobOutput::Redis { url, hash, prefix } => Output::Redis {
                target: {
                    let target = reachable(url).await?;
                    if let (Some(h), false) = (hash, replace) {
                        let mut con = target
                            .connect()
                            .await
                            .map_err(|e| NodeError::bad_request(e.to_string()))?;
                        let key = prefixed(prefix, h);
                        let exists: i64 = redis::cmd("EXISTS")
                            .arg(&key)
                            .query_async(&mut con)
                            .await
                            .map_err(|e| NodeError::bad_request(e.to_string()))?;
                        if exists > 0 {
                            return Err(NodeError::bad_request(format!(
                                "the output hash {} exists in {}: pass --replace to replace it \
                                 whole with the job's output",
                                String::from_utf8_lossy(&key),
                                target.display
                            )));
                        }
                    }
                    target
                },
                url: url.clone(),
                hash: hash.as_ref().map(|h| h.to_vec()),
                // Unique: jobs writing one hash at once each write their
                // own and the last rename wins, whole.
                staging: hash.as_ref().map(|h| {
                    let mut s = prefixed(prefix, h);
                    s.extend_from_slice(
                        format!(":monotable-job-staging:{job}:{:016x}", rand::random::<u64>())
                            .as_bytes(),
                    );
                    s
                }),
                prefix: prefix.to_vec(),
            },
        })
    }

    /// Runs a checked job to its end.
    async fn drive(
        self: &Arc<Self>,
        job: &Arc<Job>,
        input: Input,
        output: Output,
        spill: Spill,
        session: Session,
    ) -> Result<(), String> {
        let held = match &spill {
            Spill::Redis { url, owner } => {
                let job = job.clone();
                Some(hold_intermediate(url.clone(), owner.clone(), move |e| job.fail(&e)))
            }
            Spill::Disk { .. } => None,
        };
        let result = match job.reduce_fn.clone() {
            ReducerFunction::Builtin(b) => {
                self.drive_with(job, &input, &output, &spill, &session, move |_| Ok(b)).await
            }
            ReducerFunction::Lua(source) => {
                self.drive_with(job, &input, &output, &spill, &session, move |env| {
                    LuaReducer::new(&source, env).map(LuaJobReducer).map_err(|e| e.to_string())
                })
                .await
            }
        };
        match &spill {
            Spill::Disk { dir } => {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dir.display(), error = %e, "removing a job's runs failed");
                    }
                }
            }
            Spill::Redis { url, owner } => {
                if let Some(h) = held {
                    h.abort();
                }
                release_intermediate(url, owner).await;
            }
        }
        if result.is_err() {
            match &output {
                Output::Range { staging, .. } => self.drop_staging(staging).await,
                Output::Redis { target, staging: Some(staging), .. } => {
                    if let Ok(mut con) = target.connect().await {
                        let _ = redis::cmd("DEL").arg(staging).query_async::<()>(&mut con).await;
                    }
                }
                Output::Redis { .. } => {}
            }
        }
        drop(session);
        result
    }

    async fn drive_with<C, F>(
        self: &Arc<Self>,
        job: &Arc<Job>,
        input: &Input,
        output: &Output,
        spill: &Spill,
        session: &Session,
        make: F,
    ) -> Result<(), String>
    where
        C: JobReduce + 'static,
        C::P: 'static,
        F: Fn(&LuaEnv) -> Result<C, String> + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        let tasks = job.tasks as usize;
        let budget = (job.spec.memory_budget_bytes / job.tasks as u64) as usize;
        // Per task: its map function, reduce function and table.
        let mut workers = Vec::with_capacity(tasks);
        for task in 0..tasks {
            let (map, env, make) = (job.map_fn.clone(), job.env.clone(), make.clone());
            let store = match spill {
                Spill::Disk { dir } => {
                    let dir = dir.join(format!("task-{task}"));
                    tokio::task::spawn_blocking(move || {
                        RunStore::disk(dir.clone()).map_err(|e| format!("{}: {e}", dir.display()))
                    })
                }
                Spill::Redis { url, .. } => {
                    let url = url.clone();
                    tokio::task::spawn_blocking(move || {
                        RunStore::redis(&url, task as i64).map_err(|e| e.to_string())
                    })
                }
            }
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("spilled runs: {e}"))?;
            let (mapper, reducer) = tokio::task::spawn_blocking(move || {
                let mapper = map.compile(&env)?;
                Ok::<_, String>((mapper, make(&env)?))
            })
            .await
            .map_err(|e| e.to_string())??;
            let reducer = Arc::new(reducer);
            let table = ExtendedHashtable::new(reducer.clone(), budget, store);
            workers.push(Worker { task, mapper: Arc::new(mapper), reducer, table });
        }
        // Map.
        let source = match input {
            Input::Range { name, spans } => {
                let seq = match self.execute(Command::CreateSnapshot, session).await {
                    Ok(Reply::Snapshot(seq)) => seq,
                    Ok(other) => return Err(format!("CreateSnapshot answered {other:?}")),
                    Err(e) => return Err(format!("pinning a snapshot of {name}: {e}")),
                };
                if let Ok(Reply::Range(info)) =
                    self.execute(Command::DescribeRange { name: name.clone() }, session).await
                {
                    let total: u64 = info.chunks.iter().map(|c| c.records).sum();
                    job.records_total.store(total, Ordering::Relaxed);
                }
                Source::Range {
                    name: name.clone(),
                    seq,
                    spans: Mutex::new(spans.iter().cloned().collect()),
                }
            }
            Input::Redis { target, pattern } => {
                let mut con = target.connect().await.map_err(|e| e.to_string())?;
                if let Ok(n) = redis::cmd("DBSIZE").query_async::<u64>(&mut con).await {
                    job.records_total.store(n, Ordering::Relaxed);
                }
                let (tx, rx) = tokio::sync::mpsc::channel(tasks * 2);
                let (job2, pattern) = (job.clone(), pattern.clone());
                tokio::spawn(async move {
                    let mut cursor = 0u64;
                    loop {
                        if job2.check().is_err() {
                            return;
                        }
                        let page = until_stopped(&job2, async {
                            let (next, keys) =
                                scan_page(&mut con, cursor, pattern.as_deref(), REDIS_SCAN_COUNT)
                                    .await?;
                            let read = read_items(&mut con, &keys).await?;
                            Ok::<_, crate::bridge::BridgeError>((next, read))
                        })
                        .await;
                        let (next, read) = match page {
                            Ok(Ok(p)) => p,
                            Err(_) => return,
                            Ok(Err(e)) => {
                                let _ = tx.send(Err(e.to_string())).await;
                                return;
                            }
                        };
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64);
                        let records: Vec<(Vec<u8>, Vec<u8>)> = read
                            .items
                            .iter()
                            .filter(|i| i.expire_at_ms.is_none_or(|at| at > now))
                            .map(|i| {
                                (super::input::record_key(&i.key), super::input::record_value(i))
                            })
                            .collect();
                        if tx.send(Ok(records)).await.is_err() || next == 0 {
                            return;
                        }
                        cursor = next;
                    }
                });
                Source::Redis { pages: tokio::sync::Mutex::new(rx) }
            }
        };
        let source = Arc::new(source);
        let mut running = Vec::with_capacity(tasks);
        for w in workers {
            let (node, job, source) = (self.clone(), job.clone(), source.clone());
            running.push(actix_rt::spawn(async move {
                let r = w.run(&node, &job, &source).await;
                if let Err(e) = &r {
                    job.fail(e);
                }
                r
            }));
        }
        let mut tables = Vec::with_capacity(tasks);
        let mut failed = None;
        for r in running {
            match r.await.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(w) => tables.push(w),
                Err(e) => {
                    job.fail(&e);
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        job.check()?;
        // Merge and write.
        job.set_phase("merge");
        let reducer = tables.first().map(|w| w.reducer.clone());
        let Some(reducer) = reducer else { return Err("a job without tasks".into()) };
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<(Vec<u8>, Vec<u8>)>>(OUTPUT_IN_FLIGHT);
        let job2 = job.clone();
        let merging = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut parts = Vec::with_capacity(tables.len());
            for w in tables {
                let task = w.task;
                let merged = w.table.finish().map_err(|e| e.to_string())?;
                job2.report_table(task, merged.stats());
                parts.push(merged);
            }
            let mut all = Merged::merge_all(reducer.clone(), parts).map_err(|e| e.to_string())?;
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some((key, p)) = all.next_entry().map_err(|e| e.to_string())? {
                job2.check()?;
                let value = match reducer.output(&p) {
                    Ok(v) => v,
                    Err(e) => {
                        job2.reduce_error(&key, e);
                        continue;
                    }
                };
                let op = WriteOp::Put { key: Bytes::from(key), value: Bytes::from(value) };
                if let Err(e) = op.check_size() {
                    let WriteOp::Put { key, .. } = &op else { unreachable!() };
                    job2.reduce_error(key, format!("row not written: {e}"));
                    continue;
                }
                let WriteOp::Put { key, value } = op else { unreachable!() };
                bytes += key.len() + value.len();
                batch.push((key.into_vec(), value.into_vec()));
                if batch.len() >= BATCH_OPS_MAX || bytes >= OUTPUT_BATCH_BYTES {
                    bytes = 0;
                    if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                        return Ok(());
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            Ok(())
        });
        let written = self.write_output(job, output, rx).await;
        let merged = merging.await.map_err(|e| e.to_string())?;
        merged?;
        written?;
        job.check()?;
        job.set_phase("commit");
        self.commit_output(output).await
    }

    async fn write_output(
        self: &Arc<Self>,
        job: &Arc<Job>,
        output: &Output,
        mut rx: tokio::sync::mpsc::Receiver<Vec<(Vec<u8>, Vec<u8>)>>,
    ) -> Result<(), String> {
        match output {
            Output::Range { staging, options, .. } => {
                // Rows arrive in key order: the staging range is built
                // straight into its chunks, registered whole at the end.
                let load = SortedLoad::begin(self, staging, *options)
                    .map_err(|e| format!("creating the staging range {staging}: {e}"))?;
                let mut load = Some(load);
                while let Some(batch) = rx.recv().await {
                    let n = batch.len() as u64;
                    let mut l = load.take().expect("the load is back after each batch");
                    let back = tokio::task::spawn_blocking(move || l.push(batch).map(|()| l))
                        .await
                        .map_err(|e| e.to_string())?;
                    load = Some(back.map_err(|e| format!("writing the output: {e}"))?);
                    job.rows_out.fetch_add(n, Ordering::Relaxed);
                }
                let mut l = load.take().expect("the load is back after each batch");
                let l = tokio::task::spawn_blocking(move || l.sync().map(|()| l))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("writing the output: {e}"))?;
                l.register().map_err(|e| format!("creating the staging range {staging}: {e}"))
            }
            Output::Redis { target, staging, prefix, .. } => {
                let mut con = target.connect().await.map_err(|e| e.to_string())?;
                let mut renderings = Renderings::default();
                while let Some(batch) = rx.recv().await {
                    for part in batch.chunks(REDIS_PIPELINE_KEYS) {
                        let mut pipe = redis::pipe();
                        let mut written = 0;
                        for (k, v) in part {
                            let Some(text) = renderings.render(k) else {
                                job.reduce_error(
                                    k,
                                    "renders as the same Redis key as an earlier row (a string \
                                     key is written unquoted); not written"
                                        .into(),
                                );
                                continue;
                            };
                            let v = render_value(v);
                            match staging {
                                Some(s) => pipe.cmd("HSET").arg(s).arg(text).arg(v).ignore(),
                                None => {
                                    pipe.cmd("SET").arg(prefixed(prefix, &text)).arg(v).ignore()
                                }
                            };
                            written += 1;
                        }
                        until_stopped(job, pipe.query_async::<()>(&mut con))
                            .await?
                            .map_err(|e| format!("writing to Redis: {}", short_redis_error(&e)))?;
                        job.rows_out.fetch_add(written, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        }
    }

    async fn commit_output(self: &Arc<Self>, output: &Output) -> Result<(), String> {
        match output {
            Output::Range { name, staging, .. } => {
                self.swap_range_names(staging, name)
                    .await
                    .map_err(|e| format!("putting the output in place of {name}: {e}"))?;
                // The staging name now holds the former output, if any.
                self.drop_staging(staging).await;
                Ok(())
            }
            Output::Redis { target, hash: Some(h), staging: Some(staging), prefix, .. } => {
                let mut con = target.connect().await.map_err(|e| e.to_string())?;
                let dest = prefixed(prefix, h);
                let exists: bool = redis::cmd("EXISTS")
                    .arg(staging)
                    .query_async::<i64>(&mut con)
                    .await
                    .map_err(|e| e.to_string())?
                    > 0;
                let cmd = if exists {
                    let mut c = redis::cmd("RENAME");
                    c.arg(staging).arg(&dest);
                    c
                } else {
                    let mut c = redis::cmd("DEL");
                    c.arg(&dest);
                    c
                };
                cmd.query_async::<()>(&mut con)
                    .await
                    .map_err(|e| format!("renaming the output hash: {e}"))
            }
            Output::Redis { .. } => Ok(()),
        }
    }
}

/// A Redis error in a few words: a pipeline that failed reports every
/// command that did (hundreds for one full server).
fn short_redis_error(e: &redis::RedisError) -> String {
    let text = e.to_string();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}... ({} bytes of errors)", &text[..at], text.len()),
        None => text,
    }
}

fn write_marker(node: &Node, name: &str, marker: &Marker) -> std::io::Result<()> {
    std::fs::create_dir_all(jobs_dir(node))?;
    let path = marker_path(node, name);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(marker).expect("a marker encodes"))?;
    std::fs::rename(&tmp, &path)
}

/// The Redis server at `url`, checked to answer (`BadRequest` otherwise).
async fn reachable(url: &str) -> NodeResult<Target> {
    let target = Target::parse(url).map_err(|e| NodeError::bad_request(e.to_string()))?;
    crate::bridge::redis_io::reachable(&target).await?;
    Ok(target)
}

/// A page of records from a Redis input, or why reading stopped.
type Page = Result<Vec<(Vec<u8>, Vec<u8>)>, String>;

/// Where map tasks take their records.
enum Source {
    Range { name: String, seq: u64, spans: Mutex<VecDeque<Span>> },
    Redis { pages: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Page>> },
}

struct Worker<C: JobReduce> {
    task: usize,
    mapper: Arc<Mapper>,
    reducer: Arc<C>,
    table: ExtendedHashtable<C>,
}

impl<C: JobReduce + 'static> Worker<C>
where
    C::P: 'static,
{
    async fn run(
        mut self,
        node: &Arc<Node>,
        job: &Arc<Job>,
        source: &Source,
    ) -> Result<Self, String> {
        match source {
            Source::Range { name, seq, spans } => loop {
                let span = spans.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((mut start, end)) = span else { return Ok(self) };
                loop {
                    job.check()?;
                    let req = ScanRequest {
                        range: name.clone(),
                        start: start.clone(),
                        end: end.clone(),
                        limit: SCAN_PAGE_RECORDS,
                        snapshot: Some(*seq),
                        ..ScanRequest::default()
                    };
                    let reply = match node.execute(Command::Scan(req), &Session::default()).await {
                        Ok(Reply::Scan(r)) => r,
                        Ok(other) => return Err(format!("Scan answered {other:?}")),
                        Err(e) => return Err(format!("reading {name}: {e}")),
                    };
                    let records = reply
                        .records
                        .into_iter()
                        .map(|r| (r.key.into_vec(), r.value.into_vec()))
                        .collect();
                    self = self.map_page(job, records).await?;
                    match reply.resume {
                        Some(k) => start = Some(k),
                        None => break,
                    }
                }
            },
            Source::Redis { pages } => loop {
                job.check()?;
                let page = pages.lock().await.recv().await;
                match page {
                    None => return Ok(self),
                    Some(Err(e)) => return Err(format!("reading the Redis input: {e}")),
                    Some(Ok(records)) => self = self.map_page(job, records).await?,
                }
            },
        }
    }

    /// Maps a page of records on a blocking thread.
    async fn map_page(
        self,
        job: &Arc<Job>,
        records: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, String> {
        let job = job.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = self;
            w.map_records(&job, &records)?;
            Ok(w)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn map_records(&mut self, job: &Job, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
        let mapper = self.mapper.clone();
        if let (Mapper::Field(f), false) = (&*mapper, self.reducer.reads_row_key()) {
            return self.map_fields(job, f, records);
        }
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let mapped = self.mapper.map_many(&refs, None).map_err(|_| CANCELLED.to_owned())?;
        for ((key, _), result) in records.iter().zip(mapped) {
            let rows = match result {
                Ok(rows) => rows,
                Err(e) => {
                    job.map_error(key, e);
                    continue;
                }
            };
            // A record's rows go in whole or not at all, as in views.
            let keys: Result<Vec<Vec<u8>>, String> = rows
                .iter()
                .map(|(row_key, _)| {
                    let k = output_key(row_key)?;
                    check_key_size(&k).map_err(|e| format!("emitted key: {e}"))?;
                    Ok(k)
                })
                .collect();
            let keys = match keys {
                Ok(k) => k,
                Err(e) => {
                    job.map_error(key, e);
                    continue;
                }
            };
            job.rows_emitted.fetch_add(rows.len() as u64, Ordering::Relaxed);
            for ((row_key, value), out_key) in rows.iter().zip(keys) {
                self.reduce_row(job, row_key, &out_key, value)?;
            }
        }
        self.page_done(job, records.len());
        Ok(())
    }

    /// Reduces one emitted row into the table under `out_key`; a row the
    /// reducer refuses is left out and counted.
    fn reduce_row(
        &mut self,
        job: &Job,
        row_key: &[u8],
        out_key: &[u8],
        value: &[u8],
    ) -> Result<(), String> {
        match self.reducer.leaf(row_key, value) {
            Ok(p) => self.table.insert(out_key, p).map_err(|e: RunError| e.to_string()),
            Err(e) => {
                job.reduce_error(out_key, e);
                Ok(())
            }
        }
    }

    /// Counts a mapped page of `records` and reports the table.
    fn page_done(&self, job: &Job, records: usize) {
        job.records_in.fetch_add(records as u64, Ordering::Relaxed);
        job.report_table(self.task, self.table.stats());
    }

    /// [`Worker::map_records`] for a field mapper and a reducer that does
    /// not read row keys: the output key is taken from the field directly
    /// (the same key and the same errors, without building a row key and
    /// taking it apart).
    fn map_fields(
        &mut self,
        job: &Job,
        f: &FieldMapper,
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), String> {
        let mut emitted = 0;
        for (key, value) in records {
            let (out_key, row_value) = match f.emit_key(value) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    job.map_error(key, e.to_string());
                    continue;
                }
            };
            if let Err(e) = check_key_size(&out_key) {
                job.map_error(key, format!("emitted key: {e}"));
                continue;
            }
            emitted += 1;
            self.reduce_row(job, &[], &out_key, &row_value)?;
        }
        job.rows_emitted.fetch_add(emitted, Ordering::Relaxed);
        self.page_done(job, records.len());
        Ok(())
    }
}
