//! Unit tests: round trips, refusals, and tokens from nats-server's own
//! test fixtures (server/configs/js-op.conf, server/configs/one.creds,
//! test/configs/nkeys/*, test/configs/resolver_preload.conf), which nsc
//! and nats-io/jwt produced.

use std::net::IpAddr;

use nkeys::KeyPair;

use super::*;

/// Operator "js-test" (v2, self-signed).
const FIXTURE_OPERATOR: &str = r#"eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiIyUkc0WjJKVzYzSUtBS1czSFg0SkpMQVhRN1ZSM0NKVlRQU1FHUVRCU0ZFQjVKTkNISUpRIiwiaWF0IjoxNjE2MTg2MjAxLCJpc3MiOiJPRDRNNklBQUtRU000RFFTTFdaSVZCQUNZVFlTMlM2WFFTN1U2N1hYWVhKNDRJTE5FMzVZUEdKSyIsIm5hbWUiOiJqcy10ZXN0Iiwic3ViIjoiT0Q0TTZJQUFLUVNNNERRU0xXWklWQkFDWVRZUzJTNlhRUzdVNjdYWFlYSjQ0SUxORTM1WVBHSksiLCJuYXRzIjp7InR5cGUiOiJvcGVyYXRvciIsInZlcnNpb24iOjJ9fQ.VkjSK2BlMmtYfVJSkC9aZEFvjg4BXzbd0oXkQa3Rlkhh8EuSRU7-Tp1zUm1SveBb6dZXsE51vhIQFQY66fO0Bw"#;
/// Its system account "sys" (v2).
const FIXTURE_SYS_ACCOUNT: &str = r#"eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiIyQ1dSRk80MlZVMk1TVlI0QkhIUFBEVjdJNERaTFZHWURZUlNXQ0pIVUM0Q1dRVkhXWjNBIiwiaWF0IjoxNjE2MTg2MzYxLCJpc3MiOiJPRDRNNklBQUtRU000RFFTTFdaSVZCQUNZVFlTMlM2WFFTN1U2N1hYWVhKNDRJTE5FMzVZUEdKSyIsIm5hbWUiOiJzeXMiLCJzdWIiOiJBRDRNMzRPUFJVUFdEWVRJUUxXS01FWlpNNU1LN1BRUURTS05FTENaRFJaWkVWRldPV1BMRlRVRSIsIm5hdHMiOnsibGltaXRzIjp7InN1YnMiOi0xLCJkYXRhIjotMSwicGF5bG9hZCI6LTEsImltcG9ydHMiOi0xLCJleHBvcnRzIjotMSwid2lsZGNhcmRzIjp0cnVlLCJjb25uIjotMSwibGVhZiI6LTF9LCJkZWZhdWx0X3Blcm1pc3Npb25zIjp7InB1YiI6e30sInN1YiI6e319LCJ0eXBlIjoiYWNjb3VudCIsInZlcnNpb24iOjJ9fQ.gExWTSaWWSYh9N_KsrOGPAJk0KJUn1VjVo00yfE6NoMXrmjkATDMoDLpKC19mrBNaMa6RZjhXyTdzJulxzxGBw"#;
/// Account "one" with JetStream limits (v2).
const FIXTURE_ACCOUNT_ONE: &str = r#"eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJRSVFDRFpRRkRIUU9WQlc3Q0tDNFQzVzJJV0dZV1ZISjZTVTRSTlYzUFo3NUhTUFVQS1ZBIiwiaWF0IjoxNjE2MTg3MjUwLCJpc3MiOiJPRDRNNklBQUtRU000RFFTTFdaSVZCQUNZVFlTMlM2WFFTN1U2N1hYWVhKNDRJTE5FMzVZUEdKSyIsIm5hbWUiOiJvbmUiLCJzdWIiOiJBQlZSWktKNlo3TklNUElZSlJDSEVZRlJVTzdFTk42TldPS1FERkxGREZWUFNNMzZVUFgyVUNQUCIsIm5hdHMiOnsibGltaXRzIjp7InN1YnMiOi0xLCJkYXRhIjotMSwicGF5bG9hZCI6LTEsImltcG9ydHMiOi0xLCJleHBvcnRzIjotMSwid2lsZGNhcmRzIjp0cnVlLCJjb25uIjotMSwibGVhZiI6LTEsIm1lbV9zdG9yYWdlIjoxMDczNzQxODI0LCJkaXNrX3N0b3JhZ2UiOjEwNzM3NDE4MjQwLCJzdHJlYW1zIjoxMDB9LCJkZWZhdWx0X3Blcm1pc3Npb25zIjp7InB1YiI6e30sInN1YiI6e319LCJ0eXBlIjoiYWNjb3VudCIsInZlcnNpb24iOjJ9fQ.yYdE3AjpWMBt_rZVLSNmuxR28FP5-6fO_x6FMQl7xe7hmeEc--bbCBcw4ujEjtVkE62I21asKtu06vmW1fEsAg"#;
/// A user of account "one", as nsc wrote its creds file.
const FIXTURE_CREDS: &str = r#"-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJHRUNQVEpISE1TM01DTUtMVFBHWUdBTzQ1R1E2TjZRUFlXUTRHUExBRUIzM1ZDUkpOUlZRIiwiaWF0IjoxNjE2MjQ3MjMyLCJpc3MiOiJBQlZSWktKNlo3TklNUElZSlJDSEVZRlJVTzdFTk42TldPS1FERkxGREZWUFNNMzZVUFgyVUNQUCIsIm5hbWUiOiJvbmUiLCJzdWIiOiJVRENJQkdHR0hDSkJRUE9PNFNDSkpCSFpEUjM3TlFHR0NJV01ORzJEREFLSjZXTUtCTUFLWElNTyIsIm5hdHMiOnsicHViIjp7fSwic3ViIjp7fSwic3VicyI6LTEsImRhdGEiOi0xLCJwYXlsb2FkIjotMSwidHlwZSI6InVzZXIiLCJ2ZXJzaW9uIjoyfX0.VLhSDtGZEF_jdvgmhgkdISXAt5wFMMZxxwm5w8UrsnlM1hkUvtxBlTe4IP0xJIf4xf8JOR2Bmf73xUGJKUZECQ
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
SUAPCDMU5TSHHLWUUZSOUABJXP2GXRCZVEOVWPSVM5XRSXYGQMRRFDYNMY
------END USER NKEY SEED------

