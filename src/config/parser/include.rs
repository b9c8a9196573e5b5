//! `$VARIABLES` (earlier keys, then the environment) and `include`.

use super::*;

impl<'a> Parser<'a, '_> {
    // ----- variables and includes ------------------------------------------

    pub(super) fn resolve_variable(&mut self, name: &str, m: Mark) -> Result<Spanned, ConfigError> {
        let pos = self.pos_of(m);
        // Unquoted bcrypt hashes (`$2a$11$...`) look like variables.
        if name.starts_with("2a$") {
            return Ok(Spanned {
                value: Value::Str(format!("${name}")),
                pos,
            });
        }
        // Measure and charge before cloning, so a runaway expansion is
        // refused before it allocates.
        if let Some(measured) = self.lookup_scope(name).map(measure) {
            self.charge(measured, m)?;
            if let Some(v) = self.lookup_scope(name) {
                let mut v = v.clone();
                self.session
                    .used_vars
                    .insert(std::mem::replace(&mut v.pos, pos));
                return Ok(v);
            }
        }
        self.resolve_env(name, m, pos)
    }

    /// The innermost definition of `name` among the maps being built.
    pub(super) fn lookup_scope(&self, name: &str) -> Option<&Spanned> {
        self.scopes
            .iter()
            .rev()
            .find_map(|scope| scope.iter().find(|(k, _)| k == name))
            .map(|(_, v)| v)
    }

    /// Accounts for `nodes` copied by a variable reference at nesting
    /// `depth` below the reference.
    pub(super) fn charge(
        &mut self,
        (nodes, depth): (usize, usize),
        m: Mark,
    ) -> Result<(), ConfigError> {
        if self.session.depth + depth > MAX_DEPTH {
            return Err(self.err(m, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.session.expanded += nodes;
        if self.session.expanded > MAX_EXPANDED_NODES {
            return Err(self.err(m, "variable references expand to too many values"));
        }
        Ok(())
    }

    pub(super) fn resolve_env(
        &mut self,
        name: &str,
        m: Mark,
        pos: Pos,
    ) -> Result<Spanned, ConfigError> {
        // Names std cannot look up (and which cannot be set anyway).
        let lookup = if name.is_empty() || name.contains(['=', '\0']) {
            None
        } else {
            std::env::var_os(name)
        };
        let Some(raw) = lookup else {
            return Err(self.err(
                m,
                format!(
                    "variable '${name}' is not defined (no earlier key or environment variable)"
                ),
            ));
        };
        let Some(text) = raw.to_str() else {
            return Err(self.err(m, format!("environment variable {name} is not valid UTF-8")));
        };
        // nats-server reads `pk=<value>` at end of input as an empty string.
        if text.trim_matches(is_blank).is_empty() {
            return Ok(Spanned {
                value: Value::Str(String::new()),
                pos,
            });
        }
        if self.session.env_chain.iter().any(|n| n == name) {
            return Err(self.err(m, format!("environment variable {name} refers to itself")));
        }
        // The value is parsed like config text, so numbers, sizes, booleans,
        // arrays and maps keep their types and may refer to other variables.
        self.enter(m)?;
        self.session.env_chain.push(name.to_string());
        let parsed = parse_source(
            &format!("pk={text}"),
            Arc::from(format!("${name}")),
            PathBuf::new(),
            self.session,
        );
        self.session.env_chain.pop();
        self.leave();
        let mut v = match parsed {
            Ok(map) => map.into_iter().find(|(k, _)| k == "pk").map(|(_, v)| v),
            Err(e) => {
                return Err(self.err(
                    m,
                    format!("cannot parse environment variable {name}: {}", e.msg),
                ));
            }
        }
        .ok_or_else(|| self.err(m, format!("cannot parse environment variable {name}")))?;
        self.charge(measure(&v), m)?;
        relocate(&mut v, &pos);
        Ok(v)
    }

    /// After the `include` keyword: reads the path, parses that file and
    /// merges its keys into the current scope.
    pub(super) fn parse_include(&mut self) -> Result<(), ConfigError> {
        self.skip_blanks();
        let m = self.mark();
        let bad = |what: &str| format!("expected an include path, found {what}");
        let path = match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                match self.read_quoted_raw(q) {
                    Some(p) => p.to_string(),
                    None => {
                        return Err(
                            self.err(m, format!("unterminated include path: missing {q:?}"))
                        );
                    }
                }
            }
            Some('[') => return Err(self.err(m, bad("the start of an array"))),
            Some('{') => return Err(self.err(m, bad("the start of a map"))),
            Some('(') => return Err(self.err(m, bad("the start of a block"))),
            Some(c) if c.is_ascii_digit() || c == '-' => {
                return Err(self.err(m, bad("a number (quote the path)")));
            }
            Some('\\') => return Err(self.err(m, bad("an escape sequence"))),
            Some(c) if is_nl(c) => return Err(self.err(m, bad("a newline"))),
            None => return Err(self.err(m, bad("end of input"))),
            Some(_) => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if is_nl(c) || is_blank(c) || matches!(c, ';' | '}' | '\'') {
                        break;
                    }
                    self.bump();
                }
                let path = self.src[start..self.pos].to_string();
                // Like unquoted values, an unquoted path ends at a quote,
                // which is dropped.
                if self.peek() == Some('\'') {
                    self.bump();
                }
                path
            }
        };
        if path.is_empty() {
            return Err(self.err(m, "empty include path"));
        }
        self.session.includes += 1;
        if self.session.includes > MAX_INCLUDES {
            return Err(self.err(m, format!("more than {MAX_INCLUDES} includes")));
        }
        // `join` keeps an absolute path as it is.
        let full = self.base_dir.join(&path);
        self.enter(m)?;
        let loaded = load_file(&full, self.session);
        self.leave();
        let map = match loaded {
            Ok(map) => map,
            Err(LoadError::Parse(e)) => return Err(e),
            Err(LoadError::Io(e)) => {
                return Err(self.err(
                    m,
                    format!("cannot read include file {}: {e}", full.display()),
                ));
            }
            Err(LoadError::Cycle(name)) => {
                return Err(self.err(m, format!("include cycle: {name} is already being parsed")));
            }
        };
        if let Some(scope) = self.scopes.last_mut() {
            for (k, v) in map {
                insert(scope, k, v);
            }
        }
        Ok(())
    }
}
