//! Parser for the nats-server configuration file format.
//!
//! The format is a relaxed JSON/HOCON hybrid:
//!
//! ```text
//! # comments start with '#' or '//'
//! port: 4222                  # `key: value`, `key = value` and `key value`
//! max_payload = 1MB           # sizes give integers (see below)
//! listen 127.0.0.1:4222       # IP-like and other unquoted values are strings
//! authorization {             # nested blocks, with or without ':'/'=' before '{'
//!   users = [                 # arrays: elements split by ',' and/or newlines
//!     {user: alice, password: "s3cr\x65t"}   # map entries split by newline, ',' or ';'
//!   ]
//!   timeout: $TIMEOUT         # variables: earlier keys in scope, then the environment
//! }
//! include ./accounts.conf     # merges that file's keys into the current block
//! ```
//!
//! Behaviour follows nats-server v2.15.1, whose lexer is a hand-written state
//! machine full of special cases; this is an independent recursive-descent
//! implementation that was checked construct by construct against the real
//! `nats-server -t` (which prints a digest of the parsed tree, so values could
//! be compared, not just accept/reject). Points worth knowing:
//!
//! * Sizes: a number followed by `k`, `m`, `g`, `t`, `p` or `e` (any case)
//!   is multiplied by a power of 1000; adding `b`, `i` or `ib` (`KB`, `Ki`,
//!   `KiB`, `mb`, ...) makes it a power of 1024. Hence `1m` is the integer
//!   1_000_000, *not* one minute: durations must use a unit the lexer does not
//!   treat as a size (`2s`, `1h`, `500ms`, which stay strings) or be quoted.
//! * Numbers followed by anything other than a value terminator become
//!   strings (`2s`, `4222abc`); `a.b.c`-shaped numbers are IP addresses and
//!   stay strings (`0.0.0.0`, `127.0.0.1:4222`); floats have no exponent form.
//! * `true`/`false`/`yes`/`no`/`on`/`off` (any case) are booleans unless quoted.
//! * Variables (`$NAME`) look at keys already defined in the current and
//!   enclosing maps (exact, case-sensitive match), then at the environment,
//!   whose value is parsed as a config value (so `FOO=1MB` gives an integer).
//!   An included file is parsed on its own and cannot see the includer's
//!   keys. `$2a$...` is a bcrypt hash, not a variable, and stays a string.
//! * ISO 8601 Zulu datetimes (`2006-01-02T15:04:05Z`) are validated and kept
//!   as strings; `( ... )` block strings run to a `)` alone on a line.
//! * A file may be wrapped in `{ ... }` like JSON.
//!
//! Deliberate differences, all for input that nats-server rejects, crashes
//! on, or silently mangles:
//!
//! * Inside an array a number may be directly followed by `]` (`[1, 2]`);
//!   nats-server fails to parse `[1, 2]` and turns `[1k]` into the string "1k".
//! * An unknown size suffix (`1kbb`) is an error; nats-server silently drops
//!   the key. Sizes that overflow i64 are errors; nats-server wraps them.
//! * A missing value is always an error: nats-server reads `a:` at end of
//!   input, `a: ;` and `a: ,` as empty strings, and `{ a }` as a corrupt map.
//! * Unterminated `{ ...` file wrappers are errors (nats-server accepts some).
//! * `\x` escapes must form valid UTF-8 (Rust strings must be UTF-8).
//! * An absolute include path is used as is; nats-server appends it to the
//!   including file's directory.
//! * Include cycles, nesting deeper than [`MAX_DEPTH`] and runaway variable
//!   expansion are errors rather than crashes or unbounded memory use.
//! * An unterminated quote at the very end of the input is an error (some
//!   of them nats-server ignores).
//! * A lone `/` where nats-server would skip it after a value is an error,
//!   and a block string ended by `)` at end of input does not keep the `)`.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Deepest nesting of maps, arrays, `{` file wrappers, includes and
/// environment-variable expansions. Real configs use a handful of levels; the
/// limit exists so hostile input cannot overflow the stack of this recursive
/// parser (or of the recursive `Clone`/`Drop` of the resulting tree).
pub const MAX_DEPTH: usize = 128;

/// Most `include` statements processed in one parse, so that a few files
/// including each other many times (without a cycle) cannot fan out forever.
const MAX_INCLUDES: usize = 1024;

/// Largest file read (configuration files are tiny); also keeps a typo such
/// as `include /dev/zero` from eating all memory.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Most value nodes that variable references may copy in one parse. Each
/// `$x` clones the referenced value, so `b: [$a,$a]`, `c: [$b,$b]`, ...
/// would otherwise double the tree with every line.
const MAX_EXPANDED_NODES: usize = 1 << 20;

/// Where a value starts: file name as given (or the include path as
/// resolved), 1-based line, and 1-based column counted in characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A parsed value. Sizes are already multiplied out into `Int`; durations,
/// datetimes and addresses are left as `Str` for the options layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Spanned>),
    Map(Map),
}

impl Value {
    /// Short name of the variant, for "expected X, got Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }
}

/// A value together with the position where it starts. For a value that came
/// from a variable reference, the position is that of the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned {
    pub value: Value,
    pub pos: Pos,
}