*************************************************************
"#;
/// A v1 operator JWT (alg "ed25519") with three signing keys.
const FIXTURE_V1_OPERATOR: &str = r#"eyJ0eXAiOiJqd3QiLCJhbGciOiJlZDI1NTE5In0.eyJhdWQiOiJURVNUUyIsImV4cCI6MTg1OTEyMTI3NSwianRpIjoiWE5MWjZYWVBIVE1ESlFSTlFPSFVPSlFHV0NVN01JNVc1SlhDWk5YQllVS0VRVzY3STI1USIsImlhdCI6MTU0Mzc2MTI3NSwiaXNzIjoiT0NBVDMzTVRWVTJWVU9JTUdOR1VOWEo2NkFIMlJMU0RBRjNNVUJDWUFZNVFNSUw2NU5RTTZYUUciLCJuYW1lIjoiU3luYWRpYSBDb21tdW5pY2F0aW9ucyBJbmMuIiwibmJmIjoxNTQzNzYxMjc1LCJzdWIiOiJPQ0FUMzNNVFZVMlZVT0lNR05HVU5YSjY2QUgyUkxTREFGM01VQkNZQVk1UU1JTDY1TlFNNlhRRyIsInR5cGUiOiJvcGVyYXRvciIsIm5hdHMiOnsic2lnbmluZ19rZXlzIjpbIk9EU0tSN01ZRlFaNU1NQUo2RlBNRUVUQ1RFM1JJSE9GTFRZUEpSTUFWVk40T0xWMllZQU1IQ0FDIiwiT0RTS0FDU1JCV1A1MzdEWkRSVko2NTdKT0lHT1BPUTZLRzdUNEhONk9LNEY2SUVDR1hEQUhOUDIiLCJPRFNLSTM2TFpCNDRPWTVJVkNSNlA1MkZaSlpZTVlXWlZXTlVEVExFWjVUSzJQTjNPRU1SVEFCUiJdfX0.hyfz6E39BMUh0GLzovFfk3wT4OfualftjdJ_eYkLfPvu5tZubYQ_Pn9oFYGCV_6yKy3KMGhWGUCyCdHaPhalBw"#;
/// A v1 account JWT signed by that operator.
const FIXTURE_V1_ACCOUNT: &str = r#"eyJ0eXAiOiJqd3QiLCJhbGciOiJlZDI1NTE5In0.eyJqdGkiOiJDSzU1UERKSUlTWU5QWkhLSUpMVURVVTdJT1dINlM3UkE0RUc2TTVGVUQzUEdGQ1RWWlJRIiwiaWF0IjoxNTQzOTU4NjU4LCJpc3MiOiJPQ0FUMzNNVFZVMlZVT0lNR05HVU5YSjY2QUgyUkxTREFGM01VQkNZQVk1UU1JTDY1TlFNNlhRRyIsInN1YiI6IkFEMlZCNkMyNURRUEVVVVE3S0pCVUZYMko0Wk5WQlBPSFNDQklTQzdWRlpYVldYWkE3VkFTUVpHIiwidHlwZSI6ImFjY291bnQiLCJuYXRzIjp7ImxpbWl0cyI6e319fQ.7m1fysYUsBw15Lj88YmYoHxOI4HlOzu6qgP8Zg-1q9mQXUURijuDGVZrtb7gFYRlo-nG9xZyd2ZTRpMA-b0xCQ"#;

