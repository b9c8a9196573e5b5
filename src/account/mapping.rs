//! Subject mappings (nats-server's `mappings`): a published subject that
//! matches a mapping's source is rewritten to one of its destinations
//! before the subscription lookup. Pure code, no I/O.
//!
//! A destination is a subject whose tokens may take source wildcards
//! (`$1`, `{{wildcard(1)}}`) or call functions of them (`partition`,
//! `split`, `splitFromLeft`/`Right`, `sliceFromLeft`/`Right`, `left`,
//! `right`, `random`), with nats-server's syntax, validation and error
//! wording. A mapping may have several destinations, each with a weight
//! in percent; when the weights sum to less than 100 the rest keeps the
//! original subject, unless the source is itself listed (then the rest is
//! dropped), as in nats-server.
//!
//! Mappings are tried in the order they were added and the first whose
//! source matches wins (nats-server keeps a file's mappings in Go map
//! order, so overlapping sources have no defined winner there).

use std::collections::BTreeMap;

/// nats-server's error texts.
const BAD_SUBJECT: &str = "invalid subject";
const INVALID_TRANSFORM: &str = "invalid mapping destination: invalid transform";
const UNKNOWN_FUNCTION: &str = "invalid mapping destination: unknown function";
const INDEX_OUT_OF_RANGE: &str = "invalid mapping destination: wildcard index out of range";
const NOT_ENOUGH_ARGS: &str =
    "invalid mapping destination: not enough arguments passed to the function";
const INVALID_ARG: &str =
    "invalid mapping destination: function argument is invalid or in the wrong format";
const TOO_MANY_ARGS: &str =
    "invalid mapping destination: too many arguments passed to the function";

/// Why a mapping was refused, in nats-server's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError(pub String);

impl std::fmt::Display for MappingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MappingError {}

/// nats-server's `mappingDestinationErr`: `"<error> in <token>"`.
fn in_token(what: &str, token: &str) -> MappingError {
    if token.is_empty() {
        MappingError(what.to_string())
    } else {
        MappingError(format!("{what} in {token}"))
    }
}

/// What one destination token becomes. Source token indexes are
/// positions in the published subject.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(Vec<u8>),
    /// A trailing `>`: the rest of the published subject.
    Rest,
    Wildcard(usize),
    /// FNV-1a of the listed tokens concatenated (none: of the whole
    /// subject), modulo the count.
    Partition(i32, Vec<usize>),
    SplitFromLeft(usize, i32),
    SplitFromRight(usize, i32),
    SliceFromLeft(usize, i32),
    SliceFromRight(usize, i32),
    Split(usize, Vec<u8>),
    Left(usize, i32),
    Right(usize, i32),
    Random(i32),
}

/// One source → destination rewrite (nats-server's `subjectTransform`).
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Source tokens (to know where a trailing `>` starts).
    src_len: usize,
    parts: Vec<Part>,
}

/// The function a `{{...}}` token calls, with its raw arguments.
fn parse_call(token: &str) -> Option<(&'static str, Vec<&str>)> {
    /// Names as nats-server's patterns spell them: the first letter and
    /// the capitals take either case, the rest must match exactly.
    const NAMES: [&str; 10] = [
        "wildcard",
        "partition",
        "splitFromLeft",
        "splitFromRight",
        "sliceFromLeft",
        "sliceFromRight",
        "right",
        "left",
        "split",
        "random",
    ];
    let inner = token.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start();
    let name = NAMES.into_iter().find(|n| {
        inner.len() >= n.len()
            && inner.as_bytes()[..n.len()]
                .iter()
                .zip(n.bytes())
                .enumerate()
                .all(|(i, (&c, p))| {
                    if i == 0 || p.is_ascii_uppercase() {
                        c.eq_ignore_ascii_case(&p)
                    } else {
                        c == p
                    }
                })
            && inner[n.len()..].trim_start().starts_with('(')
    })?;
    let rest = inner[name.len()..].trim_start().strip_prefix('(')?;
    let args = rest.trim_end().strip_suffix(')')?;
    // Go's `,\s*` split: whitespace after a comma goes with the comma.
    let mut out = Vec::new();
    let mut it = args.split(',');
    if let Some(first) = it.next() {
        out.push(first);
    }
    out.extend(it.map(|a| a.trim_start()));
    Some((name, out))
}

