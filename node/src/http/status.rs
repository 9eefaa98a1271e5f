//! The status page (`GET /`): one server-rendered HTML page, no script,
//! that shows the cluster's nodes, this node's view of the ranges and
//! their chunks (sizes, replicas, leaders, health), the views (watermark,
//! lag, errors, backfill progress, a picture of each reduce tree's
//! levels), the sinks and the jobs.
//!
//! Everything is read the way the command line reads it (`cluster
//! status`, `range list`, `views`, `job list`), once per request. A range
//! shows at most [`CHUNKS_SHOWN_MAX`] chunks and a tree level at most
//! [`PARTS_DRAWN_MAX`] boxes, so the page stays small however large the
//! node. `?refresh=N` (1 to 3600) reloads it every N seconds.

use std::fmt::Write as _;
use std::sync::Arc;

use monotable_proto::{Command, JobStatus, RangeInfo, Reply, ViewStatus};

use crate::metrics::human_bytes;
use crate::node::{Node, Session};

/// Chunks listed per range.
pub const CHUNKS_SHOWN_MAX: usize = 100;

/// Ranges of at most this many chunks show them unfolded.
const CHUNKS_OPEN_MAX: usize = 8;

/// Boxes drawn per level of a reduce tree.
pub const PARTS_DRAWN_MAX: u64 = 48;

/// Characters of an error shown.
const ERROR_SHOWN_MAX_CHARS: usize = 200;

/// `text` cut to `max` characters, with an ellipsis if it was longer.
fn cut(text: &str, max: usize) -> String {
    let kept: String = text.chars().take(max).collect();
    if kept.len() < text.len() {
        format!("{kept}…")
    } else {
        kept
    }
}

/// Characters of a key shown (its JSON form, cut with an ellipsis).
const KEY_SHOWN_MAX_CHARS: usize = 60;

/// `text` with the characters HTML gives a meaning to escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn key(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "<span class=\"muted\">start</span>".to_owned();
    }
    escape(&cut(&crate::json::key_to_json(bytes).to_string(), KEY_SHOWN_MAX_CHARS))
}