fn b64dec(s: &str) -> Vec<u8> {
    data_encoding::BASE64URL_NOPAD.decode(s.as_bytes()).unwrap()
}

fn payload_of(token: &str) -> String {
    String::from_utf8(b64dec(token.split('.').nth(1).unwrap())).unwrap()
}

/// A token with `payload` signed by `kp` whatever the payload says.
fn forge(payload: &str, kp: &KeyPair) -> String {
    let signed = format!("{}.{}", b64(HEADER.as_bytes()), b64(payload.as_bytes()));
    let sig = kp.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&sig))
}

#[test]
fn nkeys_vectors_from_fixtures() {
    // test/configs/nkeys/test.seed signs op.jwt.
    let op =
        KeyPair::from_seed("SOAFYNORQLQFJYBYNUGC5D7SH2MXMUX5BFEWWGHN3EK4VGG5TPT5DZP7QU").unwrap();
    assert_eq!(
        op.public_key(),
        "OCAT33MTVU2VUOIMGNGUNXJ66AH2RLSDAF3MUBCYAY5QMIL65NQM6XQG"
    );
    // test/configs/nkeys/sigkeys.txt: seeds and their public keys.
    for (seed, public) in [
        (
            "SOAO7RDW6CLJORHHBS4DPYYIIIAASEIUJ5WWS5FMWLNTFHUCKQ5CAC45AA",
            "ODSKR7MYFQZ5MMAJ6FPMEETCTE3RIHOFLTYPJRMAVVN4OLV2YYAMHCAC",
        ),
        (
            "SOAEL3NFOTU6YK3DBTEKQYZ2C5IWSVZWWZCQDASBUOHJKBFLVANK27JMMQ",
            "ODSKACSRBWP537DZDRVJ657JOIGOPOQ6KG7T4HN6OK4F6IECGXDAHNP2",
        ),
        (
            "SOACSMP662P2BZDKVF6WCB6FIQYORADDWWWEAI55QY24CQRTY4METUING4",
            "ODSKI36LZB44OY5IVCR6P52FZJZYMYWZVWNUDTLEZ5TK2PN3OEMRTABR",
        ),
    ] {
        assert_eq!(KeyPair::from_seed(seed).unwrap().public_key(), public);
        assert_eq!(KeyKind::of_seed(seed), Some(KeyKind::Operator));
        assert_eq!(KeyKind::of_public(public), Some(KeyKind::Operator));
    }
    assert_eq!(
        KeyKind::of_public("ODSKR7MYFQZ5MMAJ6FPMEETCTE3RIHOFLTYPJRMAVVN4OLV2YYAMHCAD"),
        None
    );
}

#[test]
fn decodes_nsc_operator_and_accounts() {
    let op = decode::<OperatorClaims>(FIXTURE_OPERATOR).unwrap();
    assert_eq!(op.name, "js-test");
    assert_eq!(
        op.sub,
        "OD4M6IAAKQSM4DQSLWZIVBACYTYS2S6XQS7U67XXYXJ44ILNE35YPGJK"
    );
    assert!(op.is_self_signed());
    assert_eq!(op.version(), 2);
    assert_eq!(op.iat, 1616186201);
    assert!(op.check_times(now_unix()).is_ok());

    let sys = decode::<AccountClaims>(FIXTURE_SYS_ACCOUNT).unwrap();
    assert_eq!(sys.name, "sys");
    assert_eq!(
        sys.sub,
        "AD4M34OPRUPWDYTIQLWKMEZZM5MK7PQQDSKNELCZDRZZEVFWOWPLFTUE"
    );
    assert_eq!(sys.iss, op.sub);
    assert_eq!(sys.nats.limits.conn, NO_LIMIT);
    assert!(sys.nats.limits.wildcards);
    assert!(!sys.nats.limits.jetstream_enabled());
    assert!(op.nats.did_sign(&op.sub, &sys.iss));

    let one = decode::<AccountClaims>(FIXTURE_ACCOUNT_ONE).unwrap();
    assert_eq!(one.name, "one");
    assert_eq!(one.nats.limits.mem_storage, 1073741824);
    assert_eq!(one.nats.limits.disk_storage, 10737418240);
    assert_eq!(one.nats.limits.streams, 100);
    assert!(one.nats.limits.jetstream_enabled());
    assert!(one.extra.is_empty() && one.nats.extra.is_empty() && one.nats.limits.extra.is_empty());
}

