use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

// ----- helpers ----------------------------------------------------------

fn parse(src: &str) -> Map {
    parse_str(src, "t.conf").unwrap_or_else(|e| panic!("unexpected error: {e}\n--- input:\n{src}"))
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
        let dir =
            std::env::temp_dir().join(format!("rnats-confparse-{}-{tag}-{n}", std::process::id()));
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