/// Go's `strconv.Atoi` (an optional sign, then decimal digits).
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// An argument as nats-server reads it: spaces trimmed, then Atoi.
fn int_arg(s: &str) -> Option<i64> {
    atoi(s.trim_matches(' '))
}

/// What a destination token asks for, before source indexes are
/// resolved: (kind, wildcard numbers, int argument, string argument).
#[derive(Debug, PartialEq)]
enum Kind {
    Literal,
    Wildcard,
    Partition,
    SplitFromLeft,
    SplitFromRight,
    SliceFromLeft,
    SliceFromRight,
    Split,
    Left,
    Right,
    Random,
}

type Placeholder = (Kind, Vec<i64>, i32, Vec<u8>);

/// nats-server's `indexPlaceHolders`.
fn placeholder(token: &str) -> Result<Placeholder, MappingError> {
    let lit = || Ok((Kind::Literal, Vec::new(), -1, Vec::new()));
    if token.len() <= 1 {
        return lit();
    }
    if let Some(n) = token.strip_prefix('$') {
        // `$x` that is not a number stays a literal token.
        return match atoi(n) {
            Some(i) => Ok((Kind::Wildcard, vec![i], -1, Vec::new())),
            None => lit(),
        };
    }
    if !(token.len() > 4 && token.starts_with("{{") && token.ends_with("}}")) {
        return lit();
    }
    let err = |what| Err(in_token(what, token));
    let Some((name, args)) = parse_call(token) else {
        return err(UNKNOWN_FUNCTION);
    };
    // (index, int) functions.
    let index_int = |kind: Kind| -> Result<Placeholder, MappingError> {
        if args.len() < 2 {
            return Err(in_token(NOT_ENOUGH_ARGS, token));
        }
        if args.len() > 2 {
            return Err(in_token(TOO_MANY_ARGS, token));
        }
        let i = int_arg(args[0]).ok_or_else(|| in_token(INVALID_ARG, token))?;
        let n = int_arg(args[1])
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| in_token(INVALID_ARG, token))?;
        Ok((kind, vec![i], n, Vec::new()))
    };
    // An int no larger than i32::MAX (a negative one is taken, as there).
    let count = |s: &str| {
        int_arg(s)
            .filter(|&n| n <= i64::from(i32::MAX))
            .map(|n| n as i32)
    };
    match name {
        "wildcard" => {
            if args.len() == 1 && args[0].is_empty() {
                return err(NOT_ENOUGH_ARGS);
            }
            if args.len() > 1 {
                return err(TOO_MANY_ARGS);
            }
            match int_arg(args[0]) {
                Some(i) => Ok((Kind::Wildcard, vec![i], -1, Vec::new())),
                None => err(INVALID_ARG),
            }
        }
        "partition" => {
            let Some(n) = count(args[0]) else {
                return err(INVALID_ARG);
            };
            let mut idx = Vec::new();
            for a in &args[1..] {
                match int_arg(a) {
                    Some(i) => idx.push(i),
                    None => return err(INVALID_ARG),
                }
            }
            Ok((Kind::Partition, idx, n, Vec::new()))
        }
        "splitFromLeft" => index_int(Kind::SplitFromLeft),
        "splitFromRight" => index_int(Kind::SplitFromRight),
        "sliceFromLeft" => index_int(Kind::SliceFromLeft),
        "sliceFromRight" => index_int(Kind::SliceFromRight),
        "right" => index_int(Kind::Right),
        "left" => index_int(Kind::Left),
        "split" => {
            if args.len() < 2 {
                return err(NOT_ENOUGH_ARGS);
            }
            if args.len() > 2 {
                return err(TOO_MANY_ARGS);
            }
            let Some(i) = int_arg(args[0]) else {
                return err(INVALID_ARG);
            };
            if args[1].contains([' ', '.']) {
                return err(INVALID_ARG);
            }
            Ok((Kind::Split, vec![i], -1, args[1].as_bytes().to_vec()))
        }
        _ => {
            // random(n)
            if args.len() != 1 {
                return err(NOT_ENOUGH_ARGS);
            }
            match count(args[0]) {
                Some(n) => Ok((Kind::Random, Vec::new(), n, Vec::new())),
                None => err(INVALID_ARG),
            }
        }
    }
}

/// Does the token look like a `{{function(...)}}` call?
fn looks_like_call(t: &str) -> bool {
    t.len() > 4 && t.starts_with("{{") && t.ends_with("}}")
}

