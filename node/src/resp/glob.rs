//! Redis's glob-style patterns (KEYS, SCAN MATCH, PSUBSCRIBE): `*`, `?`,
//! `[abc]`, `[^a]`, `[a-z]`, and `\\` to take the next character literally,
//! with the quirks of Redis 7.0's `stringmatchlen`: an empty string matches
//! only an empty pattern (KEYS and SCAN treat a lone `*` as "everything"
//! before matching: see [`matches_all`]), and a `-` before a class's `]`
//! makes a range that ends at that `]`.

/// Whether KEYS and the SCAN family skip matching for `pattern` (a lone
/// `*`, which Redis takes as every key, the empty one included).
pub fn matches_all(pattern: &[u8]) -> bool {
    pattern == b"*"
}

pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    if s.is_empty() {
        // Redis's loop never starts on an empty string.
        return pattern.is_empty();
    }
    let (mut p, mut i) = (0, 0);
    // Where to resume after the last `*`: (pattern index, string index).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => Some(p + 1),
                b'[' => class(pattern, p, s[i]),
                b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(p + 2),
                c => (c == s[i]).then_some(p + 1),
            }
        } else {
            None
        };
        match step {
            Some(next) => {
                p = next;
                i += 1;
            }
            None => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[p] == b'['`; the
/// pattern index after the class when it matches.
fn class(pattern: &[u8], mut p: usize, c: u8) -> Option<usize> {
    p += 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut found = false;
    loop {
        match pattern.get(p) {
            // An unclosed class ends with the pattern, as in Redis.
            None => break,
            Some(b']') => {
                p += 1;
                break;
            }
            Some(b'\\') if p + 1 < pattern.len() => {
                found |= pattern[p + 1] == c;
                p += 2;
            }
            // `[a-]`: a range from `a` to `]`, as Redis reads it.
            Some(&lo) if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() => {
                let hi = pattern[p + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                found |= (lo..=hi).contains(&c);
                p += 3;
            }
            Some(&x) => {
                found |= x == c;
                p += 1;
            }
        }
    }
    (found != negate).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_like_redis() {
        let yes = [
            ("", ""),
            ("*", "anything"),
            // `[a-]` is the range `]`..`a`, and takes the rest of the
            // pattern as part of the class.
            ("[a-]", "_"),
            ("x[a-]y]", "xy"),
            ("h?llo", "hello"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("user:*", "user:42"),
            ("*:*:x", "a:b:c:x"),
            ("\\*", "*"),
            ("a*b*c", "aXbYc"),
        ];
        let no = [
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("user:*", "users"),
            ("\\*", "x"),
            ("a*b*c", "aXbY"),
            ("", "a"),
            // Postmortem: `*` matched the empty channel name, `[a-]` was
            // the set {a, -}.
            ("*", ""),
            ("?*", ""),
            ("[a-]", "-"),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        for (p, s) in no {
            assert!(!matches(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
    }
}