#[test]
fn decodes_nsc_creds_and_writes_them_back_byte_for_byte() {
    let (jwt, seed) = parse_creds(FIXTURE_CREDS).unwrap();
    let user = decode::<UserClaims>(&jwt).unwrap();
    assert_eq!(user.name, "one");
    assert_eq!(
        user.iss,
        "ABVRZKJ6Z7NIMPIYJRCHEYFRUO7ENN6NWOKQDFLFDFVPSM36UPX2UCPP"
    );
    let kp = KeyPair::from_seed(&seed).unwrap();
    assert_eq!(kp.public_key(), user.sub);
    assert_eq!(
        user.sub,
        "UDCIBGGGHCJBQPOO4SCJJBHZDR37NQGGCIWMNG2DDAKJ6WMKBMAKXIMO"
    );
    assert_eq!(user.nats.limits.subs, NO_LIMIT);
    assert!(user.nats.limits.publish.is_empty());
    // The issuer is account "one" of the fixture operator.
    let one = decode::<AccountClaims>(FIXTURE_ACCOUNT_ONE).unwrap();
    assert_eq!(user.iss, one.sub);
    assert!(!is_revoked(&one.nats, &user.sub, user.iat));
    assert_eq!(format_creds(&jwt, &seed).unwrap(), FIXTURE_CREDS);
}

#[test]
fn writes_the_same_json_and_jti_as_nats_io_jwt() {
    // Re-serialising decoded claims gives nsc's bytes, and jti is the hash
    // nats-io/jwt computed.
    let (jwt, _) = parse_creds(FIXTURE_CREDS).unwrap();
    let user = decode::<UserClaims>(&jwt).unwrap();
    assert_eq!(go_json(&user).unwrap(), payload_of(&jwt));
    let op = decode::<OperatorClaims>(FIXTURE_OPERATOR).unwrap();
    assert_eq!(go_json(&op).unwrap(), payload_of(FIXTURE_OPERATOR));
    for token in [
        FIXTURE_OPERATOR,
        FIXTURE_SYS_ACCOUNT,
        FIXTURE_ACCOUNT_ONE,
        &jwt,
    ] {
        let (_, v) = decode_any(token).unwrap();
        let c: Claims<serde_json::Value> = serde_json::from_value(v).unwrap();
        assert_eq!(compute_jti(&c).unwrap(), c.jti, "{token}");
    }
}

#[test]
fn decodes_v1_tokens() {
    let op = decode::<OperatorClaims>(FIXTURE_V1_OPERATOR).unwrap();
    assert_eq!(op.version(), 1);
    assert_eq!(
        op.sub,
        "OCAT33MTVU2VUOIMGNGUNXJ66AH2RLSDAF3MUBCYAY5QMIL65NQM6XQG"
    );
    assert_eq!(op.aud, "TESTS");
    assert_eq!(op.nats.signing_keys.len(), 3);
    assert!(op.nats.did_sign(
        &op.sub,
        "ODSKACSRBWP537DZDRVJ657JOIGOPOQ6KG7T4HN6OK4F6IECGXDAHNP2"
    ));
    let acc = decode::<AccountClaims>(FIXTURE_V1_ACCOUNT).unwrap();
    assert_eq!(acc.version(), 1);
    assert_eq!(acc.iss, op.sub);
    assert_eq!(
        acc.sub,
        "AD2VB6C25DQPEUUQ7KJBUFX2J4ZNVBPOHSCBISC7VFZXVWXZA7VASQZG"
    );
    // A v1 token's signature covers the claims only: tampering with the
    // header is not detected by it, but a tampered claim is.
    let mut parts: Vec<String> = FIXTURE_V1_ACCOUNT.split('.').map(String::from).collect();
    let mut claims = payload_of(FIXTURE_V1_ACCOUNT);
    claims = claims.replace("\"limits\":{}", "\"limits\":{\"conn\":5}");
    parts[1] = b64(claims.as_bytes());
    assert_eq!(
        decode::<AccountClaims>(&parts.join(".")),
        Err(JwtError::BadSignature)
    );
}