/// nats-server's `subjectInfo`: (valid, tokens, partial wildcards, has `>`).
fn subject_info(s: &str) -> Option<(Vec<&str>, usize, bool)> {
    if s.is_empty() {
        return None;
    }
    let (mut pwcs, mut fwc) = (0, false);
    let tokens: Vec<&str> = s.split('.').collect();
    for t in &tokens {
        if t.is_empty() || fwc {
            return None;
        }
        match *t {
            ">" => fwc = true,
            "*" => pwcs += 1,
            _ => {}
        }
    }
    Some((tokens, pwcs, fwc))
}

impl Transform {
    /// nats-server's `ValidateMapping` followed by `NewSubjectTransform`.
    pub fn new(src: &str, dest: &str) -> Result<Transform, MappingError> {
        if dest.is_empty() {
            // nats-server takes an empty destination and then fails on
            // the first message it maps.
            return Err(MappingError(INVALID_TRANSFORM.into()));
        }
        let mut after_fwc = false;
        for t in dest.split('.') {
            if t.is_empty() || after_fwc {
                return Err(in_token(INVALID_TRANSFORM, t));
            }
            if looks_like_call(t) {
                if parse_call(t).is_none() {
                    return Err(in_token(UNKNOWN_FUNCTION, t));
                }
                continue;
            }
            if t == ">" {
                after_fwc = true;
            } else if t.contains(['\t', '\n', '\x0c', '\r', ' ']) {
                return Err(MappingError(INVALID_TRANSFORM.into()));
            }
        }
        Self::build(src, dest)
    }

