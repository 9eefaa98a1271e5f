//! The model-based view test: a real node, a source range of 1 KiB chunks
//! (so the source, the indexes and the reducers' meta-ranges split all the
//! time), random puts, deletes and batches of hostile values, a family of
//! mappers (a field mapper; Lua mappers with duplicate emits, zero or
//! several rows, composite and mixed-type keys, emits that move between
//! groups; a mapper chained on an index), reducers (count, sum, min, max,
//! stats), drop and re-create, kill -9 at random points and restarts.
//!
//! After each phase, every index is compared row by row with an oracle
//! recomputed here from a scan of the source (the mappers' semantics are
//! implemented independently in this file), and random sub-range, prefix
//! and group_level aggregates (fresh) with the oracle's reductions. Stale
//! answers, polled while records move between groups, must each equal the
//! oracle at some state the source went through (a consistent cut, never a
//! mix).
//!
//! `VIEW_MODEL_SEED` (a number, or a comma-separated list) chooses the
//! seeds (default: three fixed ones, plus one from `GITHUB_RUN_ID`,
//! `CI_PIPELINE_ID` or `BUILD_NUMBER` when set); each run prints its seed. `VIEW_MODEL_SCALE` (default 1)
//! multiplies the operations and kill rounds for a bigger run. On a failure
//! the node's whole log goes to `$VIEW_MODEL_LOG_DIR/view_model-SEED.log`
//! when that is set (`MONOTABLE_TEST_LOG` sets the node's log filter).

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use monotable_client::{
    tuple, AggregateRequest, Batch, Client, Element, ErrorCode, MapFunction, RangeOptions, Scan,
};
use monotable_tests::{aggregate_parts, runtime, AggregateParts, Node};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value as V;

const SOURCE: &str = "src";
/// Source records live under this many ids.
const IDS: u64 = 300;
/// 2^64: floats at or beyond it are beyond every integer key.
const TWO64: f64 = 18_446_744_073_709_551_616.0;

// ---------------------------------------------------------------- keys --

/// An element of an emitted key, as the key order sees it: integers and
/// integral floats in the integer range are one kind of number (`Int`);
/// `Float` holds the others (non-integral, beyond the integer range, inf,
/// NaN).
#[derive(Clone, Debug)]
enum K {
    Null,
    Bytes(Vec<u8>),
    Str(String),
    Tuple(Vec<K>),
    Int(i128),
    Float(f64),
    Bool(bool),
}

impl K {
    fn rank(&self) -> u8 {
        match self {
            K::Null => 0,
            K::Bytes(_) => 1,
            K::Str(_) => 2,
            K::Tuple(_) => 5,
            K::Int(_) | K::Float(_) => 0x14,
            K::Bool(false) => 0x26,
            K::Bool(true) => 0x27,
        }
    }

    /// A number as a key: -0.0 is 0, an integral float in range an integer,
    /// every NaN one NaN.
    fn num(f: f64) -> K {
        if f.is_nan() {
            K::Float(f64::NAN)
        } else if f == f.trunc() && f.abs() < TWO64 {
            K::Int(f as i128)
        } else {
            K::Float(f)
        }
    }

    /// A decoded element, kept as decoded (an integral float stays a
    /// float, so a node that does not canonicalize is caught).
    fn strict(e: &Element) -> K {
        match e {
            Element::Null => K::Null,
            Element::Bytes(b) => K::Bytes(b.clone()),
            Element::String(s) => K::Str(s.clone()),
            Element::Tuple(items) => K::Tuple(items.iter().map(K::strict).collect()),
            Element::Int(i) => K::Int(*i),
            Element::Float(f) => K::Float(*f),
            Element::Bool(b) => K::Bool(*b),
        }
    }

    fn element(&self) -> Element {
        match self {
            K::Null => Element::Null,
            K::Bytes(b) => Element::Bytes(b.clone()),
            K::Str(s) => Element::String(s.clone()),
            K::Tuple(items) => Element::Tuple(items.iter().map(K::element).collect()),
            K::Int(i) => Element::Int(*i),
            K::Float(f) => Element::Float(*f),
            K::Bool(b) => Element::Bool(*b),
        }
    }

    /// A text form that tells integers from floats.
    fn canon(&self) -> String {
        match self {
            K::Null => "null".into(),
            K::Bytes(b) => format!("b{}", hex(b)),
            K::Str(s) => format!("{s:?}"),
            K::Tuple(items) => format!("({})", canon_keys(items)),
            K::Int(i) => format!("{i}"),
            K::Float(f) if f.is_nan() => "f:nan".into(),
            K::Float(f) => format!("f:{f:?}"),
            K::Bool(b) => format!("{b}"),
        }
    }
}