fn full_user(account: &KeyPair) -> (Claims<UserClaims>, String) {
    let user = KeyPair::new_user();
    let mut c = Claims::<UserClaims>::new(&user.public_key(), "alice <&>");
    let l = &mut c.nats.limits;
    l.publish.allow = vec!["a.>".into(), "_INBOX.>".into()];
    l.publish.deny = vec!["a.secret".into()];
    l.subscribe.allow = vec!["b.*".into(), "q.> workers".into()];
    l.resp = Some(ResponsePermission {
        max: 1,
        ttl: 5_000_000_000,
    });
    l.src = vec!["127.0.0.0/8".into(), "::1/128".into()];
    l.times = vec![TimeRange {
        start: "08:00:00".into(),
        end: "17:00:00".into(),
    }];
    l.times_location = "UTC".into();
    l.subs = 10;
    l.data = 1 << 20;
    l.payload = 1024;
    l.bearer_token = true;
    l.allowed_connection_types = vec![conn_type::STANDARD.into(), conn_type::WEBSOCKET.into()];
    c.nats.generic.tags = vec!["dev".into()];
    c.exp = now_unix() + 3600;
    let token = encode(&mut c, account).unwrap();
    (c, token)
}

#[test]
fn round_trips_every_claim_type() {
    let op = KeyPair::new_operator();
    let op_sk = KeyPair::new_operator();
    let mut oc = Claims::<OperatorClaims>::new(&op.public_key(), "OP");
    oc.nats.signing_keys = vec![op_sk.public_key()];
    oc.nats.system_account = KeyPair::new_account().public_key();
    oc.nats.operator_service_urls = vec!["nats://127.0.0.1:4222".into()];
    let t = encode(&mut oc, &op).unwrap();
    assert!(
        t.starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ."),
        "{t}"
    );
    let back = decode::<OperatorClaims>(&t).unwrap();
    assert_eq!(back, oc);
    assert_eq!(back.nats.generic.claim_type, "operator");
    assert_eq!(back.version(), 2);
    assert!(back.nats.did_sign(&back.sub, &op_sk.public_key()));

    // An account signed by the operator's signing key.
    let acc = KeyPair::new_account();
    let acc_sk = KeyPair::new_account();
    let mut ac = Claims::<AccountClaims>::new(&acc.public_key(), "A");
    ac.nats.limits.conn = 5;
    ac.nats.exports = vec![
        Export {
            subject: "z.svc".into(),
            kind: "service".into(),
            ..Default::default()
        },
        Export {
            subject: "a.stream.>".into(),
            kind: "stream".into(),
            ..Default::default()
        },
    ];
    ac.nats.imports = vec![Import {
        subject: "x.>".into(),
        account: KeyPair::new_account().public_key(),
        local_subject: "from.x.>".into(),
        kind: "stream".into(),
        ..Default::default()
    }];
    ac.nats.signing_keys = vec![
        SigningKey::Scoped(Box::new(UserScope {
            kind: "user_scope".into(),
            key: acc_sk.public_key(),
            role: "dev".into(),
            template: UserPermissionLimits::unlimited(),
            description: String::new(),
        })),
        SigningKey::Plain(KeyPair::new_account().public_key()),
    ];
    let t = encode(&mut ac, &op_sk).unwrap();
    let back = decode::<AccountClaims>(&t).unwrap();
    assert_eq!(back, ac);
    // Exports are sorted by subject before signing, as nats-io/jwt does.
    assert_eq!(back.nats.exports[0].subject, "a.stream.>");
    assert_eq!(back.iss, op_sk.public_key());
    let scoped = is_signing_key(&back.nats, &acc_sk.public_key()).unwrap();
    assert_eq!(scoped.scope().unwrap().role, "dev");
    assert!(is_signing_key(&back.nats, &acc.public_key()).is_none());
    let json = payload_of(&t);
    assert!(json.contains(&format!("{{\"kind\":\"user_scope\",\"key\":\"{}\",\"role\":\"dev\",\"template\":{{\"pub\":{{}},\"sub\":{{}},\"subs\":-1,\"data\":-1,\"payload\":-1}},\"description\":\"\"}}", acc_sk.public_key())), "{json}");
    assert!(json.contains("\"authorization\":{}"), "{json}");

    // A user signed by the account.
    let (uc, t) = full_user(&acc);
    let back = decode::<UserClaims>(&t).unwrap();
    assert_eq!(back, uc);
    assert!(
        payload_of(&t).contains("alice \\u003c\\u0026\\u003e"),
        "{}",
        payload_of(&t)
    );
    assert_eq!(back.name, "alice <&>");
    assert!(payload_of(&t).contains("\"resp\":{\"max\":1,\"ttl\":5000000000}"));

    // An activation.
    let mut act = Claims::<ActivationClaims>::new(&KeyPair::new_account().public_key(), "");
    act.nats.subject = "a.stream.>".into();
    act.nats.kind = "stream".into();
    let t = encode(&mut act, &acc).unwrap();
    assert_eq!(decode::<ActivationClaims>(&t).unwrap(), act);
}

