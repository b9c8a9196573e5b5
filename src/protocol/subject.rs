//! Subject syntax. A subject is a `.`-separated list of non-empty tokens;
//! subscriptions may use `*` (one token) and `>` (one or more trailing tokens).

/// Is this a valid subscription subject (wildcards allowed)?
pub fn valid_sub_subject(s: &[u8]) -> bool {
    if s.is_empty() {
        return false;
    }
    let mut tokens = s.split(|&b| b == b'.').peekable();
    while let Some(t) = tokens.next() {
        if t.is_empty()
            || t.iter()
                .any(|&b| b == b' ' || b == b'\t' || b == b'\r' || b == b'\n')
        {
            return false;
        }
        if t.len() > 1 && (t.contains(&b'*') || t.contains(&b'>')) {
            // nats-server treats `foo*` as a literal token; only pedantic rejects it.
            continue;
        }
        if t == b">" && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// Is this a valid subject to publish to? `pedantic` also rejects wildcards,
/// matching nats-server which only checks publish subjects in pedantic mode.
pub fn valid_pub_subject(s: &[u8], pedantic: bool) -> bool {
    if !pedantic {
        return !s.is_empty();
    }
    valid_literal_subject(s)
}

/// A subject with no wildcard tokens and no empty tokens.
pub fn valid_literal_subject(s: &[u8]) -> bool {
    !s.is_empty()
        && s.split(|&b| b == b'.').all(|t| {
            !t.is_empty() && t != b"*" && t != b">" && !t.iter().any(|&b| b == b' ' || b == b'\t')
        })
}

/// Does the subject contain a wildcard token?
pub fn has_wildcard(s: &[u8]) -> bool {
    s.split(|&b| b == b'.').any(|t| t == b"*" || t == b">")
}

/// Does a literal subject match a (possibly wildcard) pattern?
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut p = pattern.split(|&b| b == b'.');
    let mut s = subject.split(|&b| b == b'.');
    loop {
        match (p.next(), s.next()) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Bytes from a client made safe for a log line or an `-ERR`: printable
/// text as is; control characters, quotes, backslashes and invalid UTF-8
/// escaped as Go's `%q` does (`\r`, `\x1b`, `\"`). In non-pedantic mode a
/// subject may carry any of these, and written raw they could forge log
/// lines or break the `-ERR` line.
pub fn escape(b: &[u8]) -> std::borrow::Cow<'_, str> {
    if b.iter()
        .all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
    {
        // Printable ASCII only: valid UTF-8 by construction.
        return String::from_utf8_lossy(b);
    }
    use std::fmt::Write;
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `escape` in double quotes: Go's `%q`, as nats-server quotes subjects in
/// its `-ERR` lines and logs.
pub fn quote(b: &[u8]) -> String {
    format!("\"{}\"", escape(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_subjects() {
        for ok in [
            "foo",
            "foo.bar",
            "foo.*",
            "*",
            ">",
            "foo.>",
            "*.*.>",
            "_INBOX.abc.*",
        ] {
            assert!(valid_sub_subject(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "foo..bar", ".foo", "foo.", "foo.>.bar", "> .a"] {
            assert!(!valid_sub_subject(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn publish_subjects() {
        assert!(valid_pub_subject(b"foo.*", false));
        assert!(!valid_pub_subject(b"foo.*", true));
        assert!(!valid_pub_subject(b"foo..bar", true));
        assert!(valid_pub_subject(b"foo.bar", true));
    }

    #[test]
    fn quoting_like_go() {
        assert_eq!(quote(b"foo.bar"), r#""foo.bar""#);
        assert_eq!(quote(b"a\x1b[31mb"), r#""a\x1b[31mb""#);
        assert_eq!(quote(b"a\rb\"q"), r#""a\rb\"q""#);
        assert_eq!(quote(b"a\nb\\"), r#""a\nb\\""#);
        assert_eq!(quote("caf\u{e9}".as_bytes()), "\"caf\u{e9}\"");
        assert_eq!(quote(b"x\xff\x7f"), r#""x\xff\x7f""#);
        assert!(matches!(escape(b"plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn matching() {
        assert!(matches(b"foo.*", b"foo.bar"));
        assert!(!matches(b"foo.*", b"foo.bar.baz"));
        assert!(matches(b"foo.>", b"foo.bar.baz"));
        assert!(!matches(b"foo.>", b"foo"));
        assert!(matches(b">", b"a"));
        assert!(matches(b"a.b", b"a.b"));
        assert!(!matches(b"a.b", b"a.c"));
    }
}
