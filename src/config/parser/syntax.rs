//! The cursor and key/value lists (maps, the file itself, `{ }` wrappers).

use super::*;

impl<'a> Parser<'a, '_> {
    // ----- cursor --------------------------------------------------------

    pub(super) fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    pub(super) fn peek2(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().nth(1)
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    pub(super) fn advance_to(&mut self, target: usize) {
        while self.pos < target && self.bump().is_some() {}
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            line: self.line,
            col: self.col,
        }
    }

    pub(super) fn pos_of(&self, m: Mark) -> Pos {
        Pos {
            file: self.file.clone(),
            line: m.line,
            col: m.col,
        }
    }

    pub(super) fn err(&self, m: Mark, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.pos_of(m), msg)
    }

    pub(super) fn err_here(&self, msg: impl Into<String>) -> ConfigError {
        self.err(self.mark(), msg)
    }

    pub(super) fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.bump();
        }
    }

    /// Skips all whitespace including newlines (Unicode `White_Space`, which
    /// is the same set as Go's `unicode.IsSpace` used by nats-server).
    pub(super) fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    pub(super) fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => self.peek2() == Some('/'),
            _ => false,
        }
    }

    /// Skips to the end of the line, leaving the newline for the caller,
    /// which may need it as a separator.
    pub(super) fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| !is_nl(c)) {
            self.bump();
        }
    }

    pub(super) fn skip_space_and_comments(&mut self) {
        loop {
            self.skip_space();
            if !self.at_comment() {
                return;
            }
            self.skip_comment();
        }
    }

    /// Reads up to the closing `quote` (the opening one already consumed);
    /// None at end of input. No escapes: used for single-quoted strings,
    /// quoted keys and quoted include paths, none of which have any.
    pub(super) fn read_quoted_raw(&mut self, quote: char) -> Option<&'a str> {
        let start = self.pos;
        loop {
            match self.bump()? {
                c if c == quote => return self.src.get(start..self.pos - 1),
                _ => {}
            }
        }
    }

    /// Enters one nesting level (see [`MAX_DEPTH`]).
    pub(super) fn enter(&mut self, m: Mark) -> Result<(), ConfigError> {
        if self.session.depth >= MAX_DEPTH {
            return Err(self.err(m, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.session.depth += 1;
        Ok(())
    }

    pub(super) fn leave(&mut self) {
        self.session.depth = self.session.depth.saturating_sub(1);
    }

    pub(super) fn unterminated(&self, ctx: Ctx, open: Mark) -> ConfigError {
        match ctx {
            Ctx::Map => self.err(open, "unterminated map: missing '}'"),
            _ => self.err(open, "unterminated '{' block: missing '}'"),
        }
    }

    // ----- key/value lists ------------------------------------------------

    /// Parses entries into the innermost scope until end of input (`Top`) or
    /// the closing `}` (consumed). `open` is where the `{` was.
    pub(super) fn parse_entries(&mut self, ctx: Ctx, open: Mark) -> Result<(), ConfigError> {
        loop {
            self.skip_space_and_comments();
            let key_mark = self.mark();
            match self.peek() {
                None if ctx == Ctx::Top => return Ok(()),
                None => return Err(self.unterminated(ctx, open)),
                Some('}') if ctx != Ctx::Top => {
                    self.bump();
                    return Ok(());
                }
                Some('{') if ctx != Ctx::Map => {
                    // JSON-style braces around the file only group keys.
                    self.bump();
                    self.enter(key_mark)?;
                    self.parse_entries(Ctx::Wrapper, key_mark)?;
                    self.leave();
                    continue;
                }
                Some(c @ ('=' | ':')) => {
                    return Err(
                        self.err(key_mark, format!("expected a key, found separator {c:?}"))
                    );
                }
                Some('/') => {
                    return Err(
                        self.err(key_mark, "unexpected '/': comments start with '#' or '//'")
                    );
                }
                Some(']') if ctx == Ctx::Map => {
                    return Err(self.err(key_mark, "unexpected ']' in a map"));
                }
                Some(_) => {}
            }

            let (key, quoted) = self.parse_key(key_mark)?;
            // `include` is a keyword only when unquoted and followed by
            // whitespace; `include: x` is an ordinary key.
            if !quoted
                && key.eq_ignore_ascii_case("include")
                && self.peek().is_some_and(char::is_whitespace)
            {
                self.parse_include()?;
            } else if ctx == Ctx::Top && !quoted && key == "}" && self.rest_is_space() {
                // nats-server accepts one stray `}` at the very end of a file
                // (left over from a JSON-style wrapper).
                self.skip_space();
                return Ok(());
            } else {
                let value = self.parse_entry_value(ctx, open, &key, key_mark)?;
                if let Some(scope) = self.scopes.last_mut() {
                    insert(scope, key, value);
                }
            }

            // The entry must end here: a comment, a newline, ',' or ';'.
            self.skip_blanks();
            if self.at_comment() {
                self.skip_comment();
            }
            match self.peek() {
                None if ctx == Ctx::Top => return Ok(()),
                None => return Err(self.unterminated(ctx, open)),
                Some(c) if is_nl(c) || c == ',' || c == ';' => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    // At the top level nats-server lets `}` end an entry.
                    if ctx != Ctx::Top {
                        return Ok(());
                    }
                }
                Some(c) => {
                    return Err(self.err_here(format!(
                        "unexpected {c:?} after value: expected a newline, ',' or ';'"
                    )));
                }
            }
        }
    }

    pub(super) fn rest_is_space(&self) -> bool {
        self.src
            .get(self.pos..)
            .is_none_or(|rest| rest.chars().all(char::is_whitespace))
    }

    /// A quoted key (no escapes, may contain anything) or a bare one, which
    /// runs to whitespace, `=` or `:` — so `a{` or `a]` are keys, as in
    /// nats-server. Returns the key and whether it was quoted.
    pub(super) fn parse_key(&mut self, key_mark: Mark) -> Result<(String, bool), ConfigError> {
        if let Some(q @ ('"' | '\'')) = self.peek() {
            self.bump();
            return match self.read_quoted_raw(q) {
                Some(k) => Ok((k.to_string(), true)),
                None => Err(self.err(key_mark, format!("unterminated quoted key: missing {q:?}"))),
            };
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == '=' || c == ':' {
                break;
            }
            self.bump();
        }
        Ok((self.src[start..self.pos].to_string(), false))
    }

    /// Everything after a key: optional separator, then the value.
    pub(super) fn parse_entry_value(
        &mut self,
        ctx: Ctx,
        open: Mark,
        key: &str,
        key_mark: Mark,
    ) -> Result<Spanned, ConfigError> {
        // Newlines may come between a key and its separator (or value).
        self.skip_space();
        if matches!(self.peek(), Some('=' | ':')) {
            self.bump();
            // ...but after the separator only inside maps.
            if ctx == Ctx::Map {
                self.skip_space();
            } else {
                self.skip_blanks();
            }
        }
        let missing = || self.err(key_mark, format!("missing value for key {key:?}"));
        match self.peek() {
            None if ctx == Ctx::Top => Err(missing()),
            None => Err(self.unterminated(ctx, open)),
            Some(c) if is_nl(c) => Err(missing()),
            Some('}' | ',' | ';') if ctx == Ctx::Map => Err(missing()),
            Some(_) => self.parse_value(false),
        }
    }
}