#[test]
fn jti_changes_with_the_claims_and_is_stable() {
    let acc = KeyPair::new_account();
    let user = KeyPair::new_user();
    let mut a = Claims::<UserClaims>::new(&user.public_key(), "u");
    let mut b = a.clone();
    let ta = encode_at(&mut a, &acc, 1_700_000_000).unwrap();
    let tb = encode_at(&mut b, &acc, 1_700_000_000).unwrap();
    assert_eq!(ta, tb);
    assert_eq!(a.jti.len(), 52);
    b.name = "v".into();
    encode_at(&mut b, &acc, 1_700_000_000).unwrap();
    assert_ne!(a.jti, b.jti);
}

#[test]
fn refuses_tampering_wrong_signers_and_kinds() {
    let acc = KeyPair::new_account();
    let (_, t) = full_user(&acc);
    // Tampered claims.
    let mut parts: Vec<String> = t.split('.').map(String::from).collect();
    parts[1] = b64(payload_of(&t)
        .replace("\"subs\":10", "\"subs\":11")
        .as_bytes());
    assert_eq!(
        decode::<UserClaims>(&parts.join(".")),
        Err(JwtError::BadSignature)
    );
    // Tampered signature.
    let (signed, sig) = t.rsplit_once('.').unwrap();
    let mut sig = b64dec(sig);
    sig[0] ^= 1;
    let forged = format!("{signed}.{}", b64(&sig));
    assert_eq!(decode::<UserClaims>(&forged), Err(JwtError::BadSignature));
    // Signed by another account than iss says.
    let other = KeyPair::new_account();
    assert_eq!(
        decode::<UserClaims>(&forge(&payload_of(&t), &other)),
        Err(JwtError::BadSignature)
    );
    // A user JWT issued by an operator key: refused on encode and decode.
    let op = KeyPair::new_operator();
    let mut c = Claims::<UserClaims>::new(&KeyPair::new_user().public_key(), "x");
    assert!(matches!(
        encode(&mut c, &op),
        Err(JwtError::WrongIssuerKind { .. })
    ));
    let payload = payload_of(&t).replace(&acc.public_key(), &op.public_key());
    assert!(matches!(
        decode::<UserClaims>(&forge(&payload, &op)),
        Err(JwtError::WrongIssuerKind { .. })
    ));
    // An account JWT signed by a user key.
    let u = KeyPair::new_user();
    let mut a = Claims::<AccountClaims>::new(&acc.public_key(), "A");
    assert!(matches!(
        encode(&mut a, &u),
        Err(JwtError::WrongIssuerKind { .. })
    ));
    // Subject of the wrong kind.
    let mut a = Claims::<AccountClaims>::new(&u.public_key(), "A");
    assert!(matches!(
        encode(&mut a, &op),
        Err(JwtError::BadSubject { .. })
    ));
    // The right signature on the wrong claim type.
    assert_eq!(
        decode::<AccountClaims>(&t),
        Err(JwtError::WrongClaimType {
            expected: "account",
            found: "user".into()
        })
    );
    assert!(matches!(
        decode::<OperatorClaims>(FIXTURE_SYS_ACCOUNT),
        Err(JwtError::WrongClaimType { .. })
    ));
}

