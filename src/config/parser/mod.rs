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
    /// Every file read (canonical paths, the top-level file first): what
    /// `watch_config` watches.
    pub files: Vec<PathBuf>,
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
        files: session.files,
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
        files: session.files,
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
    /// Every file read, canonical, in the order first read.
    files: Vec<PathBuf>,
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
    if !session.files.contains(&canonical) {
        session.files.push(canonical.clone());
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

mod include;
mod syntax;
#[cfg(test)]
mod tests;
mod values;