impl Spanned {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// Floats, and integers widened to floats (`timeout: 2` means 2.0).
    pub fn as_f64(&self) -> Option<f64> {
        match self.value {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Spanned]> {
        match &self.value {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An error located at this value, for the options layer to report bad
    /// values with the same `FILE:LINE:COL` shape as syntax errors.
    pub fn error(&self, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.pos, msg)
    }
}

/// Keys in file order. A key defined again (in the same block, or by an
/// include) replaces the earlier value but keeps the earlier slot. Keys are
/// compared exactly here; use [`get`] for the case-insensitive lookup that
/// nats-server's options layer does.
pub type Map = Vec<(String, Spanned)>;

/// A syntax or I/O error. `line` and `col` are 1-based; both are 0 when the
/// error concerns the whole file (it could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl ConfigError {
    /// An error at `pos`.
    pub fn at(pos: &Pos, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            file: pos.file.to_string(),
            line: pos.line,
            col: pos.col,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0 means the error is not about one place in the file (it
        // could not be read, or a rule spans several options).
        match (self.file.is_empty(), self.line) {
            (true, 0) => f.write_str(&self.msg),
            (false, 0) => write!(f, "{}: {}", self.file, self.msg),
            _ => write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Case-insensitive key lookup (Unicode lowercase, like nats-server's
/// `strings.ToLower`). If several keys differ only in case, the one stored
/// last wins, matching "later definitions override earlier ones".
pub fn get<'a>(map: &'a Map, key: &str) -> Option<&'a Spanned> {
    let fold = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<String>();
    let want = fold(key);
    map.iter()
        .rev()
        .find(|(k, _)| *k == key || fold(k) == want)
        .map(|(_, v)| v)
}

/// A parsed file together with what the options layer needs besides the
/// values themselves.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub map: Map,
    /// Value positions of keys that a `$NAME` reference used. nats-server
    /// does not report such keys as unknown fields: they are variable
    /// definitions (`TIMEOUT: "5s"` then `write_deadline: $TIMEOUT`).
    pub used_vars: HashSet<Pos>,
}

/// Parses configuration text. `file_name` only labels positions and errors;
/// relative include paths are resolved against the current directory.
pub fn parse_str(src: &str, file_name: &str) -> Result<Map, ConfigError> {
    parse_str_full(src, file_name).map(|p| p.map)
}

/// [`parse_str`], also reporting which keys were used as variables.
pub fn parse_str_full(src: &str, file_name: &str) -> Result<Parsed, ConfigError> {
    let mut session = Session::default();
    let map = parse_source(src, Arc::from(file_name), PathBuf::new(), &mut session)?;
    Ok(Parsed {
        map,
        used_vars: session.used_vars,
    })
}

/// Reads and parses a configuration file. Relative include paths are
/// resolved against the directory of the file containing the `include`.
pub fn parse_file(path: &Path) -> Result<Map, ConfigError> {
    parse_file_full(path).map(|p| p.map)
}

/// [`parse_file`], also reporting which keys were used as variables.
pub fn parse_file_full(path: &Path) -> Result<Parsed, ConfigError> {
    let mut session = Session::default();
    let map = load_file(path, &mut session).map_err(|e| match e {
        LoadError::Parse(e) => e,
        // The top-level file cannot be part of a cycle, so this is only I/O.
        LoadError::Io(msg) | LoadError::Cycle(msg) => ConfigError {
            file: path.display().to_string(),
            line: 0,
            col: 0,
            msg: format!("cannot read config file: {msg}"),
        },
    })?;
    Ok(Parsed {
        map,
        used_vars: session.used_vars,
    })
}

/// State shared by every file and environment value parsed for one call of
/// [`parse_str`]/[`parse_file`]: the resource limits must hold across
/// includes, and the cycle checks need to see the whole chain.
#[derive(Default)]
struct Session {
    /// Current nesting across all files (see [`MAX_DEPTH`]).
    depth: usize,
    /// Includes processed so far (see [`MAX_INCLUDES`]).
    includes: usize,
    /// Canonical paths of the files currently being parsed.
    include_chain: Vec<PathBuf>,
    /// Environment variables currently being expanded, to catch `A=$B B=$A`.
    env_chain: Vec<String>,
    /// Nodes copied by variable references (see [`MAX_EXPANDED_NODES`]).
    expanded: usize,
    /// Value positions of the keys that `$NAME` references resolved to.
    used_vars: HashSet<Pos>,
}

enum LoadError {
    /// The file could not be read; the includer reports it at its `include`.
    Io(String),
    /// The file is already being parsed further up the include chain.
    Cycle(String),
    /// Bad content, already located inside the file.
    Parse(ConfigError),
}

fn load_file(path: &Path, session: &mut Session) -> Result<Map, LoadError> {
    let name = path.display().to_string();
    let mut bytes = Vec::new();
    // `take` rather than checking the size first: pipes (`-c <(...)`)
    // have no size but are fine to read.
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| LoadError::Io(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::Io(format!(
            "file is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let src = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            // Locate the first bad byte so the user can find it.
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let line = valid.matches('\n').count() + 1;
            let col = valid.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            return Err(LoadError::Parse(ConfigError {
                file: name,
                line,
                col,
                msg: "file is not valid UTF-8".into(),
            }));
        }
    };
    // Canonical paths make `a.conf` and `./x/../a.conf` the same file.
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if session.include_chain.contains(&canonical) {
        return Err(LoadError::Cycle(name));
    }
    session.include_chain.push(canonical);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let result = parse_source(&src, Arc::from(name), base, session);
    session.include_chain.pop();
    result.map_err(LoadError::Parse)
}

fn parse_source(
    src: &str,
    file: Arc<str>,
    base_dir: PathBuf,
    session: &mut Session,
) -> Result<Map, ConfigError> {
    // Editors on Windows like to start files with a byte-order mark;
    // nats-server would make it part of the first key.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut p = Parser {
        src,
        pos: 0,
        line: 1,
        col: 1,
        file,
        base_dir,
        scopes: vec![Map::new()],
        session,
    };
    p.parse_entries(Ctx::Top, Mark { line: 1, col: 1 })?;
    Ok(p.scopes.pop().unwrap_or_default())
}

/// A position in the current file, cheaper to copy around than [`Pos`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    line: usize,
    col: usize,
}

/// Which kind of key/value list is being parsed. They differ in small ways
/// that nats-server's lexer has always had, e.g. a newline may separate `=`
/// from its value inside a map but not at the top level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// The file itself; ends at end of input.
    Top,
    /// A JSON-style `{ ... }` around (part of) the file; keys stay top-level.
    Wrapper,
    /// A map value `{ ... }`.
    Map,
}

struct Parser<'a, 's> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    line: usize,
    col: usize,
    file: Arc<str>,
    /// Directory that relative include paths are joined to.
    base_dir: PathBuf,
    /// Maps under construction, outermost first. Variables are looked up
    /// here, so a map's keys are visible to its own later entries and to
    /// everything nested inside it.
    scopes: Vec<Map>,
    session: &'s mut Session,
}

