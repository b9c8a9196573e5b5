//! Values: strings, numbers and sizes, booleans, datetimes, arrays and maps.

use super::*;

impl<'a> Parser<'a, '_> {
    // ----- values ---------------------------------------------------------

    /// Parses one value starting at the current (non-blank) character;
    /// `in_array` if it is an array element.
    pub(super) fn parse_value(&mut self, in_array: bool) -> Result<Spanned, ConfigError> {
        let m = self.mark();
        let value = match self.peek() {
            Some('[') => return self.parse_array(m),
            Some('{') => return self.parse_map(m),
            Some(c) if c == '-' || c.is_ascii_digit() => return self.parse_number(m, in_array),
            Some('.') => return Err(self.err(m, "floats must start with a digit")),
            Some('"') => Value::Str(self.parse_dq_string(m)?),
            Some('\'') => {
                self.bump();
                match self.read_quoted_raw('\'') {
                    Some(s) => Value::Str(s.to_string()),
                    None => return Err(self.err(m, "unterminated string: missing closing '\\''")),
                }
            }
            Some('(') => Value::Str(self.parse_block_string(m)?),
            _ => return self.parse_bare(m, Vec::new()),
        };
        Ok(Spanned {
            value,
            pos: self.pos_of(m),
        })
    }

    pub(super) fn parse_array(&mut self, m: Mark) -> Result<Spanned, ConfigError> {
        self.bump(); // '['
        self.enter(m)?;
        let mut items = Vec::new();
        loop {
            // Before an element: anything blank, newlines and comments.
            self.skip_space_and_comments();
            match self.peek() {
                None => return Err(self.err(m, "unterminated array: missing ']'")),
                Some(']') => {
                    self.bump();
                    break;
                }
                Some(c @ (',' | '/')) => {
                    return Err(self.err_here(format!(
                        "unexpected {c:?}: expected an array element or ']'"
                    )));
                }
                Some(_) => {}
            }
            items.push(self.parse_value(true)?);
            // After an element: ',' or a newline, or the end.
            self.skip_blanks();
            if self.at_comment() {
                self.skip_comment();
            }
            match self.peek() {
                None => return Err(self.err(m, "unterminated array: missing ']'")),
                Some(']') => {
                    self.bump();
                    break;
                }
                Some(c) if c == ',' || is_nl(c) => {
                    self.bump();
                }
                Some(c) => {
                    return Err(self.err_here(format!(
                        "unexpected {c:?} after array element: expected ',', a newline or ']'"
                    )));
                }
            }
        }
        self.leave();
        Ok(Spanned {
            value: Value::Array(items),
            pos: self.pos_of(m),
        })
    }

    pub(super) fn parse_map(&mut self, m: Mark) -> Result<Spanned, ConfigError> {
        self.bump(); // '{'
        self.enter(m)?;
        self.scopes.push(Map::new());
        let result = self.parse_entries(Ctx::Map, m);
        let map = self.scopes.pop().unwrap_or_default();
        result?;
        self.leave();
        Ok(Spanned {
            value: Value::Map(map),
            pos: self.pos_of(m),
        })
    }

    /// Handles a backslash escape (shared by double-quoted and unquoted
    /// strings), appending the bytes it stands for.
    pub(super) fn parse_escape(&mut self, buf: &mut Vec<u8>) -> Result<(), ConfigError> {
        let m = self.mark();
        self.bump(); // '\\'
        let byte = match self.bump() {
            Some('t') => b'\t',
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('"') => b'"',
            Some('\\') => b'\\',
            Some('x') => {
                let hi = self.hex_digit(m)?;
                let lo = self.hex_digit(m)?;
                hi << 4 | lo
            }
            Some(c) => {
                return Err(self.err(
                    m,
                    format!(
                        "invalid escape '\\{}': only \\xHH, \\t, \\n, \\r, \\\" and \\\\ are allowed",
                        c.escape_debug()
                    ),
                ));
            }
            None => return Err(self.err(m, "incomplete escape at end of input")),
        };
        buf.push(byte);
        Ok(())
    }

    pub(super) fn hex_digit(&mut self, m: Mark) -> Result<u8, ConfigError> {
        match self.peek().and_then(|c| c.to_digit(16)) {
            Some(d) => {
                self.bump();
                Ok(d as u8)
            }
            None => Err(self.err(m, "expected two hexadecimal digits after '\\x'")),
        }
    }

    /// `\x` escapes are raw bytes, so the result is checked as a whole.
    pub(super) fn finish_string(&self, buf: Vec<u8>, m: Mark) -> Result<String, ConfigError> {
        String::from_utf8(buf).map_err(|_| self.err(m, "'\\x' escapes do not form valid UTF-8"))
    }

    pub(super) fn parse_dq_string(&mut self, m: Mark) -> Result<String, ConfigError> {
        self.bump(); // '"'
        let mut buf = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err(m, "unterminated string: missing closing '\"'")),
                Some('"') => {
                    self.bump();
                    return self.finish_string(buf, m);
                }
                Some('\\') => self.parse_escape(&mut buf)?,
                Some(c) => {
                    self.bump();
                    push_char(&mut buf, c);
                }
            }
        }
    }

    /// `( ... )`: raw text up to a `)` alone on its line. Like nats-server,
    /// the text keeps the newline after `(` and the one before `)`.
    pub(super) fn parse_block_string(&mut self, m: Mark) -> Result<String, ConfigError> {
        self.bump(); // '('
        let start = self.pos;
        let rest = &self.src[start..];
        let mut from = 0;
        let nl = loop {
            let Some(i) = rest[from..].find("\n)") else {
                return Err(self.err(
                    m,
                    "unterminated block string: missing ')' on a line of its own",
                ));
            };
            let nl = from + i;
            match rest[nl + 2..].chars().next() {
                None | Some('\n') => break nl,
                Some(_) => from = nl + 1,
            }
        };
        let text = rest[..=nl].to_string();
        self.advance_to(start + nl + 2);
        Ok(text)
    }

    /// Unquoted text, up to whitespace or one of `,;]}`. `buf` holds text
    /// already consumed by the number lexer when the value turned out not
    /// to be a number (`2s`). Decides between string, boolean and variable.
    pub(super) fn parse_bare(&mut self, m: Mark, mut buf: Vec<u8>) -> Result<Spanned, ConfigError> {
        let mut escaped = false;
        let mut quote_ended = false;
        loop {
            match self.peek() {
                None => break,
                Some(c) if ends_bare(c) => break,
                Some('\'') => {
                    // nats-server ends an unquoted value at a quote and
                    // drops the quote; anything after it is then an error.
                    self.bump();
                    quote_ended = true;
                    break;
                }
                Some('\\') => {
                    self.parse_escape(&mut buf)?;
                    escaped = true;
                }
                Some(c) => {
                    self.bump();
                    push_char(&mut buf, c);
                }
            }
        }
        let text = self.finish_string(buf, m)?;
        let value = if escaped || quote_ended {
            // Escapes (or the quote quirk) make it a plain string, never a
            // boolean or variable, as in nats-server.
            Value::Str(text)
        } else if text.is_empty() {
            return Err(match self.peek() {
                Some(c) => self.err(m, format!("expected a value, found {c:?}")),
                None => self.err(m, "expected a value, found end of input"),
            });
        } else if let Some(b) = match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            _ => None,
        } {
            Value::Bool(b)
        } else if let Some(name) = text.strip_prefix('$') {
            return self.resolve_variable(name, m);
        } else {
            Value::Str(text)
        };
        Ok(Spanned {
            value,
            pos: self.pos_of(m),
        })
    }

    /// Integers (with optional size suffix), floats, IP addresses, dates, or
    /// strings that merely start with a digit. Starts at a digit or '-'.
    pub(super) fn parse_number(&mut self, m: Mark, in_array: bool) -> Result<Spanned, ConfigError> {
        let start = self.pos;
        let neg = self.peek() == Some('-');
        if neg {
            self.bump();
            match self.peek() {
                Some(c) if c.is_ascii_digit() => {}
                Some('.') => return Err(self.err(m, "floats must start with a digit")),
                Some(c) => {
                    return Err(self.err(m, format!("expected a digit after '-', found {c:?}")));
                }
                None => return Err(self.err(m, "expected a digit after '-', found end of input")),
            }
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let digits_end = self.pos;
        match self.peek() {
            Some('-') if !neg => {
                if digits_end - start != 4 {
                    return Err(self.err(
                        m,
                        "dates must be in full ISO 8601 Zulu form, e.g. 2006-01-02T15:04:05Z",
                    ));
                }
                self.parse_datetime(m, start)
            }
            Some('.') => self.parse_float_or_ip(m, start),
            Some(c) if is_size_suffix(c) => {
                self.bump();
                while matches!(self.peek(), Some('b' | 'B' | 'i' | 'I')) {
                    self.bump();
                }
                if !ends_number(self.peek(), in_array) {
                    // Not a size after all (`1ms`, `5min`, `1k2`): the
                    // whole thing is an unquoted string.
                    return self.parse_bare(m, self.src.as_bytes()[start..self.pos].to_vec());
                }
                self.make_int(m, start, digits_end)
            }
            // A negative integer ends at the first non-digit; whatever
            // follows is judged by the caller (so `-5s` is an error).
            next if neg || ends_number(next, in_array) => self.make_int(m, start, digits_end),
            _ => {
                // `2s`, `4222abc`: a string that starts with digits. The
                // character that broke the number is taken literally.
                self.bump();
                self.parse_bare(m, self.src.as_bytes()[start..self.pos].to_vec())
            }
        }
    }

    /// Builds an integer from `src[start..digits_end]` and the size suffix
    /// that runs from there to the cursor.
    pub(super) fn make_int(
        &self,
        m: Mark,
        start: usize,
        digits_end: usize,
    ) -> Result<Spanned, ConfigError> {
        let text = &self.src[start..self.pos];
        let suffix = self.src[digits_end..self.pos].to_ascii_lowercase();
        let out_of_range = || self.err(m, format!("integer {text:?} is out of range"));
        let n: i64 = self.src[start..digits_end]
            .parse()
            .map_err(|_| out_of_range())?;
        let mult = size_multiplier(&suffix).ok_or_else(|| {
            self.err(
                m,
                format!("invalid size suffix in {text:?}: use k, kb, ki or kib (or m, g, t, p, e likewise)"),
            )
        })?;
        let value = n.checked_mul(mult).ok_or_else(out_of_range)?;
        Ok(Spanned {
            value: Value::Int(value),
            pos: self.pos_of(m),
        })
    }

    /// At the '.' after the integer digits of `src[start..]`.
    pub(super) fn parse_float_or_ip(
        &mut self,
        m: Mark,
        start: usize,
    ) -> Result<Spanned, ConfigError> {
        self.bump(); // '.'
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.err_here("expected a digit after '.' in a number"));
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let value = if self.peek() == Some('.') {
            // A second dot: an address such as 0.0.0.0 or 10.0.0.1:4222.
            self.bump();
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '-'))
            {
                self.bump();
            }
            Value::Str(self.src[start..self.pos].to_string())
        } else {
            let text = &self.src[start..self.pos];
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Value::Float(f),
                _ => return Err(self.err(m, format!("float {text:?} is out of range"))),
            }
        };
        Ok(Spanned {
            value,
            pos: self.pos_of(m),
        })
    }

    /// At the '-' after a four-digit year. Only the full Zulu form exists.
    pub(super) fn parse_datetime(&mut self, m: Mark, start: usize) -> Result<Spanned, ConfigError> {
        for want in "-00-00T00:00:00Z".chars() {
            let ok = match self.peek() {
                Some(c) if want == '0' => c.is_ascii_digit(),
                Some(c) => c == want,
                None => false,
            };
            if !ok {
                let what = if want == '0' {
                    "a digit".to_string()
                } else {
                    format!("{want:?}")
                };
                return Err(self.err_here(format!(
                    "invalid datetime: expected {what} (format 2006-01-02T15:04:05Z)"
                )));
            }
            self.bump();
        }
        let text = &self.src[start..self.pos];
        if !valid_datetime(text) {
            return Err(self.err(
                m,
                format!("invalid datetime {text:?}: a field is out of range"),
            ));
        }
        Ok(Spanned {
            value: Value::Str(text.to_string()),
            pos: self.pos_of(m),
        })
    }
}
