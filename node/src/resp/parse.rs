//! Requests of the Redis protocol: arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or inline commands (`GET k\r\n`).
//!
//! Parsing is incremental over a buffer that grows as bytes arrive, and
//! refuses what Redis refuses with Redis's own words, before buffering a
//! byte of an absurd length: after such an error the connection is closed,
//! as Redis does.

/// Most elements in one request (Redis: 1024 * 1024 * 1024).
pub const MULTIBULK_LEN_MAX: i64 = 1024 * 1024 * 1024;
/// Largest bulk string in a request (Redis's `proto-max-bulk-len`, 512 MB).
pub const BULK_LEN_MAX: i64 = 512 * 1024 * 1024;
/// Longest inline command or header line (Redis: 64 KiB).
pub const INLINE_LEN_MAX: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command and its arguments, and the bytes it took.
    Command(Vec<Vec<u8>>, usize),
    /// An empty line (ignored, as Redis does), and its length.
    Empty(usize),
    /// More bytes are needed.
    Incomplete,
    /// A protocol error: the message to send before closing.
    Error(String),
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let end = buf[from..].windows(2).position(|w| w == b"\r\n")? + from;
    Some((&buf[from..end], end + 2))
}

fn number(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::Incomplete,
        Some(b'*') => multibulk(buf),
        Some(_) => inline(buf),
    }
}

fn multibulk(buf: &[u8]) -> Parsed {
    let Some((header, mut pos)) = line(buf, 0) else {
        return if buf.len() > INLINE_LEN_MAX {
            Parsed::Error("Protocol error: too big mbulk count string".into())
        } else {
            Parsed::Incomplete
        };
    };
    let count = match number(&header[1..]) {
        Some(n) if n <= MULTIBULK_LEN_MAX => n,
        _ => return Parsed::Error("Protocol error: invalid multibulk length".into()),
    };
    if count <= 0 {
        return Parsed::Empty(pos);
    }
    let mut args = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        match buf.get(pos) {
            None => return Parsed::Incomplete,
            Some(b'$') => {}
            Some(&c) => {
                return Parsed::Error(format!("Protocol error: expected '$', got '{}'", c as char))
            }
        }
        let Some((header, start)) = line(buf, pos) else {
            return if buf.len() - pos > INLINE_LEN_MAX {
                Parsed::Error("Protocol error: too big bulk count string".into())
            } else {
                Parsed::Incomplete
            };
        };
        let len = match number(&header[1..]) {
            Some(n) if (0..=BULK_LEN_MAX).contains(&n) => n as usize,
            _ => return Parsed::Error("Protocol error: invalid bulk length".into()),
        };
        if buf.len() < start + len + 2 {
            return Parsed::Incomplete;
        }
        args.push(buf[start..start + len].to_vec());
        pos = start + len + 2;
    }
    Parsed::Command(args, pos)
}

fn inline(buf: &[u8]) -> Parsed {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > INLINE_LEN_MAX {
            Parsed::Error("Protocol error: too big inline request".into())
        } else {
            Parsed::Incomplete
        };
    };
    let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    match split_inline(text) {
        Some(args) if args.is_empty() => Parsed::Empty(end + 1),
        Some(args) => Parsed::Command(args, end + 1),
        None => Parsed::Error("Protocol error: unbalanced quotes in request".into()),
    }
}

/// Splits an inline command into arguments as Redis's `sdssplitargs`
/// does: spaces separate, double quotes allow `\n`-style and `\xHH`
/// escapes, single quotes allow `\'`.
fn split_inline(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == text.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        match text[i] {
            b'"' => {
                i += 1;
                loop {
                    let c = *text.get(i)?;
                    match c {
                        b'\\'
                            if text.get(i + 1) == Some(&b'x')
                                && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                                && text.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                        {
                            let hex = std::str::from_utf8(&text[i + 2..i + 4]).ok()?;
                            arg.push(u8::from_str_radix(hex, 16).ok()?);
                            i += 4;
                        }
                        b'\\' => {
                            let e = *text.get(i + 1)?;
                            arg.push(match e {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            // A closing quote must be followed by a space.
                            if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return None;
                            }
                            break;
                        }
                        other => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let c = *text.get(i)?;
                    if c == b'\\' && text.get(i + 1) == Some(&b'\'') {
                        arg.push(b'\'');
                        i += 2;
                    } else if c == b'\'' {
                        i += 1;
                        if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return None;
                        }
                        break;
                    } else {
                        arg.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                while i < text.len() && !text[i].is_ascii_whitespace() {
                    arg.push(text[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str], used: usize) -> Parsed {
        Parsed::Command(args.iter().map(|a| a.as_bytes().to_vec()).collect(), used)
    }

    #[test]
    fn multibulk_requests_parse_whole_or_wait() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(parse(req), cmd(&["GET", "k"], req.len()));
        for cut in 0..req.len() {
            assert_eq!(parse(&req[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        let mut two = req.to_vec();
        two.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(parse(&two), cmd(&["GET", "k"], req.len()));
        assert_eq!(parse(b"*0\r\n"), Parsed::Empty(4));
        assert_eq!(
            parse(b"*2\r\n$0\r\n\r\n$2\r\n\x00\xff\r\n"),
            Parsed::Command(vec![vec![], vec![0, 255]], 18)
        );
    }

    #[test]
    fn absurd_lengths_are_refused_with_redis_words() {
        assert_eq!(
            parse(b"*1\r\n$99999999999\r\n"),
            Parsed::Error("Protocol error: invalid bulk length".into())
        );
        assert_eq!(
            parse(b"*1\r\n$-5\r\n"),
            Parsed::Error("Protocol error: invalid bulk length".into())
        );
        assert_eq!(
            parse(b"*99999999999\r\n"),
            Parsed::Error("Protocol error: invalid multibulk length".into())
        );
        assert_eq!(
            parse(b"*x\r\n"),
            Parsed::Error("Protocol error: invalid multibulk length".into())
        );
        assert_eq!(
            parse(b"*1\r\n:1\r\n"),
            Parsed::Error("Protocol error: expected '$', got ':'".into())
        );
        let long = vec![b'a'; INLINE_LEN_MAX + 1];
        assert_eq!(parse(&long), Parsed::Error("Protocol error: too big inline request".into()));
    }

    #[test]
    fn inline_commands_split_like_redis() {
        assert_eq!(parse(b"PING\r\n"), cmd(&["PING"], 6));
        assert_eq!(parse(b"set  k  v\n"), cmd(&["set", "k", "v"], 10));
        assert_eq!(parse(b"set k \"a b\\n\\x41\"\r\n"), cmd(&["set", "k", "a b\nA"], 19));
        assert_eq!(parse(b"set k 'it\\'s'\r\n"), cmd(&["set", "k", "it's"], 15));
        assert_eq!(parse(b"\r\n"), Parsed::Empty(2));
        assert_eq!(parse(b"PING"), Parsed::Incomplete);
        assert_eq!(
            parse(b"set k \"open\r\n"),
            Parsed::Error("Protocol error: unbalanced quotes in request".into())
        );
    }
}
