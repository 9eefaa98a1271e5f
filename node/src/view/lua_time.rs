//! `time`: UTC timestamps for view functions, so bucketing by day or month
//! needs no hand-written calendar code.
//!
//! Timestamps are Unix seconds (an integer, or a float whose fraction is
//! dropped by the formatting functions), always UTC, in years 0000 to 9999.
//! The functions are pure: nothing reads a clock, so a mapper maps the same
//! record to the same rows whenever it runs. Every call is charged to the
//! call's instruction budget.
//!
//! - `time.parse_iso8601(s)` -> seconds, or `nil, message`: `YYYY-MM-DD`,
//!   optionally followed by `T` or a space and `HH:MM`, `HH:MM:SS` or
//!   `HH:MM:SS.fff` (then a float), then optionally `Z`, `+HH:MM`, `-HH:MM`,
//!   `+HHMM` or `+HH` (no zone: UTC).
//! - `time.day(ts)` -> `"YYYY-MM-DD"`, `time.month(ts)` -> `"YYYY-MM"`,
//!   `time.year(ts)` -> `"YYYY"`, `time.hour(ts)` -> `"YYYY-MM-DDTHH"`.
//! - `time.format(ts, fmt)`: `%Y` year, `%m` month, `%d` day, `%H` hour,
//!   `%M` minute, `%S` second (all zero-padded), `%j` day of the year
//!   (001-366), `%u` ISO weekday (1 = Monday), `%F` = `%Y-%m-%d`,
//!   `%T` = `%H:%M:%S`, `%%`; any other directive is an error.
//! - `time.make(year, month, day [, hour, min, sec])` -> seconds (fields
//!   must be in their ranges).
//!
//! Calendar arithmetic: H. Hinnant, "chrono-Compatible Low-Level Date
//! Algorithms" (`days_from_civil`, `civil_from_days`), proleptic Gregorian.

use std::sync::Arc;

use mlua::{Lua, Value};

use super::sandbox::Meter;

/// Instructions one call of a `time` function costs, besides its input.
const CALL_COST: u64 = 50;
/// Unix seconds of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const TS_MIN: i64 = -62_167_219_200;
const TS_MAX: i64 = 253_402_300_799;
/// Longest format string or output accepted.
const FORMAT_BYTES_MAX: usize = 256;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A UTC time broken down.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Days since 1970-01-01.
    days: i64,
}

fn civil(ts: i64) -> Civil {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Civil { year, month, day, hour: secs / 3600, minute: secs / 60 % 60, second: secs % 60, days }
}