fn canon_keys(keys: &[K]) -> String {
    keys.iter().map(K::canon).collect::<Vec<_>>().join(",")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An integer against a float that is not integral in the integer range.
fn int_vs_float(i: i128, f: f64) -> Ordering {
    if f.is_nan() || f >= TWO64 {
        return Ordering::Less;
    }
    if f <= -TWO64 {
        return Ordering::Greater;
    }
    let floor = f.floor();
    let fl = floor as i128;
    if i < fl || (i == fl && f != floor) {
        Ordering::Less
    } else if i == fl {
        Ordering::Equal
    } else {
        Ordering::Greater
    }
}

impl Ord for K {
    fn cmp(&self, other: &K) -> Ordering {
        use K::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Str(a), Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Tuple(a), Tuple(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            },
            (Int(i), Float(f)) => int_vs_float(*i, *f),
            (Float(f), Int(i)) => int_vs_float(*i, *f).reverse(),
            (Bool(a), Bool(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for K {
    fn partial_cmp(&self, other: &K) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for K {
    fn eq(&self, other: &K) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for K {}

// ------------------------------------------------------------- mappers --

/// One index row: emitted key, source key, repeat number (0 for the first
/// row of an emitted key from its record), value.
#[derive(Clone, Debug)]
struct Row {
    emitted: Vec<K>,
    source: Vec<u8>,
    n: i128,
    value: V,
}

impl Row {
    fn canon(&self) -> String {
        format!(
            "({}) src={} n={} = {}",
            canon_keys(&self.emitted),
            hex(&self.source),
            self.n,
            canon_value(&self.value)
        )
    }
}

/// A whole MessagePack document, or None when the bytes are not one.
fn decode_doc(bytes: &[u8]) -> Option<V> {
    let mut rest = bytes;
    let v = rmpv::decode::read_value(&mut rest).ok()?;
    rest.is_empty().then_some(v)
}

fn get<'a>(doc: &'a V, name: &str) -> Option<&'a V> {
    match doc {
        V::Map(pairs) => pairs.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v),
        _ => None,
    }
}

fn int_of(i: &rmpv::Integer) -> i128 {
    i.as_i64().map(i128::from).or_else(|| i.as_u64().map(i128::from)).expect("an integer")
}

/// The field mapper's key element for a field value (None: the record
/// fails). Arrays are one nested element.
fn field_element(v: &V, depth: usize) -> Option<K> {
    if depth > 32 {
        return None;
    }
    Some(match v {
        V::Nil => K::Null,
        V::Boolean(b) => K::Bool(*b),
        V::Integer(i) => K::Int(int_of(i)),
        V::F32(f) => K::num(f64::from(*f)),
        V::F64(f) => K::num(*f),
        V::String(s) => K::Str(s.as_str()?.to_owned()),
        V::Binary(b) => K::Bytes(b.clone()),
        V::Array(items) => {
            K::Tuple(items.iter().map(|i| field_element(i, depth + 1)).collect::<Option<_>>()?)
        }
        V::Map(_) | V::Ext(..) => return None,
    })
}

/// Field mapper `--field g --value-field n`: one row keyed (g), valued n.
fn map_field(source: &[u8], doc: &V) -> Vec<Row> {
    let Some(g) = get(doc, "g") else { return Vec::new() };
    let Some(e) = field_element(g, 1) else { return Vec::new() };
    let value = get(doc, "n").cloned().unwrap_or(V::Nil);
    vec![Row { emitted: vec![e], source: source.to_vec(), n: 0, value }]
}

/// A MessagePack value as a Lua mapper's `emit` turns it into a key
/// element after the round trip through Lua (None: the record fails).
fn lua_element(v: &V, depth: usize) -> Option<K> {
    if depth > 32 {
        return None;
    }
    Some(match v {
        V::Nil => K::Null,
        V::Boolean(b) => K::Bool(*b),
        V::Integer(i) => match i.as_i64() {
            Some(x) => K::Int(i128::from(x)),
            None => K::num(i.as_u64().expect("u64") as f64),
        },
        V::F32(f) => K::num(f64::from(*f)),
        V::F64(f) => K::num(*f),
        V::String(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(t) => K::Str(t.to_owned()),
            Err(_) => K::Bytes(s.as_bytes().to_vec()),
        },
        V::Binary(b) => match std::str::from_utf8(b) {
            Ok(t) => K::Str(t.to_owned()),
            Err(_) => K::Bytes(b.clone()),
        },
        V::Array(items) => {
            K::Tuple(items.iter().map(|i| lua_element(i, depth + 1)).collect::<Option<_>>()?)
        }
        // An empty map is an empty Lua table: an empty array.
        V::Map(pairs) if pairs.is_empty() => K::Tuple(Vec::new()),
        V::Map(_) | V::Ext(..) => return None,
    })
}

/// An emitted Lua key: a table is the tuple of its elements, anything else
/// a one-element tuple.
fn lua_key(v: &V) -> Option<Vec<K>> {
    Some(match lua_element(v, 0)? {
        K::Tuple(items) if matches!(v, V::Array(_) | V::Map(_)) => items,
        other => vec![other],
    })
}

/// Numbers rows of one record: the n-th repeat of an emitted key gets n.
fn number_repeats(mut rows: Vec<Row>) -> Vec<Row> {
    for i in 0..rows.len() {
        let repeats = rows[..i].iter().filter(|r| r.emitted == rows[i].emitted).count();
        rows[i].n = repeats as i128;
    }
    rows
}

/// How deeply a value nests.
fn depth(v: &V) -> usize {
    match v {
        V::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        V::Map(pairs) => 1 + pairs.iter().map(|(k, v)| depth(k).max(depth(v))).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether Lua can hold the record at all (values nest at most 32 deep).
fn lua_can_read(doc: &V) -> bool {
    depth(doc) <= 32
}

const TAGS_LUA: &str = "function map(k, v)
  if type(v) == 'table' and type(v.tags) == 'table' then
    for _, t in ipairs(v.tags) do emit(t, v.f) end
  end
end";

/// `for each tag (up to the first nil): emit(tag, v.f)`: zero or several
/// rows, duplicates kept; a tag that cannot be a key fails the record.
fn map_tags(source: &[u8], doc: &V) -> Vec<Row> {
    if !lua_can_read(doc) {
        return Vec::new();
    }
    let Some(V::Array(tags)) = get(doc, "tags") else { return Vec::new() };
    let value = match get(doc, "f") {
        Some(V::F64(f)) => V::F64(*f),
        Some(other) => panic!("f is a float or absent, not {other}"),
        None => V::Nil,
    };
    let mut rows = Vec::new();
    for t in tags.iter().take_while(|t| !t.is_nil()) {
        let Some(emitted) = lua_key(t) else { return Vec::new() };
        rows.push(Row { emitted, source: source.to_vec(), n: 0, value: value.clone() });
    }
    number_repeats(rows)
}

fn moves_lua(tag: &str) -> String {
    format!(
        "function map(k, v)
  if type(v) == 'table' and math.type(v.s) == 'integer' and v.h ~= nil then
    emit({{v.h, '{tag}'}}, v.s)
    emit(v.h, v.s)
  end
end"
    )
}

/// `emit({h, TAG}, s); emit(h, s)` for records with an integer s and an h.
fn map_moves(source: &[u8], doc: &V, tag: &str) -> Vec<Row> {
    if !lua_can_read(doc) {
        return Vec::new();
    }
    let (Some(h), Some(V::Integer(s))) = (get(doc, "h"), get(doc, "s")) else {
        return Vec::new();
    };
    if h.is_nil() {
        return Vec::new();
    }
    let Some(hk) = lua_element(h, 1) else { return Vec::new() };
    let Some(single) = lua_key(h) else { return Vec::new() };
    let value = V::from(s.as_i64().expect("small s"));
    number_repeats(vec![
        Row {
            emitted: vec![hk, K::Str(tag.into())],
            source: source.to_vec(),
            n: 0,
            value: value.clone(),
        },
        Row { emitted: single, source: source.to_vec(), n: 0, value },
    ])
}

/// Over the field mapper's index: emit the Lua type of the emitted key's
/// first element (math.type for numbers).
const CHAIN_LUA: &str = "function map(k, v)
  local x = k[1][1]
  local t = type(x)
  if t == 'number' then t = math.type(x) end
  emit(t, 1)
end";

fn chain_type(first: Option<&K>) -> &'static str {
    match first {
        None | Some(K::Null) => "nil",
        Some(K::Bytes(_)) | Some(K::Str(_)) => "string",
        Some(K::Tuple(_)) => "table",
        Some(K::Bool(_)) => "boolean",
        Some(K::Int(i)) if i64::try_from(*i).is_ok() => "integer",
        Some(K::Int(_)) | Some(K::Float(_)) => "float",
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mapper {
    Field,
    Tags,
    /// The moves mapper of one generation (its tag changes when re-created).
    Moves(u32),
    Chain,
}

fn moves_tag(generation: u32) -> String {
    format!("t{generation}")
}

/// The rows `m` must hold for the source's records (for the chain: for the
/// field index's rows, checked first).
fn oracle_rows(
    m: Mapper,
    records: &[(Vec<u8>, Vec<u8>)],
    field_index: &[(Vec<u8>, Row)],
) -> Vec<Row> {
    let mut rows = Vec::new();
    if m == Mapper::Chain {
        for (key, r) in field_index {
            // The chain's source key is the field index's row key.
            let key = key.clone();
            rows.push(Row {
                emitted: vec![K::Str(chain_type(r.emitted.first()).into())],
                source: key,
                n: 0,
                value: V::from(1),
            });
        }
    } else {
        for (k, v) in records {
            let Some(doc) = decode_doc(v) else { continue };
            rows.extend(match m {
                Mapper::Field => map_field(k, &doc),
                Mapper::Tags => map_tags(k, &doc),
                Mapper::Moves(g) => map_moves(k, &doc, &moves_tag(g)),
                Mapper::Chain => unreachable!(),
            });
        }
    }
    rows.sort_by(|a, b| {
        a.emitted.cmp(&b.emitted).then_with(|| a.source.cmp(&b.source)).then(a.n.cmp(&b.n))
    });
    rows
}

/// A scanned index row, decoded.
fn parse_row(key: &[u8], value: &[u8]) -> Result<Row, String> {
    let parts = tuple::decode(key).map_err(|e| format!("row key {} is no tuple: {e}", hex(key)))?;
    let (emitted, source, n) = match parts.as_slice() {
        [Element::Tuple(e), Element::Bytes(s)] => (e, s, 0),
        [Element::Tuple(e), Element::Bytes(s), Element::Int(n)] if *n >= 1 => (e, s, *n),
        other => return Err(format!("row key is not [emitted, source(, n)]: {other:?}")),
    };
    let value =
        decode_doc(value).ok_or_else(|| format!("row value {} is no document", hex(value)))?;
    Ok(Row { emitted: emitted.iter().map(K::strict).collect(), source: source.clone(), n, value })
}

// ----------------------------------------------------------- reducers --

#[derive(Clone, Copy, Debug, PartialEq)]
enum Red {
    Count,
    SumInt,
    Min,
    Max,
    SumFloat,
    Stats,
}

impl Red {
    fn builtin(self) -> &'static str {
        match self {
            Red::Count => "count",
            Red::SumInt | Red::SumFloat => "sum",
            Red::Min => "min",
            Red::Max => "max",
            Red::Stats => "stats",
        }
    }
}

/// (reducer name, index it reads, what it computes).
fn reducers() -> Vec<(String, Mapper, Red)> {
    vec![
        ("g_count".into(), Mapper::Field, Red::Count),
        ("g_sum".into(), Mapper::Field, Red::SumInt),
        ("g_min".into(), Mapper::Field, Red::Min),
        ("g_max".into(), Mapper::Field, Red::Max),
        ("t_count".into(), Mapper::Tags, Red::Count),
        ("t_sum".into(), Mapper::Tags, Red::SumFloat),
        ("m_count".into(), Mapper::Moves(0), Red::Count),
        ("m_stats".into(), Mapper::Moves(0), Red::Stats),
        ("c_count".into(), Mapper::Chain, Red::Count),
    ]
}

fn target(m: Mapper) -> &'static str {
    match m {
        Mapper::Field => "ix_g",
        Mapper::Tags => "ix_tags",
        Mapper::Moves(_) => "ix_moves",
        Mapper::Chain => "ix_chain",
    }
}

fn mapper_name(m: Mapper) -> &'static str {
    match m {
        Mapper::Field => "by_g",
        Mapper::Tags => "by_tags",
        Mapper::Moves(_) => "moves",
        Mapper::Chain => "chain",
    }
}

/// Floats here are multiples of 2^-20: their exact sum in fixed point,
/// rounded once (`as` rounds to nearest, ties to even).
fn exact_sum(fs: &[f64]) -> f64 {
    let total: i128 = fs
        .iter()
        .map(|f| {
            let scaled = f * 1_048_576.0;
            assert_eq!(scaled, scaled.trunc(), "{f} is not a multiple of 2^-20");
            scaled as i128
        })
        .sum();
    (total as f64) / 1_048_576.0
}

/// What the reducer must answer for these rows.
fn reduce(red: Red, rows: &[&Row]) -> V {
    let ints: Vec<i128> = rows
        .iter()
        .filter_map(|r| match &r.value {
            V::Integer(i) => Some(int_of(i)),
            _ => None,
        })
        .collect();
    match red {
        Red::Count => V::from(rows.len() as u64),
        Red::SumInt => V::from(i64::try_from(ints.iter().sum::<i128>()).expect("no overflow here")),
        Red::Min => ints.iter().min().map_or(V::Nil, |m| V::from(*m as i64)),
        Red::Max => ints.iter().max().map_or(V::Nil, |m| V::from(*m as i64)),
        Red::SumFloat => {
            let fs: Vec<f64> = rows
                .iter()
                .filter_map(|r| match r.value {
                    V::F64(f) => Some(f),
                    _ => None,
                })
                .collect();
            if fs.is_empty() {
                V::from(0)
            } else {
                V::F64(exact_sum(&fs))
            }
        }
        Red::Stats => {
            if ints.is_empty() {
                return V::Nil;
            }
            let sum: i128 = ints.iter().sum();
            let n = ints.len() as i128;
            let sumsqr: i128 = ints.iter().map(|x| x * x).sum();
            let mut pairs = vec![
                ("count", V::from(n as i64)),
                ("sum", V::from(sum as i64)),
                ("min", V::from(*ints.iter().min().expect("some") as i64)),
                ("max", V::from(*ints.iter().max().expect("some") as i64)),
                ("sumsqr", V::from(sumsqr as i64)),
                ("mean", V::F64(sum as f64 / n as f64)),
            ];
            V::Map(pairs.drain(..).map(|(k, v)| (V::from(k), v)).collect())
        }
    }
}

/// A text form of a reduction or row value: numbers compare by value
/// (an integral float equals the integer), maps by sorted keys.
fn canon_value(v: &V) -> String {
    match v {
        V::Nil => "null".into(),
        V::Boolean(b) => format!("{b}"),
        V::Integer(i) => format!("{}", int_of(i)),
        V::F32(f) => canon_float(f64::from(*f)),
        V::F64(f) => canon_float(*f),
        V::String(s) => format!("s{:?}", s.as_bytes()),
        V::Binary(b) => format!("b{}", hex(b)),
        V::Array(items) => {
            format!("[{}]", items.iter().map(canon_value).collect::<Vec<_>>().join(","))
        }
        V::Map(pairs) => {
            let mut parts: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", canon_value(k), canon_value(v)))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
        V::Ext(t, d) => format!("ext{t}:{}", hex(d)),
    }
}

fn canon_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f == f.trunc() && f.abs() < 1e30 {
        format!("{}", f as i128)
    } else {
        format!("{f:?}")
    }
}

#[derive(Clone, Debug)]
struct Query {
    reducer: String,
    red: Red,
    start: Option<Vec<K>>,
    end: Option<Vec<K>>,
    prefix: Option<Vec<K>>,
    group: Option<u32>,
}

fn in_query(q: &Query, e: &[K]) -> bool {
    q.start.as_ref().is_none_or(|s| e >= s.as_slice())
        && q.end.as_ref().is_none_or(|x| e < x.as_slice())
        && q.prefix.as_ref().is_none_or(|p| e.len() >= p.len() && e[..p.len()] == p[..])
}

/// The answer `q` must get over `rows`, in the canonical text form.
/// Whether the reducer takes the row: numeric reducers leave out (and count
/// as errors) rows whose value is not a number, so such rows are in no
/// group; count takes every row.
fn takes(red: Red, r: &Row) -> bool {
    match red {
        Red::Count => true,
        Red::SumFloat => matches!(r.value, V::F64(_) | V::Integer(_)),
        _ => matches!(r.value, V::Integer(_) | V::F64(_)),
    }
}

fn expected(q: &Query, rows: &[Row]) -> String {
    let picked: Vec<&Row> =
        rows.iter().filter(|r| in_query(q, &r.emitted) && takes(q.red, r)).collect();
    let Some(level) = q.group else { return canon_value(&reduce(q.red, &picked)) };
    let mut groups: BTreeMap<Vec<K>, Vec<&Row>> = BTreeMap::new();
    for r in picked {
        let cut = r.emitted[..(level as usize).min(r.emitted.len())].to_vec();
        groups.entry(cut).or_default().push(r);
    }
    groups
        .iter()
        .map(|(k, rows)| format!("({}) => {}", canon_keys(k), canon_value(&reduce(q.red, rows))))
        .collect::<Vec<_>>()
        .join("\n")
}

fn encode_keys(keys: &[K]) -> Vec<u8> {
    tuple::encode(&keys.iter().map(K::element).collect::<Vec<_>>()).expect("bound")
}

/// The node's answer to `q`, in the canonical text form.
// Fields the request may grow (paging) keep their defaults.
#[allow(clippy::needless_update)]
async fn answer(c: &Client, q: &Query, fresh: bool) -> Result<String, monotable_client::Error> {
    let reply = c
        .aggregate(AggregateRequest {
            reducer: q.reducer.clone(),
            start: q.start.as_deref().map(encode_keys).map(Into::into),
            end: q.end.as_deref().map(encode_keys).map(Into::into),
            prefix: q.prefix.as_deref().map(encode_keys).map(Into::into),
            group_level: q.group,
            fresh,
            timeout_ms: 60_000,
            ..AggregateRequest::default()
        })
        .await?;
    let doc = |b: &[u8]| {
        decode_doc(b).map_or_else(|| format!("undecodable {}", hex(b)), |v| canon_value(&v))
    };
    Ok(match aggregate_parts(&reply) {
        AggregateParts::Total(v) if q.group.is_none() => doc(&v),
        AggregateParts::Groups { groups, more: false } if q.group.is_some() => groups
            .iter()
            .map(|(k, v)| {
                let key = tuple::decode(k).map_or_else(
                    |e| format!("undecodable group key {} ({e})", hex(k)),
                    |els| canon_keys(&els.iter().map(K::strict).collect::<Vec<_>>()),
                );
                format!("({key}) => {}", doc(v))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => format!("a reply of the wrong shape: {other:?}"),
    })
}

fn hostile_key(rng: &mut StdRng) -> K {
    match rng.gen_range(0..8) {
        0 => K::Int(1),
        1 => K::Float(1.5),
        2 => K::Str("a".into()),
        3 => K::Null,
        4 => K::Tuple(vec![K::Str("a".into())]),
        5 => K::Float(f64::INFINITY),
        6 => K::Bool(false),
        _ => K::Str("a\0b".into()),
    }
}

/// A bound near the keys the rows hold: a row's emitted key cut short,
/// sometimes with a hostile element.
fn random_bound(rng: &mut StdRng, rows: &[Row]) -> Vec<K> {
    let mut k = if rows.is_empty() {
        Vec::new()
    } else {
        let e = &rows[rng.gen_range(0..rows.len())].emitted;
        e[..rng.gen_range(0..=e.len())].to_vec()
    };
    if rng.gen_bool(0.25) || k.is_empty() {
        k.push(hostile_key(rng));
    }
    k
}

fn random_query(rng: &mut StdRng, reducer: &str, red: Red, rows: &[Row]) -> Query {
    let mut q = Query {
        reducer: reducer.into(),
        red,
        start: None,
        end: None,
        prefix: None,
        group: rng.gen_bool(0.35).then(|| rng.gen_range(1..=3)),
    };
    match rng.gen_range(0..4) {
        0 => {}
        1 => q.prefix = Some(random_bound(rng, rows)),
        _ => {
            q.start = rng.gen_bool(0.7).then(|| random_bound(rng, rows));
            q.end = rng.gen_bool(0.7).then(|| random_bound(rng, rows));
        }
    }
    q
}

// -------------------------------------------------------------- values --

fn arr(items: Vec<V>) -> V {
    V::Array(items)
}

fn s(t: &str) -> V {
    V::from(t)
}

fn g_pool() -> Vec<V> {
    let nested = (0..34).fold(V::from(1), |v, _| arr(vec![v]));
    vec![
        s("a"),
        s("b"),
        s("x"),
        s(""),
        s("a\0b"),
        s("a\0"),
        s("\0"),
        s("é"),
        V::from(0),
        V::from(1),
        V::from(-1),
        V::from(2),
        V::from(i64::MAX),
        V::from(i64::MIN),
        V::from(u64::MAX),
        V::from(1i64 << 53),
        V::from((1i64 << 53) + 1),
        V::from(-(1i64 << 53) - 1),
        V::F64(1.0),
        V::F64(1.5),
        V::F64(-0.0),
        V::F64(0.0),
        V::F64(2.0),
        V::F64(-1.5),
        V::F64(0.1),
        V::F64(f64::INFINITY),
        V::F64(f64::NEG_INFINITY),
        V::F64(f64::NAN),
        V::F64(f64::from_bits(0x7ff8_0000_0000_0001)),
        V::F64(f64::from_bits(0xfff8_0000_0000_0000)),
        V::F64(2f64.powi(70)),
        V::F64(-(2f64.powi(70))),
        V::F64(1e-300),
        V::F64(TWO64),
        V::F64(2f64.powi(63)),
        V::F64(9_007_199_254_740_994.0),
        V::Nil,
        V::Boolean(true),
        V::Boolean(false),
        arr(vec![s("a")]),
        arr(vec![s("a"), V::Nil]),
        arr(vec![s("a"), arr(vec![s("b"), V::from(1)])]),
        arr(vec![]),
        arr(vec![V::F64(1.0), s("x")]),
        arr(vec![arr(vec![s("x")])]),
        arr(vec![V::F64(f64::NAN)]),
        V::Binary(vec![0, 255]),
        V::Binary(b"ab".to_vec()),
        V::Map(vec![(s("x"), V::from(1))]),
        V::Ext(1, vec![1, 2]),
        nested,
    ]
}

fn tag_pool() -> Vec<V> {
    vec![
        s("a"),
        s("b"),
        s("a\0b"),
        V::from(1),
        V::F64(1.0),
        V::from(2),
        s("1"),
        V::Boolean(true),
        arr(vec![]),
        V::Map(vec![]),
        arr(vec![s("a")]),
        arr(vec![s("a"), s("b")]),
        arr(vec![s("a"), arr(vec![s("b")])]),
        V::F64(f64::NAN),
        V::F64(-0.0),
        V::from(u64::MAX),
        V::Binary(b"ab".to_vec()),
        V::Binary(vec![0xff, 0]),
        V::F64(1.5),
        V::from(i64::MIN),
    ]
}

fn h_pool() -> Vec<V> {
    vec![
        V::from(1),
        V::F64(1.0),
        V::F64(1.5),
        V::from(2),
        V::F64(-0.0),
        s("1"),
        s("a"),
        s("a\0b"),
        V::Boolean(true),
        V::Boolean(false),
        V::from(1i64 << 53),
        V::F64(2f64.powi(53)),
        arr(vec![s("a")]),
        arr(vec![]),
    ]
}

fn pick(rng: &mut StdRng, pool: &[V]) -> V {
    pool[rng.gen_range(0..pool.len())].clone()
}

fn random_h(rng: &mut StdRng) -> V {
    pick(rng, &h_pool())
}

/// A record value: mostly a map with some of the fields g, n, f, tags, h,
/// s (each may be missing or odd), sometimes another document, sometimes
/// bytes that are not MessagePack.
fn random_value(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..100) {
        0..=2 => return b"\xc1 not msgpack".to_vec(),
        3 => return b"\x92\x01".to_vec(),
        4 => return b"hello".to_vec(),
        5..=7 => {
            let doc = match rng.gen_range(0..4) {
                0 => s("just a string"),
                1 => V::from(42),
                2 => arr(vec![V::from(1), V::from(2)]),
                _ => V::Nil,
            };
            return encode(&doc);
        }
        _ => {}
    }
    let mut fields = Vec::new();
    if rng.gen_bool(0.92) {
        fields.push((s("g"), pick(rng, &g_pool())));
    }
    match rng.gen_range(0..100) {
        0..=75 => fields.push((s("n"), V::from(rng.gen_range(-1000i64..=1000)))),
        76..=85 => {
            let big = (1i64 << 53) + rng.gen_range(0..1000);
            fields.push((s("n"), V::from(if rng.gen_bool(0.5) { big } else { -big })))
        }
        86..=89 => fields.push((s("n"), s("12"))),
        90..=94 => fields.push((s("n"), V::Nil)),
        _ => {}
    }
    if rng.gen_bool(0.85) {
        let m = rng.gen_range(-(1i64 << 50)..(1i64 << 50));
        let f = (m as f64) * 2f64.powi(rng.gen_range(-20..=4));
        fields.push((s("f"), V::F64(f)));
    }
    match rng.gen_range(0..100) {
        0..=79 => {
            let pool = tag_pool();
            let mut tags: Vec<V> = (0..rng.gen_range(0..=4)).map(|_| pick(rng, &pool)).collect();
            if rng.gen_bool(0.05) {
                let at = rng.gen_range(0..=tags.len());
                tags.insert(at, V::Nil);
            }
            if rng.gen_bool(0.03) {
                tags.push(V::Map(vec![(s("k"), V::from(1))]));
            }
            fields.push((s("tags"), arr(tags)));
        }
        80..=84 => fields.push((s("tags"), s("not a list"))),
        85..=87 => fields.push((s("tags"), V::Map(vec![(s("x"), V::from(1))]))),
        _ => {}
    }
    if rng.gen_bool(0.9) {
        fields.push((s("h"), random_h(rng)));
    }
    if rng.gen_bool(0.9) {
        fields.push((s("s"), V::from(rng.gen_range(-100i64..=100))));
    } else {
        fields.push((s("s"), s("5")));
    }
    encode(&V::Map(fields))
}

fn encode(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("vec");
    out
}

/// Source keys: tuples of an integer, of strings with NUL bytes, of a huge
/// integer, and raw keys that are no tuple.
fn source_key(id: u64) -> Vec<u8> {
    let i = i128::from(id);
    match id % 7 {
        0 => vec![0xff, b'r', (id >> 8) as u8, id as u8],
        1 => tuple::encode(&[Element::String("s\0".into()), Element::Int(i)]).expect("key"),
        2 => tuple::encode(&[Element::Int(i128::from(u64::MAX) - i)]).expect("key"),
        _ => tuple::encode(&[Element::Int(i)]).expect("key"),
    }
}

// ---------------------------------------------------------------- runs --

struct Run {
    seed: u64,
    scale: usize,
    rng: StdRng,
    moves_generation: u32,
}

impl Run {
    fn mappers(&self) -> [Mapper; 4] {
        [Mapper::Field, Mapper::Tags, Mapper::Moves(self.moves_generation), Mapper::Chain]
    }

    fn function(&self, m: Mapper) -> MapFunction {
        match m {
            Mapper::Field => {
                MapFunction::Field { key_path: "g".into(), value_path: Some("n".into()) }
            }
            Mapper::Tags => MapFunction::Lua { source: TAGS_LUA.into() },
            Mapper::Moves(g) => MapFunction::Lua { source: moves_lua(&moves_tag(g)) },
            Mapper::Chain => MapFunction::Lua { source: CHAIN_LUA.into() },
        }
    }

    fn what(&self, phase: &str) -> String {
        format!("seed {} (VIEW_MODEL_SEED={}), phase {phase}", self.seed, self.seed)
    }
}

/// Random puts, deletes and batches; returns when `n` operations are done
/// or the node stops answering (then false).
async fn random_writes(c: &Client, rng: &mut StdRng, n: usize) -> bool {
    let mut done = 0;
    while done < n {
        let id = rng.gen_range(0..IDS);
        let result = match rng.gen_range(0..100) {
            0..=59 => c.put(SOURCE, source_key(id), random_value(rng)).await.map(|_| ()),
            60..=74 => c.delete(SOURCE, source_key(id)).await.map(|_| ()),
            _ => {
                let mut batch = Batch::new();
                for _ in 0..rng.gen_range(2..=50) {
                    let id = rng.gen_range(0..IDS);
                    batch = if rng.gen_bool(0.2) {
                        batch.delete(source_key(id))
                    } else {
                        batch.put(source_key(id), random_value(rng))
                    };
                    done += 1;
                }
                c.write(SOURCE, batch).await.map(|_| ())
            }
        };
        if result.is_err() {
            return false;
        }
        done += 1;
    }
    true
}

async fn scan_all(c: &Client, range: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut stream = c.scan_stream(range, Scan::all());
    let mut out = Vec::new();
    while let Some(r) = stream.next().await {
        let r = r.unwrap_or_else(|e| panic!("scan {range}: {e}"));
        out.push((r.key, r.value));
    }
    out
}

/// Waits until no view backfills or has changes pending.
async fn idle(c: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let views = c.list_views().await.expect("views");
        if views.iter().all(|v| v.backfill.is_none() && v.pending_changes == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: views never caught up: {views:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Compares every index with the oracle and asks random fresh aggregates.
async fn check(c: &Client, run: &mut Run, phase: &str) {
    let what = run.what(phase);
    idle(c, &what).await;
    for (name, _, _) in reducers() {
        let q = Query {
            reducer: name.clone(),
            red: Red::Count,
            start: None,
            end: None,
            prefix: None,
            group: None,
        };
        if let Err(e) = answer(c, &q, true).await {
            panic!("{what}: fresh {name}: {e}");
        }
    }
    let records = scan_all(c, SOURCE).await;
    let mut oracles: Vec<(Mapper, Vec<Row>)> = Vec::new();
    // The field index as scanned, once it equals its oracle: the chain's
    // input.
    let mut field_index: Vec<(Vec<u8>, Row)> = Vec::new();
    for m in run.mappers() {
        let want = oracle_rows(m, &records, &field_index);
        let scanned = scan_all(c, target(m)).await;
        let got: Vec<Row> = scanned
            .iter()
            .map(|(k, v)| parse_row(k, v).unwrap_or_else(|e| panic!("{what}: {}: {e}", target(m))))
            .collect();
        if m == Mapper::Field {
            field_index = scanned.iter().map(|(k, _)| k.clone()).zip(got.iter().cloned()).collect();
        }
        let (w, g): (Vec<String>, Vec<String>) =
            (want.iter().map(Row::canon).collect(), got.iter().map(Row::canon).collect());
        if w != g {
            let missing: Vec<&String> = w.iter().filter(|r| !g.contains(r)).take(8).collect();
            let extra: Vec<&String> = g.iter().filter(|r| !w.contains(r)).take(8).collect();
            let first = w.iter().zip(&g).position(|(a, b)| a != b);
            panic!(
                "{what}: index {} differs from the oracle ({} rows wanted, {} found)\n\
                 missing (first 8): {missing:#?}\nextra (first 8): {extra:#?}\n\
                 first difference in order at {first:?}",
                target(m),
                w.len(),
                g.len()
            );
        }
        oracles.push((m, want));
    }
    for (name, index, red) in reducers() {
        let rows = &oracles.iter().find(|(m, _)| target(*m) == target(index)).expect("index").1;
        for _ in 0..4 * run.scale.min(4) + 2 {
            let q = random_query(&mut run.rng, &name, red, rows);
            let got = answer(c, &q, true).await.unwrap_or_else(|e| panic!("{what}: {q:?}: {e}"));
            let want = expected(&q, rows);
            assert_eq!(got, want, "{what}: {q:?}");
        }
    }
}

async fn create_views(c: &Client, run: &Run) {
    for m in run.mappers() {
        let source = if m == Mapper::Chain { target(Mapper::Field) } else { SOURCE };
        c.create_mapper(mapper_name(m), source, target(m), run.function(m))
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", mapper_name(m)));
    }
    for (name, index, red) in reducers() {
        c.create_reducer(&name, target(index), red.builtin())
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
}

/// Splits chunks of the source and of the indexes at keys they hold.
async fn random_splits(c: &Client, rng: &mut StdRng) {
    for range in [SOURCE, "ix_g", "ix_tags", "ix_moves", "ix_chain", "g_count#1"] {
        let Ok(page) = c.scan(range, &Scan::all().limit(400)).await else { continue };
        if page.records.is_empty() {
            continue;
        }
        let at = &page.records[rng.gen_range(0..page.records.len())].key;
        // A key that already starts a chunk is refused; that is fine.
        let _ = c.split_chunk(range, at).await;
    }
}

/// Records move between groups (only h changes) while stale aggregates are
/// polled: each answer must equal the oracle at some state the source went
/// through.
async fn stale_phase(c: &Client, run: &mut Run) {
    let what = run.what("stale answers while records move");
    let generation = run.moves_generation;
    let tag = moves_tag(generation);
    let mut rng = StdRng::seed_from_u64(run.rng.gen());
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = scan_all(c, SOURCE).await.into_iter().collect();
    let movable: Vec<Vec<u8>> = model
        .iter()
        .filter(|(k, v)| decode_doc(v).is_some_and(|d| !map_moves(k, &d, &tag).is_empty()))
        .map(|(k, _)| k.clone())
        .collect();
    if movable.is_empty() {
        return;
    }
    let queries: Vec<Query> = [
        ("m_count", Red::Count, None),
        ("m_count", Red::Count, Some(1)),
        ("m_stats", Red::Stats, None),
    ]
    .iter()
    .map(|(r, red, group)| Query {
        reducer: (*r).into(),
        red: *red,
        start: None,
        end: None,
        prefix: None,
        group: *group,
    })
    .collect();
    let answers_of = |model: &BTreeMap<Vec<u8>, Vec<u8>>| -> Vec<String> {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let rows = oracle_rows(Mapper::Moves(generation), &records, &[]);
        queries.iter().map(|q| expected(q, &rows)).collect()
    };
    let history = RefCell::new(vec![answers_of(&model)]);
    let done = RefCell::new(false);
    let moves = 150 * run.scale;
    let writer = async {
        for _ in 0..moves {
            let key = &movable[rng.gen_range(0..movable.len())];
            let Some(V::Map(mut fields)) = decode_doc(&model[key]) else { unreachable!() };
            for (k, v) in fields.iter_mut() {
                if k.as_str() == Some("h") {
                    *v = random_h(&mut rng);
                }
            }
            let bytes = encode(&V::Map(fields));
            model.insert(key.clone(), bytes.clone());
            // The state is recorded before the write can be seen.
            history.borrow_mut().push(answers_of(&model));
            c.put(SOURCE, key, bytes).await.expect("put");
        }
        *done.borrow_mut() = true;
    };
    let poller = async {
        let (mut answered, mut lagging) = (0, 0);
        let mut prng = StdRng::seed_from_u64(7);
        while !*done.borrow() {
            let i = prng.gen_range(0..queries.len());
            match answer(c, &queries[i], false).await {
                Ok(got) => {
                    answered += 1;
                    let h = history.borrow();
                    assert!(
                        h.iter().any(|state| state[i] == got),
                        "{what}: a stale answer to {:?} that no state of the source had:\n{got}\n\
                         first state:\n{}\nlast state:\n{}",
                        queries[i],
                        h[0][i],
                        h[h.len() - 1][i]
                    );
                }
                Err(e) if e.code() == Some(ErrorCode::ViewLagging) => lagging += 1,
                Err(e) => panic!("{what}: stale {:?}: {e}", queries[i]),
            }
        }
        (answered, lagging)
    };
    let ((), (answered, lagging)) = tokio::join!(writer, poller);
    assert!(answered > 0, "{what}: no stale answer in {lagging} polls");
}

/// Drops the moves mapper, writes, and creates it again under the same
/// name into the same target with another definition; if the node refuses
/// a target that still holds rows, the target is dropped first.
async fn drop_and_recreate(c: &Client, run: &mut Run) {
    for r in ["m_count", "m_stats"] {
        c.drop_reducer(r).await.expect("drop reducer");
    }
    c.drop_mapper("moves").await.expect("drop mapper");
    assert!(random_writes(c, &mut run.rng, 60 * run.scale).await);
    run.moves_generation += 1;
    let m = Mapper::Moves(run.moves_generation);
    if let Err(e) = c.create_mapper("moves", SOURCE, target(m), run.function(m)).await {
        eprintln!("re-creating into a target with rows was refused ({e}); dropping the target");
        c.drop_range(target(m)).await.expect("drop target");
        c.create_mapper("moves", SOURCE, target(m), run.function(m)).await.expect("re-create");
    }
    for (name, index, red) in reducers() {
        if matches!(index, Mapper::Moves(_)) {
            c.create_reducer(&name, target(m), red.builtin()).await.expect("reducer");
        }
    }
}

fn model_run(seed: u64, scale: usize) {
    eprintln!("view_model: seed {seed}, scale {scale} (replay with VIEW_MODEL_SEED={seed})");
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model_phases(&mut node, seed, scale);
    }));
    if let Err(panic) = outcome {
        // The node's log says what the views went through.
        let log = node.log();
        let notable: Vec<&String> =
            log.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        eprintln!("seed {seed}: the node's last warnings and errors:");
        for line in &notable[notable.len().saturating_sub(40)..] {
            eprintln!("  {line}");
        }
        eprintln!("seed {seed}: the node's last log lines:");
        for line in &log[log.len().saturating_sub(40)..] {
            eprintln!("  {line}");
        }
        // The whole log, for a failure too rare to replay.
        if let Some(dir) = std::env::var_os("VIEW_MODEL_LOG_DIR") {
            let path = std::path::Path::new(&dir).join(format!("view_model-{seed}.log"));
            match std::fs::write(&path, log.join("\n")) {
                Ok(()) => eprintln!("seed {seed}: the node's whole log is in {}", path.display()),
                Err(e) => eprintln!("seed {seed}: cannot write {}: {e}", path.display()),
            }
        }
        std::panic::resume_unwind(panic);
    }
}

fn model_phases(node: &mut Node, seed: u64, scale: usize) {
    let rt = runtime();
    let mut run = Run { seed, scale, rng: StdRng::seed_from_u64(seed), moves_generation: 0 };

    // Data first, then the views, which backfill it; then changes.
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range(SOURCE, RangeOptions { chunk_size_max_bytes: 1024 }).await.expect("range");
        for chunk in (0..IDS).collect::<Vec<_>>().chunks(50) {
            let batch = chunk
                .iter()
                .fold(Batch::new(), |b, id| b.put(source_key(*id), random_value(&mut run.rng)));
            c.write(SOURCE, batch).await.expect("load");
        }
        create_views(&c, &run).await;
        check(&c, &mut run, "backfill").await;
        // Three writers at once, so mapper rounds overlap with splits and
        // with further changes of the records they read.
        let mut wr: Vec<StdRng> = (0..3).map(|_| StdRng::seed_from_u64(run.rng.gen())).collect();
        let [a, b, w3] = &mut wr[..] else { unreachable!() };
        let (x, y, z) = tokio::join!(
            random_writes(&c, a, 100 * scale),
            random_writes(&c, b, 100 * scale),
            random_writes(&c, w3, 100 * scale)
        );
        assert!(x && y && z, "writes failed");
        random_splits(&c, &mut run.rng).await;
        check(&c, &mut run, "concurrent random writes and splits").await;
        stale_phase(&c, &mut run).await;
        check(&c, &mut run, "after the moves").await;
    });

    // kill -9 at random points under a write load, and right after a burst
    // that leaves the mappers far behind.
    for round in 0..3 * scale {
        let behind = round % 2 == 1;
        rt.block_on(async {
            let c = Client::connect(node.addr).await.expect("connect");
            let mut wrng = StdRng::seed_from_u64(run.rng.gen());
            let kill_after = Duration::from_millis(run.rng.gen_range(50..600));
            if behind {
                for _ in 0..20 {
                    let batch = (0..50).fold(Batch::new(), |b, _| {
                        b.put(source_key(wrng.gen_range(0..IDS)), random_value(&mut wrng))
                    });
                    c.write(SOURCE, batch).await.expect("burst");
                }
                node.kill();
            } else {
                let writer = async { while random_writes(&c, &mut wrng, 10).await {} };
                let killer = async {
                    tokio::time::sleep(kill_after).await;
                    node.kill();
                };
                tokio::join!(writer, killer);
            }
        });
        node.restart();
        rt.block_on(async {
            let c = Client::connect(node.addr).await.expect("reconnect");
            let phase =
                format!("kill -9 round {round}{}", if behind { " (mappers behind)" } else { "" });
            check(&c, &mut run, &phase).await;
        });
    }

    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        drop_and_recreate(&c, &mut run).await;
        check(&c, &mut run, "drop and re-create").await;
        assert!(random_writes(&c, &mut run.rng, 100 * scale).await);
        random_splits(&c, &mut run.rng).await;
    });
    assert!(node.stop(), "clean shutdown");
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("reconnect");
        check(&c, &mut run, "graceful restart").await;
        assert!(random_writes(&c, &mut run.rng, 100 * scale).await);
        check(&c, &mut run, "writes after the restart").await;
    });
    assert!(node.stop());
    // Postmortem: a re-created mapper sat idle with changes acknowledged
    // before it was registered; the node's check now finds such a mapper
    // and says so.
    assert!(!node.log_contains("no Dirty announced"), "seed {seed}: a mapper missed its wakeup");
}

