use super::*;

/// Map `subject` through a single `src → dest` mapping.
fn map1(src: &str, dest: &str, subject: &str) -> String {
    let mut t = MappingTable::default();
    t.add(src, dest)
        .unwrap_or_else(|e| panic!("{src} -> {dest}: {e}"));
    match t.map(subject.as_bytes()) {
        Mapped::To(s) => String::from_utf8(s).unwrap(),
        other => panic!("{subject} through {src} -> {dest}: {other:?}"),
    }
}

fn refused(src: &str, dest: &str) -> String {
    let mut t = MappingTable::default();
    match t.add(src, dest) {
        Ok(()) => panic!("{src} -> {dest} accepted"),
        Err(e) => e.0,
    }
}

#[test]
fn literal_and_wildcard_forms() {
    assert_eq!(map1("foo", "bar", "foo"), "bar");
    assert_eq!(
        map1("foo.*.bar.*.baz", "req.$2.$1", "foo.A.bar.B.baz"),
        "req.B.A"
    );
    assert_eq!(
        map1(
            "orders.*.*",
            "orders.{{wildcard(2)}}.{{wildcard(1)}}",
            "orders.eu.42"
        ),
        "orders.42.eu"
    );
    assert_eq!(
        map1("orders.*.*", "x.{{ Wildcard( 1 ) }}", "orders.a.b"),
        "x.a"
    );
    assert_eq!(map1("baz.>", "my.pre.>", "baz.1.2.3"), "my.pre.1.2.3");
    assert_eq!(map1("a.*.>", "b.$1.>", "a.x.y.z"), "b.x.y.z");
    assert_eq!(map1("*", "foo.bar.$1", "foo"), "foo.bar.foo");
    assert_eq!(map1("legacy.*", "x.$1", "legacy.q"), "x.q");
    // `$` followed by something else is a literal token; `$0` is the
    // first token, as nats-server reads it.
    assert_eq!(map1("a.*", "b.$x.$1", "a.q"), "b.$x.q");
    assert_eq!(map1("a.*", "b.$0", "a.q"), "b.a");
    // A source wildcard the destination drops is allowed (non-strict).
    assert_eq!(map1("a.*", "b", "a.q"), "b");
}

#[test]
fn split_and_slice_functions() {
    assert_eq!(map1("*", "{{splitfromleft(1,3)}}", "12345"), "123.45");
    assert_eq!(map1("*", "{{SplitFromRight(1,3)}}", "12345"), "12.345");
    assert_eq!(map1("*", "{{splitFromLeft(1,9)}}", "12345"), "12345");
    assert_eq!(
        map1("*", "{{SliceFromLeft(1,3)}}", "1234567890"),
        "123.456.789.0"
    );
    assert_eq!(
        map1("*", "{{SliceFromRight(1,3)}}", "1234567890"),
        "1.234.567.890"
    );
    assert_eq!(
        map1("*", "{{sliceFromRight(1,5)}}", "1234567890"),
        "12345.67890"
    );
    assert_eq!(
        map1("*", "{{sliceFromLeft(1,10)}}", "1234567890"),
        "1234567890"
    );
    assert_eq!(
        map1(
            "*.*",
            "{{split(2,-)}}.{{splitfromleft(1,2)}}",
            "foo.-abc-def--ghij-"
        ),
        "abc.def.ghij.fo.o"
    );
    assert_eq!(map1("*", "{{split(1,)}}", "abc"), "a.b.c");
    assert_eq!(map1("*", "{{right(1,1)}}", "1234"), "4");
    assert_eq!(map1("*", "{{right(1,3)}}", "1234"), "234");
    assert_eq!(map1("*", "{{right(1,6)}}", "1234"), "1234");
    assert_eq!(map1("*", "{{left(1,1)}}", "1234"), "1");
    assert_eq!(map1("*", "{{left(1,3)}}", "1234"), "123");
    assert_eq!(map1("*", "{{left(1,6)}}", "1234"), "1234");
}