/// Parses an ISO 8601 timestamp (see the module docs) into Unix seconds;
/// a fraction of a second makes the result fractional.
pub fn parse_iso8601(s: &str) -> Result<(i64, Option<f64>), String> {
    let bad = |why: &str| format!("not an ISO 8601 timestamp ({why}): {s:?}");
    let b = s.as_bytes();
    let mut at = 0usize;
    let digits = |n: usize, at: &mut usize| -> Result<u32, String> {
        let part = b.get(*at..*at + n).ok_or_else(|| bad("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad("expected digits"));
        }
        *at += n;
        Ok(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    };
    let expect = |c: u8, at: &mut usize| -> Result<(), String> {
        if b.get(*at) == Some(&c) {
            *at += 1;
            Ok(())
        } else {
            Err(bad(&format!("expected {:?}", c as char)))
        }
    };
    let year = i64::from(digits(4, &mut at)?);
    expect(b'-', &mut at)?;
    let month = digits(2, &mut at)?;
    expect(b'-', &mut at)?;
    let day = digits(2, &mut at)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    let (mut hour, mut minute, mut second, mut fraction) = (0, 0, 0, None);
    if matches!(b.get(at), Some(b'T' | b't' | b' ')) {
        at += 1;
        hour = digits(2, &mut at)?;
        expect(b':', &mut at)?;
        minute = digits(2, &mut at)?;
        if b.get(at) == Some(&b':') {
            at += 1;
            second = digits(2, &mut at)?;
            if matches!(b.get(at), Some(b'.' | b',')) {
                at += 1;
                let start = at;
                while b.get(at).is_some_and(u8::is_ascii_digit) {
                    at += 1;
                }
                if at == start || at - start > 9 {
                    return Err(bad("a fraction of a second has 1 to 9 digits"));
                }
                let text = format!("0.{}", &s[start..at]);
                fraction = Some(text.parse::<f64>().map_err(|_| bad("bad fraction"))?);
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(bad("no such time of day"));
        }
    }
    let mut offset = 0i64;
    match b.get(at) {
        None => {}
        Some(b'Z' | b'z') => at += 1,
        Some(&sign @ (b'+' | b'-')) => {
            at += 1;
            let h = digits(2, &mut at)?;
            let mut m = 0;
            if b.get(at) == Some(&b':') {
                at += 1;
                m = digits(2, &mut at)?;
            } else if at < b.len() {
                m = digits(2, &mut at)?;
            }
            if h > 23 || m > 59 {
                return Err(bad("no such offset"));
            }
            offset = i64::from(h * 3600 + m * 60);
            if sign == b'-' {
                offset = -offset;
            }
        }
        Some(_) => return Err(bad("unexpected text")),
    }
    if at != b.len() {
        return Err(bad("unexpected text at the end"));
    }
    let local =
        days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Ok((local - offset, fraction))
}

/// Formats Unix seconds with the directives of the module docs.
pub fn format(ts: i64, fmt: &str) -> Result<String, String> {
    if fmt.len() > FORMAT_BYTES_MAX {
        return Err(format!("time.format: a format may be at most {FORMAT_BYTES_MAX} bytes"));
    }
    let c = civil(ts);
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        use std::fmt::Write;
        let _ = match chars.next() {
            Some('Y') => write!(out, "{:04}", c.year),
            Some('m') => write!(out, "{:02}", c.month),
            Some('d') => write!(out, "{:02}", c.day),
            Some('H') => write!(out, "{:02}", c.hour),
            Some('M') => write!(out, "{:02}", c.minute),
            Some('S') => write!(out, "{:02}", c.second),
            Some('j') => {
                write!(out, "{:03}", c.days - days_from_civil(c.year, 1, 1) + 1)
            }
            // 1970-01-01 was a Thursday (ISO weekday 4).
            Some('u') => write!(out, "{}", (c.days + 3).rem_euclid(7) + 1),
            Some('F') => write!(out, "{:04}-{:02}-{:02}", c.year, c.month, c.day),
            Some('T') => write!(out, "{:02}:{:02}:{:02}", c.hour, c.minute, c.second),
            Some('%') => write!(out, "%"),
            Some(other) => {
                return Err(format!(
                "time.format: unknown directive %{other} (known: %Y %m %d %H %M %S %j %u %F %T %%)"
            ))
            }
            None => return Err("time.format: the format ends with a lone %".into()),
        };
    }
    Ok(out)
}

/// Seconds from a Lua number argument, checked against the year range.
fn seconds(v: &Value, what: &str) -> mlua::Result<i64> {
    let ts = match v {
        Value::Integer(i) => *i,
        Value::Number(f) if f.is_finite() => {
            let f = f.floor();
            if f < TS_MIN as f64 || f > TS_MAX as f64 {
                i64::MIN
            } else {
                f as i64
            }
        }
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "{what}: expected Unix seconds (a number), got {}",
                other.type_name()
            )))
        }
    };
    if !(TS_MIN..=TS_MAX).contains(&ts) {
        return Err(mlua::Error::RuntimeError(format!(
            "{what}: {} is outside years 0000 to 9999",
            match v {
                Value::Integer(i) => i.to_string(),
                Value::Number(f) => f.to_string(),
                _ => String::new(),
            }
        )));
    }
    Ok(ts)
}