fn seeds() -> Vec<u64> {
    if let Ok(list) = std::env::var("VIEW_MODEL_SEED") {
        return list
            .split(',')
            .map(|s| {
                s.trim().parse().unwrap_or_else(|_| panic!("VIEW_MODEL_SEED: {s:?} is no number"))
            })
            .collect();
    }
    // A few fixed seeds, and one that changes with each CI run (fixed
    // within it).
    let mut seeds = vec![0x5eed_0001, 2, 3];
    for var in ["GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILD_NUMBER"] {
        if let Some(id) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
            seeds.push(id);
            break;
        }
    }
    seeds
}

#[test]
fn views_match_a_from_scratch_oracle_through_splits_kills_and_recreation() {
    let scale: usize =
        std::env::var("VIEW_MODEL_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    for seed in seeds() {
        model_run(seed, scale);
    }
}

/// The oracle's own order: one numeric order across integers and floats,
/// -0.0 is 0, every NaN one key after +inf, types in their fixed order.
#[test]
fn the_oracle_orders_keys_as_promised() {
    let ascending = [
        K::Null,
        K::Bytes(vec![0]),
        K::Str(String::new()),
        K::Str("a".into()),
        K::Str("a\0b".into()),
        K::Tuple(vec![]),
        K::Tuple(vec![K::Str("a".into())]),
        K::Tuple(vec![K::Str("a".into()), K::Null]),
        K::num(f64::NEG_INFINITY),
        K::num(-(2f64.powi(70))),
        K::Int(-(i128::from(u64::MAX))),
        K::Int(i128::from(i64::MIN)),
        K::num(-1.5),
        K::num(-0.0),
        K::num(0.1),
        K::Int(1),
        K::num(1.5),
        K::num(2.0),
        K::Int(1 << 53),
        K::Int((1 << 53) + 1),
        K::num(2f64.powi(63)),
        K::Int(i128::from(u64::MAX)),
        K::num(TWO64),
        K::num(2f64.powi(70)),
        K::num(f64::INFINITY),
        K::num(f64::NAN),
        K::Bool(false),
        K::Bool(true),
    ];
    for (i, a) in ascending.iter().enumerate() {
        for (j, b) in ascending.iter().enumerate() {
            assert_eq!(a.cmp(b), i.cmp(&j), "{a:?} vs {b:?}");
        }
    }
    assert_eq!(K::num(-0.0), K::Int(0));
    assert_eq!(K::num(1.0), K::Int(1));
    assert_eq!(K::num(f64::from_bits(0xfff8_0000_0000_0001)), K::num(f64::NAN));
    assert_eq!(K::num(2f64.powi(63)).canon(), "9223372036854775808");
    assert_eq!(lua_key(&arr(vec![])), Some(vec![]));
    assert_eq!(lua_key(&V::Map(vec![])), Some(vec![]));
    assert_eq!(lua_key(&arr(vec![s("a")])), lua_key(&s("a")));
    assert_eq!(lua_key(&V::from(u64::MAX)), Some(vec![K::Float(TWO64)]));
    assert_eq!(lua_key(&V::Map(vec![(s("k"), V::from(1))])), None);
    let two53 = 2f64.powi(53);
    assert_eq!(exact_sum(&[two53, 1.0, 1.0]), two53 + 2.0, "rounded once, not per addition");
    let tags = encode(&V::Map(vec![(
        s("tags"),
        arr(vec![s("a"), V::F64(1.0), V::from(1), arr(vec![s("a")]), V::Nil, s("b")]),
    )]));
    let rows = map_tags(b"k", &decode_doc(&tags).expect("doc"));
    let ns: Vec<i128> = rows.iter().map(|r| r.n).collect();
    assert_eq!(ns, vec![0, 0, 1, 1], "duplicates numbered, the nil ends the tags");
}

