// TEMPORARY STUB: replaced by the real parser.
use std::sync::Arc;
#[derive(Clone, Debug, PartialEq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Spanned>),
    Map(Map),
}
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned {
    pub value: Value,
    pub pos: Pos,
}
pub type Map = Vec<(String, Spanned)>;
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
    }
}
impl std::error::Error for ConfigError {}
pub fn parse_str(_src: &str, file: &str) -> Result<Map, ConfigError> {
    Err(ConfigError {
        file: file.into(),
        line: 0,
        col: 0,
        msg: "stub".into(),
    })
}
pub fn parse_file(p: &std::path::Path) -> Result<Map, ConfigError> {
    parse_str("", &p.display().to_string())
}
impl Spanned {
    pub fn as_str(&self) -> Option<&str> {
        if let Value::Str(s) = &self.value {
            Some(s)
        } else {
            None
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        if let Value::Int(s) = &self.value {
            Some(*s)
        } else {
            None
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        if let Value::Bool(s) = &self.value {
            Some(*s)
        } else {
            None
        }
    }
    pub fn as_map(&self) -> Option<&Map> {
        if let Value::Map(s) = &self.value {
            Some(s)
        } else {
            None
        }
    }
    pub fn as_array(&self) -> Option<&[Spanned]> {
        if let Value::Array(s) = &self.value {
            Some(s)
        } else {
            None
        }
    }
}
pub fn get<'a>(map: &'a Map, key: &str) -> Option<&'a Spanned> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}