/// Installs the global `time` table.
pub fn install(lua: &Lua, meter: Arc<Meter>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let m = meter.clone();
    t.set(
        "parse_iso8601",
        lua.create_function(move |lua, s: mlua::String| {
            let bytes = s.as_bytes();
            m.charge(CALL_COST + bytes.len() as u64)?;
            let text = std::str::from_utf8(&bytes).unwrap_or("");
            let out = match parse_iso8601(text) {
                Ok((secs, None)) => (Value::Integer(secs), Value::Nil),
                Ok((secs, Some(frac))) => (Value::Number(secs as f64 + frac), Value::Nil),
                Err(e) => (Value::Nil, Value::String(lua.create_string(e)?)),
            };
            Ok(out)
        })?,
    )?;
    for (name, fmt) in
        [("day", "%Y-%m-%d"), ("month", "%Y-%m"), ("year", "%Y"), ("hour", "%Y-%m-%dT%H")]
    {
        let m = meter.clone();
        let what = format!("time.{name}");
        t.set(
            name,
            lua.create_function(move |_, ts: Value| {
                m.charge(CALL_COST)?;
                format(seconds(&ts, &what)?, fmt).map_err(mlua::Error::RuntimeError)
            })?,
        )?;
    }
    let m = meter.clone();
    t.set(
        "format",
        lua.create_function(move |_, (ts, fmt): (Value, mlua::String)| {
            m.charge(CALL_COST + fmt.as_bytes().len() as u64)?;
            let ts = seconds(&ts, "time.format")?;
            let fmt = fmt.to_str().map_err(|_| {
                mlua::Error::RuntimeError("time.format: the format is not UTF-8".into())
            })?;
            format(ts, &fmt[..]).map_err(mlua::Error::RuntimeError)
        })?,
    )?;
    t.set(
        "make",
        lua.create_function(
            move |_, (y, mo, d, h, mi, s): (i64, u32, u32, Option<u32>, Option<u32>, Option<u32>)| {
                meter.charge(CALL_COST)?;
                let (h, mi, s) = (h.unwrap_or(0), mi.unwrap_or(0), s.unwrap_or(0));
                if !(0..=9999).contains(&y)
                    || !(1..=12).contains(&mo)
                    || d == 0
                    || d > days_in_month(y, mo)
                    || h > 23
                    || mi > 59
                    || s > 59
                {
                    return Err(mlua::Error::RuntimeError(format!(
                        "time.make: no such date and time: {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"
                    )));
                }
                Ok(days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s))
            },
        )?,
    )?;
    lua.globals().raw_set("time", t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_iso8601_forms() {
        let p =
            |s: &str| parse_iso8601(s).map(|(t, f)| (t, f.map(|f| (f * 1000.0).round() as i64)));
        assert_eq!(p("1970-01-01"), Ok((0, None)));
        assert_eq!(p("2024-02-29T12:34:56Z"), Ok((1_709_210_096, None)));
        assert_eq!(p("2024-02-29 12:34:56"), Ok((1_709_210_096, None)));
        assert_eq!(p("2024-02-29T14:34:56+02:00"), Ok((1_709_210_096, None)));
        assert_eq!(p("2024-02-29T10:04:56-0230"), Ok((1_709_210_096, None)));
        assert_eq!(p("2024-02-29T13:34:56+01"), Ok((1_709_210_096, None)));
        assert_eq!(p("2024-02-29T12:34:56.250Z"), Ok((1_709_210_096, Some(250))));
        assert_eq!(p("2024-02-29T12:34Z"), Ok((1_709_210_040, None)));
        assert_eq!(p("1969-12-31T23:59:59Z"), Ok((-1, None)));
        assert_eq!(p("0000-01-01T00:00:00Z"), Ok((TS_MIN, None)));
        assert_eq!(p("9999-12-31T23:59:59Z"), Ok((TS_MAX, None)));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "2024-01-01T24:00:00",
            "2024-01-01T12:00:00Q",
            "2024-01-01T12",
            "20240101",
            "",
            "2024-01-01T12:00:00.",
            "2024-01-01T12:00:00+25:00",
            "2024-01-01 ",
        ] {
            assert!(parse_iso8601(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_timestamps() {
        let ts = 1_709_210_096; // 2024-02-29T12:34:56Z, a Thursday
        assert_eq!(format(ts, "%F %T"), Ok("2024-02-29 12:34:56".into()));
        assert_eq!(
            format(ts, "%Y/%m/%d %H:%M:%S %j %u %%"),
            Ok("2024/02/29 12:34:56 060 4 %".into())
        );
        assert_eq!(format(-1, "%F %T"), Ok("1969-12-31 23:59:59".into()));
        assert_eq!(format(0, "%u"), Ok("4".into()));
        assert!(format(ts, "%q").is_err());
        assert!(format(ts, "%").is_err());
        assert!(format(ts, &"x".repeat(1000)).is_err());
    }

    proptest! {
        /// Formatting and parsing are inverse, and agree with a day-by-day
        /// calendar walk.
        #[test]
        fn format_and_parse_round_trip(ts in TS_MIN..=TS_MAX) {
            let text = format(ts, "%FT%TZ").expect("formats");
            prop_assert_eq!(parse_iso8601(&text), Ok((ts, None)));
            let c = civil(ts);
            prop_assert_eq!(days_from_civil(c.year, c.month, c.day), c.days);
        }
    }

    #[test]
    fn the_calendar_matches_a_day_by_day_walk() {
        let (mut y, mut m, mut d) = (1900i64, 1u32, 1u32);
        let first = days_from_civil(1900, 1, 1);
        assert_eq!(first, -25_567);
        for days in first..first + 366 * 250 {
            assert_eq!(civil_from_days(days), (y, m, d));
            assert_eq!(days_from_civil(y, m, d), days);
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