#[test]
fn partition_is_fnv1a_like_nats_server() {
    let mut h = Fnv32a::new();
    h.write(b"");
    assert_eq!(h.0, 0x811c_9dc5);
    let mut h = Fnv32a::new();
    h.write(b"a");
    assert_eq!(h.0, 0xe40c_292c);
    assert_eq!(map1("*", "bar.{{partition(0)}}", "baz"), "bar.0");
    assert_eq!(map1("*", "bar.{{partition(10, 0)}}", "foo"), "bar.3");
    assert_eq!(map1("*", "bar.{{partition(10,1)}}", "foo"), "bar.3");
    assert_eq!(map1("*.*", "bar.{{partition(10)}}", "foo.bar"), "bar.6");
    assert_eq!(map1("*", "bar.{{partition(10)}}", "foo"), "bar.3");
    assert_eq!(map1("*", "bar.{{partition(10)}}", "baz"), "bar.0");
    assert_eq!(map1("*", "bar.{{partition(10)}}", "qux"), "bar.9");
    // Several tokens: hashed concatenated, without dots.
    let joined = map1("*.*", "p.{{partition(7,1,2)}}", "ab.cd");
    assert_eq!(joined, map1("*", "p.{{partition(7,1)}}", "abcd"));
    // A literal source: the subject is hashed too.
    assert_eq!(map1("foo.bar", "baz.{{partition(10)}}", "foo.bar"), "baz.6");
    assert_eq!(map1("foo.baz", "qux.{{partition(10)}}", "foo.baz"), "qux.4");
}

#[test]
fn random_stays_in_range() {
    assert_eq!(map1("*", "bar.{{random(0)}}", "q"), "bar.0");
    for _ in 0..200 {
        let s = map1("*", "bar.{{random(6)}}", "q");
        let n: u32 = s.strip_prefix("bar.").unwrap().parse().unwrap();
        assert!(n < 6, "{s}");
    }
}

#[test]
fn refusals_use_nats_server_words() {
    assert_eq!(
        refused("a.*", "b.{{foo(1)}}"),
        "invalid mapping destination: unknown function in {{foo(1)}}"
    );
    assert_eq!(
        refused("a.*", "b.$2"),
        "invalid mapping destination: wildcard index out of range in $2: [2]"
    );
    assert_eq!(
        refused("a.*", "{{partition(3,2)}}"),
        "invalid mapping destination: wildcard index out of range in {{partition(3,2)}}: [2]"
    );
    assert_eq!(
        refused("a", "{{wildcard(1)}}"),
        "invalid mapping destination: wildcard index out of range in {{wildcard(1)}}"
    );
    assert_eq!(refused("a.>", "b.*"), "invalid subject");
    assert_eq!(refused("a", "b.>"), "invalid subject");
    assert_eq!(refused("a.*", "b.>"), "invalid subject");
    assert_eq!(refused("a..b", "c"), "invalid subject");
    assert_eq!(
        refused("a", "b c"),
        "invalid mapping destination: invalid transform"
    );
    assert_eq!(
        refused("a", "b..c"),
        "invalid mapping destination: invalid transform"
    );
    assert_eq!(
        refused("a.*", "{{wildcard()}}"),
        "invalid mapping destination: not enough arguments passed to the function in \
         {{wildcard()}}"
    );
    assert_eq!(
        refused("a.*", "{{wildcard(1,2)}}"),
        "invalid mapping destination: too many arguments passed to the function in \
         {{wildcard(1,2)}}"
    );
    assert_eq!(
        refused("a.*", "{{wildcard(x)}}"),
        "invalid mapping destination: function argument is invalid or in the wrong format in \
         {{wildcard(x)}}"
    );
    assert!(refused("a.*", "{{splitFromLeft(1)}}").contains("not enough arguments"));
    assert!(refused("a.*", "{{left(1,2,3)}}").contains("too many arguments"));
    assert!(refused("a.*", "{{split(1, a b)}}").contains("invalid or in the wrong format"));
    assert!(refused("a.*", "{{random(1,2)}}").contains("not enough arguments"));
    assert!(refused("a.*", "{{partition(x)}}").contains("invalid or in the wrong format"));
    // The name is case-sensitive except where nats-server's pattern is not.
    assert!(refused("a.*", "{{WILDCARD(1)}}").contains("unknown function"));
    assert!(refused("a", "").contains("invalid transform"));
}

