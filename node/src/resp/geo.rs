//! The geo commands over sorted sets, as Redis 7.0 (`geo.c`,
//! `geohash.c`, `geohash_helper.c`, whose algorithms and constants these
//! follow): GEOADD, GEOPOS, GEODIST, GEOHASH, GEOSEARCH, GEOSEARCHSTORE,
//! GEORADIUS, GEORADIUSBYMEMBER and their `_RO` forms.
//!
//! A point is a member whose score is its 52-bit geohash: longitude and
//! latitude (the latter within ±85.05112878, Web Mercator's limits) each
//! scaled to 26 bits and interleaved. A search covers its shape with the
//! geohash box of the center and its eight neighbours, at a precision
//! chosen from the radius, reads each box's score range, and keeps the
//! points whose haversine distance (Earth radius 6372797.560856 m) puts
//! them inside the circle or box. Coordinates print as Redis prints them
//! (as a long double, `%.17Lf` trimmed), distances with four decimals.

use super::args::{float, float_or, integer, lower};
use super::errors::SYNTAX;
use super::keyspace::Db;
use super::reply::Reply;
use super::state::RespState;
use super::table::Command;
use super::zsets::{score_of, zset};
use crate::error::NodeResult;

const STEP_MAX: u8 = 26;
const LAT_MIN: f64 = -85.051_128_78;
const LAT_MAX: f64 = 85.051_128_78;
const LONG_MIN: f64 = -180.0;
const LONG_MAX: f64 = 180.0;
const EARTH_RADIUS_IN_METERS: f64 = 6_372_797.560_856;
const MERCATOR_MAX: f64 = 20_037_726.37;

/// A geohash: `step` bits of each coordinate, interleaved (latitude in
/// the even bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bits {
    bits: u64,
    step: u8,
}