    /// nats-server's `NewSubjectTransform` (non-strict).
    fn build(src: &str, dest: &str) -> Result<Transform, MappingError> {
        let src = if src.is_empty() { ">" } else { src };
        let bad = || MappingError(BAD_SUBJECT.into());
        let (stoks, npwcs, sfwc) = subject_info(src).ok_or_else(bad)?;
        let (dtoks, dpwcs, dfwc) = subject_info(dest).ok_or_else(bad)?;
        if dpwcs > 0 || sfwc != dfwc {
            return Err(bad());
        }
        // Wildcard number (1-based) → source token position; like Go's
        // map lookup, an unknown number reads as position 0.
        let positions: Vec<usize> = stoks
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == "*")
            .map(|(i, _)| i)
            .collect();
        let at = |n: i64| -> usize {
            if n >= 1 {
                positions.get((n - 1) as usize).copied().unwrap_or(0)
            } else {
                0
            }
        };
        let wild = npwcs > 0 || sfwc;
        let mut parts = Vec::with_capacity(dtoks.len());
        for token in &dtoks {
            let (kind, idx, n, s) = placeholder(token)?;
            if !wild {
                parts.push(match kind {
                    Kind::Literal => Part::Literal(token.as_bytes().to_vec()),
                    Kind::Random => Part::Random(n),
                    Kind::Partition => Part::Partition(n, Vec::new()),
                    _ => return Err(in_token(INDEX_OUT_OF_RANGE, token)),
                });
                continue;
            }
            for &i in &idx {
                if i > npwcs as i64 {
                    return Err(in_token(INDEX_OUT_OF_RANGE, &format!("{token}: [{i}]")));
                }
            }
            let first = idx.first().map(|&i| at(i)).unwrap_or(0);
            parts.push(match kind {
                Kind::Literal if *token == ">" => Part::Rest,
                Kind::Literal => Part::Literal(token.as_bytes().to_vec()),
                Kind::Wildcard => Part::Wildcard(first),
                Kind::Partition => Part::Partition(n, idx.iter().map(|&i| at(i)).collect()),
                Kind::SplitFromLeft => Part::SplitFromLeft(first, n),
                Kind::SplitFromRight => Part::SplitFromRight(first, n),
                Kind::SliceFromLeft => Part::SliceFromLeft(first, n),
                Kind::SliceFromRight => Part::SliceFromRight(first, n),
                Kind::Split => Part::Split(first, s),
                Kind::Left => Part::Left(first, n),
                Kind::Right => Part::Right(first, n),
                Kind::Random => Part::Random(n),
            });
        }
        Ok(Transform {
            src_len: stoks.len(),
            parts,
        })
    }

    /// Rewrite a subject (split into `tokens`) that matched the source.
    pub fn apply(&self, tokens: &[&[u8]], out: &mut Vec<u8>) {
        let token = |i: usize| tokens.get(i).copied().unwrap_or(b"");
        let last = self.parts.len().saturating_sub(1);
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(l) => out.extend_from_slice(l),
                Part::Rest => {
                    // The rest of the subject from the source's `>` on.
                    let from = self.src_len.saturating_sub(1).min(tokens.len());
                    for (j, t) in tokens[from..].iter().enumerate() {
                        if j > 0 {
                            out.push(b'.');
                        }
                        out.extend_from_slice(t);
                    }
                    break;
                }
                Part::Wildcard(s) => out.extend_from_slice(token(*s)),
                Part::Partition(n, idx) => {
                    let mut h = Fnv32a::new();
                    // (For a literal source nats-server sometimes hashes
                    // an empty key instead: when that mapping is the
                    // first it tries, it has not split the subject.
                    // Which one is first follows Go's map order, so
                    // rnats always hashes the subject.)
                    if !idx.is_empty() {
                        idx.iter().for_each(|&s| h.write(token(s)));
                    } else {
                        for (j, t) in tokens.iter().enumerate() {
                            if j > 0 {
                                h.write(b".");
                            }
                            h.write(t);
                        }
                    }
                    let p = if *n == 0 { 0 } else { h.0 % (*n as u32) };
                    out.extend_from_slice(itoa::Buffer::new().format(p).as_bytes());
                }
                Part::SplitFromLeft(s, n) => {
                    let t = token(*s);
                    let p = *n as isize;
                    if p > 0 && (p as usize) < t.len() {
                        let p = p as usize;
                        out.extend_from_slice(&t[..p]);
                        out.push(b'.');
                        out.extend_from_slice(&t[p..]);
                    } else {
                        out.extend_from_slice(t);
                    }
                }
                Part::SplitFromRight(s, n) => {
                    let t = token(*s);
                    let p = *n as isize;
                    if p > 0 && (p as usize) < t.len() {
                        let cut = t.len() - p as usize;
                        out.extend_from_slice(&t[..cut]);
                        out.push(b'.');
                        out.extend_from_slice(&t[cut..]);
                    } else {
                        out.extend_from_slice(t);
                    }
                }
                Part::SliceFromLeft(s, n) => {
                    let t = token(*s);
                    let size = *n as isize;
                    if size > 0 && (size as usize) < t.len() {
                        for (j, chunk) in t.chunks(size as usize).enumerate() {
                            if j > 0 {
                                out.push(b'.');
                            }
                            out.extend_from_slice(chunk);
                        }
                    } else {
                        out.extend_from_slice(t);
                    }
                }
                Part::SliceFromRight(s, n) => {
                    let t = token(*s);
                    let size = *n as isize;
                    if size > 0 && (size as usize) < t.len() {
                        let size = size as usize;
                        let rem = t.len() % size;
                        if rem > 0 {
                            out.extend_from_slice(&t[..rem]);
                            out.push(b'.');
                        }
                        for (j, chunk) in t[rem..].chunks(size).enumerate() {
                            if j > 0 {
                                out.push(b'.');
                            }
                            out.extend_from_slice(chunk);
                        }
                    } else {
                        out.extend_from_slice(t);
                    }
                }
                Part::Split(s, sep) => {
                    let pieces = split_go(token(*s), sep);
                    for (j, p) in pieces.iter().enumerate() {
                        out.extend_from_slice(p);
                        if j + 1 < pieces.len()
                            && !pieces[j + 1].is_empty()
                            && !(j == 0 && p.is_empty())
                        {
                            out.push(b'.');
                        }
                    }
                }
                Part::Left(s, n) => {
                    let t = token(*s);
                    let size = *n as isize;
                    if size > 0 && (size as usize) < t.len() {
                        out.extend_from_slice(&t[..size as usize]);
                    } else {
                        out.extend_from_slice(t);
                    }
                }
                Part::Right(s, n) => {
                    let t = token(*s);
                    let size = *n as isize;
                    if size > 0 && (size as usize) < t.len() {
                        out.extend_from_slice(&t[t.len() - size as usize..]);
                    } else {
                        out.extend_from_slice(t);
                    }
                }
                Part::Random(n) => {
                    // Go's `rand.Int31() % n` (a negative n still gives a
                    // number from 0).
                    let r = if *n == 0 {
                        0
                    } else {
                        fastrand::i32(0..=i32::MAX) % n
                    };
                    out.extend_from_slice(itoa::Buffer::new().format(r).as_bytes());
                }
            }
            if i < last {
                out.push(b'.');
            }
        }
    }
}

