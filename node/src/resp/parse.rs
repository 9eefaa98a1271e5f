//! Requests of the Redis protocol: arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or inline commands (`GET k\r\n`).
//!
//! A [`RequestReader`] keeps the bytes a connection has received and the
//! part of a multibulk request parsed so far, so every byte is looked at
//! once however many reads a request takes (a request of a million
//! arguments costs linear time, not a re-parse per read). It refuses what
//! Redis refuses with Redis's own words, before buffering a byte of an
//! absurd length: after such an error the connection is closed, as Redis
//! does. An argument over [`ARG_SIZE_MAX_BYTES`] is discarded as it
//! streams in, and its command is answered with an error instead of run.

use monotable_proto::limits::VALUE_SIZE_MAX_BYTES;

/// Most elements in one request (Redis: 1024 * 1024 * 1024).
pub const MULTIBULK_LEN_MAX: i64 = 1024 * 1024 * 1024;
/// Largest bulk string a request may announce (Redis's
/// `proto-max-bulk-len`, 512 MB): more is a protocol error.
pub const BULK_LEN_MAX: i64 = 512 * 1024 * 1024;
/// Largest argument a command runs with: no row holds more than a value
/// (8 MiB), so a longer argument could only fail later, after being
/// buffered. Up to [`BULK_LEN_MAX`] such an argument is read and dropped
/// and the command is refused, the connection kept.
pub const ARG_SIZE_MAX_BYTES: usize = VALUE_SIZE_MAX_BYTES;
/// Longest inline command or header line (Redis: 64 KiB).
pub const INLINE_LEN_MAX: usize = 64 * 1024;
/// Most elements in a request of a client not yet authenticated (Redis 7).
pub const UNAUTHENTICATED_MULTIBULK_LEN_MAX: i64 = 10;
/// Largest bulk string of a client not yet authenticated (Redis 7).
pub const UNAUTHENTICATED_BULK_LEN_MAX: i64 = 16 * 1024;
/// Most bytes one request may hold, its arguments counted with
/// [`ARG_OVERHEAD_BYTES`] each (Redis: `client-query-buffer-limit`, 1 GB):
/// what one connection can make the node hold for a request.
pub const REQUEST_SIZE_MAX_BYTES: usize = 256 * 1024 * 1024;
/// What an argument costs beyond its bytes (its `Vec` and allocation).
const ARG_OVERHEAD_BYTES: usize = 32;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command and its arguments.
    Command(Vec<Vec<u8>>),
    /// A command with an argument over [`ARG_SIZE_MAX_BYTES`] (its length):
    /// read whole and dropped, to be answered with an error.
    ArgumentTooLarge(usize),
    /// More bytes are needed.
    Incomplete,
    /// A protocol error: the message to send before closing.
    Error(String),
}

/// A multibulk request read in part.
#[derive(Debug, Default)]
struct Partial {
    /// Elements still to come.
    remaining: usize,
    args: Vec<Vec<u8>>,
    /// Bytes the request holds so far (see [`REQUEST_SIZE_MAX_BYTES`]).
    size: usize,
    /// The length of an argument over [`ARG_SIZE_MAX_BYTES`], if one came.
    too_large: Option<usize>,
    /// Bytes of such an argument (and its CRLF) still to drop.
    skip: usize,
}

/// The requests of one connection, parsed as bytes arrive.
#[derive(Debug, Default)]
pub struct RequestReader {
    /// Received bytes; those before `pos` are parsed.
    buf: Vec<u8>,
    pos: usize,
    partial: Option<Partial>,
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let window = &buf[from..buf.len().min(from + INLINE_LEN_MAX + 2)];
    let end = window.windows(2).position(|w| w == b"\r\n")? + from;
    Some((&buf[from..end], end + 2))
}

/// A length as Redis reads it (`string2ll`: no sign `+`, no leading zero,
/// no `-0`).
fn number(bytes: &[u8]) -> Option<i64> {
    super::args::parse_i64(bytes)
}

