//! The real `rnats-server` binary: command line, log and pid files,
//! signals, config checking and the HTTP monitor.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;

/// `rnats-server ARGS` run to completion: (exit success, stdout, stderr).
fn run_to_end(args: &[&str]) -> (bool, Option<i32>, String, String) {
    let mut child = Command::new(RNATS_BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rnats-server");
    // Bounded wait: these invocations must exit on their own.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rnats-server {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn starts_logs_writes_pid_and_stops_on_sigterm() {
    let dir = TempDir::new("cli-life");
    let log = dir.path("server.log");
    let pid_file = dir.path("server.pid");
    let mut server = Proc::spawn(
        RNATS_BIN,
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-P",
            pid_file.to_str().unwrap(),
        ],
        &log,
    );
    let port = server.client_port().await;
    assert_ne!(port, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Server is ready"), "{text}");
    // nats-server's line layout: `[pid] date time [INF] text`.
    let ready = text
        .lines()
        .find(|l| l.contains("Server is ready"))
        .unwrap();
    assert!(
        ready.starts_with(&format!("[{}] ", server.pid())) && ready.contains(" [INF] "),
        "{ready}"
    );

    // The pid file appears once the server is up.
    assert_eventually(|| pid_file.exists(), TIMEOUT, "pid file written").await;
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), server.pid().to_string());

    // A real client can use it.
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = nats(addr).await;
    let mut sub = c.subscribe("cli.test").await.unwrap();
    c.publish("cli.test", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    c.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"hi");

    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(TIMEOUT)
        .await
        .expect("server exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(!pid_file.exists(), "pid file removed on shutdown");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Trapped \"terminated\" signal"), "{text}");
    assert!(text.contains("Server Exiting"), "{text}");
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let dir = TempDir::new("cli-int");
    let mut server = Proc::spawn(
        RNATS_BIN,
        &["-a", "127.0.0.1", "-p", "-1"],
        &dir.path("s.log"),
    );
    server.client_port().await;
    server.signal(libc::SIGINT);
    let status = server.wait_exit(TIMEOUT).await.expect("exits on SIGINT");
    assert!(status.success(), "{status}");
}

#[test]
fn config_check_accepts_good_and_rejects_bad_files() {
    let dir = TempDir::new("cli-conf");
    let good = dir.path("good.conf");
    std::fs::write(
        &good,
        "# a valid configuration\nport: 4333\nmax_payload: 2MB\nping_interval: \"30s\"\n",
    )
    .unwrap();
    let (ok, code, out, err) = run_to_end(&["-t", "-c", good.to_str().unwrap()]);
    assert!(ok, "good.conf rejected ({code:?}): {out}{err}");

    // A value of the wrong type on line 3: the error names file:line:col.
    let bad = dir.path("bad.conf");
    std::fs::write(&bad, "port: 4333\n\nmax_payload: true\n").unwrap();
    let bad_path = bad.to_str().unwrap();
    let (ok, code, out, err) = run_to_end(&["-t", "-c", bad_path]);
    assert!(!ok, "bad.conf accepted: {out}{err}");
    assert_ne!(code, Some(0));
    let text = format!("{out}{err}");
    let at = text
        .find(&format!("{bad_path}:3:"))
        .unwrap_or_else(|| panic!("no {bad_path}:3:<col> in {text:?}"));
    let col = &text[at + bad_path.len() + 3..];
    assert!(
        col.starts_with(|c: char| c.is_ascii_digit()),
        "no column after the line in {text:?}"
    );

    // A syntax error is reported too.
    std::fs::write(&bad, "port: 4333\nauthorization {\n  timeout: 1\n").unwrap();
    let (ok, _, out, err) = run_to_end(&["-t", "-c", bad_path]);
    assert!(!ok, "unterminated block accepted: {out}{err}");
}

#[test]
fn version_flag_prints_the_version() {
    for flag in ["-v", "--version"] {
        let (ok, _, out, _) = run_to_end(&[flag]);
        assert!(ok);
        assert!(
            out.contains(env!("CARGO_PKG_VERSION")) && out.starts_with("rnats-server"),
            "{flag}: {out:?}"
        );
    }
}

