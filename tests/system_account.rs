//! The system account's monitoring services over NATS
//! (`$SYS.REQ.SERVER.PING.<Z>`, `$SYS.REQ.SERVER.<id>.<Z>`) with real
//! clients: nats-server's envelope, the request options, isolation from
//! other accounts; /accountz and /connz?acc= over HTTP; and a differential
//! test of the key sets against nats-server.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use serde_json::Value;

const CONFIG: &str = r#"
accounts {
  A: {
    users: [{user: a, password: a}]
    exports: [{stream: "events.>"}, {service: "help", accounts: [B]}]
    limits: {max_connections: 10}
  }
  B: {
    users: [{user: b, password: b}]
    imports: [{stream: {account: A, subject: "events.>"}, prefix: froma},
              {service: {account: A, subject: "help"}, to: "a.help"}]
  }
  SYS: { users: [{user: sys, password: sys}] }
}
system_account: SYS
"#;

/// A server from `CONFIG` on random loopback ports, with the monitor.
async fn server() -> (rnats::Server, SocketAddr, TempDir) {
    let dir = TempDir::new("sysacc");
    let path = dir.path("server.conf");
    std::fs::write(&path, CONFIG).unwrap();
    let mut o = rnats::Options::read_file(&path).expect("config parses");
    o.port = -1;
    o.host = "127.0.0.1".into();
    o.http_port = -1;
    o.http_host = "127.0.0.1".into();
    let s = start(o).await;
    let http = s.http_addr.expect("monitor address");
    (s, http, dir)
}

async fn user(s: &rnats::Server, name: &str) -> async_nats::Client {
    nats_with(
        s.client_addr(),
        async_nats::ConnectOptions::with_user_and_password(name.into(), name.into())
            .name(format!("{name}-client")),
    )
    .await
}