/// Newline as far as value termination goes (a lone CR counts, as in
/// nats-server; only LF advances the line number).
fn is_nl(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Horizontal whitespace: the only whitespace allowed between `=` and a
/// top-level value, and between a value and its terminator.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Characters that end an unquoted string.
fn ends_bare(c: char) -> bool {
    is_nl(c) || is_blank(c) || matches!(c, ';' | ',' | ']' | '}')
}

/// Whether a number may stop before `c`; if not, it is really a string.
/// nats-server does not stop a number at `]`, so `[1]` fails to parse there
/// and `a: 1]` is the string "1]"; inside arrays we do stop, so that `[1, 2]`
/// works, and elsewhere keep nats-server's reading.
fn ends_number(c: Option<char>, in_array: bool) -> bool {
    c.is_none_or(|c| ends_bare(c) && (c != ']' || in_array))
}

fn is_size_suffix(c: char) -> bool {
    matches!(c.to_ascii_lowercase(), 'k' | 'm' | 'g' | 't' | 'p' | 'e')
}

fn push_char(buf: &mut Vec<u8>, c: char) {
    buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// Multiplier for a size suffix (already lowercased), or None if unknown.
fn size_multiplier(suffix: &str) -> Option<i64> {
    let (unit, rest) = suffix.split_at(suffix.len().min(1));
    let power = match unit {
        "" => return Some(1),
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    let base: i64 = match rest {
        "" => 1000,
        "b" | "i" | "ib" => 1024,
        _ => return None,
    };
    // 1024^6 < 2^63, so this cannot overflow.
    Some(base.pow(power))
}

/// Number of nodes and nesting depth of a value (scalars have depth 0).
fn measure(v: &Spanned) -> (usize, usize) {
    let children: Box<dyn Iterator<Item = &Spanned>> = match &v.value {
        Value::Array(a) => Box::new(a.iter()),
        Value::Map(m) => Box::new(m.iter().map(|(_, v)| v)),
        _ => return (1, 0),
    };
    children.fold((1, 1), |(nodes, depth), c| {
        let (n, d) = measure(c);
        (nodes + n, depth.max(d + 1))
    })
}

/// Points a value and everything inside it at `pos`; used for environment
/// values, whose own positions would refer to a throwaway `pk=...` text.
fn relocate(v: &mut Spanned, pos: &Pos) {
    v.pos = pos.clone();
    match &mut v.value {
        Value::Array(a) => a.iter_mut().for_each(|c| relocate(c, pos)),
        Value::Map(m) => m.iter_mut().for_each(|(_, c)| relocate(c, pos)),
        _ => {}
    }
}

/// Adds or replaces a key, keeping the first definition's slot.
fn insert(map: &mut Map, key: String, value: Spanned) {
    match map.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => map.push((key, value)),
    }
}

/// Checks the calendar fields of `YYYY-MM-DDTHH:MM:SSZ` (shape already
/// checked), as Go's `time.Parse` does for nats-server.
fn valid_datetime(s: &str) -> bool {
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<u32>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d) && h < 24 && mi < 60 && se < 60
}

impl<'a> Parser<'a, '_> {
    // ----- cursor --------------------------------------------------------

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
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

    fn advance_to(&mut self, target: usize) {
        while self.pos < target && self.bump().is_some() {}
    }

    fn mark(&self) -> Mark {
        Mark {
            line: self.line,
            col: self.col,
        }
    }

    fn pos_of(&self, m: Mark) -> Pos {
        Pos {
            file: self.file.clone(),
            line: m.line,
            col: m.col,
        }
    }

    fn err(&self, m: Mark, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.pos_of(m), msg)
    }

    fn err_here(&self, msg: impl Into<String>) -> ConfigError {
        self.err(self.mark(), msg)
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.bump();
        }
    }

    /// Skips all whitespace including newlines (Unicode `White_Space`, which
    /// is the same set as Go's `unicode.IsSpace` used by nats-server).
    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => self.peek2() == Some('/'),
            _ => false,
        }
    }

    /// Skips to the end of the line, leaving the newline for the caller,
    /// which may need it as a separator.
    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| !is_nl(c)) {
            self.bump();
        }
    }

    fn skip_space_and_comments(&mut self) {
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
    fn read_quoted_raw(&mut self, quote: char) -> Option<&'a str> {
        let start = self.pos;
        loop {
            match self.bump()? {
                c if c == quote => return self.src.get(start..self.pos - 1),
                _ => {}
            }
        }
    }

    /// Enters one nesting level (see [`MAX_DEPTH`]).
    fn enter(&mut self, m: Mark) -> Result<(), ConfigError> {
        if self.session.depth >= MAX_DEPTH {
            return Err(self.err(m, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.session.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.session.depth = self.session.depth.saturating_sub(1);
    }

    fn unterminated(&self, ctx: Ctx, open: Mark) -> ConfigError {
        match ctx {
            Ctx::Map => self.err(open, "unterminated map: missing '}'"),
            _ => self.err(open, "unterminated '{' block: missing '}'"),
        }
    }

    // ----- key/value lists ------------------------------------------------

    /// Parses entries into the innermost scope until end of input (`Top`) or
    /// the closing `}` (consumed). `open` is where the `{` was.
    fn parse_entries(&mut self, ctx: Ctx, open: Mark) -> Result<(), ConfigError> {
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

    fn rest_is_space(&self) -> bool {
        self.src
            .get(self.pos..)
            .is_none_or(|rest| rest.chars().all(char::is_whitespace))
    }

    /// A quoted key (no escapes, may contain anything) or a bare one, which
    /// runs to whitespace, `=` or `:` — so `a{` or `a]` are keys, as in
    /// nats-server. Returns the key and whether it was quoted.
    fn parse_key(&mut self, key_mark: Mark) -> Result<(String, bool), ConfigError> {
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
    fn parse_entry_value(
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

    // ----- values ---------------------------------------------------------

    /// Parses one value starting at the current (non-blank) character;
    /// `in_array` if it is an array element.
    fn parse_value(&mut self, in_array: bool) -> Result<Spanned, ConfigError> {
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

    fn parse_array(&mut self, m: Mark) -> Result<Spanned, ConfigError> {
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

    fn parse_map(&mut self, m: Mark) -> Result<Spanned, ConfigError> {
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
    fn parse_escape(&mut self, buf: &mut Vec<u8>) -> Result<(), ConfigError> {
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

    fn hex_digit(&mut self, m: Mark) -> Result<u8, ConfigError> {
        match self.peek().and_then(|c| c.to_digit(16)) {
            Some(d) => {
                self.bump();
                Ok(d as u8)
            }
            None => Err(self.err(m, "expected two hexadecimal digits after '\\x'")),
        }
    }

    /// `\x` escapes are raw bytes, so the result is checked as a whole.
    fn finish_string(&self, buf: Vec<u8>, m: Mark) -> Result<String, ConfigError> {
        String::from_utf8(buf).map_err(|_| self.err(m, "'\\x' escapes do not form valid UTF-8"))
    }

    fn parse_dq_string(&mut self, m: Mark) -> Result<String, ConfigError> {
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
    fn parse_block_string(&mut self, m: Mark) -> Result<String, ConfigError> {
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
    fn parse_bare(&mut self, m: Mark, mut buf: Vec<u8>) -> Result<Spanned, ConfigError> {
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
    fn parse_number(&mut self, m: Mark, in_array: bool) -> Result<Spanned, ConfigError> {
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
    fn make_int(&self, m: Mark, start: usize, digits_end: usize) -> Result<Spanned, ConfigError> {
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
    fn parse_float_or_ip(&mut self, m: Mark, start: usize) -> Result<Spanned, ConfigError> {
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
    fn parse_datetime(&mut self, m: Mark, start: usize) -> Result<Spanned, ConfigError> {
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

    // ----- variables and includes ------------------------------------------

    fn resolve_variable(&mut self, name: &str, m: Mark) -> Result<Spanned, ConfigError> {
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
    fn lookup_scope(&self, name: &str) -> Option<&Spanned> {
        self.scopes
            .iter()
            .rev()
            .find_map(|scope| scope.iter().find(|(k, _)| k == name))
            .map(|(_, v)| v)
    }

    /// Accounts for `nodes` copied by a variable reference at nesting
    /// `depth` below the reference.
    fn charge(&mut self, (nodes, depth): (usize, usize), m: Mark) -> Result<(), ConfigError> {
        if self.session.depth + depth > MAX_DEPTH {
            return Err(self.err(m, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.session.expanded += nodes;
        if self.session.expanded > MAX_EXPANDED_NODES {
            return Err(self.err(m, "variable references expand to too many values"));
        }
        Ok(())
    }

    fn resolve_env(&mut self, name: &str, m: Mark, pos: Pos) -> Result<Spanned, ConfigError> {
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
    fn parse_include(&mut self) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // ----- helpers ----------------------------------------------------------

    fn parse(src: &str) -> Map {
        parse_str(src, "t.conf")
            .unwrap_or_else(|e| panic!("unexpected error: {e}\n--- input:\n{src}"))
    }

    /// The value of top-level `key` in `src`.
    fn val(src: &str, key: &str) -> Value {
        let map = parse(src);
        match get(&map, key) {
            Some(v) => v.value.clone(),
            None => panic!("no key {key:?} in {map:?}"),
        }
    }

    fn s(x: &str) -> Value {
        Value::Str(x.to_string())
    }

    fn keys(map: &Map) -> Vec<&str> {
        map.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Asserts that `src` fails at `line`:`col` with a message containing
    /// `needle`, and returns the error.
    #[track_caller]
    fn fails_at(src: &str, line: usize, col: usize, needle: &str) -> ConfigError {
        let e = match parse_str(src, "t.conf") {
            Ok(m) => panic!("expected an error for {src:?}, got {m:?}"),
            Err(e) => e,
        };
        assert_eq!(
            (e.line, e.col),
            (line, col),
            "wrong position for {src:?}: {e}"
        );
        assert!(
            e.msg.contains(needle),
            "message for {src:?} lacks {needle:?}: {e}"
        );
        assert_eq!(e.file, "t.conf");
        e
    }

    /// Sets an environment variable for a test. Every test uses its own
    /// variable names, so tests running in parallel cannot disturb each other.
    fn set_env(key: &str, value: &str) {
        // SAFETY: only this test binary's Rust code reads the environment,
        // always through std, which serialises access to it.
        unsafe { std::env::set_var(key, value) }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("rnats-confparse-{}-{tag}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, rel: &str, content: &str) -> PathBuf {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    // ----- basic syntax -----------------------------------------------------

    #[test]
    fn key_value_separators() {
        let m = parse("a: 1\nb = 2\nc 3\nd:4\ne=5\n\"f g\": 6\n'h' = 7\ni\t8\n");
        assert_eq!(keys(&m), ["a", "b", "c", "d", "e", "f g", "h", "i"]);
        for (i, (_, v)) in m.iter().enumerate() {
            assert_eq!(v.value, Value::Int(i as i64 + 1));
        }
    }

    #[test]
    fn empty_and_comment_only_input() {
        assert!(parse("").is_empty());
        assert!(parse("\n  \n\t\n").is_empty());
        assert!(parse("# just a comment\n// and another").is_empty());
    }

    #[test]
    fn comments() {
        let src = "# top\n// top too\na: 1 # trailing\nb: 2 // trailing\nc: \"x # y\"\n\
                   d: foo#bar\ne {\n  # inside\n  f: 1 // c\n}\ng: [ # c\n  1 // c\n  2 # c\n]\n";
        let m = parse(src);
        assert_eq!(keys(&m), ["a", "b", "c", "d", "e", "g"]);
        assert_eq!(val(src, "a"), Value::Int(1));
        assert_eq!(val(src, "b"), Value::Int(2));
        assert_eq!(val(src, "c"), s("x # y"));
        // '#' only starts a comment where a key or an entry end is expected.
        assert_eq!(val(src, "d"), s("foo#bar"));
        assert_eq!(
            get(&m, "e").unwrap().as_map().unwrap()[0].1.as_i64(),
            Some(1)
        );
        let g: Vec<_> = get(&m, "g")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64())
            .collect();
        assert_eq!(g, [Some(1), Some(2)]);
    }

    #[test]
    fn entry_separators() {
        let m = parse("a: 1, b: 2; c: 3\nd {x: 1, y: 2; z: 3\n w: 4}\n");
        assert_eq!(keys(&m), ["a", "b", "c", "d"]);
        assert_eq!(
            keys(get(&m, "d").unwrap().as_map().unwrap()),
            ["x", "y", "z", "w"]
        );
    }

    #[test]
    fn key_may_be_separated_from_value_by_newlines() {
        // nats-server skips newlines between a key and its separator, and
        // inside maps also between the separator and the value.
        assert_eq!(val("a\n  = 1\n", "a"), Value::Int(1));
        assert_eq!(val("a\nb\n", "a"), s("b"));
        let m = parse("m {\n  a =\n    1\n}\n");
        assert_eq!(
            get(&m, "m").unwrap().as_map().unwrap()[0].1.as_i64(),
            Some(1)
        );
    }

    #[test]
    fn nested_blocks() {
        for src in [
            "a { b { c: 1 } }",
            "a: { b = { c: 1 } }",
            "a = {\n  b {\n    c 1\n  }\n}\n",
        ] {
            let m = parse(src);
            let a = get(&m, "a").unwrap().as_map().unwrap();
            let b = get(a, "b").unwrap().as_map().unwrap();
            assert_eq!(get(b, "c").unwrap().as_i64(), Some(1), "{src}");
        }
        assert_eq!(val("a {}", "a"), Value::Map(vec![]));
        assert_eq!(val("a: {\n}\n", "a"), Value::Map(vec![]));
        // A map's position is its opening brace.
        let m = parse("x: 1\nblock = {\n  k: v\n}\n");
        let block = get(&m, "block").unwrap();
        assert_eq!((block.pos.line, block.pos.col), (2, 9));
        let k = &block.as_map().unwrap()[0].1;
        assert_eq!((k.pos.line, k.pos.col, &*k.pos.file), (3, 6, "t.conf"));
    }

    #[test]
    fn arrays() {
        let ints = |src: &str| -> Vec<i64> {
            let m = parse(src);
            get(&m, "a")
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        };
        assert_eq!(ints("a: [1, 2, 3]"), [1, 2, 3]);
        assert_eq!(ints("a: [1,2,3,]"), [1, 2, 3]);
        assert_eq!(ints("a = [\n  1\n  2,\n  3,\n]\n"), [1, 2, 3]);
        assert_eq!(ints("a [ ]"), Vec::<i64>::new());
        // A number may end at ']' inside an array (nats-server: parse error).
        assert_eq!(ints("a: [1k, 2MB]"), [1000, 2 << 20]);

        let m = parse("a: [1, \"two\", 3.5, true, x, [4], {k: v}]");
        let a = get(&m, "a").unwrap().as_array().unwrap();
        assert_eq!(a[0].value, Value::Int(1));
        assert_eq!(a[1].value, s("two"));
        assert_eq!(a[2].value, Value::Float(3.5));
        assert_eq!(a[3].value, Value::Bool(true));
        assert_eq!(a[4].value, s("x"));
        assert_eq!(a[5].as_array().unwrap()[0].value, Value::Int(4));
        assert_eq!(get(a[6].as_map().unwrap(), "k").unwrap().value, s("v"));
        // Elements carry their own positions.
        assert_eq!((a[1].pos.line, a[1].pos.col), (1, 8));

        let m = parse("users = [\n  {user: a}\n  {user: b}\n]\n");
        let users = get(&m, "users").unwrap().as_array().unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].pos.line, 3);
    }

    // ----- scalar values ------------------------------------------------------

    #[test]
    fn double_quoted_strings_and_escapes() {
        assert_eq!(
            val(r#"a: "t\tn\nr\rq\"b\\x\x41\xc3\xa9""#, "a"),
            s("t\tn\nr\rq\"b\\xAé")
        );
        assert_eq!(val("a: \"\"", "a"), s(""));
        assert_eq!(val("a: \"two\nlines\"", "a"), s("two\nlines"));
        // Quoting keeps what would otherwise be a number, boolean or variable.
        assert_eq!(val("a: \"1MB\"", "a"), s("1MB"));
        assert_eq!(val("a: \"true\"", "a"), s("true"));
        assert_eq!(val("a: \"$HOME\"", "a"), s("$HOME"));
        assert_eq!(val("a: \"x, y; z } ]\"", "a"), s("x, y; z } ]"));
    }

    #[test]
    fn single_quoted_strings_are_raw() {
        assert_eq!(val(r"a: 'c:\tmp\n'", "a"), s(r"c:\tmp\n"));
        assert_eq!(val("a: ''", "a"), s(""));
        assert_eq!(val("a: 'say \"hi\"'", "a"), s("say \"hi\""));
        assert_eq!(val("a: 'two\nlines'", "a"), s("two\nlines"));
    }

    #[test]
    fn unquoted_strings() {
        assert_eq!(val("a: foo", "a"), s("foo"));
        assert_eq!(val("a: foo-bar_baz/qux.>", "a"), s("foo-bar_baz/qux.>"));
        assert_eq!(
            val("a: nats://user:pw@host:4222", "a"),
            s("nats://user:pw@host:4222")
        );
        assert_eq!(val("a: localhost:4222", "a"), s("localhost:4222"));
        assert_eq!(val("a: truex", "a"), s("truex"));
        assert_eq!(val("a: héllo", "a"), s("héllo"));
        // Escapes work in unquoted strings too.
        assert_eq!(val(r"a: x\ty", "a"), s("x\ty"));
        // Unquoted values end at whitespace, ',', ';', '}' and ']'.
        let m = parse("a: x, b: y; c { d: z}");
        assert_eq!(get(&m, "b").unwrap().value, s("y"));
        assert_eq!(
            get(get(&m, "c").unwrap().as_map().unwrap(), "d")
                .unwrap()
                .value,
            s("z")
        );
    }

    #[test]
    fn booleans() {
        for (text, b) in [
            ("true", true),
            ("false", false),
            ("yes", true),
            ("no", false),
            ("on", true),
            ("off", false),
            ("TRUE", true),
            ("False", false),
            ("Yes", true),
            ("NO", false),
            ("oN", true),
            ("OFF", false),
        ] {
            assert_eq!(val(&format!("a: {text}"), "a"), Value::Bool(b), "{text}");
        }
        let m = parse("a: [true, off]");
        let a: Vec<_> = get(&m, "a")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(Spanned::as_bool)
            .collect();
        assert_eq!(a, [Some(true), Some(false)]);
    }

    #[test]
    fn integers_and_floats() {
        assert_eq!(val("a: 0", "a"), Value::Int(0));
        assert_eq!(val("a: 4222", "a"), Value::Int(4222));
        assert_eq!(val("a: -7", "a"), Value::Int(-7));
        assert_eq!(val("a: 9223372036854775807", "a"), Value::Int(i64::MAX));
        assert_eq!(val("a: -9223372036854775808", "a"), Value::Int(i64::MIN));
        assert_eq!(val("a: 3.25", "a"), Value::Float(3.25));
        assert_eq!(val("a: -0.5", "a"), Value::Float(-0.5));
        assert_eq!(val("a: 1.0", "a"), Value::Float(1.0));
        assert_eq!(val("a: 2 # comment", "a"), Value::Int(2));
        assert_eq!(val("a: 2;", "a"), Value::Int(2));
        let m = parse("a {b: 2}");
        assert_eq!(
            get(get(&m, "a").unwrap().as_map().unwrap(), "b")
                .unwrap()
                .as_i64(),
            Some(2)
        );
    }

    #[test]
    fn size_suffixes() {
        // Verified against nats-server v2.15.1: a bare letter is a power of
        // 1000, with b/i/ib a power of 1024; case does not matter.
        let cases: &[(&str, i64)] = &[
            ("1k", 1000),
            ("1K", 1000),
            ("1kb", 1024),
            ("64KB", 64 * 1024),
            ("1Ki", 1024),
            ("1KiB", 1024),
            ("1m", 1_000_000),
            ("1M", 1_000_000),
            ("1MB", 1 << 20),
            ("1mi", 1 << 20),
            ("1MiB", 1 << 20),
            ("2G", 2_000_000_000),
            ("2g", 2_000_000_000),
            ("2GB", 2 << 30),
            ("2gib", 2 << 30),
            ("3t", 3_000_000_000_000),
            ("3TB", 3 << 40),
            ("4p", 4_000_000_000_000_000),
            ("4PiB", 4 << 50),
            ("5e", 5_000_000_000_000_000_000),
            ("7EB", 7 << 60),
            ("-1k", -1000),
            ("0MB", 0),
        ];
        for &(text, want) in cases {
            assert_eq!(val(&format!("a: {text}"), "a"), Value::Int(want), "{text}");
        }
    }

    #[test]
    fn durations_and_other_digit_strings_stay_strings() {
        for text in [
            "2s", "500ms", "1h30m", "10ms", "1h", "4222abc", "1k2", "1kx", "-1kx", "30s",
        ] {
            assert_eq!(val(&format!("a: {text}"), "a"), s(text), "{text}");
        }
        // ...but `m` alone is the mega suffix, exactly as in nats-server.
        assert_eq!(val("a: 1m", "a"), Value::Int(1_000_000));
        assert_eq!(val("a: \"1m\"", "a"), s("1m"));
    }

    #[test]
    fn addresses_are_strings() {
        assert_eq!(val("a: 0.0.0.0", "a"), s("0.0.0.0"));
        assert_eq!(val("a: 127.0.0.1:4222", "a"), s("127.0.0.1:4222"));
        assert_eq!(val("a: 10.0.0.1 # comment", "a"), s("10.0.0.1"));
        let m = parse("a = [10.0.0.1:6222, 10.0.0.2:6222]");
        let a = get(&m, "a").unwrap().as_array().unwrap();
        assert_eq!(a[1].value, s("10.0.0.2:6222"));
    }

    #[test]
    fn block_strings() {
        let m = parse("a: (\nline one\n  line two\n)\nb: 1\n");
        assert_eq!(get(&m, "a").unwrap().value, s("\nline one\n  line two\n"));
        assert_eq!(get(&m, "b").unwrap().value, Value::Int(1));
        // Only a ')' alone on its line ends the block.
        assert_eq!(val("a: (\nf(x)\n )\n)\n", "a"), s("\nf(x)\n )\n"));
        assert_eq!(val("a: (\nx\n)", "a"), s("\nx\n"));
    }

    #[test]
    fn datetimes_are_validated_strings() {
        assert_eq!(
            val("a: 2016-05-04T18:53:41Z", "a"),
            s("2016-05-04T18:53:41Z")
        );
        assert_eq!(
            val("a: 2024-02-29T23:59:59Z", "a"),
            s("2024-02-29T23:59:59Z")
        );
        fails_at("a: 2023-02-29T00:00:00Z", 1, 4, "out of range");
        fails_at("a: 2016-13-04T18:53:41Z", 1, 4, "out of range");
        fails_at("a: 2016-05-04", 1, 14, "invalid datetime");
        fails_at("a: 2016-05-04T18:53:41", 1, 23, "invalid datetime");
        fails_at("a: 10-20", 1, 4, "ISO 8601");
    }

    // ----- variables ----------------------------------------------------------

    #[test]
    fn variables_from_earlier_keys() {
        let m = parse("size: 1MB\nmax_payload: $size\n");
        let v = get(&m, "max_payload").unwrap();
        assert_eq!(v.value, Value::Int(1 << 20));
        // The value is located at the reference.
        assert_eq!((v.pos.line, v.pos.col), (2, 14));

        // Enclosing blocks are searched, innermost first.
        let m = parse("x: 1\nn: outer\na { n: inner, b { c: $x, d: $n } }\n");
        let b = get(get(&m, "a").unwrap().as_map().unwrap(), "b")
            .unwrap()
            .as_map()
            .unwrap();
        assert_eq!(get(b, "c").unwrap().value, Value::Int(1));
        assert_eq!(get(b, "d").unwrap().value, s("inner"));
        // Only keys defined *before* the reference count.
        let m = parse("n: outer\na { d: $n, n: inner }\n");
        let a = get(&m, "a").unwrap().as_map().unwrap();
        assert_eq!(get(a, "d").unwrap().value, s("outer"));

        // Arrays and maps can be referenced; nested positions stay put.
        let m = parse("t: x\nlist: [$t, y]\nm { k: v }\ncopy: $m\n");
        let list = get(&m, "list").unwrap().as_array().unwrap();
        assert_eq!(list[0].value, s("x"));
        let copy = get(&m, "copy").unwrap();
        assert_eq!((copy.pos.line, copy.pos.col), (4, 7));
        let k = &copy.as_map().unwrap()[0].1;
        assert_eq!((k.value.clone(), k.pos.line, k.pos.col), (s("v"), 3, 8));

        // The latest definition wins.
        assert_eq!(val("x: 1\nx: 2\ny: $x\n", "y"), Value::Int(2));
    }

    #[test]
    fn variables_are_case_sensitive_and_scoped() {
        fails_at("N: 1\nx: $n_rnats_confparse_lower\n", 2, 4, "not defined");
        // Keys of a sibling block are not in scope.
        fails_at(
            "m { rnats_cp_inner: 1 }\nx: $rnats_cp_inner\n",
            2,
            4,
            "not defined",
        );
        // A key cannot refer to itself (it is not defined yet).
        fails_at("rnats_cp_self: $rnats_cp_self\n", 1, 16, "not defined");
        // A reference inside an array sees the enclosing map's keys.
        let m = parse("b: 1\na: [$b]\n");
        assert_eq!(
            get(&m, "a").unwrap().as_array().unwrap()[0].value,
            Value::Int(1)
        );
    }

    #[test]
    fn variables_from_the_environment() {
        set_env("RNATS_CP_SIZE", "2MB");
        set_env("RNATS_CP_NAME", "hello");
        set_env("RNATS_CP_LIST", "[a, 2]");
        set_env("RNATS_CP_EMPTY", "");
        set_env("RNATS_CP_SPACES", "two words");
        set_env("RNATS_CP_CHAIN", "$RNATS_CP_NAME");
        set_env("RNATS_CP_LOOP", "$RNATS_CP_LOOP");
        set_env("RNATS_CP_SHADOWED", "from-env");

        // Environment values are parsed like config values.
        assert_eq!(val("a: $RNATS_CP_SIZE", "a"), Value::Int(2 << 20));
        assert_eq!(val("a: $RNATS_CP_NAME", "a"), s("hello"));
        let m = parse("\n  list: $RNATS_CP_LIST");
        let list = get(&m, "list").unwrap();
        let items = list.as_array().unwrap();
        assert_eq!(
            (items[0].value.clone(), items[1].value.clone()),
            (s("a"), Value::Int(2))
        );
        // Every part of an environment value is located at the reference.
        assert_eq!(
            (items[1].pos.line, items[1].pos.col, &*items[1].pos.file),
            (2, 9, "t.conf")
        );
        assert_eq!(val("a: $RNATS_CP_EMPTY", "a"), s(""));
        assert_eq!(val("a: $RNATS_CP_CHAIN", "a"), s("hello"));
        // A key defined in the file wins over the environment.
        assert_eq!(
            val("RNATS_CP_SHADOWED: file\na: $RNATS_CP_SHADOWED", "a"),
            s("file")
        );

        fails_at(
            "a: $RNATS_CP_SPACES",
            1,
            4,
            "cannot parse environment variable RNATS_CP_SPACES",
        );
        fails_at("a: $RNATS_CP_LOOP", 1, 4, "refers to itself");
        fails_at("\n\n   a: $RNATS_CP_NOT_SET_ANYWHERE", 3, 7, "not defined");
        fails_at("a: $", 1, 4, "not defined");
    }

    #[test]
    fn bcrypt_hashes_are_not_variables() {
        let hash = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.Sx8kSy";
        assert_eq!(val(&format!("password: {hash}"), "password"), s(hash));
    }

    // ----- duplicates and lookup ----------------------------------------------

    #[test]
    fn duplicate_keys_replace_in_place() {
        let m = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(keys(&m), ["a", "b"]);
        assert_eq!(m[0].1.value, Value::Int(3));
        assert_eq!(m[0].1.pos.line, 3);
        let m = parse("x { a: 1, b: 2, a: {c: 1} }");
        let x = get(&m, "x").unwrap().as_map().unwrap();
        assert_eq!(keys(x), ["a", "b"]);
        assert!(x[0].1.as_map().is_some());
    }

    #[test]
    fn get_is_case_insensitive() {
        let m = parse("Port: 4222\nHTTP_port: 8222\n");
        assert_eq!(get(&m, "port").and_then(Spanned::as_i64), Some(4222));
        assert_eq!(get(&m, "PORT").and_then(Spanned::as_i64), Some(4222));
        assert_eq!(get(&m, "http_PORT").and_then(Spanned::as_i64), Some(8222));
        assert!(get(&m, "missing").is_none());
        // Keys differing only in case are distinct entries; the later wins.
        let m = parse("port: 1\nPORT: 2\n");
        assert_eq!(m.len(), 2);
        assert_eq!(get(&m, "Port").and_then(Spanned::as_i64), Some(2));
    }

    #[test]
    fn accessors() {
        let m = parse("s: x\ni: 1\nf: 1.5\nb: on\na: [1]\nm {k: v}\n");
        let g = |k| get(&m, k).unwrap();
        assert_eq!(g("s").as_str(), Some("x"));
        assert_eq!(g("i").as_str(), None);
        assert_eq!(g("i").as_i64(), Some(1));
        assert_eq!(g("f").as_i64(), None);
        assert_eq!(g("f").as_f64(), Some(1.5));
        assert_eq!(g("i").as_f64(), Some(1.0));
        assert_eq!(g("b").as_bool(), Some(true));
        assert_eq!(g("s").as_bool(), None);
        assert_eq!(g("a").as_array().map(<[Spanned]>::len), Some(1));
        assert_eq!(g("a").as_map(), None);
        assert_eq!(g("m").as_map().map(Vec::len), Some(1));
        assert_eq!(g("m").as_array(), None);
        assert_eq!(g("m").value.type_name(), "map");
        let e = g("i").error("bad port");
        assert_eq!(e.to_string(), "t.conf:2:4: bad port");
    }

    // ----- file-level forms -----------------------------------------------------

    #[test]
    fn json_style_wrapper() {
        let m = parse("{ port: 4222, debug: true }");
        assert_eq!(keys(&m), ["port", "debug"]);
        let m = parse(
            "{\n  \"port\": 4222,\n  \"cluster\": {\"name\": \"c\"},\n  \"routes\": [\"a\", \"b\"]\n}\n",
        );
        assert_eq!(keys(&m), ["port", "cluster", "routes"]);
        // nats-server tolerates a stray closing brace at the end, or after a value.
        assert_eq!(keys(&parse("port: 1\n}\n")), ["port"]);
        assert_eq!(keys(&parse("port: 1 }\ndebug: true")), ["port", "debug"]);
        fails_at("{ port: 1\n", 1, 1, "unterminated '{' block");
    }

    #[test]
    fn crlf_line_endings() {
        let m = parse("a: 1\r\nb {\r\n  c: x\r\n}\r\nd: [1,\r\n2]\r\ne: \"q\"\r\n");
        assert_eq!(keys(&m), ["a", "b", "d", "e"]);
        let c = &get(&m, "b").unwrap().as_map().unwrap()[0].1;
        assert_eq!((c.value.clone(), c.pos.line, c.pos.col), (s("x"), 3, 6));
        assert_eq!(get(&m, "d").unwrap().as_array().unwrap().len(), 2);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let m = parse("\u{feff}port: 1");
        assert_eq!(keys(&m), ["port"]);
        assert_eq!(m[0].1.pos.col, 7);
    }

    #[test]
    fn columns_count_characters() {
        let m = parse("é: \"ü\", x: 1");
        assert_eq!(get(&m, "x").unwrap().pos.col, 12);
        fails_at("é: \"ü", 1, 4, "unterminated string");
    }

    // ----- includes -----------------------------------------------------------

    #[test]
    fn include_relative_to_including_file() {
        let dir = TempDir::new("rel");
        dir.write(
            "main.conf",
            "port: 1\ninclude ./sub/a.conf\nafter: $from_b\n",
        );
        // a.conf's own include is relative to sub/, not to main.conf's dir.
        dir.write("sub/a.conf", "include \"b.conf\"\nport: 2\n");
        dir.write("sub/b.conf", "from_b: yes\n");
        let m = parse_file(&dir.0.join("main.conf")).unwrap();
        assert_eq!(keys(&m), ["port", "from_b", "after"]);
        assert_eq!(get(&m, "port").unwrap().value, Value::Int(2));
        assert_eq!(get(&m, "after").unwrap().value, Value::Bool(true));
        // Values from included files are located in those files.
        let from_b = get(&m, "from_b").unwrap();
        assert!(from_b.pos.file.ends_with("b.conf"), "{}", from_b.pos);
        assert_eq!((from_b.pos.line, from_b.pos.col), (1, 9));
    }

    #[test]
    fn include_forms_and_block_level() {
        let dir = TempDir::new("forms");
        dir.write("users.conf", "users = [{user: a}]\ntimeout: 2\n");
        dir.write("n.conf", "n: 1\n");
        let main = dir.write(
            "main.conf",
            "authorization {\n  timeout: 1\n  include users.conf\n}\n\
             include 'n.conf'\nINCLUDE n.conf; x: 1\ninclude n.conf # comment\n\
             m { include n.conf}\ninclude: not-a-keyword\n",
        );
        let m = parse_file(&main).unwrap();
        assert_eq!(keys(&m), ["authorization", "n", "x", "m", "include"]);
        let auth = get(&m, "authorization").unwrap().as_map().unwrap();
        // Included keys replace earlier ones in place, after them comes the rest.
        assert_eq!(keys(auth), ["timeout", "users"]);
        assert_eq!(get(auth, "timeout").unwrap().value, Value::Int(2));
        assert_eq!(get(&m, "include").unwrap().value, s("not-a-keyword"));
        assert_eq!(keys(get(&m, "m").unwrap().as_map().unwrap()), ["n"]);
        // Later keys override included ones.
        let main = dir.write("over.conf", "include n.conf\nn: 2\n");
        assert_eq!(parse_file(&main).unwrap()[0].1.value, Value::Int(2));
    }

    #[test]
    fn included_file_does_not_see_includers_variables() {
        // As in nats-server, an included file is parsed on its own.
        let dir = TempDir::new("scope");
        dir.write("inc.conf", "\nuse: $rnats_cp_outer_only\n");
        let main = dir.write("main.conf", "rnats_cp_outer_only: 1\ninclude inc.conf\n");
        let e = parse_file(&main).unwrap_err();
        assert!(e.file.ends_with("inc.conf"), "{e}");
        assert_eq!((e.line, e.col), (2, 6));
    }

    #[test]
    fn include_errors() {
        let dir = TempDir::new("errs");
        dir.write("bad.conf", "ok: 1\nbroken: \"abc\n");
        dir.write("cycle_a.conf", "include cycle_b.conf\n");
        dir.write("cycle_b.conf", "x: 1\ninclude ./cycle_a.conf\n");

        // An error inside an included file names that file and position.
        let main = dir.write("main.conf", "a: 1\ninclude bad.conf\n");
        let e = parse_file(&main).unwrap_err();
        assert!(e.file.ends_with("bad.conf"), "{e}");
        assert_eq!((e.line, e.col), (2, 9));
        assert!(e.msg.contains("unterminated string"), "{e}");

        // A missing file is reported at the include's path.
        let main = dir.write("missing.conf", "a: 1\n  include nope.conf\n");
        let e = parse_file(&main).unwrap_err();
        assert!(e.file.ends_with("missing.conf"), "{e}");
        assert_eq!((e.line, e.col), (2, 11));
        assert!(e.msg.contains("cannot read include file"), "{e}");

        // A directory is not a config file.
        let main = dir.write("dir.conf", "include .\n");
        assert!(
            parse_file(&main)
                .unwrap_err()
                .msg
                .contains("cannot read include file")
        );

        // Cycles are errors, not stack overflows.
        let e = parse_file(&dir.0.join("cycle_a.conf")).unwrap_err();
        assert!(e.msg.contains("include cycle"), "{e}");
        assert!(e.file.ends_with("cycle_b.conf"), "{e}");
        assert_eq!((e.line, e.col), (2, 9));

        fails_at("include [a.conf]", 1, 9, "array");
        fails_at("include {", 1, 9, "map");
        fails_at("include 1.conf", 1, 9, "number");
        fails_at("include\n", 1, 8, "newline");
        fails_at("include \"a.conf", 1, 9, "unterminated include path");
        fails_at("include ''", 1, 9, "empty include path");
    }

    #[test]
    fn parse_str_resolves_includes_against_current_dir() {
        let dir = TempDir::new("cwd");
        let inc = dir.write("inc.conf", "from_inc: 1\n");
        // Build a path to the file that is relative to the current directory.
        let cwd = std::env::current_dir().unwrap();
        let ups = "../".repeat(cwd.components().count().saturating_sub(1));
        let rel = format!("{ups}{}", inc.strip_prefix("/").unwrap().display());
        let m = parse_str(&format!("include \"{rel}\"\n"), "inline").unwrap();
        assert_eq!(keys(&m), ["from_inc"]);
        // Absolute paths are used as they are.
        let m = parse_str(&format!("include '{}'\n", inc.display()), "inline").unwrap();
        assert_eq!(keys(&m), ["from_inc"]);
    }

    #[test]
    fn parse_file_errors() {
        let dir = TempDir::new("file");
        let e = parse_file(&dir.0.join("absent.conf")).unwrap_err();
        assert_eq!((e.line, e.col), (0, 0));
        assert!(e.msg.contains("cannot read config file"), "{e}");
        let path = dir.0.join("latin1.conf");
        std::fs::write(&path, b"a: 1\nname: caf\xe9\n").unwrap();
        let e = parse_file(&path).unwrap_err();
        assert_eq!(
            (e.line, e.col, e.msg.as_str()),
            (2, 10, "file is not valid UTF-8")
        );
    }

    // ----- errors -------------------------------------------------------------

    #[test]
    fn error_positions() {
        // Unterminated constructs are reported where they start.
        fails_at("a: \"abc", 1, 4, "unterminated string");
        fails_at("a: 'abc\n", 1, 4, "unterminated string");
        fails_at("x: 1\na {\n  b: 1\n", 2, 3, "unterminated map");
        fails_at("a: [1, 2", 1, 4, "unterminated array");
        fails_at("a: [1, 2\n", 1, 4, "unterminated array");
        fails_at("a: (\nxx\n", 1, 4, "unterminated block string");
        fails_at("\"abc: 1", 1, 1, "unterminated quoted key");
        // Missing values are reported at their key.
        fails_at("a:\nb: 1", 1, 1, "missing value for key \"a\"");
        fails_at("a", 1, 1, "missing value");
        fails_at("  a =", 1, 3, "missing value");
        fails_at("a { b: }", 1, 5, "missing value for key \"b\"");
        fails_at("a { b }", 1, 5, "missing value");
        fails_at("a: ;", 1, 4, "expected a value, found ';'");
        fails_at("a: [}]", 1, 5, "expected a value");
        // Stray characters are reported where they are.
        fails_at("a: 1 2", 1, 6, "unexpected '2' after value");
        fails_at("a: \"x\"y", 1, 7, "unexpected 'y'");
        fails_at("a { b: 1 c: 2 }", 1, 10, "unexpected 'c'");
        fails_at(": 1", 1, 1, "expected a key");
        fails_at("/ x", 1, 1, "unexpected '/'");
        fails_at("a: 1 / x", 1, 6, "unexpected '/'");
        fails_at("a { ] }", 1, 5, "unexpected ']'");
        fails_at("a: [1,,2]", 1, 7, "unexpected ','");
        fails_at("a: [, 1]", 1, 5, "unexpected ','");
        fails_at("a: [1 2]", 1, 7, "unexpected '2' after array element");
        fails_at("a: it's", 1, 7, "unexpected 's'");
        // Escapes.
        fails_at("a: \"ab\\q\"", 1, 7, "invalid escape '\\q'");
        fails_at("a: \"\\x4\"", 1, 5, "two hexadecimal digits");
        fails_at("a: \"\\xff\"", 1, 4, "valid UTF-8");
        fails_at("a: x\\", 1, 5, "incomplete escape");
        // Numbers.
        fails_at("a: 99999999999999999999", 1, 4, "out of range");
        fails_at("a: 8EB", 1, 4, "out of range");
        fails_at("a: 10e", 1, 4, "out of range");
        fails_at("a: 1kbb", 1, 4, "invalid size suffix");
        fails_at("a: 1.5s", 1, 7, "unexpected 's'");
        fails_at("a: -5s", 1, 6, "unexpected 's'");
        fails_at("a: 1.x", 1, 6, "digit after '.'");
        fails_at("a: .5", 1, 4, "floats must start with a digit");
        fails_at("a: -x", 1, 4, "expected a digit after '-'");
        fails_at("a: -", 1, 4, "expected a digit after '-'");
        let big = format!("a: 1{}.0", "0".repeat(400));
        fails_at(&big, 1, 4, "out of range");
        // Errors deep in a file.
        fails_at(
            "a: 1\n\nb {\n  c: [\n    1,\n    \"x\n  ]\n}\n",
            6,
            5,
            "unterminated string",
        );
    }

    #[test]
    fn error_display_and_trait() {
        let e = fails_at("\n  a: \"x", 2, 6, "unterminated string");
        assert_eq!(
            e.to_string(),
            "t.conf:2:6: unterminated string: missing closing '\"'"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().starts_with("t.conf:2:6: "));
    }

    #[test]
    fn resource_limits() {
        let deep = format!(
            "a: {}1{}",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        let e = parse_str(&deep, "t.conf").unwrap_err();
        assert!(e.msg.contains("nesting deeper"), "{e}");
        let deep = format!("a {}", "{ b ".repeat(MAX_DEPTH + 5));
        assert!(
            parse_str(&deep, "t.conf")
                .unwrap_err()
                .msg
                .contains("nesting deeper")
        );
        // Just under the limit is fine.
        let ok = format!(
            "a: {}1{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        parse(&ok);

        // Doubling through variables is stopped long before memory runs out.
        let mut src = String::from("v0: [1, 2, 3, 4, 5, 6, 7, 8]\n");
        for i in 1..40 {
            src.push_str(&format!("v{i}: [$v{p}, $v{p}]\n", p = i - 1));
        }
        let e = parse_str(&src, "t.conf").unwrap_err();
        assert!(e.msg.contains("expand to too many values"), "{e}");

        // So is growing depth through variables.
        let mut src = String::from("v0: 1\n");
        for i in 1..40 {
            src.push_str(&format!("v{i}: [[[[[[[[$v{}]]]]]]]]\n", i - 1));
        }
        let e = parse_str(&src, "t.conf").unwrap_err();
        assert!(e.msg.contains("nesting deeper"), "{e}");
    }

    // ----- a realistic configuration ------------------------------------------

    const SAMPLE: &str = r#"# rnats / nats-server configuration
server_name: "n1-east"
listen: 0.0.0.0:4222
http_port: 8222
port = 4222                 # overrides the port in `listen`
max_payload: 1MB
max_pending: 64MB
max_connections 64K
write_deadline: "10s"
ping_interval: 2m           # the M (mega) suffix: 2000000, not two minutes!
debug: false
trace: off
logtime: yes
route_pass = "r0ute-s3cret"

authorization {
  timeout: 2.5
  users = [
    {user: alice, password: "a\tb\x21"}
    {user: "bob", password: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.Sx8kSy}
    {
      user: carol
      password: 'p@ss\word'
      permissions: {
        publish: ["orders.>", "_INBOX.>"]
        subscribe = "events.*"
      }
    }
  ]
}

tls {
  cert_file: "./certs/server-cert.pem"
  key_file:  "./certs/server-key.pem"
  ca_file:   "./certs/ca.pem"
  verify:    true
  timeout:   2
}

cluster {
  name: east
  listen: 0.0.0.0:6222
  authorization { user: route; password: $route_pass; timeout: 0.5 }
  routes = [
    nats-route://route:r0ute-s3cret@10.0.0.2:6222
    nats-route://10.0.0.3:6222   // seed
  ]
}
"#;

    #[test]
    fn realistic_config() {
        let m = parse(SAMPLE);
        let g = |k| get(&m, k).unwrap_or_else(|| panic!("missing {k}"));
        assert_eq!(
            keys(&m),
            [
                "server_name",
                "listen",
                "http_port",
                "port",
                "max_payload",
                "max_pending",
                "max_connections",
                "write_deadline",
                "ping_interval",
                "debug",
                "trace",
                "logtime",
                "route_pass",
                "authorization",
                "tls",
                "cluster"
            ]
        );
        assert_eq!(g("server_name").as_str(), Some("n1-east"));
        assert_eq!(g("listen").as_str(), Some("0.0.0.0:4222"));
        assert_eq!(g("port").as_i64(), Some(4222));
        assert_eq!(g("http_port").as_i64(), Some(8222));
        assert_eq!(g("max_payload").as_i64(), Some(1 << 20));
        assert_eq!(g("max_pending").as_i64(), Some(64 << 20));
        assert_eq!(g("max_connections").as_i64(), Some(64_000));
        assert_eq!(g("write_deadline").as_str(), Some("10s"));
        assert_eq!(g("ping_interval").as_i64(), Some(2_000_000));
        assert_eq!(g("debug").as_bool(), Some(false));
        assert_eq!(g("trace").as_bool(), Some(false));
        assert_eq!(g("logtime").as_bool(), Some(true));
        assert_eq!(
            (g("max_payload").pos.line, g("max_payload").pos.col),
            (6, 14)
        );

        let auth = g("authorization").as_map().unwrap();
        assert_eq!(get(auth, "timeout").unwrap().as_f64(), Some(2.5));
        let users = get(auth, "users").unwrap().as_array().unwrap();
        assert_eq!(users.len(), 3);
        let field = |i: usize, k| get(users[i].as_map().unwrap(), k).unwrap().value.clone();
        assert_eq!(field(0, "user"), s("alice"));
        assert_eq!(field(0, "password"), s("a\tb!"));
        assert_eq!(
            field(1, "password"),
            s("$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.Sx8kSy")
        );
        assert_eq!(field(2, "password"), s("p@ss\\word"));
        let perms = get(users[2].as_map().unwrap(), "permissions")
            .unwrap()
            .as_map()
            .unwrap();
        let publish: Vec<_> = get(perms, "publish")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(publish, ["orders.>", "_INBOX.>"]);
        assert_eq!(get(perms, "subscribe").unwrap().as_str(), Some("events.*"));
        assert_eq!(users[2].pos.line, 21);

        let tls = g("tls").as_map().unwrap();
        assert_eq!(
            get(tls, "cert_file").unwrap().as_str(),
            Some("./certs/server-cert.pem")
        );
        assert_eq!(get(tls, "verify").unwrap().as_bool(), Some(true));
        assert_eq!(get(tls, "timeout").unwrap().as_i64(), Some(2));

        let cluster = g("cluster").as_map().unwrap();
        assert_eq!(get(cluster, "name").unwrap().as_str(), Some("east"));
        assert_eq!(
            get(cluster, "listen").unwrap().as_str(),
            Some("0.0.0.0:6222")
        );
        let cauth = get(cluster, "authorization").unwrap().as_map().unwrap();
        assert_eq!(
            get(cauth, "password").unwrap().as_str(),
            Some("r0ute-s3cret")
        );
        assert_eq!(get(cauth, "timeout").unwrap().as_f64(), Some(0.5));
        let routes: Vec<_> = get(cluster, "routes")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            routes,
            [
                "nats-route://route:r0ute-s3cret@10.0.0.2:6222",
                "nats-route://10.0.0.3:6222"
            ]
        );
    }

    // ----- robustness -----------------------------------------------------------

    /// Tiny deterministic PRNG (xorshift64*), so the fuzz test needs no crates
    /// and always sees the same inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Parses without touching the file system for relative includes.
    fn parse_isolated(src: &str) -> Result<Map, ConfigError> {
        let base = PathBuf::from("/nonexistent-rnats-confparse-fuzz");
        parse_source(src, Arc::from("fuzz"), base, &mut Session::default())
    }

    #[test]
    fn fuzz_never_panics() {
        // Fragments that steer random input into every construct.
        const TOKENS: &[&str] = &[
            "a",
            "b",
            "k",
            "x",
            "e",
            "0",
            "1",
            "9",
            "-",
            ".",
            ":",
            "=",
            " ",
            "\t",
            "\n",
            "\r",
            ",",
            ";",
            "{",
            "}",
            "[",
            "]",
            "(",
            ")",
            "\n)\n",
            "\"",
            "'",
            "\\",
            "\\x",
            "\\xc3",
            "#",
            "//",
            "$",
            "$a",
            "$2a$",
            "include ",
            "true",
            "off",
            "1k",
            "2MB",
            "1e",
            "2016-",
            "-05-04T",
            "127.0.0.1:4222",
            "é",
            "\u{feff}",
            "\u{a0}",
            "\0",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0;
        for _ in 0..20_000 {
            let mut src = String::new();
            for _ in 0..rng.below(40) {
                src.push_str(TOKENS[rng.below(TOKENS.len())]);
            }
            ok += usize::from(parse_isolated(&src).is_ok());
        }
        // Sanity check that the generator reaches valid input too.
        assert!(ok > 100, "only {ok} inputs parsed");

        // Random bytes, lossily decoded.
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let _ = parse_isolated(&String::from_utf8_lossy(&bytes));
        }

        // Every prefix of the sample, and the sample with random damage.
        let chars: Vec<char> = SAMPLE.chars().collect();
        for end in 0..=chars.len() {
            let _ = parse_isolated(&chars[..end].iter().collect::<String>());
        }
        for _ in 0..2_000 {
            let mut damaged = chars.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(damaged.len());
                match rng.below(3) {
                    0 => {
                        damaged.remove(i);
                    }
                    1 => damaged.insert(
                        i,
                        "{}[]()\"'\\#,;:= \n$-.".chars().nth(rng.below(19)).unwrap(),
                    ),
                    _ => damaged[i] = char::from(rng.next() as u8 & 0x7f),
                }
            }
            let _ = parse_isolated(&damaged.into_iter().collect::<String>());
        }
    }
}
