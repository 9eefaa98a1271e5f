//! Replies of the Redis protocol, written as RESP2 or RESP3 (chosen per
//! connection with HELLO). RESP2 has no maps, sets, doubles or null type:
//! they are written as flat arrays, bulk strings and null bulks, as Redis
//! does.

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(&'static str),
    /// A status made at run time (a script's `{ok=...}`); line breaks are
    /// written as spaces.
    Status(String),
    /// `-ERR ...`: the whole message, with its prefix (`ERR`, `WRONGTYPE`).
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A missing value: `$-1` (RESP2) or `_` (RESP3).
    Null,
    /// A missing array: `*-1` (RESP2) or `_` (RESP3).
    NullArray,
    Array(Vec<Reply>),
    /// Pairs: a map in RESP3, a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Pairs as RESP3 shows HRANDFIELD's WITHVALUES: an array of arrays of
    /// two; a flat array in RESP2.
    Pairs(Vec<(Reply, Reply)>),
    /// A set in RESP3, an array in RESP2.
    Set(Vec<Reply>),
    /// A double in RESP3, a bulk string in RESP2.
    Double(f64),
    /// `#t`/`#f` in RESP3, `:1`/`:0` in RESP2 (a script's boolean in
    /// RESP3 mode).
    Bool(bool),
    /// `(digits` in RESP3, a bulk string in RESP2 (a script's
    /// `{big_number=...}`).
    BigNumber(String),
    /// An out-of-band push in RESP3 (`>`: pub/sub messages and
    /// confirmations), an array in RESP2.
    Push(Vec<Reply>),
    /// Text as a RESP3 verbatim string (`=`, format `txt`), a bulk string
    /// in RESP2 (INFO, CLIENT LIST).
    Verbatim(String),
    /// A double given by its text, as Redis prints a long double (GEOPOS's
    /// coordinates): `,` in RESP3, a bulk string in RESP2.
    DoubleText(String),
    /// A whole reply already encoded (by the node that ran the command, in
    /// the connection's protocol version): written as it is.
    Raw(Vec<u8>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK")
    }

    pub fn err(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    /// Redis's error for a command given the wrong number of arguments.
    pub fn wrong_arity(name: &str) -> Reply {
        Reply::err(format!("ERR wrong number of arguments for '{name}' command"))
    }

    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    pub fn is_error(&self) -> bool {
        match self {
            Reply::Error(_) => true,
            Reply::Raw(bytes) => bytes.first() == Some(&b'-'),
            _ => false,
        }
    }

    /// Appends the reply in protocol version `proto` (2 or 3).
    pub fn write(&self, proto: u8, out: &mut Vec<u8>) {
        let resp3 = proto >= 3;
        let header = |out: &mut Vec<u8>, tag: u8, n: usize| {
            out.push(tag);
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Reply::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Status(s) => {
                out.push(b'+');
                out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(e) => {
                out.push(b'-');
                // A message never spans lines.
                out.extend(e.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
            Reply::Int(n) => {
                out.push(b':');
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(b) => {
                header(out, b'$', b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', items.len());
                for i in items {
                    i.write(proto, out);
                }
            }
            Reply::Push(items) => {
                header(out, if resp3 { b'>' } else { b'*' }, items.len());
                for i in items {
                    i.write(proto, out);
                }
            }
            Reply::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len());
                for i in items {
                    i.write(proto, out);
                }
            }
            Reply::Pairs(pairs) => {
                header(out, b'*', if resp3 { pairs.len() } else { pairs.len() * 2 });
                for (k, v) in pairs {
                    if resp3 {
                        header(out, b'*', 2);
                    }
                    k.write(proto, out);
                    v.write(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len());
                } else {
                    header(out, b'*', pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.write(proto, out);
                    v.write(proto, out);
                }
            }
            Reply::Double(x) if resp3 => {
                out.push(b',');
                out.extend_from_slice(format_double(*x).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Double(x) => Reply::Bulk(format_double(*x).into_bytes()).write(proto, out),
            Reply::Bool(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Reply::Bool(b) => Reply::Int(i64::from(*b)).write(proto, out),
            Reply::BigNumber(n) if resp3 => {
                out.push(b'(');
                out.extend(n.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
            Reply::BigNumber(n) => Reply::Bulk(n.clone().into_bytes()).write(proto, out),
            Reply::Verbatim(text) if resp3 => {
                header(out, b'=', text.len() + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::DoubleText(text) if resp3 => {
                out.push(b',');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(text) | Reply::DoubleText(text) => {
                Reply::Bulk(text.clone().into_bytes()).write(proto, out)
            }
            Reply::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// A double as Redis prints a score: C's `%.17g` (17 significant digits,
/// trailing zeros dropped, an exponent below 1e-4 or from 1e17 on),
/// `inf`, `-inf`, and `-0` for negative zero (ZUNION's weights make one;
/// stored scores never are: see `zsets`).
pub fn format_double(x: f64) -> String {
    format_g(x, 17)
}

/// `x` as C's `%.<digits>g` prints it (`digits` from 1 to 17): that many
/// significant digits, trailing zeros dropped, an exponent below 1e-4 or
/// from 1e`digits` on; `inf`, `-inf`, `nan`, `-nan`, `-0`.
pub fn format_g(x: f64, digits: usize) -> String {
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x.is_nan() {
        return format!("{sign}nan");
    }
    if x.is_infinite() {
        return format!("{sign}inf");
    }
    if x == 0.0 {
        return format!("{sign}0");
    }
    let digits = digits.clamp(1, 17);
    // Rounded to `digits` significant digits first: the exponent that
    // decides the notation is the rounded one, as in C.
    let sci = format!("{x:.*e}", digits - 1);
    let (mantissa, exp) = sci.split_once('e').expect("an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    if exp < -4 || exp >= digits as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim_fraction(mantissa), exp.abs());
    }
    trim_fraction(&format!("{x:.*}", (digits as i32 - 1 - exp) as usize)).to_owned()
}

/// A double converted to a C `long long` as on x86-64 (`cvttsd2si`):
/// truncated toward zero; NaN and values out of range give `i64::MIN`
/// (the "integer indefinite"), as Redis's casts give it.
pub fn c_double_to_i64(x: f64) -> i64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if x.is_nan() || !(-TWO_63..TWO_63).contains(&x) {
        return i64::MIN;
    }
    x as i64
}

/// C's `llround` as glibc gives it on x86-64: halves away from zero, and
/// `i64::MIN` out of range.
pub fn c_llround(x: f64) -> i64 {
    c_double_to_i64(x.round())
}

/// `1.2500` -> `1.25`, `3.000` -> `3`; text without a `.` is unchanged.
fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C's own `%.<digits>g`, the oracle.
    fn c_format(x: f64, digits: usize) -> String {
        let mut buf = [0u8; 64];
        let format = std::ffi::CString::new(format!("%.{digits}g")).expect("a format");
        // SAFETY: snprintf writes at most `buf.len()` bytes, NUL included,
        // and the format takes one double.
        let n = unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), x) };
        String::from_utf8_lossy(&buf[..usize::try_from(n).unwrap_or(0).min(buf.len() - 1)])
            .into_owned()
    }

    proptest::proptest! {
        #[test]
        fn doubles_print_as_c_prints_them(bits in proptest::num::u64::ANY, digits in 1usize..=17) {
            let x = f64::from_bits(bits);
            proptest::prop_assume!(!x.is_nan());
            proptest::prop_assert_eq!(format_g(x, digits), c_format(x, digits));
        }

        #[test]
        fn everyday_doubles_print_as_c_prints_them(x in -1e20f64..1e20, scale in -30i32..30, digits in 1usize..=17) {
            let x = x * 10f64.powi(scale);
            proptest::prop_assert_eq!(format_g(x, digits), c_format(x, digits));
        }
    }

    #[test]
    fn round_numbers_print_as_c_prints_them() {
        for x in [0.1, 1.0, 100.0, 1e-5, 1e-4, 9.9999e16, 1e17, 123456.5, -0.0, 2f64.powi(53)] {
            for digits in [1, 6, 14, 17] {
                assert_eq!(format_g(x, digits), c_format(x, digits), "{x} %.{digits}g");
            }
        }
    }

    fn text(r: &Reply, proto: u8) -> String {
        let mut out = Vec::new();
        r.write(proto, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn replies_in_both_protocols() {
        assert_eq!(text(&Reply::ok(), 2), "+OK\r\n");
        assert_eq!(text(&Reply::err("ERR bad\nthing"), 2), "-ERR bad thing\r\n");
        assert_eq!(text(&Reply::Int(-3), 3), ":-3\r\n");
        assert_eq!(text(&Reply::bulk("hi"), 2), "$2\r\nhi\r\n");
        assert_eq!(text(&Reply::Null, 2), "$-1\r\n");
        assert_eq!(text(&Reply::Null, 3), "_\r\n");
        assert_eq!(text(&Reply::NullArray, 2), "*-1\r\n");
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Int(1))]);
        assert_eq!(text(&map, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(text(&map, 3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(text(&Reply::Set(vec![Reply::bulk("x")]), 3), "~1\r\n$1\r\nx\r\n");
        assert_eq!(text(&Reply::Double(1.5), 3), ",1.5\r\n");
        assert_eq!(text(&Reply::Double(2.0), 2), "$1\r\n2\r\n");
    }

    #[test]
    fn a_reply_encoded_elsewhere_is_relayed_as_it_is() {
        let mut encoded = Vec::new();
        let array = Reply::Array(vec![Reply::Int(1), Reply::Null]);
        array.write(3, &mut encoded);
        let raw = Reply::Raw(encoded.clone());
        assert_eq!(text(&raw, 2), String::from_utf8(encoded).expect("utf8"));
        assert!(!raw.is_error());
        assert!(Reply::Raw(b"-ERR gone\r\n".to_vec()).is_error());
    }
}