/// Go's `strings.Split`: an empty separator splits into characters (a
/// byte that is not UTF-8 stands alone).
fn split_go<'a>(s: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    if sep.is_empty() {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let n = match std::str::from_utf8(&rest[..rest.len().min(4)]) {
                Ok(v) => v.chars().next().map_or(1, char::len_utf8),
                Err(e) if e.valid_up_to() > 0 => std::str::from_utf8(&rest[..e.valid_up_to()])
                    .ok()
                    .and_then(|v| v.chars().next())
                    .map_or(1, char::len_utf8),
                Err(_) => 1,
            };
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        return out;
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= s.len() {
        if &s[i..i + sep.len()] == sep {
            out.push(&s[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// 32-bit FNV-1a (Go's `hash/fnv` New32a).
struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Self {
        Fnv32a(0x811c_9dc5)
    }
    fn write(&mut self, b: &[u8]) {
        for &c in b {
            self.0 ^= u32::from(c);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// One destination of a mapping as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct MapDest {
    pub subject: String,
    /// Percent, 0..=100.
    pub weight: u8,
}

#[derive(Debug, Clone, PartialEq)]
struct Weighted {
    transform: Transform,
    /// Cumulative weight: this destination takes draws below it.
    upto: u8,
}

#[derive(Debug, Clone, PartialEq)]
struct Mapping {
    src: String,
    src_tokens: Vec<Vec<u8>>,
    wildcard: bool,
    dests: Vec<Weighted>,
}

/// What a mapping does to a published subject.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    /// No mapping applies: keep the subject.
    Unmapped,
    /// The new subject.
    To(Vec<u8>),
    /// The draw fell in the part of a weighted mapping nothing takes
    /// (the weights sum to less than 100 and the source is listed
    /// itself): the message goes nowhere.
    Dropped,
}

/// An account's mappings, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingTable {
    mappings: Vec<Mapping>,
}

impl MappingTable {
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    /// `src` to `dest` always (nats-server's `AddMapping`).
    pub fn add(&mut self, src: &str, dest: &str) -> Result<(), MappingError> {
        self.add_weighted(
            src,
            &[MapDest {
                subject: dest.to_string(),
                weight: 100,
            }],
        )
    }

    /// nats-server's `AddWeightedMappings` (without cluster-scoped
    /// destinations); a mapping of the same source is replaced.
    pub fn add_weighted(&mut self, src: &str, dests: &[MapDest]) -> Result<(), MappingError> {
        let Some((stoks, _, _)) = subject_info(src)
            .filter(|_| crate::protocol::subject::valid_sub_subject(src.as_bytes()))
        else {
            return Err(MappingError(BAD_SUBJECT.into()));
        };
        let wildcard = stoks.iter().any(|t| *t == "*" || *t == ">");
        let mut seen: Vec<&str> = Vec::new();
        let mut total: u32 = 0;
        let mut out: Vec<(Transform, u8)> = Vec::with_capacity(dests.len() + 1);
        for d in dests {
            if seen.contains(&d.subject.as_str()) {
                return Err(MappingError(format!("duplicate entry for {:?}", d.subject)));
            }
            seen.push(&d.subject);
            if d.weight > 100 {
                return Err(MappingError("individual weights need to be <= 100".into()));
            }
            total += u32::from(d.weight);
            if total > 100 {
                return Err(MappingError("total weight needs to be <= 100".into()));
            }
            out.push((Transform::new(src, &d.subject)?, d.weight));
        }
        // The rest of the draws keep the subject, unless the source is
        // listed (then they are meant to be lost).
        if total != 100 && !seen.contains(&src) {
            let same = if wildcard {
                let mut n = 0;
                stoks
                    .iter()
                    .map(|t| {
                        if *t == "*" {
                            n += 1;
                            format!("${n}")
                        } else {
                            t.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(".")
            } else {
                src.to_string()
            };
            let w = if out.is_empty() {
                100
            } else {
                100 - total as u8
            };
            out.push((Transform::build(src, &same)?, w));
        }
        out.sort_by_key(|(_, w)| *w);
        let mut upto = 0u8;
        let dests = out
            .into_iter()
            .map(|(transform, w)| {
                upto = upto.saturating_add(w);
                Weighted { transform, upto }
            })
            .collect();
        let m = Mapping {
            src: src.to_string(),
            src_tokens: stoks.iter().map(|t| t.as_bytes().to_vec()).collect(),
            wildcard,
            dests,
        };
        match self.mappings.iter_mut().find(|e| e.src == src) {
            Some(e) => *e = m,
            None => self.mappings.push(m),
        }
        Ok(())
    }

    /// An account JWT's `mappings` (a weight of 0 reads as 100, as in
    /// nats-server). Cluster-scoped destinations are refused.
    pub fn from_jwt(
        mappings: &BTreeMap<String, Vec<crate::jwt::WeightedMapping>>,
    ) -> Result<MappingTable, MappingError> {
        let mut t = MappingTable::default();
        for (src, wms) in mappings {
            let mut dests = Vec::with_capacity(wms.len());
            for wm in wms {
                if !wm.cluster.is_empty() {
                    return Err(MappingError(format!(
                        "mapping of {src:?}: cluster-scoped destinations are not supported by \
                         rnats yet"
                    )));
                }
                let weight = match wm.weight {
                    0 => 100,
                    w @ 1..=100 => w as u8,
                    w => {
                        return Err(MappingError(format!(
                            "mapping of {src:?}: invalid weight {w}"
                        )));
                    }
                };
                dests.push(MapDest {
                    subject: wm.subject.clone(),
                    weight,
                });
            }
            t.add_weighted(src, &dests)
                .map_err(|e| MappingError(format!("Error adding mapping for {src:?} : {e}")))?;
        }
        Ok(t)
    }

    /// Map a published subject: the first mapping whose source matches
    /// picks a destination by weight.
    pub fn map(&self, subject: &[u8]) -> Mapped {
        let mut tokens: tokens::Tokens = tokens::Tokens::new();
        let mut m = None;
        for e in &self.mappings {
            if !e.wildcard {
                if e.src.as_bytes() == subject {
                    m = Some(e);
                    break;
                }
                continue;
            }
            if tokens.is_empty() {
                tokens.fill(subject);
            }
            if subset_match(tokens.as_slice(), &e.src_tokens) {
                m = Some(e);
                break;
            }
        }
        let Some(m) = m else {
            return Mapped::Unmapped;
        };
        if tokens.is_empty() {
            tokens.fill(subject);
        }
        let d = if m.dests.len() == 1 && m.dests[0].upto == 100 {
            &m.dests[0]
        } else {
            let w = fastrand::u8(..100);
            match m.dests.iter().find(|d| w < d.upto) {
                Some(d) => d,
                None => return Mapped::Dropped,
            }
        };
        let mut out = Vec::with_capacity(subject.len() + 16);
        d.transform.apply(tokens.as_slice(), &mut out);
        Mapped::To(out)
    }
}

/// Does a published subject (as tokens) match a source pattern? Empty
/// tokens match nothing, as in nats-server's `isSubsetMatch`.
fn subset_match(tokens: &[&[u8]], pattern: &[Vec<u8>]) -> bool {
    for (i, p) in pattern.iter().enumerate() {
        let Some(t) = tokens.get(i) else {
            return false;
        };
        if p.as_slice() == b">" {
            return !t.is_empty();
        }
        if t.is_empty() {
            return false;
        }
        if p.as_slice() != b"*" && p.as_slice() != *t {
            return false;
        }
    }
    tokens.len() == pattern.len()
}

/// A subject's tokens, without allocating for the usual few.
mod tokens {
    const INLINE: usize = 16;

    pub struct Tokens<'a> {
        inline: [&'a [u8]; INLINE],
        len: usize,
        spill: Vec<&'a [u8]>,
    }

    impl<'a> Tokens<'a> {
        pub fn new() -> Self {
            Tokens {
                inline: [&[]; INLINE],
                len: 0,
                spill: Vec::new(),
            }
        }

        pub fn is_empty(&self) -> bool {
            self.len == 0 && self.spill.is_empty()
        }

        pub fn fill(&mut self, subject: &'a [u8]) {
            let n = subject.split(|&b| b == b'.').count();
            if n <= INLINE {
                for (i, t) in subject.split(|&b| b == b'.').enumerate() {
                    self.inline[i] = t;
                }
                self.len = n;
            } else {
                self.spill = subject.split(|&b| b == b'.').collect();
            }
        }

        pub fn as_slice(&self) -> &[&'a [u8]] {
            if self.spill.is_empty() {
                &self.inline[..self.len]
            } else {
                &self.spill
            }
        }
    }
}

#[cfg(test)]
mod tests;
