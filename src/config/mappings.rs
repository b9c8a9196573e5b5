//! The `mappings` (or `maps`) block, at the top level (the global
//! account) or in an account of `accounts`:
//!
//! ```text
//! mappings = {
//!   "orders.*.*": "orders.{{wildcard(2)}}.{{wildcard(1)}}"
//!   "w": [ {destination: "w.a", weight: 20%}, {destination: "w.b", weight: "80%"} ]
//! }
//! ```
//!
//! Each mapping is checked as nats-server checks it, with its error
//! texts, at the position of its value.

use std::sync::Arc;

use super::parser::{ConfigError, Spanned, Value};
use super::value::{self as conf, Context};
use crate::account::mapping::{MapDest, MappingTable};

pub fn parse_mappings(v: &Spanned, cx: &Context) -> Result<Arc<MappingTable>, ConfigError> {
    let map = conf::map(v, "mappings")?;
    let mut table = MappingTable::default();
    for (src, mv) in map {
        if cx.is_variable(mv) {
            continue;
        }
        if !crate::protocol::subject::valid_sub_subject(src.as_bytes()) {
            return Err(conf::err(
                mv,
                format!("Subject {src:?} is not a valid subject"),
            ));
        }
        match &mv.value {
            Value::Str(dest) => table.add(src, dest).map_err(|e| {
                conf::err(
                    mv,
                    format!("Error adding mapping for {src:?} to {dest:?} : {e}"),
                )
            })?,
            Value::Array(items) => {
                let dests = items.iter().map(dest).collect::<Result<Vec<_>, _>>()?;
                table.add_weighted(src, &dests).map_err(|e| {
                    conf::err(mv, format!("Error adding mapping for {src:?} : {e}"))
                })?;
            }
            _ => {
                let d = dest(mv)?;
                table.add_weighted(src, &[d]).map_err(|e| {
                    conf::err(mv, format!("Error adding mapping for {src:?} : {e}"))
                })?;
            }
        }
    }
    Ok(Arc::new(table))
}

/// `{destination: SUBJ, weight: N}` (nats-server's `parseAccountMapDest`).
fn dest(v: &Spanned) -> Result<MapDest, ConfigError> {
    let map = v
        .as_map()
        .ok_or_else(|| conf::err(v, "Expected an entry for the mapping destination"))?;
    let mut subject = String::new();
    let mut weight = None;
    for (k, val) in map {
        match k.to_ascii_lowercase().as_str() {
            "dest" | "destination" => subject = conf::string(val, k)?,
            "weight" => {
                let w = match &val.value {
                    Value::Str(s) => {
                        let s = s.strip_suffix('%').unwrap_or(s);
                        let Some(w) = go_atoi(s) else {
                            return Err(conf::err(
                                val,
                                format!("Invalid weight {s:?} for mapping destination"),
                            ));
                        };
                        w
                    }
                    Value::Int(i) => *i,
                    other => {
                        return Err(conf::err(
                            val,
                            format!("Unknown entry type for weight of {}", other.type_name()),
                        ));
                    }
                };
                if !(0..=100).contains(&w) {
                    return Err(conf::err(
                        val,
                        format!("Invalid weight {w} for mapping destination"),
                    ));
                }
                weight = Some(w as u8);
            }
            "cluster" => {
                return Err(conf::err(
                    val,
                    "\"cluster\" in a mapping destination is not supported by rnats yet \
                     (cluster-scoped mappings)",
                ));
            }
            _ => {
                return Err(conf::err(
                    val,
                    format!("Unknown field {k:?} for mapping destination"),
                ));
            }
        }
    }
    let Some(weight) = weight else {
        return Err(conf::err(
            v,
            format!("Missing weight for mapping destination {subject:?}"),
        ));
    };
    Ok(MapDest { subject, weight })
}

/// Go's `strconv.Atoi`.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