/// The tuple encoding orders (and equates) keys exactly as the oracle does,
/// floats given as they come (1.0, -0.0, NaN payloads), so an index's rows
/// come back in the oracle's order.
#[test]
fn the_tuple_encoding_orders_keys_as_the_oracle() {
    let mut elements: Vec<Element> = Vec::new();
    for v in g_pool().iter().chain(tag_pool().iter()).chain(h_pool().iter()) {
        if let Some(k) = lua_element(v, 1) {
            // As emitted: floats not yet canonical.
            let raw = match v {
                V::F64(f) => Element::Float(*f),
                _ => k.element(),
            };
            elements.push(raw);
        }
    }
    for a in &elements {
        for b in &elements {
            let (ka, kb) = (lua_like(a), lua_like(b));
            let (ea, eb) = (
                tuple::encode(std::slice::from_ref(a)).expect("a"),
                tuple::encode(std::slice::from_ref(b)).expect("b"),
            );
            assert_eq!(ea.cmp(&eb), ka.cmp(&kb), "{a:?} vs {b:?}: bytes {ea:02x?} vs {eb:02x?}");
            let nested =
                |e: &Element| tuple::encode(&[Element::Tuple(vec![e.clone()])]).expect("n");
            assert_eq!(nested(a).cmp(&nested(b)), ka.cmp(&kb), "nested {a:?} vs {b:?}");
        }
    }
}

/// An element as the oracle sees it (floats canonical).
fn lua_like(e: &Element) -> K {
    match e {
        Element::Float(f) => K::num(*f),
        Element::Tuple(items) => K::Tuple(items.iter().map(lua_like).collect()),
        other => K::strict(other),
    }
}