#[test]
fn refuses_malformed_tokens() {
    let acc = KeyPair::new_account();
    let (_, t) = full_user(&acc);
    let parts: Vec<&str> = t.split('.').collect();
    assert!(matches!(
        decode::<UserClaims>(&parts[..2].join(".")),
        Err(JwtError::Malformed(_))
    ));
    assert!(matches!(
        decode::<UserClaims>(&format!("{t}.x")),
        Err(JwtError::Malformed(_))
    ));
    // Padded or standard base64 is not what nats-io/jwt reads.
    let padded = format!("{}.{}=.{}", parts[0], parts[1], parts[2]);
    let std_b64 = t.replace('-', "+").replace('_', "/");
    for bad in [padded, std_b64] {
        if bad != t {
            assert!(decode::<UserClaims>(&bad).is_err(), "{bad}");
        }
    }
    // Header: another algorithm or type.
    for h in [
        r#"{"typ":"JWT","alg":"HS256"}"#,
        r#"{"typ":"JWS","alg":"ed25519-nkey"}"#,
        "not json",
    ] {
        let bad = format!("{}.{}.{}", b64(h.as_bytes()), parts[1], parts[2]);
        assert!(
            matches!(decode::<UserClaims>(&bad), Err(JwtError::BadHeader(_))),
            "{h}"
        );
    }
    // Lower-case typ and upper-case alg are accepted as nats-io/jwt does.
    let payload = payload_of(&t);
    let signed = format!(
        "{}.{}",
        b64(br#"{"typ":"jwt","alg":"ED25519-NKEY"}"#),
        b64(payload.as_bytes())
    );
    let ok = format!("{signed}.{}", b64(&acc.sign(signed.as_bytes()).unwrap()));
    assert!(decode::<UserClaims>(&ok).is_ok());
    // Newer versions.
    let newer = payload.replace("\"version\":2", "\"version\":3");
    assert_eq!(
        decode::<UserClaims>(&forge(&newer, &acc)),
        Err(JwtError::UnsupportedVersion(3))
    );
    // Too large.
    let huge = "a".repeat(MAX_TOKEN_SIZE + 1);
    assert!(matches!(
        decode::<UserClaims>(&huge),
        Err(JwtError::TooLarge(_))
    ));
    // Unknown export type.
    let op = KeyPair::new_operator();
    let mut a = Claims::<AccountClaims>::new(&acc.public_key(), "A");
    let t = encode(&mut a, &op).unwrap();
    let p = payload_of(&t).replace(
        "\"limits\"",
        "\"exports\":[{\"subject\":\"x\",\"type\":\"bogus\"}],\"limits\"",
    );
    assert!(matches!(
        decode::<AccountClaims>(&forge(&p, &op)),
        Err(JwtError::Invalid(_))
    ));
}

#[test]
fn keeps_unknown_fields() {
    let acc = KeyPair::new_account();
    let (_, t) = full_user(&acc);
    let p = payload_of(&t).replace(
        "\"nats\":{",
        "\"future\":1,\"nats\":{\"zz_new\":{\"x\":true},",
    );
    let back = decode::<UserClaims>(&forge(&p, &acc)).unwrap();
    assert_eq!(back.extra.get("future"), Some(&serde_json::json!(1)));
    assert_eq!(
        back.nats.extra.get("zz_new"),
        Some(&serde_json::json!({"x": true}))
    );
    // Auth callout is visible so a server can refuse it.
    let op = KeyPair::new_operator();
    let mut a = Claims::<AccountClaims>::new(&acc.public_key(), "A");
    a.nats.authorization.auth_users = vec![KeyPair::new_user().public_key()];
    let t = encode(&mut a, &op).unwrap();
    assert!(
        decode::<AccountClaims>(&t)
            .unwrap()
            .nats
            .authorization
            .is_enabled()
    );
}

#[test]
fn times_expiry_and_not_before() {
    let mut c = Claims::<UserClaims>::new(&KeyPair::new_user().public_key(), "u");
    assert!(c.check_times(1000).is_ok());
    c.exp = 1000;
    assert!(c.check_times(1000).is_ok());
    assert_eq!(
        c.check_times(1001),
        Err(JwtError::Expired {
            exp: 1000,
            now: 1001
        })
    );
    c.exp = 0;
    c.nbf = 500;
    assert_eq!(
        c.check_times(499),
        Err(JwtError::NotYetValid { nbf: 500, now: 499 })
    );
    assert!(c.check_times(500).is_ok());
}

#[test]
fn revocations_follow_nats_io_semantics() {
    let mut a = AccountClaims::default();
    let u = KeyPair::new_user().public_key();
    assert!(!is_revoked(&a, &u, 100));
    assert!(is_revoked(&a, &u, 0));
    revoke(&mut a, &u, 100);
    assert!(is_revoked(&a, &u, 100));
    assert!(is_revoked(&a, &u, 99));
    assert!(!is_revoked(&a, &u, 101));
    // An earlier revocation does not undo a later one.
    revoke(&mut a, &u, 50);
    assert_eq!(a.revocations[&u], 100);
    revoke(&mut a, REVOKE_ALL, 200);
    assert!(is_revoked(&a, &KeyPair::new_user().public_key(), 200));
    assert!(!is_revoked(&a, &KeyPair::new_user().public_key(), 201));
}

#[test]
fn source_networks() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let l = vec!["192.168.1.0/24".to_string(), "2001:db8::/32".to_string()];
    assert!(cidr_allows(&[], ip("10.0.0.1")));
    assert!(cidr_allows(&l, ip("192.168.1.77")));
    assert!(cidr_allows(&l, ip("::ffff:192.168.1.77")));
    assert!(!cidr_allows(&l, ip("192.168.2.1")));
    assert!(cidr_allows(&l, ip("2001:db8::1")));
    assert!(!cidr_allows(&l, ip("2001:db9::1")));
    assert!(cidr_allows(&["0.0.0.0/0".into()], ip("8.8.8.8")));
    // Not CIDRs: nobody (as nats-server).
    assert!(!cidr_allows(&["192.168.1.1".into()], ip("192.168.1.1")));
    assert!(!cidr_allows(&["10.0.0.0/33".into()], ip("10.0.0.1")));
    // src may be one comma-separated string.
    let acc = KeyPair::new_account();
    let (_, t) = full_user(&acc);
    let p = payload_of(&t).replace(
        "\"src\":[\"127.0.0.0/8\",\"::1/128\"]",
        "\"src\":\"10.0.0.0/8, 127.0.0.1/32\"",
    );
    let u = decode::<UserClaims>(&forge(&p, &acc)).unwrap();
    assert_eq!(u.nats.limits.src, vec!["10.0.0.0/8", "127.0.0.1/32"]);
    assert!(user_src_allows(&u, ip("127.0.0.1")));
    assert!(!user_src_allows(&u, ip("127.0.0.2")));
}