impl RequestReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Bytes of an argument being dropped are never
    /// buffered.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if let Some(p) = &mut self.partial {
            if p.skip > 0 && self.pos == self.buf.len() {
                let n = p.skip.min(bytes.len());
                p.skip -= n;
                bytes = &bytes[n..];
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            // Parsed bytes go once they are the larger part: each byte
            // moves at most once more than it is received.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet parsed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next request, if all of it has arrived. `authenticated` chooses
    /// the limits (a client that has not authenticated gets Redis's small
    /// ones).
    pub fn next(&mut self, authenticated: bool) -> Parsed {
        loop {
            if self.partial.is_some() {
                return self.multibulk(authenticated);
            }
            let rest = &self.buf[self.pos..];
            match rest.first() {
                None => return Parsed::Incomplete,
                Some(b'*') => {
                    let Some((header, next)) = line(&self.buf, self.pos) else {
                        return if rest.len() > INLINE_LEN_MAX {
                            Parsed::Error("Protocol error: too big mbulk count string".into())
                        } else {
                            Parsed::Incomplete
                        };
                    };
                    let count = match number(&header[1..]) {
                        Some(n) if n <= MULTIBULK_LEN_MAX => n,
                        _ => {
                            return Parsed::Error("Protocol error: invalid multibulk length".into())
                        }
                    };
                    if !authenticated && count > UNAUTHENTICATED_MULTIBULK_LEN_MAX {
                        return Parsed::Error(
                            "Protocol error: unauthenticated multibulk length".into(),
                        );
                    }
                    self.pos = next;
                    // An empty or negative count is skipped, as in Redis.
                    if count > 0 {
                        self.partial = Some(Partial {
                            remaining: count as usize,
                            args: Vec::with_capacity(count.min(1024) as usize),
                            ..Default::default()
                        });
                    }
                }
                Some(_) => match self.inline() {
                    Some(parsed) => return parsed,
                    None => continue,
                },
            }
        }
    }

    /// Parses an inline command; `None` for an empty line (skipped).
    fn inline(&mut self) -> Option<Parsed> {
        let rest = &self.buf[self.pos..];
        let Some(end) = rest.iter().take(INLINE_LEN_MAX + 1).position(|&b| b == b'\n') else {
            return Some(if rest.len() > INLINE_LEN_MAX {
                Parsed::Error("Protocol error: too big inline request".into())
            } else {
                Parsed::Incomplete
            });
        };
        let text = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        let parsed = match split_inline(text) {
            Some(args) if args.is_empty() => None,
            Some(args) => Some(Parsed::Command(args)),
            None => Some(Parsed::Error("Protocol error: unbalanced quotes in request".into())),
        };
        self.pos += end + 1;
        parsed
    }

    /// Goes on with the multibulk request in `self.partial`.
    fn multibulk(&mut self, authenticated: bool) -> Parsed {
        let Some(p) = &mut self.partial else { return Parsed::Incomplete };
        loop {
            if p.skip > 0 {
                let n = p.skip.min(self.buf.len() - self.pos);
                p.skip -= n;
                self.pos += n;
                if p.skip > 0 {
                    return Parsed::Incomplete;
                }
            }
            if p.remaining == 0 {
                let done = self.partial.take().unwrap_or_default();
                return match done.too_large {
                    Some(len) => Parsed::ArgumentTooLarge(len),
                    None => Parsed::Command(done.args),
                };
            }
            let rest = &self.buf[self.pos..];
            match rest.first() {
                None => return Parsed::Incomplete,
                Some(b'$') => {}
                Some(&c) => {
                    return Parsed::Error(format!(
                        "Protocol error: expected '$', got '{}'",
                        c as char
                    ))
                }
            }
            let Some((header, start)) = line(&self.buf, self.pos) else {
                return if rest.len() > INLINE_LEN_MAX {
                    Parsed::Error("Protocol error: too big bulk count string".into())
                } else {
                    Parsed::Incomplete
                };
            };
            let len = match number(&header[1..]) {
                Some(n) if !authenticated && n > UNAUTHENTICATED_BULK_LEN_MAX => {
                    return Parsed::Error("Protocol error: unauthenticated bulk length".into())
                }
                Some(n) if (0..=BULK_LEN_MAX).contains(&n) => n as usize,
                _ => return Parsed::Error("Protocol error: invalid bulk length".into()),
            };
            // Counted before the argument is buffered; the header is parsed
            // again while the argument comes, so this is not a running sum.
            let size = p.size.saturating_add(ARG_OVERHEAD_BYTES + len.min(ARG_SIZE_MAX_BYTES));
            if size > REQUEST_SIZE_MAX_BYTES {
                return Parsed::Error(format!(
                    "Protocol error: request exceeds {REQUEST_SIZE_MAX_BYTES} bytes"
                ));
            }
            if len > ARG_SIZE_MAX_BYTES {
                p.size = size;
                p.too_large = Some(len);
                p.skip = len + 2;
                p.remaining -= 1;
                self.pos = start;
                continue;
            }
            if self.buf.len() < start + len + 2 {
                return Parsed::Incomplete;
            }
            p.size = size;
            if p.too_large.is_none() {
                p.args.push(self.buf[start..start + len].to_vec());
            }
            p.remaining -= 1;
            self.pos = start + len + 2;
        }
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

    fn cmd(args: &[&str]) -> Parsed {
        Parsed::Command(args.iter().map(|a| a.as_bytes().to_vec()).collect())
    }

    /// Every request in `bytes`, fed in pieces of `step` bytes.
    fn all(bytes: &[u8], step: usize, authenticated: bool) -> Vec<Parsed> {
        let mut reader = RequestReader::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            reader.feed(piece);
            loop {
                match reader.next(authenticated) {
                    Parsed::Incomplete => break,
                    p @ Parsed::Error(_) => {
                        out.push(p);
                        return out;
                    }
                    p => out.push(p),
                }
            }
        }
        out
    }

    fn one(bytes: &[u8]) -> Parsed {
        let mut reader = RequestReader::new();
        reader.feed(bytes);
        reader.next(true)
    }

    #[test]
    fn multibulk_requests_parse_whole_or_wait() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(one(req), cmd(&["GET", "k"]));
        for cut in 0..req.len() {
            assert_eq!(one(&req[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        let mut two = req.to_vec();
        two.extend_from_slice(b"*0\r\n*1\r\n$4\r\nPING\r\n");
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(all(&two, step, true), vec![cmd(&["GET", "k"]), cmd(&["PING"])]);
        }
        assert_eq!(
            one(b"*2\r\n$0\r\n\r\n$2\r\n\x00\xff\r\n"),
            Parsed::Command(vec![vec![], vec![0, 255]])
        );
    }

    #[test]
    fn absurd_lengths_are_refused_with_redis_words() {
        let error = |m: &str| Parsed::Error(m.into());
        assert_eq!(one(b"*1\r\n$99999999999\r\n"), error("Protocol error: invalid bulk length"));
        assert_eq!(one(b"*1\r\n$-5\r\n"), error("Protocol error: invalid bulk length"));
        assert_eq!(one(b"*99999999999\r\n"), error("Protocol error: invalid multibulk length"));
        assert_eq!(one(b"*x\r\n"), error("Protocol error: invalid multibulk length"));
        // Regression: lengths Redis's string2ll refuses were accepted.
        for bad in [&b"*+1\r\n"[..], b"*01\r\n"] {
            assert_eq!(one(bad), error("Protocol error: invalid multibulk length"));
        }
        for bad in [&b"*1\r\n$04\r\nabcd\r\n"[..], b"*1\r\n$+4\r\nabcd\r\n", b"*1\r\n$-0\r\n"] {
            assert_eq!(one(bad), error("Protocol error: invalid bulk length"));
        }
        assert_eq!(one(b"*1\r\n:1\r\n"), error("Protocol error: expected '$', got ':'"));
        let long = vec![b'a'; INLINE_LEN_MAX + 1];
        assert_eq!(one(&long), error("Protocol error: too big inline request"));
    }

    // Regression: a client without the password could announce a million
    // arguments or a 512 MB bulk and have the node buffer them.
    #[test]
    fn unauthenticated_clients_get_redis_small_limits() {
        let error = |m: &str| vec![Parsed::Error(m.into())];
        assert_eq!(
            all(b"*11\r\n", 100, false),
            error("Protocol error: unauthenticated multibulk length")
        );
        assert_eq!(
            all(b"*1\r\n$16385\r\n", 100, false),
            error("Protocol error: unauthenticated bulk length")
        );
        assert_eq!(all(b"*10\r\n", 100, false), vec![]);
        assert_eq!(all(b"*11\r\n", 100, true), vec![]);
    }

    #[test]
    fn an_oversized_argument_is_dropped_not_buffered() {
        let len = ARG_SIZE_MAX_BYTES + 1;
        let mut req = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n").into_bytes();
        req.extend(std::iter::repeat_n(b'x', len));
        req.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
        let mut reader = RequestReader::new();
        let mut out = Vec::new();
        for piece in req.chunks(64 * 1024) {
            reader.feed(piece);
            assert!(reader.buffered() <= 128 * 1024, "{} buffered", reader.buffered());
            loop {
                match reader.next(true) {
                    Parsed::Incomplete => break,
                    p => out.push(p),
                }
            }
        }
        assert_eq!(out, vec![Parsed::ArgumentTooLarge(len), cmd(&["PING"])]);
    }

    // Regression: the size of an argument arriving in many reads was
    // counted once per read, and a 7 MiB SET was refused as too large.
    #[test]
    fn an_argument_in_many_pieces_counts_once() {
        let len = ARG_SIZE_MAX_BYTES - 1;
        let mut req = format!("*2\r\n$4\r\nECHO\r\n${len}\r\n").into_bytes();
        req.extend(std::iter::repeat_n(b'x', len));
        req.extend_from_slice(b"\r\n");
        let out = all(&req, 1024, true);
        assert!(matches!(&out[..], [Parsed::Command(args)] if args[1].len() == len));
    }

    // Regression: every read parsed the request again from its start, so a
    // million arguments took 11.6 s and stalled the worker's other clients.
    #[test]
    fn a_million_arguments_parse_in_linear_time() {
        let n = 1_000_000;
        let mut req = format!("*{n}\r\n").into_bytes();
        for _ in 0..n {
            req.extend_from_slice(b"$1\r\na\r\n");
        }
        // Fed as a socket delivers it: each piece would re-parse all the
        // arguments before it if parsing started over.
        let out = all(&req, 4096, true);
        assert!(matches!(&out[..], [Parsed::Command(args)] if args.len() == n));
    }

    #[test]
    fn inline_commands_split_like_redis() {
        assert_eq!(one(b"PING\r\n"), cmd(&["PING"]));
        assert_eq!(one(b"set  k  v\n"), cmd(&["set", "k", "v"]));
        assert_eq!(one(b"set k \"a b\\n\\x41\"\r\n"), cmd(&["set", "k", "a b\nA"]));
        assert_eq!(one(b"set k 'it\\'s'\r\n"), cmd(&["set", "k", "it's"]));
        assert_eq!(one(b"\r\nPING\r\n"), cmd(&["PING"]));
        assert_eq!(one(b"PING"), Parsed::Incomplete);
        assert_eq!(
            one(b"set k \"open\r\n"),
            Parsed::Error("Protocol error: unbalanced quotes in request".into())
        );
    }
}
