//! A Redis server as a job's intermediate store (seed 000): the lock one
//! job holds on it, the checks that using it loses nothing, and the
//! removal of the runs a stopped job left there.

use crate::bridge::redis_io::{scan_page, Target};
use crate::error::{NodeError, NodeResult};
use crate::shuffle::runs::{RunError, RunStore};

/// The key in database 0 of an intermediate Redis server that one job
/// holds while it uses the server (its value names the job; it expires
/// [`INTERMEDIATE_LOCK_SECS`] after the job's last renewal).
const INTERMEDIATE_LOCK: &str = "monotable-job-lock";
const INTERMEDIATE_LOCK_SECS: u64 = 30;

/// Renews the lock if `owner` still holds it: 1, else 0.
const RENEW_LOCK: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
    return redis.call('expire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lock if `owner` holds it.
const RELEASE_LOCK: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
    return redis.call('del', KEYS[1]) else return 0 end";

/// Checks that the intermediate Redis server has a database per task,
/// that no other job uses it, and that removing runs from databases
/// `0..tasks` loses nothing: none is the job's input or output, and each
/// holds nothing but runs (`run:N` lists a stopped job left). Takes the
/// server's lock for `owner`.
pub(super) async fn check_intermediate(
    url: &str,
    tasks: u32,
    others: &[(&str, &Target)],
    owner: &str,
) -> NodeResult<()> {
    let target = Target::parse(url).map_err(|e| NodeError::bad_request(e.to_string()))?;
    if target.db != 0 {
        return Err(NodeError::bad_request(format!(
            "--intermediate {}: name the server only (redis://HOST:PORT); the job uses its \
             databases 0 to {}",
            target.display,
            tasks.saturating_sub(1)
        )));
    }
    let mut con = target.connect().await.map_err(|e| NodeError::bad_request(e.to_string()))?;
    let reply: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("databases").query_async(&mut con).await.map_err(
            |e| NodeError::bad_request(format!("{}: CONFIG GET databases: {e}", target.display)),
        )?;
    let databases: u64 = reply.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    if databases < u64::from(tasks) {
        return Err(NodeError::bad_request(format!(
            "the intermediate Redis server {} has {databases} databases; this job needs {tasks}, \
             one per task (start it with --databases {tasks}, or run fewer --tasks)",
            target.display
        )));
    }
    for &(what, other) in others {
        if other.db < i64::from(tasks) && same_server(&target, other).await? {
            return Err(NodeError::bad_request(format!(
                "the job's {what} {} is database {} of the intermediate Redis server, whose \
                 databases 0 to {} the job uses: use another Redis server as the intermediate",
                other.display,
                other.db,
                tasks - 1
            )));
        }
    }
    let taken: Option<String> = redis::cmd("SET")
        .arg(INTERMEDIATE_LOCK)
        .arg(owner)
        .arg("NX")
        .arg("EX")
        .arg(INTERMEDIATE_LOCK_SECS)
        .query_async(&mut con)
        .await
        .map_err(|e| NodeError::bad_request(format!("{}: {e}", target.display)))?;
    if taken.is_none() {
        let holder: Option<String> =
            redis::cmd("GET").arg(INTERMEDIATE_LOCK).query_async(&mut con).await.unwrap_or(None);
        return Err(NodeError::bad_request(format!(
            "the intermediate Redis server {} is in use by job {} (key {INTERMEDIATE_LOCK} in \
             database 0): give each running job a server of its own",
            target.display,
            holder.as_deref().unwrap_or("?")
        )));
    }
    let holds_data = async {
        for db in 0..i64::from(tasks) {
            redis::cmd("SELECT").arg(db).query_async::<()>(&mut con).await.map_err(|e| e.to_string())?;
            let mut cursor = 0u64;
            loop {
                let (next, keys) =
                    scan_page(&mut con, cursor, None, 1000).await.map_err(|e| e.to_string())?;
                let data = keys.iter().find(|k| {
                    let lock = db == 0 && &k[..] == INTERMEDIATE_LOCK.as_bytes();
                    !(k.starts_with(b"run:") || lock)
                });
                if let Some(k) = data {
                    return Err(format!(
                        "database {db} of the intermediate Redis server {} holds data (key {:?}); \
                         the job would mix its runs with it: give the job a Redis server of its own",
                        target.display,
                        String::from_utf8_lossy(k)
                    ));
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = holds_data {
        release_intermediate(url, owner).await;
        return Err(NodeError::bad_request(e));
    }
    Ok(())
}

/// Releases the intermediate server's lock if `owner` holds it.
pub(super) async fn release_intermediate(url: &str, owner: &str) {
    let Ok(target) = Target::parse(url) else { return };
    if let Ok(mut con) = target.connect().await {
        let _ = redis::cmd("EVAL")
            .arg(RELEASE_LOCK)
            .arg(1)
            .arg(INTERMEDIATE_LOCK)
            .arg(owner)
            .query_async::<i64>(&mut con)
            .await;
    }
}

/// Renews the intermediate server's lock every third of its time to live
/// until the job ends; a lock lost (expired under a stall, deleted by a
/// FLUSHALL, taken by another job) fails the job: its runs there can no
/// longer be trusted.
pub(super) fn hold_intermediate(
    url: String,
    owner: String,
    lost: impl FnOnce(String) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(target) = Target::parse(&url) else { return };
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(INTERMEDIATE_LOCK_SECS / 3)).await;
            let renewed = async {
                let mut con = target.connect().await.ok()?;
                redis::cmd("EVAL")
                    .arg(RENEW_LOCK)
                    .arg(1)
                    .arg(INTERMEDIATE_LOCK)
                    .arg(&owner)
                    .arg(INTERMEDIATE_LOCK_SECS)
                    .query_async::<i64>(&mut con)
                    .await
                    .ok()
            }
            .await;
            if renewed == Some(0) {
                lost(format!(
                    "the intermediate Redis server {} lost this job's lock (a FLUSHALL, or another \
                     job): its runs there cannot be trusted",
                    target.display
                ));
                return;
            }
        }
    })
}

/// Removes the runs a stopped job left in its intermediate Redis server,
/// unless another job holds the server now, and its lock; whether that is
/// settled (`false`: the server did not answer).
pub(super) async fn flush_runs(url: &str, tasks: u32, owner: &str) -> bool {
    let Ok(target) = Target::parse(url) else { return true };
    let Ok(mut con) = target.connect().await else { return false };
    let holder: Option<String> =
        redis::cmd("GET").arg(INTERMEDIATE_LOCK).query_async(&mut con).await.unwrap_or(None);
    if holder.as_deref().is_some_and(|h| h != owner) {
        return true;
    }
    let at = url.to_owned();
    let purged = tokio::task::spawn_blocking(move || -> Result<(), RunError> {
        for db in 0..i64::from(tasks) {
            RunStore::redis(&at, db)?;
        }
        Ok(())
    })
    .await;
    if !matches!(purged, Ok(Ok(()))) {
        return false;
    }
    release_intermediate(url, owner).await;
    true
}

/// Whether two targets are one Redis server (the same `run_id`, however
/// they are addressed).
pub(super) async fn same_server(a: &Target, b: &Target) -> NodeResult<bool> {
    use crate::bridge::redis_io::run_id;
    let mut ids = Vec::with_capacity(2);
    for t in [a, b] {
        let mut con = t.connect().await.map_err(|e| NodeError::bad_request(e.to_string()))?;
        ids.push(run_id(&mut con).await.map_err(|e| NodeError::bad_request(e.to_string()))?);
    }
    Ok(ids[0] == ids[1] && ids[0] != "none")
}