#[test]
fn connect_time_windows() {
    let mut c = Claims::<UserClaims>::new(&KeyPair::new_user().public_key(), "u");
    // 2024-01-01 12:00:00 UTC
    let noon = 1_704_110_400;
    assert_eq!(user_times_allow(&c, noon), Ok(TimeCheck::Unrestricted));
    c.nats.limits.times_location = "UTC".into();
    c.nats.limits.times = vec![TimeRange {
        start: "08:00:00".into(),
        end: "13:00:00".into(),
    }];
    assert_eq!(
        user_times_allow(&c, noon),
        Ok(TimeCheck::Allowed {
            remaining: std::time::Duration::from_secs(3600)
        })
    );
    c.nats.limits.times = vec![TimeRange {
        start: "13:00:00".into(),
        end: "14:00:00".into(),
    }];
    assert_eq!(user_times_allow(&c, noon), Ok(TimeCheck::Denied));
    // Overnight window: ends the next day.
    c.nats.limits.times = vec![TimeRange {
        start: "11:00:00".into(),
        end: "01:00:00".into(),
    }];
    assert_eq!(
        user_times_allow(&c, noon),
        Ok(TimeCheck::Allowed {
            remaining: std::time::Duration::from_secs(13 * 3600)
        })
    );
    // A named zone: noon UTC on 2024-01-01 is 13:00 in Paris (UTC+1),
    // past the 11:00 start; the window ends at 01:00 Paris time, 12 h on.
    c.nats.limits.times_location = "Europe/Paris".into();
    assert_eq!(
        user_times_allow(&c, noon),
        Ok(TimeCheck::Allowed {
            remaining: std::time::Duration::from_secs(12 * 3600)
        })
    );
    c.nats.limits.times = vec![TimeRange {
        start: "00:00:00".into(),
        end: "12:30:00".into(),
    }];
    // 12:00 UTC is 13:00 in Paris, after 12:30.
    assert_eq!(user_times_allow(&c, noon), Ok(TimeCheck::Denied));
    c.nats.limits.times_location = "Mars/Olympus_Mons".into();
    assert!(matches!(
        user_times_allow(&c, noon),
        Err(JwtError::UnsupportedTimeZone(_))
    ));
    c.nats.limits.times_location = "UTC".into();
    c.nats.limits.times = vec![TimeRange {
        start: "8am".into(),
        end: "13:00:00".into(),
    }];
    assert!(matches!(
        user_times_allow(&c, noon),
        Err(JwtError::Invalid(_))
    ));
    assert!(conn_type::is_known("LEAFNODE_WS") && !conn_type::is_known("leafnode"));
}

#[test]
fn creds_parsing() {
    let acc = KeyPair::new_account();
    let user = KeyPair::new_user();
    let mut c = Claims::<UserClaims>::new(&user.public_key(), "u");
    let t = encode(&mut c, &acc).unwrap();
    let seed = user.seed().unwrap();
    let text = format_creds(&t, &seed).unwrap();
    assert_eq!(parse_creds(&text).unwrap(), (t.clone(), seed.clone()));
    // CRLF line ends and no decoration between blocks.
    let crlf = text.replace('\n', "\r\n");
    assert_eq!(parse_creds(&crlf).unwrap(), (t.clone(), seed.clone()));
    let bare = format!(
        "-----BEGIN X-----\n{t}\n------END X------\n-----BEGIN Y-----\n{seed}\n------END Y------"
    );
    assert_eq!(parse_creds(&bare).unwrap(), (t.clone(), seed.clone()));
    assert!(matches!(
        parse_creds("nothing here"),
        Err(JwtError::Creds(_))
    ));
    let only_jwt = format!("-----BEGIN X-----\n{t}\n------END X------\n");
    assert!(matches!(parse_creds(&only_jwt), Err(JwtError::Creds(_))));
    assert!(format_creds(&t, &acc.seed().unwrap()).is_err());
}