#[test]
fn weights_follow_add_weighted_mappings() {
    let d = |s: &str, w: u8| MapDest {
        subject: s.into(),
        weight: w,
    };
    let mut t = MappingTable::default();
    assert_eq!(
        t.add_weighted("a", &[d("b", 60), d("c", 50)])
            .unwrap_err()
            .0,
        "total weight needs to be <= 100"
    );
    assert_eq!(
        t.add_weighted("a", &[d("b", 60), d("b", 10)])
            .unwrap_err()
            .0,
        "duplicate entry for \"b\""
    );
    assert_eq!(
        t.add_weighted("a", &[d("b", 101)]).unwrap_err().0,
        "individual weights need to be <= 100"
    );
    // 20/80: both destinations, in proportion.
    t.add_weighted("w", &[d("w.a", 20), d("w.b", 80)]).unwrap();
    let (mut a, mut b) = (0, 0);
    for _ in 0..5000 {
        match t.map(b"w") {
            Mapped::To(s) if s == b"w.a" => a += 1,
            Mapped::To(s) if s == b"w.b" => b += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!((800..1200).contains(&a) && a + b == 5000, "{a}/{b}");
    // 30 on one destination: the other 70 keep the subject.
    let mut t = MappingTable::default();
    t.add_weighted("k.*", &[d("k.$1.x", 30)]).unwrap();
    let kept = (0..5000)
        .filter(|_| t.map(b"k.q") == Mapped::To(b"k.q".to_vec()))
        .count();
    assert!((3200..3800).contains(&kept), "{kept}");
    // The source listed itself: the missing weight is lost.
    let mut t = MappingTable::default();
    t.add_weighted("l", &[d("l", 50)]).unwrap();
    let lost = (0..4000).filter(|_| t.map(b"l") == Mapped::Dropped).count();
    assert!((1700..2300).contains(&lost), "{lost}");
}

#[test]
fn first_matching_mapping_wins_and_others_pass() {
    let mut t = MappingTable::default();
    t.add("a.b", "lit").unwrap();
    t.add("a.*", "wild.$1").unwrap();
    t.add("a.>", "rest.>").unwrap();
    assert_eq!(t.map(b"a.b"), Mapped::To(b"lit".to_vec()));
    assert_eq!(t.map(b"a.c"), Mapped::To(b"wild.c".to_vec()));
    assert_eq!(t.map(b"a.c.d"), Mapped::To(b"rest.c.d".to_vec()));
    assert_eq!(t.map(b"b"), Mapped::Unmapped);
    assert_eq!(t.map(b"a"), Mapped::Unmapped);
    assert_eq!(t.map(b"a..b"), Mapped::Unmapped);
    // Adding a source again replaces it.
    t.add("a.b", "lit2").unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t.map(b"a.b"), Mapped::To(b"lit2".to_vec()));
    // Long subjects spill past the inline tokens.
    let long = (0..40).map(|i| i.to_string()).collect::<Vec<_>>().join(".");
    let mut t = MappingTable::default();
    t.add(">", "p.>").unwrap();
    assert_eq!(
        t.map(long.as_bytes()),
        Mapped::To(format!("p.{long}").into_bytes())
    );
}

#[test]
fn jwt_mappings() {
    use crate::jwt::WeightedMapping;
    let wm = |s: &str, w: i64, c: &str| WeightedMapping {
        subject: s.into(),
        weight: w,
        cluster: c.into(),
    };
    let mut m = BTreeMap::new();
    m.insert("a.*".to_string(), vec![wm("b.$1", 0, "")]);
    let t = MappingTable::from_jwt(&m).unwrap();
    assert_eq!(t.map(b"a.x"), Mapped::To(b"b.x".to_vec()));
    m.insert("c".to_string(), vec![wm("d", 50, "east")]);
    assert!(
        MappingTable::from_jwt(&m)
            .unwrap_err()
            .0
            .contains("not supported by rnats")
    );
    m.insert("c".to_string(), vec![wm("d", 150, "")]);
    assert!(MappingTable::from_jwt(&m).is_err());
    m.insert("c".to_string(), vec![wm("d.{{nope()}}", 10, "")]);
    assert!(
        MappingTable::from_jwt(&m)
            .unwrap_err()
            .0
            .contains("unknown function")
    );
}