/// A request and its JSON reply.
async fn ask(c: &async_nats::Client, subject: &str, body: &str) -> Value {
    let m = tokio::time::timeout(
        TIMEOUT,
        c.request(subject.to_string(), Bytes::from(body.to_string())),
    )
    .await
    .expect("request timed out")
    .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
    serde_json::from_slice(&m.payload)
        .unwrap_or_else(|e| panic!("reply on {subject} is not JSON ({e}): {:?}", m.payload))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// nats-server's envelope around `data`, from this server.
fn check_envelope(v: &Value, s: &rnats::Server) {
    assert_eq!(keys(v), set(&["server", "data"]), "{v}");
    let srv = &v["server"];
    assert_eq!(
        keys(srv),
        set(&[
            "name",
            "host",
            "id",
            "ver",
            "jetstream",
            "flags",
            "seq",
            "time"
        ]),
        "{srv}"
    );
    assert_eq!(srv["id"], s.ctx.server_id.as_str());
    assert_eq!(srv["name"], s.ctx.server_name.as_str());
    assert_eq!(srv["host"], "127.0.0.1");
    assert_eq!(srv["jetstream"], false);
    assert!(srv["seq"].as_u64().is_some_and(|n| n > 0), "{srv}");
}

#[tokio::test]
async fn system_user_gets_monitoring_over_nats() {
    let (s, _http, _d) = server().await;
    // The imports' internal subscriptions.
    let base = sub_count(&s);
    let sys = user(&s, "sys").await;
    let a = user(&s, "a").await;
    let _sub = a.subscribe("orders.>").await.unwrap();
    barrier(&a).await;
    let id = s.ctx.server_id.clone();

    // HEALTHZ, twice: the envelope's sequence number goes up. (The first
    // request also makes the client's reply subscription.)
    let s1 = ask(&sys, "$SYS.REQ.SERVER.PING.HEALTHZ", "").await;
    let s2 = ask(&sys, "$SYS.REQ.SERVER.PING.HEALTHZ", "").await;
    check_envelope(&s1, &s);
    assert!(s2["server"]["seq"].as_u64() > s1["server"]["seq"].as_u64());
    assert_eq!(s1["data"]["status"], "ok");
    // orders.> and sys's reply subscription; the barrier's is gone.
    assert_eventually(
        || sub_count(&s) == base + 2,
        TIMEOUT,
        "two client subscriptions",
    )
    .await;

    // VARZ: the ping and the direct subject.
    for subject in [
        "$SYS.REQ.SERVER.PING.VARZ".to_string(),
        format!("$SYS.REQ.SERVER.{id}.VARZ"),
    ] {
        let v = ask(&sys, &subject, "").await;
        check_envelope(&v, &s);
        let d = &v["data"];
        assert_eq!(d["server_id"], id.as_str(), "{subject}");
        assert_eq!(d["connections"], 2, "{subject}: {d}");
        assert_eq!(d["system_account"], "SYS");
        assert_eq!(d["auth_required"], true);
        // The server's own responders are not client interest.
        assert_eq!(d["subscriptions"], base + 2, "{d}");
    }

    // CONNZ: everyone, then one account (nats-server's `acc` key), with
    // the account shown under `auth`.
    let v = ask(&sys, "$SYS.REQ.SERVER.PING.CONNZ", "").await;
    check_envelope(&v, &s);
    assert_eq!(v["data"]["num_connections"], 2, "{v}");
    assert!(v["data"]["connections"][0].get("account").is_none());
    let v = ask(
        &sys,
        &format!("$SYS.REQ.SERVER.{id}.CONNZ"),
        r#"{"acc":"A","auth":true,"subscriptions":true}"#,
    )
    .await;
    let conns = v["data"]["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 1, "{v}");
    assert_eq!(conns[0]["account"], "A");
    assert_eq!(conns[0]["name"], "a-client");
    assert_eq!(conns[0]["subscriptions_list"][0], "orders.>");
    let v = ask(&sys, "$SYS.REQ.SERVER.PING.CONNZ", r#"{"acc":"B"}"#).await;
    assert_eq!(v["data"]["total"], 0, "{v}");

    // ACCOUNTZ: the names, then one account's detail.
    let v = ask(&sys, "$SYS.REQ.SERVER.PING.ACCOUNTZ", "").await;
    check_envelope(&v, &s);
    let names: BTreeSet<String> = v["data"]["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();
    assert_eq!(names, set(&["$G", "A", "B", "SYS"]));
    assert_eq!(v["data"]["system_account"], "SYS");
    let v = ask(
        &sys,
        &format!("$SYS.REQ.SERVER.{id}.ACCOUNTZ"),
        r#"{"account":"A"}"#,
    )
    .await;
    let d = &v["data"]["account_detail"];
    assert_eq!(d["account_name"], "A");
    assert_eq!(d["client_connections"], 1);
    assert_eq!(d["exports"].as_array().map(|e| e.len()), Some(2), "{d}");
    assert!(d.get("is_system").is_none());
    assert_eq!(d["rnats_limits"]["max_connections"], 10);
    let v = ask(
        &sys,
        "$SYS.REQ.SERVER.PING.ACCOUNTZ",
        r#"{"account":"SYS"}"#,
    )
    .await;
    assert_eq!(v["data"]["account_detail"]["is_system"], true);

    // SUBSZ and STATSZ (the legacy ping and the named one).
    let v = ask(&sys, &format!("$SYS.REQ.SERVER.{id}.SUBSZ"), "").await;
    check_envelope(&v, &s);
    assert_eq!(v["data"]["num_subscriptions"], base + 2, "{v}");
    for subject in ["$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.STATSZ"] {
        let v = ask(&sys, subject, "").await;
        assert_eq!(keys(&v), set(&["server", "statsz"]), "{v}");
        assert_eq!(v["statsz"]["connections"], 2);
        assert_eq!(v["statsz"]["active_accounts"], 2);
    }

    // Errors in nats-server's shape.
    let v = ask(
        &sys,
        "$SYS.REQ.SERVER.PING.ACCOUNTZ",
        r#"{"account":"NOPE"}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], 500, "{v}");
    assert_eq!(v["error"]["description"], "Account NOPE does not exist");
    assert!(v["data"].is_null());
    for bad in ["{not json", "[]", " ", r#"{"acc":5}"#] {
        let v = ask(&sys, "$SYS.REQ.SERVER.PING.CONNZ", bad).await;
        assert_eq!(v["error"]["code"], 400, "{bad}: {v}");
        assert!(v.get("data").is_none(), "{v}");
    }
}

#[tokio::test]
async fn a_filtered_out_server_stays_silent() {
    let (s, _http, _d) = server().await;
    let sys = user(&s, "sys").await;
    let inbox = sys.new_inbox();
    let mut replies = sys.subscribe(inbox.clone()).await.unwrap();
    barrier(&sys).await;
    // Requests from one connection are handled in order: the filtered
    // ones would answer before the last, unfiltered one.
    for filter in [
        r#"{"server_name":"no-such-server"}"#,
        r#"{"cluster":"c1"}"#,
        r#"{"host":"10.9.9.9"}"#,
        r#"{"tags":["t"]}"#,
    ] {
        sys.publish_with_reply("$SYS.REQ.SERVER.PING.VARZ", inbox.clone(), filter.into())
            .await
            .unwrap();
    }
    let name = s.ctx.server_name.clone();
    let matching = format!(r#"{{"server_name":"{name}","exact_match":true,"host":"127.0.0.1"}}"#);
    sys.publish_with_reply("$SYS.REQ.SERVER.PING.HEALTHZ", inbox, matching.into())
        .await
        .unwrap();
    let m = next_msg(&mut replies).await;
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        v["data"]["status"], "ok",
        "the first reply is the unfiltered one: {v}"
    );
}

#[tokio::test]
async fn other_accounts_get_no_responders() {
    let (s, _http, _d) = server().await;
    let id = s.ctx.server_id.clone();
    for name in ["a", "b"] {
        let c = user(&s, name).await;
        for subject in [
            "$SYS.REQ.SERVER.PING".to_string(),
            "$SYS.REQ.SERVER.PING.VARZ".to_string(),
            "$SYS.REQ.SERVER.PING.ACCOUNTZ".to_string(),
            "$SYS.REQ.SERVER.PING.CONNZ".to_string(),
            format!("$SYS.REQ.SERVER.{id}.VARZ"),
            format!("$SYS.REQ.SERVER.{id}.CONNZ"),
        ] {
            let r = tokio::time::timeout(TIMEOUT, c.request(subject.clone(), Bytes::new()))
                .await
                .expect("request timed out");
            match r {
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
                other => panic!("{name} on {subject}: {other:?}"),
            }
        }
    }
    // A system user on a subject nobody serves gets no responders too.
    let sys = user(&s, "sys").await;
    let r = sys
        .request("$SYS.REQ.SERVER.PING.JSZ", Bytes::new())
        .await
        .expect_err("no JetStream");
    assert_eq!(r.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test]
async fn accountz_and_connz_by_account_over_http() {
    let (s, http, _d) = server().await;
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    barrier(&a).await;
    barrier(&b).await;

    let root = http_json(http, "/").await;
    assert!(
        root["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == "/accountz")),
        "{root}"
    );
    let v = http_json(http, "/accountz").await;
    assert_eq!(
        keys(&v),
        set(&["server_id", "now", "system_account", "accounts"])
    );
    assert_eq!(v["system_account"], "SYS");
    assert_eq!(v["accounts"].as_array().map(|l| l.len()), Some(4), "{v}");

    let v = http_json(http, "/accountz?acc=B").await;
    let d = &v["account_detail"];
    assert_eq!(d["account_name"], "B");
    assert_eq!(d["client_connections"], 1);
    assert_eq!(d["complete"], true);
    assert_eq!(d["expired"], false);
    assert!(d.get("exports").is_none(), "{d}");
    let imports = d["imports"].as_array().expect("imports");
    assert_eq!(imports.len(), 2);
    assert_eq!(imports[0]["local_subject"], "froma.events.>");
    assert_eq!(imports[0]["type"], "stream");
    assert_eq!(imports[1]["to"], "a.help");
    assert_eq!(imports[1]["type"], "service");
    let v = http_json(http, "/accountz?acc=A").await;
    let exports = v["account_detail"]["exports"].as_array().expect("exports");
    assert_eq!(exports[1]["response_type"], "Singleton");
    assert_eq!(exports[1]["approved_accounts"][0], "B");
    // The percent-encoded name of the global account.
    let v = http_json(http, "/accountz?acc=%24G").await;
    assert_eq!(v["account_detail"]["account_name"], "$G");
    let (status, body) = http_get(http, "/accountz?acc=NOPE").await;
    assert_eq!(status, 400);
    assert!(body.contains("Account NOPE does not exist"), "{body}");

    let v = http_json(http, "/connz").await;
    assert_eq!(v["total"], 2);
    assert!(v["connections"][0].get("account").is_none(), "{v}");
    let v = http_json(http, "/connz?acc=A&auth=1").await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["connections"][0]["account"], "A");
    assert_eq!(v["connections"][0]["name"], "a-client");
    let v = http_json(http, "/connz?acc=SYS").await;
    assert_eq!(v["total"], 0, "{v}");

    // Closed connections keep their account.
    drop(b);
    assert_eventually(|| s.ctx.conns.len() == 1, TIMEOUT, "b closed").await;
    let v = http_json(http, "/connz?state=closed&acc=B&auth=true").await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["connections"][0]["account"], "B");
    let v = http_json(http, "/connz?state=closed&acc=A").await;
    assert_eq!(v["total"], 0, "{v}");
}

#[tokio::test]
async fn the_default_system_account_exists() {
    let s = start(rnats::Options {
        http_port: -1,
        ..opts()
    })
    .await;
    let http = s.http_addr.expect("monitor");
    let v = http_json(http, "/accountz").await;
    assert_eq!(v["system_account"], "$SYS");
    assert_eq!(v["accounts"], serde_json::json!(["$G", "$SYS"]));
    let v = http_json(http, "/accountz?acc=%24SYS").await;
    assert_eq!(v["account_detail"]["is_system"], true);
    assert!(v["account_detail"]["subscriptions"].as_u64() > Some(0));
    // Its responders are not counted as client interest.
    assert_eventually(|| sub_count(&s) == 0, TIMEOUT, "subscription count").await;
    assert_eq!(http_json(http, "/varz").await["subscriptions"], 0);
}

// ---------------------------------------------------------------------------
// Against nats-server.

/// nats-server /varz keys rnats does not have (JetStream, clustering,
/// gateways, leafnodes, MQTT, WebSocket, Go runtime and build details,
/// statistics rnats does not keep).
const VARZ_NOT_IN_RNATS: &[&str] = &[
    "git_commit",
    "http_base_path",
    "cluster",
    "gateway",
    "leaf",
    "mqtt",
    "websocket",
    "jetstream",
    "tls_timeout",
    "gomaxprocs",
    "cpu",
    "in_client_msgs",
    "in_client_bytes",
    "out_client_msgs",
    "out_client_bytes",
    "stalled_clients",
    "http_req_stats",
    "config_digest",
    "feature_flags",
    "slow_consumer_stats",
    "stale_connection_stats",
    "disk_io_wait_stats",
];

/// rnats /varz keys nats-server does not have (or omits when empty).
const VARZ_RNATS_ONLY: &[&str] = &[
    "rnats_version",
    "max_subscriptions",
    "restarts",
    "auth_limits",
    "bcrypt_verifications",
    "tls_required",
];

/// The envelope's `server` keys rnats leaves out: JetStream feature flags.
const SERVER_INFO_NOT_IN_RNATS: &[&str] = &["feature_flags"];

/// `account_detail` keys on either side only: nats-server's sublist
/// statistics; rnats's own counters and limits.
const DETAIL_NOT_IN_RNATS: &[&str] = &["sublist_stats"];
const DETAIL_RNATS_ONLY: &[&str] = &["rnats_stats", "rnats_limits"];

/// GET over HTTP/1.0, so nats-server answers without chunked encoding
/// (the shared helper reads plain bodies only).
async fn get10(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        Ok::<_, std::io::Error>(resp)
    };
    let resp = tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("HTTP request timed out")
        .expect("HTTP request");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {text:?}"));
    assert!(head.contains(" 200 "), "GET {path}: {head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: bad JSON ({e}): {body}"))
}

struct Running {
    _proc: Proc,
    client: async_nats::Client,
    http: SocketAddr,
}

async fn run(bin: &str, config: &std::path::Path, dir: &TempDir, tag: &str) -> Running {
    let args = [
        "-c",
        config.to_str().unwrap(),
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-m",
        "-1",
    ];
    let mut p = Proc::spawn(bin, &args, &dir.path(&format!("{tag}.log")));
    let port = p.client_port().await;
    let log = std::fs::read_to_string(&p.log).unwrap();
    let http_port = log_port(&log, "Starting http monitor on ").expect("monitor port");
    let client = nats_with(
        SocketAddr::from(([127, 0, 0, 1], port)),
        async_nats::ConnectOptions::with_user_and_password("sys".into(), "sys".into()),
    )
    .await;
    Running {
        _proc: p,
        client,
        http: SocketAddr::from(([127, 0, 0, 1], http_port)),
    }
}

#[tokio::test]
async fn accountz_and_varz_envelope_match_nats_server() {
    let Some(nats_bin) = on_path("nats-server") else {
        eprintln!("nats-server not on PATH: skipping the system account differential test");
        return;
    };
    let dir = TempDir::new("sysacc-diff");
    let config = dir.path("server.conf");
    std::fs::write(&config, CONFIG).unwrap();
    let theirs = run(nats_bin.to_str().unwrap(), &config, &dir, "nats").await;
    let ours = run(RNATS_BIN, &config, &dir, "rnats").await;

    // /accountz: the list, then one account's detail.
    let (t, o) = (
        get10(theirs.http, "/accountz").await,
        get10(ours.http, "/accountz").await,
    );
    assert_eq!(
        keys(&t),
        keys(&o),
        "/accountz\nnats-server: {t}\nrnats: {o}"
    );
    let sorted = |v: &Value| -> Vec<String> {
        let mut l: Vec<String> = v["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&t), sorted(&o), "account names");
    for acc in ["A", "B", "SYS"] {
        let path = format!("/accountz?acc={acc}");
        let (t, o) = (
            get10(theirs.http, &path).await,
            get10(ours.http, &path).await,
        );
        assert_eq!(keys(&t), keys(&o), "{path}");
        let (td, od) = (&t["account_detail"], &o["account_detail"]);
        // nats-server gives every account service imports from the system
        // account (account-scoped CONNZ, STATZ, user info) and the system
        // account its exports; rnats has neither, so the lists may be
        // missing on our side.
        let mut want = keys(td);
        for k in DETAIL_NOT_IN_RNATS {
            want.remove(*k);
        }
        let mut got = keys(od);
        for k in DETAIL_RNATS_ONLY {
            got.remove(*k);
        }
        for k in ["imports", "exports"] {
            let only_system = |v: &Value| {
                v[k].as_array().is_none_or(|l| {
                    l.iter().all(|x| {
                        x["account"] == "SYS"
                            || x["subject"]
                                .as_str()
                                .is_some_and(|s| s.starts_with("$SYS."))
                    })
                })
            };
            if only_system(td) {
                want.remove(k);
            }
        }
        assert_eq!(want, got, "{path}\nnats-server: {td}\nrnats: {od}");
        for k in [
            "account_name",
            "is_system",
            "expired",
            "complete",
            "jetstream_enabled",
            "leafnode_connections",
            "name_tag",
        ] {
            assert_eq!(td.get(k), od.get(k), "{path} {k}");
        }
        // Exports and the non-system imports field by field.
        for k in ["exports", "imports"] {
            let mine = |v: &Value| -> Vec<Value> {
                let mut l: Vec<Value> = v[k]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter(|x| {
                                x["account"] != "SYS"
                                    && !x["subject"]
                                        .as_str()
                                        .is_some_and(|s| s.starts_with("$SYS."))
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                l.sort_by_key(|x| x["subject"].to_string());
                l
            };
            assert_eq!(mine(td), mine(od), "{path} {k}");
        }
    }

    // The VARZ envelope over NATS.
    let (t, o) = (
        ask(&theirs.client, "$SYS.REQ.SERVER.PING.VARZ", "").await,
        ask(&ours.client, "$SYS.REQ.SERVER.PING.VARZ", "").await,
    );
    assert_eq!(keys(&t), keys(&o), "envelope");
    let mut want = keys(&t["server"]);
    for k in SERVER_INFO_NOT_IN_RNATS {
        want.remove(*k);
    }
    assert_eq!(want, keys(&o["server"]), "envelope server");
    for k in ["ver", "jetstream", "flags", "host"] {
        assert_eq!(t["server"][k], o["server"][k], "envelope server {k}");
    }
    let (td, od) = (keys(&t["data"]), keys(&o["data"]));
    let missing: BTreeSet<_> = td.difference(&od).cloned().collect();
    let extra: BTreeSet<_> = od.difference(&td).cloned().collect();
    assert!(
        missing.is_subset(&set(VARZ_NOT_IN_RNATS)),
        "VARZ keys rnats lacks beyond the documented ones: {:?}",
        missing.difference(&set(VARZ_NOT_IN_RNATS))
    );
    assert!(
        extra.is_subset(&set(VARZ_RNATS_ONLY)),
        "VARZ keys only rnats has beyond the documented ones: {:?}",
        extra.difference(&set(VARZ_RNATS_ONLY))
    );
    for k in ["system_account", "auth_required", "connections", "proto"] {
        assert_eq!(t["data"][k], o["data"][k], "VARZ {k}");
    }

    // CONNZ filtered by account and ACCOUNTZ detail: same shapes.
    for (subject, body) in [
        ("$SYS.REQ.SERVER.PING.CONNZ", r#"{"acc":"SYS","auth":true}"#),
        ("$SYS.REQ.SERVER.PING.ACCOUNTZ", r#"{"account":"NOPE"}"#),
        ("$SYS.REQ.SERVER.PING.CONNZ", "[]"),
    ] {
        let (t, o) = (
            ask(&theirs.client, subject, body).await,
            ask(&ours.client, subject, body).await,
        );
        assert_eq!(
            keys(&t),
            keys(&o),
            "{subject} {body}\nnats-server: {t}\nrnats: {o}"
        );
        if let Some(e) = t.get("error") {
            assert_eq!(e["code"], o["error"]["code"], "{subject} {body}");
        } else {
            assert_eq!(t["data"]["total"], o["data"]["total"], "{subject} {body}");
            assert_eq!(
                t["data"]["connections"][0]["account"],
                o["data"]["connections"][0]["account"]
            );
        }
    }
}