/// `n` and `what`, with an `s` unless `n` is 1.
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}details{margin:.5em 0}\
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.2em .5em;\
text-align:left;font-size:.9em}th{background:#f2f2f2}td.n{text-align:right}\
.bad{color:#b00;font-weight:bold}.ok{color:#070}.muted{color:#777}\
.tree{display:inline-block;margin:.3em 1em .3em 0;padding:.4em;border:1px solid #ddd}\
.level{display:flex;justify-content:center;align-items:center;gap:2px;margin:2px 0}\
.part{width:10px;height:10px;background:#4a7ebb}.part.mem{background:#2d9d5a}\
.label{font-size:.8em;color:#555;margin-left:.5em}";

/// The page, as of now.
pub async fn page(node: &Arc<Node>, refresh: Option<u32>) -> String {
    let session = Session::new(node.clone());
    let info = node.node_info();
    let cluster = match node.execute(Command::ClusterStatus, &session).await {
        Ok(Reply::Cluster(c)) => Ok(c),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    let ranges = match node.execute(Command::ListRanges, &session).await {
        Ok(Reply::Ranges(r)) => Ok(r),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    // As `views` lists them: on a cluster, also those run by other nodes.
    let views = match node.execute(Command::ListViews, &session).await {
        Ok(Reply::Views(v)) => v,
        _ => node.view_statuses().await,
    };
    // With a password, what the page shows of the data itself (keys as
    // chunk bounds, the text of function errors) is withheld: the page
    // asks for none.
    let hide = node.auth.is_required();
    let jobs = node.job_statuses();

    let mut h = String::new();
    h.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    if let Some(n) = refresh {
        let _ = write!(h, "<meta http-equiv=\"refresh\" content=\"{n}\">");
    }
    let _ = write!(
        h,
        "<title>Monotable node {}</title><style>{STYLE}</style></head><body>\
         <h1 id=\"node\">Monotable node {} <span class=\"muted\">version {}</span></h1>\
         <p>{} chunk replicas here, {} of them led here; {} Raft groups. \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/?refresh=5\">reload every 5 s</a></p>",
        info.id,
        info.id,
        escape(&info.server_version),
        info.chunk_replicas,
        info.chunk_leaders,
        info.replica_groups,
    );
    nodes_section(&mut h, &cluster);
    ranges_section(&mut h, &ranges, hide);
    views_section(&mut h, &views, hide);
    sinks_section(&mut h, &views, hide);
    jobs_section(&mut h, &jobs);
    h.push_str("</body></html>\n");
    h
}

fn nodes_section(h: &mut String, cluster: &Result<monotable_proto::ClusterStatus, String>) {
    h.push_str("<h2>Nodes</h2>");
    let c = match cluster {
        Ok(c) => c,
        Err(e) => {
            let _ = write!(h, "<p class=\"bad\">cluster status unavailable: {}</p>", escape(e));
            return;
        }
    };
    let leader = c.meta_leader.map_or("none".to_owned(), |l| l.to_string());
    let _ = write!(
        h,
        "<p>Meta range leader: node {leader}, term {}.</p><table id=\"nodes\"><tr><th>node</th>\
         <th>address</th><th>live</th><th>meta range</th><th>chunk replicas</th>\
         <th>leading</th><th>copies under way</th><th>draining</th></tr>",
        c.meta_term
    );
    for n in &c.nodes {
        let (replicas, leaders, copies) =
            n.info.as_ref().map_or(("?".into(), "?".into(), "?".into()), |i| {
                (
                    i.chunk_replicas.to_string(),
                    i.chunk_leaders.to_string(),
                    i.copies.len().to_string(),
                )
            });
        let live = if n.live {
            "<span class=\"ok\">live</span>"
        } else {
            "<span class=\"bad\">down</span>"
        };
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{live}</td><td>{}</td><td class=\"n\">{replicas}</td>\
             <td class=\"n\">{leaders}</td><td class=\"n\">{copies}</td><td>{}</td></tr>",
            n.id,
            escape(&n.addr),
            escape(&n.meta_role),
            if n.draining { "draining" } else { "" },
        );
    }
    h.push_str("</table>");
}

/// What the page shows in place of data when the node has a password.
const HIDDEN: &str = "<span class=\"muted\" title=\"the node has a password\">hidden</span>";

/// An error's text as the page shows it: cut, escaped, or hidden.
fn error_text(e: &str, hide: bool) -> String {
    if hide {
        HIDDEN.to_owned()
    } else {
        escape(&cut(e, ERROR_SHOWN_MAX_CHARS))
    }
}

fn ranges_section(h: &mut String, ranges: &Result<Vec<RangeInfo>, String>, hide: bool) {
    h.push_str("<h2>Ranges</h2>");
    let ranges = match ranges {
        Ok(r) => r,
        Err(e) => {
            let _ = write!(h, "<p class=\"bad\">ranges unavailable: {}</p>", escape(e));
            return;
        }
    };
    if ranges.is_empty() {
        h.push_str("<p class=\"muted\">No ranges yet.</p>");
        return;
    }
    h.push_str(
        "<table id=\"ranges\"><tr><th>range</th><th>chunks</th><th>records</th><th>live</th>\
         <th>log on disk</th><th>chunk size limit</th><th>health</th></tr>",
    );
    for r in ranges {
        let records: u64 = r.chunks.iter().map(|c| c.records).sum();
        let live: u64 = r.chunks.iter().map(|c| c.live_bytes).sum();
        let log: u64 = r.chunks.iter().map(|c| c.log_bytes).sum();
        let down = r.chunks.iter().filter(|c| c.unavailable.is_some()).count();
        let health = if down == 0 {
            "<span class=\"ok\">ok</span>".to_owned()
        } else {
            format!("<span class=\"bad\">{down} unavailable</span>")
        };
        let _ = write!(
            h,
            "<tr><td><a href=\"#range-{id}\">{name}</a></td><td class=\"n\">{}</td>\
             <td class=\"n\">{records}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{health}</td></tr>",
            r.chunks.len(),
            human_bytes(live),
            human_bytes(log),
            human_bytes(r.options.chunk_size_max_bytes),
            id = r.id,
            name = escape(&r.name),
        );
    }
    h.push_str("</table>");
    for r in ranges {
        // Short lists open, long ones folded (a click opens them).
        let open = if r.chunks.len() <= CHUNKS_OPEN_MAX { " open" } else { "" };
        let _ = write!(
            h,
            "<details id=\"range-{}\"{open}><summary><b>{}</b> <span class=\"muted\">(id {}): \
             {}</span></summary><table class=\"chunks\">\
             <tr><th>chunk</th><th>start</th><th>end</th><th>records</th><th>live</th>\
             <th>log</th><th>last seq</th><th>replicas</th><th>leader</th><th>health</th></tr>",
            r.id,
            escape(&r.name),
            r.id,
            plural(r.chunks.len() as u64, "chunk"),
        );
        for c in r.chunks.iter().take(CHUNKS_SHOWN_MAX) {
            let replicas = c.replicas.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            let leader = c.leader.map_or("—".to_owned(), |l| l.to_string());
            let health = match &c.unavailable {
                // A replicated chunk without a leader serves nothing.
                None if crate::replicated::is_replicated(r.id) && c.leader.is_none() => {
                    "<span class=\"bad\">no leader</span>".to_owned()
                }
                None => "<span class=\"ok\">ok</span>".to_owned(),
                Some(why) => format!("<span class=\"bad\">{}</span>", escape(why)),
            };
            let bound = |k: &[u8]| if hide && !k.is_empty() { HIDDEN.to_owned() } else { key(k) };
            let _ = write!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td>{replicas}</td><td>{leader}</td><td>{health}</td></tr>",
                c.id,
                bound(&c.start),
                c.end.as_ref().map_or("<span class=\"muted\">end</span>".to_owned(), |e| bound(e)),
                c.records,
                human_bytes(c.live_bytes),
                human_bytes(c.log_bytes),
                c.last_seq,
            );
        }
        h.push_str("</table>");
        if r.chunks.len() > CHUNKS_SHOWN_MAX {
            let _ = write!(
                h,
                "<p class=\"muted\">{} more chunks not shown (`monotable range describe`).</p>",
                r.chunks.len() - CHUNKS_SHOWN_MAX
            );
        }
        h.push_str("</details>");
    }
}

fn progress((done, total): (u64, u64)) -> String {
    if total == 0 {
        return "starting".to_owned();
    }
    let pct = done as f64 * 100.0 / total as f64;
    format!("<progress value=\"{done}\" max=\"{total}\"></progress> {pct:.0}% ({done} of {total})")
}

fn views_section(h: &mut String, views: &[ViewStatus], hide: bool) {
    h.push_str("<h2>Views</h2>");
    let views: Vec<&ViewStatus> = views.iter().filter(|v| v.kind != "sink").collect();
    if views.is_empty() {
        h.push_str("<p class=\"muted\">No mappers or reducers.</p>");
        return;
    }
    h.push_str(
        "<table id=\"views\"><tr><th>view</th><th>kind</th><th>reads</th><th>writes</th>\
         <th>function</th><th>watermark</th><th>lag (changes)</th><th>rows written</th>\
         <th>errors</th><th>backfill</th><th>last error</th></tr>",
    );
    for v in &views {
        let errors = match (&v.last_error, v.errors) {
            (_, 0) => "0".to_owned(),
            (Some(_), n) => format!("<span class=\"bad\">{n}</span>"),
            (None, n) => format!("<span class=\"bad\">{n}</span>"),
        };
        let lag = if v.pending_changes == 0 {
            "<span class=\"ok\">0</span>".to_owned()
        } else {
            v.pending_changes.to_string()
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{lag}</td><td class=\"n\">{}</td><td class=\"n\">{errors}</td><td>{}</td>\
             <td class=\"bad\">{}</td></tr>",
            escape(&v.name),
            escape(&v.kind),
            escape(&v.source),
            escape(&v.target),
            escape(&v.function),
            v.watermark,
            v.rows_written,
            v.backfill.map_or("done".to_owned(), progress),
            v.last_error.as_deref().map_or(String::new(), |e| error_text(e, hide)),
        );
    }
    h.push_str("</table>");
    for v in views {
        if let Some(tree) = &v.tree {
            tree_picture(h, &v.name, tree);
        }
    }
}

/// A reduce tree drawn level by level, the top first: a box per part (a
/// chunk of the range at the bottom, green when its tree is in memory).
fn tree_picture(h: &mut String, name: &str, tree: &monotable_proto::TreeStatus) {
    let _ = write!(
        h,
        "<div class=\"tree\" data-reducer=\"{n}\"><div><b>{n}</b>: reduce tree of {}</div>",
        plural(u64::from(tree.levels), "level"),
        n = escape(name)
    );
    for (level, &parts) in tree.parts.iter().enumerate().rev() {
        let _ = write!(h, "<div class=\"level\" data-level=\"{level}\" data-parts=\"{parts}\">");
        let in_memory = if level == 0 { tree.chunks_in_memory } else { parts };
        for i in 0..parts.min(PARTS_DRAWN_MAX) {
            h.push_str(if i < in_memory {
                "<span class=\"part mem\"></span>"
            } else {
                "<span class=\"part\"></span>"
            });
        }
        let more = parts.saturating_sub(PARTS_DRAWN_MAX);
        let more = if more > 0 { format!(" (+{more} not drawn)") } else { String::new() };
        let label = if level == 0 {
            format!("range: {}, {} in memory{more}", plural(parts, "chunk"), tree.chunks_in_memory)
        } else {
            format!("level {level}: {}{more}", plural(parts, "part"))
        };
        let _ = write!(h, "<span class=\"label\">{label}</span></div>");
    }
    h.push_str("</div>");
}

fn sinks_section(h: &mut String, views: &[ViewStatus], hide: bool) {
    let sinks: Vec<&ViewStatus> = views.iter().filter(|v| v.kind == "sink").collect();
    h.push_str("<h2>Sinks</h2>");
    if sinks.is_empty() {
        h.push_str("<p class=\"muted\">No sinks.</p>");
        return;
    }
    h.push_str(
        "<table id=\"sinks\"><tr><th>sink</th><th>mirrors</th><th>into</th><th>watermark</th>\
         <th>lag (changes)</th><th>errors</th><th>last error</th></tr>",
    );
    for s in sinks {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&s.name),
            escape(&s.source),
            escape(&s.target),
            s.watermark,
            s.pending_changes,
            s.errors,
            s.last_error.as_deref().map_or(String::new(), |e| error_text(e, hide)),
        );
    }
    h.push_str("</table>");
}

fn jobs_section(h: &mut String, jobs: &[JobStatus]) {
    h.push_str("<h2>Jobs</h2>");
    if jobs.is_empty() {
        h.push_str("<p class=\"muted\">No jobs since the node started.</p>");
        return;
    }
    h.push_str(
        "<table id=\"jobs\"><tr><th>job</th><th>state</th><th>phase</th><th>input</th>\
         <th>output</th><th>records</th><th>rows out</th><th>errors</th><th>spilled</th>\
         <th>elapsed</th></tr>",
    );
    for j in jobs {
        let state = match j.state.as_str() {
            "failed" => "<span class=\"bad\">failed</span>".to_owned(),
            "done" => "<span class=\"ok\">done</span>".to_owned(),
            other => escape(other),
        };
        let records = if j.state == "running" {
            progress((j.records_in, j.records_total))
        } else {
            j.records_in.to_string()
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{records}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.1} s</td></tr>",
            escape(&j.name),
            escape(&j.phase),
            escape(&j.input),
            escape(&j.output),
            j.rows_out,
            j.map_errors + j.reduce_errors,
            human_bytes(j.spilled_bytes),
            j.elapsed_ms as f64 / 1000.0,
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_sizes_read_well() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        let long = monotable_proto::tuple::encode(&["x".repeat(200).as_str().into()]).expect("key");
        let shown = key(&long);
        assert!(shown.starts_with("&quot;xxx") && shown.ends_with('…'), "{shown}");
        assert_eq!(shown.matches('x').count(), KEY_SHOWN_MAX_CHARS - 1, "the quote counts");
        assert_eq!(key(&[]), "<span class=\"muted\">start</span>");
    }
}