impl Bits {
    fn is_zero(self) -> bool {
        self.bits == 0 && self.step == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Range {
    min: f64,
    max: f64,
}

const LONG_RANGE: Range = Range { min: LONG_MIN, max: LONG_MAX };
const LAT_RANGE: Range = Range { min: LAT_MIN, max: LAT_MAX };

fn interleave64(xlo: u32, ylo: u32) -> u64 {
    const B: [u64; 5] = [
        0x5555_5555_5555_5555,
        0x3333_3333_3333_3333,
        0x0F0F_0F0F_0F0F_0F0F,
        0x00FF_00FF_00FF_00FF,
        0x0000_FFFF_0000_FFFF,
    ];
    const S: [u32; 5] = [1, 2, 4, 8, 16];
    let (mut x, mut y) = (u64::from(xlo), u64::from(ylo));
    for i in (0..5).rev() {
        x = (x | (x << S[i])) & B[i];
        y = (y | (y << S[i])) & B[i];
    }
    x | (y << 1)
}

fn deinterleave64(interleaved: u64) -> u64 {
    const B: [u64; 6] = [
        0x5555_5555_5555_5555,
        0x3333_3333_3333_3333,
        0x0F0F_0F0F_0F0F_0F0F,
        0x00FF_00FF_00FF_00FF,
        0x0000_FFFF_0000_FFFF,
        0x0000_0000_FFFF_FFFF,
    ];
    const S: [u32; 6] = [0, 1, 2, 4, 8, 16];
    let (mut x, mut y) = (interleaved, interleaved >> 1);
    for i in 0..6 {
        x = (x | (x >> S[i])) & B[i];
        y = (y | (y >> S[i])) & B[i];
    }
    x | (y << 32)
}

/// `geohashEncode`: `None` outside the ranges.
fn encode(long: Range, lat: Range, longitude: f64, latitude: f64, step: u8) -> Option<Bits> {
    if !(LONG_MIN..=LONG_MAX).contains(&longitude) || !(LAT_MIN..=LAT_MAX).contains(&latitude) {
        return None;
    }
    if latitude < lat.min || latitude > lat.max || longitude < long.min || longitude > long.max {
        return None;
    }
    let scale = (1u64 << step) as f64;
    let lat_offset = (latitude - lat.min) / (lat.max - lat.min) * scale;
    let long_offset = (longitude - long.min) / (long.max - long.min) * scale;
    Some(Bits { bits: interleave64(lat_offset as u32, long_offset as u32), step })
}

/// An area: a geohash's longitude and latitude intervals.
#[derive(Debug, Clone, Copy)]
struct Area {
    longitude: Range,
    latitude: Range,
}

/// `geohashDecode`.
fn decode(long: Range, lat: Range, hash: Bits) -> Area {
    let sep = deinterleave64(hash.bits);
    let (ilato, ilono) = (sep as u32, (sep >> 32) as u32);
    let scale = (1u64 << hash.step) as f64;
    let (lat_scale, long_scale) = (lat.max - lat.min, long.max - long.min);
    Area {
        latitude: Range {
            min: lat.min + (f64::from(ilato) / scale) * lat_scale,
            max: lat.min + ((f64::from(ilato) + 1.0) / scale) * lat_scale,
        },
        longitude: Range {
            min: long.min + (f64::from(ilono) / scale) * long_scale,
            max: long.min + ((f64::from(ilono) + 1.0) / scale) * long_scale,
        },
    }
}

/// A member's score to its longitude and latitude (the center of its
/// 52-bit box, clamped), as `decodeGeohash`.
fn position(score: f64) -> (f64, f64) {
    let area = decode(LONG_RANGE, LAT_RANGE, Bits { bits: score as u64, step: STEP_MAX });
    let x = ((area.longitude.min + area.longitude.max) / 2.0).clamp(LONG_MIN, LONG_MAX);
    let y = ((area.latitude.min + area.latitude.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (x, y)
}

fn move_x(hash: &mut Bits, d: i8) {
    if d == 0 {
        return;
    }
    let mut x = hash.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = hash.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> (64 - u32::from(hash.step) * 2);
    if d > 0 {
        x = x.wrapping_add(zz + 1);
    } else {
        x |= zz;
        x = x.wrapping_sub(zz + 1);
    }
    x &= 0xaaaa_aaaa_aaaa_aaaau64 >> (64 - u32::from(hash.step) * 2);
    hash.bits = x | y;
}

fn move_y(hash: &mut Bits, d: i8) {
    if d == 0 {
        return;
    }
    let x = hash.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let mut y = hash.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> (64 - u32::from(hash.step) * 2);
    if d > 0 {
        y = y.wrapping_add(zz + 1);
    } else {
        y |= zz;
        y = y.wrapping_sub(zz + 1);
    }
    y &= 0x5555_5555_5555_5555u64 >> (64 - u32::from(hash.step) * 2);
    hash.bits = x | y;
}

fn moved(hash: Bits, dx: i8, dy: i8) -> Bits {
    let mut h = hash;
    move_x(&mut h, dx);
    move_y(&mut h, dy);
    h
}

fn deg_rad(a: f64) -> f64 {
    a * (std::f64::consts::PI / 180.0)
}

fn rad_deg(a: f64) -> f64 {
    a / (std::f64::consts::PI / 180.0)
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_IN_METERS * (deg_rad(lat2) - deg_rad(lat1)).abs()
}

/// `geohashGetDistance`: haversine, in meters.
fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (lon1r, lon2r) = (deg_rad(lon1), deg_rad(lon2));
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let (lat1r, lat2r) = (deg_rad(lat1), deg_rad(lat2));
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_IN_METERS * a.sqrt().asin()
}

/// What a search covers, around `center` (longitude, latitude).
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A radius, in the unit.
    Circle(f64),
    /// Width and height, in the unit.
    Rectangle(f64, f64),
}

#[derive(Debug, Clone, Copy)]
struct Search {
    center: (f64, f64),
    shape: Shape,
    /// Meters per unit.
    conversion: f64,
}

impl Search {
    /// Whether a point is inside, and its distance in meters (`geoWithinShape`).
    fn within(&self, x: f64, y: f64) -> Option<f64> {
        let (cx, cy) = self.center;
        match self.shape {
            Shape::Circle(r) => {
                let d = distance(cx, cy, x, y);
                (d <= r * self.conversion).then_some(d)
            }
            Shape::Rectangle(w, h) => {
                let (w, h) = (w * self.conversion, h * self.conversion);
                if lat_distance(y, cy) > h / 2.0 || distance(x, y, cx, y) > w / 2.0 {
                    return None;
                }
                Some(distance(cx, cy, x, y))
            }
        }
    }

    /// `geohashBoundingBox`: min long, min lat, max long, max lat.
    fn bounds(&self) -> [f64; 4] {
        let (longitude, latitude) = self.center;
        let (height, width) = match self.shape {
            Shape::Circle(r) => (r * self.conversion, r * self.conversion),
            Shape::Rectangle(w, h) => (self.conversion * h / 2.0, self.conversion * w / 2.0),
        };
        let lat_delta = rad_deg(height / EARTH_RADIUS_IN_METERS);
        let long_delta_top =
            rad_deg(width / EARTH_RADIUS_IN_METERS / deg_rad(latitude + lat_delta).cos());
        let long_delta_bottom =
            rad_deg(width / EARTH_RADIUS_IN_METERS / deg_rad(latitude - lat_delta).cos());
        let delta = if latitude < 0.0 { long_delta_bottom } else { long_delta_top };
        [longitude - delta, latitude - lat_delta, longitude + delta, latitude + lat_delta]
    }

    /// `geohashCalculateAreasByShapeWGS84`: the boxes to read, center
    /// first, then north, south, east, west, north-east, north-west,
    /// south-east, south-west (a zero box: not needed).
    fn boxes(&self) -> [Bits; 9] {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounds();
        let (longitude, latitude) = self.center;
        let radius = match self.shape {
            Shape::Circle(r) => r,
            Shape::Rectangle(w, h) => ((w / 2.0) * (w / 2.0) + (h / 2.0) * (h / 2.0)).sqrt(),
        } * self.conversion;
        let mut steps = estimate_steps(radius, latitude);
        let around = |steps: u8| {
            let hash =
                encode(LONG_RANGE, LAT_RANGE, longitude, latitude, steps).unwrap_or_default();
            let n = [
                moved(hash, 0, 1),
                moved(hash, 0, -1),
                moved(hash, 1, 0),
                moved(hash, -1, 0),
                moved(hash, 1, 1),
                moved(hash, -1, 1),
                moved(hash, 1, -1),
                moved(hash, -1, -1),
            ];
            (hash, n)
        };
        let (mut hash, mut n) = around(steps);
        let area_of = |h: Bits| decode(LONG_RANGE, LAT_RANGE, h);
        let decrease = area_of(n[0]).latitude.max < max_lat
            || area_of(n[1]).latitude.min > min_lat
            || area_of(n[2]).longitude.max < max_lon
            || area_of(n[3]).longitude.min > min_lon;
        if steps > 1 && decrease {
            steps -= 1;
            (hash, n) = around(steps);
        }
        let area = area_of(hash);
        let zero = Bits::default();
        let [mut north, mut south, mut east, mut west, mut ne, mut nw, mut se, mut sw] = n;
        if steps >= 2 {
            if area.latitude.min < min_lat {
                (south, sw, se) = (zero, zero, zero);
            }
            if area.latitude.max > max_lat {
                (north, ne, nw) = (zero, zero, zero);
            }
            if area.longitude.min < min_lon {
                (west, sw, nw) = (zero, zero, zero);
            }
            if area.longitude.max > max_lon {
                (east, se, ne) = (zero, zero, zero);
            }
        }
        [hash, north, south, east, west, ne, nw, se, sw]
    }
}

/// `geohashEstimateStepsByRadius`.
fn estimate_steps(range_meters: f64, lat: f64) -> u8 {
    if range_meters == 0.0 {
        return 26;
    }
    let (mut range, mut step) = (range_meters, 1i32);
    while range < MERCATOR_MAX {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

/// The 52-bit score range `[min, max)` a box covers.
fn box_scores(hash: Bits) -> (f64, f64) {
    let align = |bits: u64| (bits << (52 - u32::from(hash.step) * 2)) as f64;
    (align(hash.bits), align(hash.bits + 1))
}

/// `fixedpoint_d2string(d, 4)`: four decimals, rounded as `llrint`.
fn four_decimals(d: f64) -> String {
    if d == 0.0 {
        return "0.0000".into();
    }
    let scaled = (d * 10_000.0).round_ties_even() as i64;
    let (sign, v) = if scaled < 0 { ("-", scaled.unsigned_abs()) } else { ("", scaled as u64) };
    format!("{sign}{}.{:04}", v / 10_000, v % 10_000)
}

/// A coordinate as `addReplyHumanLongDouble` sends it.
fn coordinate(x: f64) -> Reply {
    Reply::DoubleText(super::long_double::human(x))
}

/// Meters per unit, or Redis's error.
fn unit(arg: &[u8]) -> Result<f64, Reply> {
    match lower(arg).as_str() {
        "m" => Ok(1.0),
        "km" => Ok(1000.0),
        "ft" => Ok(0.3048),
        "mi" => Ok(1609.34),
        _ => Err(Reply::err("ERR unsupported unit provided. please use M, KM, FT, MI")),
    }
}

/// A longitude and latitude argument pair, checked.
fn long_lat(args: &[Vec<u8>]) -> Result<(f64, f64), Reply> {
    let x = float(&args[0])?;
    let y = float(&args[1])?;
    if !(LONG_MIN..=LONG_MAX).contains(&x) || !(LAT_MIN..=LAT_MAX).contains(&y) {
        return Err(Reply::err(format!("ERR invalid longitude,latitude pair {x:.6},{y:.6}")));
    }
    Ok((x, y))
}

/// A radius and its unit.
fn radius(args: &[Vec<u8>]) -> Result<(f64, f64), Reply> {
    let r = float_or(&args[0], "ERR need numeric radius")?;
    if r < 0.0 {
        return Err(Reply::err("ERR radius cannot be negative"));
    }
    Ok((r, unit(&args[1])?))
}

/// Runs a geo command, its arity checked.
pub async fn run(
    state: &RespState,
    dbi: u32,
    proto: u8,
    db: &Db<'_>,
    command: &Command,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    match command.name {
        "geoadd" => geoadd(state, dbi, proto, db, args).await,
        "geopos" | "geohash" => {
            if or_reply!(zset(db, &args[1]).await?).is_none() {
                let empty = if command.name == "geopos" { Reply::NullArray } else { Reply::Null };
                return Ok(Reply::Array(args[2..].iter().map(|_| empty.clone()).collect()));
            }
            let mut out = Vec::with_capacity(args.len() - 2);
            for m in &args[2..] {
                out.push(match score_of(db, &args[1], m).await? {
                    None if command.name == "geopos" => Reply::NullArray,
                    None => Reply::Null,
                    Some(s) if command.name == "geopos" => {
                        let (x, y) = position(s);
                        Reply::Array(vec![coordinate(x), coordinate(y)])
                    }
                    Some(s) => Reply::bulk(geohash_string(s)),
                });
            }
            Ok(Reply::Array(out))
        }
        "geodist" => {
            let to_meter = match args.len() {
                4 => 1.0,
                5 => or_reply!(unit(&args[4])),
                _ => return Ok(Reply::err(SYNTAX)),
            };
            if or_reply!(zset(db, &args[1]).await?).is_none() {
                return Ok(Reply::Null);
            }
            let (Some(a), Some(b)) =
                (score_of(db, &args[1], &args[2]).await?, score_of(db, &args[1], &args[3]).await?)
            else {
                return Ok(Reply::Null);
            };
            let ((x1, y1), (x2, y2)) = (position(a), position(b));
            Ok(Reply::bulk(four_decimals(distance(x1, y1, x2, y2) / to_meter)))
        }
        name => search(state, dbi, db, name, args).await,
    }
}

/// GEOADD key [NX|XX] [CH] longitude latitude member ...: ZADD with each
/// pair's geohash as its score.
async fn geoadd(
    state: &RespState,
    dbi: u32,
    proto: u8,
    db: &Db<'_>,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let (mut at, mut nx, mut xx) = (2, false, false);
    while at < args.len() {
        match lower(&args[at]).as_str() {
            "nx" => nx = true,
            "xx" => xx = true,
            "ch" => {}
            _ => break,
        }
        at += 1;
    }
    if !(args.len() - at).is_multiple_of(3) || (nx && xx) {
        return Ok(Reply::err(SYNTAX));
    }
    let mut zadd: Vec<Vec<u8>> = args[..at].to_vec();
    zadd[0] = b"zadd".to_vec();
    for point in args[at..].chunks(3) {
        let (x, y) = or_reply!(long_lat(&point[..2]));
        let bits = encode(LONG_RANGE, LAT_RANGE, x, y, STEP_MAX).unwrap_or_default();
        zadd.push((bits.bits << (52 - 2 * u32::from(STEP_MAX))).to_string().into_bytes());
        zadd.push(point[2].clone());
    }
    let command = super::table::lookup("zadd").expect("ZADD is in the table");
    super::zsets::run(state, dbi, proto, db, command, &zadd).await
}

/// GEOHASH's standard 11-character string: the position encoded again
/// over latitudes ±90.
fn geohash_string(score: f64) -> String {
    const ALPHABET: &[u8] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let (x, y) = position(score);
    let hash = encode(LONG_RANGE, Range { min: -90.0, max: 90.0 }, x, y, 26).unwrap_or_default();
    (0..11)
        .map(|i| {
            let idx = if i == 10 { 0 } else { (hash.bits >> (52 - (i + 1) * 5)) & 0x1f };
            char::from(ALPHABET[idx as usize])
        })
        .collect()
}

/// GEORADIUS's STORE or STOREDIST key (the last given), found as the
/// options are parsed: COUNT's argument skipped.
fn radius_store_key(args: &[Vec<u8>], base: usize) -> Option<Vec<u8>> {
    let mut found = None;
    let mut i = base;
    while i < args.len() {
        match lower(&args[i]).as_str() {
            "count" => i += 1,
            "store" | "storedist" if i + 1 < args.len() => {
                found = Some(args[i + 1].clone());
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// One point a search found.
struct Found {
    member: Vec<u8>,
    score: f64,
    dist: f64,
    x: f64,
    y: f64,
}

/// GEOSEARCH, GEOSEARCHSTORE, GEORADIUS, GEORADIUSBYMEMBER and the `_RO`
/// forms, as `georadiusGeneric`.
async fn search(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let by_coords = name.starts_with("georadius") && !name.starts_with("georadiusbymember");
    let by_member = name.starts_with("georadiusbymember");
    let geosearch = name.starts_with("geosearch");
    let store_cmd = name == "geosearchstore";
    let no_store = name.ends_with("_ro");
    let source = if store_cmd { &args[2] } else { &args[1] };
    let mut store: Option<Vec<u8>> = store_cmd.then(|| args[1].clone());
    // The destination, locked with the source: GEOSEARCHSTORE's first
    // key, or GEORADIUS's last STORE/STOREDIST argument.
    let dest = if store_cmd {
        Some(args[1].clone())
    } else if !no_store && !geosearch {
        radius_store_key(args, if by_coords { 6 } else { 5 })
    } else {
        None
    };
    let mut keys = vec![(dbi, source.as_slice(), false)];
    if let Some(d) = &dest {
        keys.push((dbi, d.as_slice(), true));
    }
    let _g = state.lock_keys(&keys).await;
    let present = or_reply!(zset(db, source).await?).is_some();
    let mut center = None;
    let mut shape = None;
    let base = if by_coords {
        let (x, y) = or_reply!(long_lat(&args[2..4]));
        center = Some((x, y));
        let (r, conv) = or_reply!(radius(&args[4..6]));
        shape = Some((Shape::Circle(r), conv));
        6
    } else if by_member {
        if present {
            let Some(s) = score_of(db, source, &args[2]).await? else {
                return Ok(Reply::err("ERR could not decode requested zset member"));
            };
            center = Some(position(s));
            let (r, conv) = or_reply!(radius(&args[3..5]));
            shape = Some((Shape::Circle(r), conv));
        }
        5
    } else if store_cmd {
        3
    } else {
        2
    };
    let (mut withdist, mut withhash, mut withcoord, mut any) = (false, false, false, false);
    let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
    let mut sort: Option<bool> = None; // Some(true): ascending
    let mut count: i64 = 0;
    let mut storedist = false;
    let rest = &args[base.min(args.len())..];
    let mut i = 0;
    while i < rest.len() {
        let left = rest.len() - i - 1;
        match lower(&rest[i]).as_str() {
            "withdist" => withdist = true,
            "withhash" => withhash = true,
            "withcoord" => withcoord = true,
            "any" => any = true,
            "asc" => sort = Some(true),
            "desc" => sort = Some(false),
            "count" if left >= 1 => {
                count = match or_reply!(integer(&rest[i + 1])) {
                    n if n > 0 => n,
                    _ => return Ok(Reply::err("ERR COUNT must be > 0")),
                };
                i += 1;
            }
            w @ ("store" | "storedist") if left >= 1 && !no_store && !geosearch => {
                store = Some(rest[i + 1].clone());
                storedist = w == "storedist";
                i += 1;
            }
            "storedist" if store_cmd => storedist = true,
            "frommember" if left >= 1 && geosearch && !fromloc => {
                frommember = true;
                if present {
                    let Some(s) = score_of(db, source, &rest[i + 1]).await? else {
                        return Ok(Reply::err("ERR could not decode requested zset member"));
                    };
                    center = Some(position(s));
                }
                i += 1;
            }
            "fromlonlat" if left >= 2 && geosearch && !frommember => {
                center = Some(or_reply!(long_lat(&rest[i + 1..i + 3])));
                fromloc = true;
                i += 2;
            }
            "byradius" if left >= 2 && geosearch && !bybox => {
                let (r, conv) = or_reply!(radius(&rest[i + 1..i + 3]));
                shape = Some((Shape::Circle(r), conv));
                byradius = true;
                i += 2;
            }
            "bybox" if left >= 3 && geosearch && !byradius => {
                let w = or_reply!(float_or(&rest[i + 1], "ERR need numeric width"));
                let h = or_reply!(float_or(&rest[i + 2], "ERR need numeric height"));
                if w < 0.0 || h < 0.0 {
                    return Ok(Reply::err("ERR height or width cannot be negative"));
                }
                shape = Some((Shape::Rectangle(w, h), or_reply!(unit(&rest[i + 3]))));
                bybox = true;
                i += 3;
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        i += 1;
    }
    if store.is_some() && (withdist || withhash || withcoord) {
        let which = if store_cmd { "GEOSEARCHSTORE" } else { "STORE option in GEORADIUS" };
        return Ok(Reply::err(format!(
            "ERR {which} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        )));
    }
    let shown = String::from_utf8_lossy(&args[0]).into_owned();
    if geosearch && !(frommember || fromloc) {
        return Ok(Reply::err(format!(
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {shown}"
        )));
    }
    if geosearch && !(byradius || bybox) {
        return Ok(Reply::err(format!(
            "ERR exactly one of BYRADIUS and BYBOX can be specified for {shown}"
        )));
    }
    if any && count == 0 {
        return Ok(Reply::err("ERR the ANY argument requires COUNT argument"));
    }
    let (Some(center), Some((shape, conversion)), true) = (center, shape, present) else {
        return Ok(match store {
            Some(dest) => {
                super::zset_algebra::store_result(db, &dest, Vec::new(), "").await?;
                Reply::Int(0)
            }
            None => Reply::Array(Vec::new()),
        });
    };
    if count != 0 && sort.is_none() && !any {
        sort = Some(true);
    }
    let search = Search { center, shape, conversion };
    let limit = if any { count as usize } else { usize::MAX };
    let mut found: Vec<Found> = Vec::new();
    let mut last: Option<Bits> = None;
    for hash in search.boxes() {
        if hash.is_zero() || last == Some(hash) {
            continue;
        }
        if found.len() >= limit {
            break;
        }
        let (min, max) = box_scores(hash);
        let start = super::zsets::score_bound(source, min);
        let end = Some(super::zsets::score_bound(source, max));
        db.visit_rows(start, end, false, |row, _| {
            let (s, member) = super::zsets::parse_score_row(&row)?;
            let (x, y) = position(s);
            if let Some(dist) = search.within(x, y) {
                found.push(Found { member, score: s, dist, x, y });
            }
            Ok(found.len() < limit)
        })
        .await?;
        last = Some(hash);
    }
    if let Some(ascending) = sort {
        found.sort_by(|a, b| {
            let o = a.dist.partial_cmp(&b.dist).unwrap_or(std::cmp::Ordering::Equal);
            if ascending {
                o
            } else {
                o.reverse()
            }
        });
    }
    if count > 0 {
        found.truncate(count as usize);
    }
    if let Some(dest) = store {
        let items = found
            .into_iter()
            .map(|f| (f.member, if storedist { f.dist / conversion } else { f.score }))
            .collect();
        let event = if geosearch { "geosearchstore" } else { "georadiusstore" };
        return super::zset_algebra::store_result(db, &dest, items, event).await;
    }
    let options = usize::from(withdist) + usize::from(withhash) + usize::from(withcoord);
    let out = found
        .into_iter()
        .map(|f| {
            if options == 0 {
                return Reply::Bulk(f.member);
            }
            let mut item = vec![Reply::Bulk(f.member)];
            if withdist {
                item.push(Reply::bulk(four_decimals(f.dist / conversion)));
            }
            if withhash {
                item.push(Reply::Int(f.score as i64));
            }
            if withcoord {
                item.push(Reply::Array(vec![coordinate(f.x), coordinate(f.y)]));
            }
            Reply::Array(item)
        })
        .collect();
    Ok(Reply::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_as_redis() {
        // Palermo, from Redis's documentation.
        let bits = encode(LONG_RANGE, LAT_RANGE, 13.361389, 38.115556, STEP_MAX).expect("in range");
        assert_eq!(bits.bits, 3_479_099_956_230_698);
        let (x, y) = position(bits.bits as f64);
        assert!((x - 13.361389).abs() < 1e-5 && (y - 38.115556).abs() < 1e-5);
        assert_eq!(geohash_string(bits.bits as f64), "sqc8b49rny0");
        let catania = encode(LONG_RANGE, LAT_RANGE, 15.087269, 37.502669, STEP_MAX).expect("in");
        let (x2, y2) = position(catania.bits as f64);
        assert_eq!(four_decimals(distance(x, y, x2, y2)), "166274.1516");
    }

    #[test]
    fn four_decimals_round_as_llrint() {
        assert_eq!(four_decimals(0.0), "0.0000");
        assert_eq!(four_decimals(1.23456), "1.2346");
        assert_eq!(four_decimals(-0.00004), "0.0000");
        assert_eq!(four_decimals(-2.5), "-2.5000");
        assert_eq!(four_decimals(12.5), "12.5000");
    }
}