#[tokio::test]
async fn jetstream_flag_is_accepted_with_a_warning() {
    let dir = TempDir::new("cli-js");
    let mut server = Proc::spawn(
        RNATS_BIN,
        &["-js", "-a", "127.0.0.1", "-p", "-1"],
        &dir.path("js.log"),
    );
    let port = server.client_port().await;
    let log = std::fs::read_to_string(&server.log).unwrap();
    let warning = log
        .lines()
        .find(|l| l.contains("[WRN]") && l.contains("JetStream"))
        .unwrap_or_else(|| panic!("no JetStream warning in:\n{log}"));
    assert!(!warning.is_empty());
    // And it is an ordinary working server.
    let c = nats(format!("127.0.0.1:{port}").parse().unwrap()).await;
    barrier(&c).await;
}

#[tokio::test]
async fn monitor_endpoints_report_the_server() {
    let dir = TempDir::new("cli-mon");
    let mut server = Proc::spawn(
        RNATS_BIN,
        &["-a", "127.0.0.1", "-p", "-1", "-m", "-1"],
        &dir.path("mon.log"),
    );
    let port = server.client_port().await;
    let log = std::fs::read_to_string(&server.log).unwrap();
    let http_port = log_port(&log, "Starting http monitor on ")
        .unwrap_or_else(|| panic!("no monitor line in:\n{log}"));
    // Like nats-server, the monitor listens on the client host given by -a.
    assert!(
        log.contains(&format!("Starting http monitor on 127.0.0.1:{http_port}")),
        "{log}"
    );
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    let client_addr = format!("127.0.0.1:{port}").parse().unwrap();

    let health = http_json(http, "/healthz").await;
    assert_eq!(health, serde_json::json!({"status": "ok"}));

    // A named client with two subscriptions, and one message through it.
    let c = nats_with(
        client_addr,
        async_nats::ConnectOptions::new().name("monitor-probe"),
    )
    .await;
    let mut sub = c.subscribe("mon.a").await.unwrap();
    let _sub_b = c.subscribe("mon.b.>").await.unwrap();
    c.publish("mon.a", Bytes::from_static(b"12345"))
        .await
        .unwrap();
    c.flush().await.unwrap();
    next_msg(&mut sub).await;

    let varz = http_json(http, "/varz").await;
    let id = varz["server_id"].as_str().expect("server_id");
    assert_eq!(id.len(), 56);
    assert!(id.starts_with('N'));
    assert_eq!(varz["port"], port);
    assert_eq!(varz["connections"], 1);
    assert!(varz["in_msgs"].as_u64().unwrap() >= 1, "{varz}");
    assert!(varz["in_bytes"].as_u64().unwrap() >= 5, "{varz}");
    assert!(varz["out_msgs"].as_u64().unwrap() >= 1, "{varz}");
    assert!(varz["mem"].as_u64().unwrap() > 0, "{varz}");
    assert_eq!(varz["max_payload"], 1024 * 1024);
    assert!(varz["uptime"].as_str().unwrap().ends_with('s'));

    let connz = http_json(http, "/connz?subs=1").await;
    assert_eq!(connz["num_connections"], 1);
    let conn = &connz["connections"][0];
    assert_eq!(conn["name"], "monitor-probe");
    assert_eq!(conn["lang"], "rust");
    assert_eq!(conn["subscriptions"], 2, "{conn}");
    let mut list: Vec<&str> = conn["subscriptions_list"]
        .as_array()
        .expect("subscriptions_list with subs=1")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    list.sort();
    assert_eq!(list, ["mon.a", "mon.b.>"]);

    // A client that gave no name and has no subscriptions: like
    // nats-server, the empty fields are left out.
    let anonymous = Raw::handshake(client_addr, r#"{"verbose":false,"pedantic":false}"#).await;
    let connz = http_json(http, "/connz?subs=1").await;
    assert_eq!(connz["num_connections"], 2);
    let anon = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["port"] == anonymous.stream.local_addr().unwrap().port())
        .expect("anonymous client listed");
    for key in ["name", "lang", "version", "subscriptions_list"] {
        assert!(anon.get(key).is_none(), "{key} present: {anon}");
    }
    drop(anonymous);

    // Unknown endpoints are 404.
    let (status, _) = http_get(http, "/nope").await;
    assert_eq!(status, 404);

    // After the client leaves, /connz shows it among the closed ones.
    drop(sub);
    drop(_sub_b);
    drop(c);
    let mut closed = serde_json::Value::Null;
    for _ in 0..200 {
        closed = http_json(http, "/connz?state=closed").await;
        if closed["total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let names: Vec<_> = closed["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("{closed}"))
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert!(
        names.contains(&serde_json::json!("monitor-probe")),
        "{closed}"
    );
}
