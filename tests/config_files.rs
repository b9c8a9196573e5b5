//! Configuration files through the real binary: `-t` refuses what
//! nats-server refuses (and what rnats cannot honour), with FILE:LINE:COL;
//! the same bad files are refused by `nats-server -t` when it is on PATH;
//! and a SIGHUP with a bad file keeps the running configuration.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rnats::tls::dev::{DevOptions, DevPki};

/// `BIN -t -c FILE`: (exit success, stdout + stderr). Bounded: the check
/// must exit on its own.
fn check(bin: &str, file: &str) -> (bool, String) {
    check_args(bin, &["-t", "-c", file])
}

/// `BIN ARGS` (a `-t` check): (exit success, stdout + stderr).
fn check_args(bin: &str, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Configurations rnats must refuse: (name, text, line of the error,
/// text the message must contain).
fn bad_configs(dir: &TempDir) -> Vec<(&'static str, String, usize, &'static str)> {
    let missing = dir.path("missing-ca.pem").display().to_string();
    let cert = dir.path("cert.pem").display().to_string();
    std::fs::write(&cert, "placeholder").expect("write cert");
    vec![
        (
            "unknown",
            "port: 4222\nfoo_bar: 1\n".into(),
            2,
            "unknown field \"foo_bar\"",
        ),
        (
            "operator",
            "operator: \"./op.jwt\"\n".into(),
            1,
            "error parsing operator JWT",
        ),
        (
            "accounts",
            "accounts {\n  A { jetstream: enabled }\n}\n".into(),
            2,
            "\"jetstream\" in an account is not supported",
        ),
        (
            "cluster_pool",
            "cluster {\n  port: 6222\n  pool_size: 3\n}\n".into(),
            3,
            "\"pool_size\" in cluster is not supported by rnats yet",
        ),
        (
            "cluster_no_port",
            "cluster {\n  name: east\n}\n".into(),
            1,
            "cluster has no port",
        ),
        (
            "cluster_name_spaces",
            "cluster {\n  port: 6222\n  name: \"a b\"\n}\n".into(),
            3,
            "cluster name cannot contain spaces",
        ),
        (
            "cluster_bad_url",
            "cluster {\n  port: 6222\n  routes: [\n    \"nats://[::1\"\n  ]\n}\n".into(),
            4,
            "error parsing route url",
        ),
        (
            "cluster_url_no_port",
            "cluster {\n  port: 6222\n  routes: [\n    nats-route://u:secret@h\n  ]\n}\n".into(),
            4,
            "nats-route://u:[REDACTED]@h: no port",
        ),
        (
            "cluster_user_no_password",
            "cluster {\n  port: 6222\n  authorization {\n    user: r\n  }\n}\n".into(),
            3,
            "has a user but no password",
        ),
        (
            // Route TLS is always mutual against ca_file only.
            "cluster_tls_no_ca",
            format!(
                "cluster {{\n  port: 6222\n  tls {{\n    cert_file: \"{cert}\"\n    \
                 key_file: \"{cert}\"\n  }}\n}}\n"
            ),
            3,
            "cluster tls needs \"ca_file\"",
        ),
        (
            "cluster_tls_missing_ca",
            format!(
                "cluster {{\n  port: 6222\n  tls {{\n    cert_file: \"{cert}\"\n    \
                 key_file: \"{cert}\"\n    ca_file: \"{missing}\"\n  }}\n}}\n"
            ),
            6,
            "cannot read cluster tls ca_file",
        ),
        (
            "resolver",
            "resolver: MEMORY\n".into(),
            1,
            "resolver needs trusted operators",
        ),
        (
            "tls_nested",
            format!("tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{cert}\"\n  bogus: true\n}}\n"),
            4,
            "unknown field \"bogus\"",
        ),
        (
            "auth_nested",
            "authorization {\n  user: a\n  password: b\n  bogus: 1\n}\n".into(),
            4,
            "unknown field \"bogus\"",
        ),
        (
            "perm_nested",
            "authorization {\n  users: [\n    {user: a, password: b, permissions: {publish: x, \
             bogus: y}}\n  ]\n}\n"
                .into(),
            3,
            "unknown field \"bogus\"",
        ),
        (
            "dur_inf",
            "write_deadline: \"inf\"\n".into(),
            1,
            "invalid duration \"inf\"",
        ),
        (
            "dur_1e30",
            "write_deadline: \"1e30\"\n".into(),
            1,
            "unknown unit \"e\"",
        ),
        (
            "dur_1e300",
            "authorization {\n  timeout: 1e300\n}\n".into(),
            2,
            "timeout",
        ),
        ("dur_neg", "ping_interval: \"-5s\"\n".into(), 1, "negative"),
        (
            "missing_ca",
            format!(
                "tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{cert}\"\n  ca_file: \"{missing}\"\n  \
                 verify: true\n}}\n"
            ),
            4,
            "cannot read tls ca_file",
        ),
        (
            "missing_cert",
            format!("tls {{\n  cert_file: \"{missing}\"\n  key_file: \"{cert}\"\n}}\n"),
            2,
            "cannot read tls cert_file",
        ),
        (
            // A client certificate exists only on the HTTPS port: with
            // ca_file alone the plain port would be open to anyone.
            "monitor_ca_only",
            format!("http_port: 8222\nmonitor_auth {{\n  ca_file: \"{cert}\"\n}}\n"),
            2,
            "ca_file alone cannot protect the plain http_port",
        ),
        (
            "monitor_ca_missing",
            format!(
                "https_port: 8443\ntls {{\n  cert_file: \"{cert}\"\n  key_file: \"{cert}\"\n}}\n\
                 monitor_auth {{\n  user: a\n  password: b\n  ca_file: \"{missing}\"\n}}\n"
            ),
            9,
            "cannot read monitor_auth ca_file",
        ),
        (
            "lame_duck_short",
            "lame_duck_duration: \"10s\"\n".into(),
            1,
            "minimum is 30 seconds",
        ),
    ]
}

#[test]
fn config_check_refuses_bad_files_with_their_position() {
    let dir = TempDir::new("cfg-bad");
    for (name, text, line, needle) in bad_configs(&dir) {
        let file = dir.path(&format!("{name}.conf"));
        std::fs::write(&file, &text).expect("write config");
        let path = file.to_str().unwrap();
        let (ok, out) = check(RNATS_BIN, path);
        assert!(!ok, "{name}: accepted:\n{text}\n{out}");
        let at = format!("{path}:{line}:");
        assert!(out.contains(&at), "{name}: no {at} in {out:?}");
        assert!(out.contains(needle), "{name}: no {needle:?} in {out:?}");
        assert!(!out.contains("panicked"), "{name}: {out}");
        assert!(!out.contains("secret"), "{name}: a password in {out}");
    }
}

#[test]
fn config_check_accepts_zero_ping_interval_with_a_warning() {
    let dir = TempDir::new("cfg-zero");
    let file = dir.path("zero.conf");
    std::fs::write(&file, "port: 4333\nping_interval: 0\njetstream: enabled\n").unwrap();
    let path = file.to_str().unwrap();
    let (ok, out) = check(RNATS_BIN, path);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{path}:2:")) && out.contains("ping_interval of 0 means the default"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{path}:3:")) && out.contains("jetstream"),
        "{out}"
    );
}

/// A zero ping interval from the file must not reach the client writer's
/// timer (tokio panics on a zero period): the server runs and serves.
#[tokio::test]
async fn zero_ping_interval_server_serves_clients() {
    let dir = TempDir::new("cfg-zero-run");
    let file = dir.path("zero.conf");
    std::fs::write(&file, "listen: \"127.0.0.1:-1\"\nping_interval: \"0s\"\n").unwrap();
    let mut server = Proc::spawn(
        RNATS_BIN,
        &["-c", file.to_str().unwrap()],
        &dir.path("s.log"),
    );
    let port = server.client_port().await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Raw::handshake(addr, r#"{"verbose":false}"#).await;
    c.send(b"SUB a 1\r\nPUB a 2\r\nhi\r\n").await;
    let (lines, msgs) = c.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(msgs.len(), 1);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("ping_interval of 0 means the default"),
        "{log}"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "server died:\n{log}"
    );
}

/// The same bad files, refused by the reference server too. Skipped (with
/// a notice) when `nats-server` is not installed.
#[test]
fn nats_server_refuses_the_same_files() {
    let Some(nats) = on_path("nats-server") else {
        println!("nats-server not on PATH: skipping differential config test");
        return;
    };
    let nats = nats.to_str().unwrap().to_string();
    let dir = TempDir::new("cfg-diff");
    // Cases where nats-server refuses too. (It accepts `accounts` and
    // `resolver`, which it implements, the cluster cases it would run
    // with (no port, pooling, a route URL without port or password, route
    // TLS trusting the system roots), and only refuses `-1s`-style
    // negatives for some keys; those are rnats-only refusals.)
    let shared = [
        "unknown",
        "operator",
        "tls_nested",
        "auth_nested",
        "perm_nested",
        "dur_inf",
        "dur_1e30",
        "dur_1e300",
        "missing_ca",
        "missing_cert",
        "lame_duck_short",
        "cluster_name_spaces",
        "cluster_bad_url",
        "cluster_tls_missing_ca",
    ];
    for (name, text, _, _) in bad_configs(&dir) {
        if !shared.contains(&name) {
            continue;
        }
        let file = dir.path(&format!("{name}.conf"));
        std::fs::write(&file, &text).expect("write config");
        let path = file.to_str().unwrap();
        let (theirs, their_out) = check(&nats, path);
        let (ours, our_out) = check(RNATS_BIN, path);
        assert!(
            !theirs,
            "{name}: nats-server accepted it:\n{text}\n{their_out}"
        );
        assert!(
            !ours,
            "{name}: rnats-server accepted it:\n{text}\n{our_out}"
        );
    }
    // And a good file is fine with both.
    let good = dir.path("good.conf");
    std::fs::write(
        &good,
        "port: 4333\nmax_payload: 2MB\nping_interval: \"30s\"\nT: \"5s\"\nwrite_deadline: $T\n",
    )
    .unwrap();
    let path = good.to_str().unwrap();
    assert!(check(&nats, path).0, "nats-server refused good.conf");
    let (ok, out) = check(RNATS_BIN, path);
    assert!(ok, "rnats-server refused good.conf: {out}");
}

const AUTH_VIOLATION: &str = "-ERR 'Authorization Violation'";

fn login(user: &str, pass: &str) -> String {
    serde_json::json!({"verbose": false, "pedantic": false, "user": user, "pass": pass}).to_string()
}

async fn assert_refused(addr: SocketAddr, json: &str) {
    let mut raw = Raw::connect(addr).await;
    raw.send(format!("CONNECT {json}\r\nPING\r\n").as_bytes())
        .await;
    let (got, end) = raw.read_to_end(TIMEOUT).await;
    assert_eq!(
        (String::from_utf8_lossy(&got).into_owned(), end),
        (format!("{AUTH_VIOLATION}\r\n"), End::Closed),
        "CONNECT {json}"
    );
}

/// Wait until the log has `needle` at least `n` times.
async fn wait_log_count(server: &mut Proc, needle: &str, n: usize) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "server exited:\n{log}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} x {needle:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The real binary on `file` (holding `text`): the process and its client
/// address.
async fn spawn_on(dir: &TempDir, file: &std::path::Path, text: &str) -> (Proc, SocketAddr) {
    std::fs::write(file, text).unwrap();
    let mut server = Proc::spawn(
        RNATS_BIN,
        &["-c", file.to_str().unwrap()],
        &dir.path("s.log"),
    );
    let port = server.client_port().await;
    (server, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Write `text` to `file`, send SIGHUP, and return the log line of the
/// `n`th (0-based) refused reload.
async fn refused_reload(server: &mut Proc, file: &std::path::Path, text: &str, n: usize) -> String {
    const FAILED: &str = "Failed to reload server configuration";
    std::fs::write(file, text).unwrap();
    server.signal(libc::SIGHUP);
    let log = wait_log_count(server, FAILED, n + 1).await;
    log.lines()
        .filter(|l| l.contains(FAILED))
        .nth(n)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_bad_file_keeps_the_running_configuration() {
    let dir = TempDir::new("cfg-hup");
    let file = dir.path("server.conf");
    let good = "listen: \"127.0.0.1:-1\"\n\
                authorization {\n  users: [ {user: alice, password: \"alice-pw\"} ]\n}\n\
                auth_limits { max_failures: 0 }\n";
    let (mut server, addr) = spawn_on(&dir, &file, good).await;
    let mut alice = Raw::handshake(addr, &login("alice", "alice-pw")).await;

    // Each bad file: one that does not parse as options (an unknown key,
    // which used to be ignored and would have dropped the users), one
    // with a feature rnats lacks, and one that only fails validate.
    let bad_files = [
        "listen: \"127.0.0.1:-1\"\nauthorization {\n  users: [ {user: bob, password: \"bob-pw\"} ]\n  \
         bogus: 1\n}\n"
            .to_string(),
        "listen: \"127.0.0.1:-1\"\noperator: \"./op.jwt\"\n".to_string(),
        format!(
            "listen: \"127.0.0.1:-1\"\ntls {{\n  cert_file: \"{0}\"\n  key_file: \"{0}\"\n}}\n",
            dir.path("no-such-cert.pem").display()
        ),
    ];
    for (i, bad) in bad_files.iter().enumerate() {
        let line = refused_reload(&mut server, &file, bad, i).await;
        assert!(
            line.contains("[ERR]") && line.contains(&format!("{}:", file.display())),
            "{line}"
        );

        // Still the old configuration: alice in, bob and strangers out,
        // and alice's connection untouched.
        let mut again = Raw::handshake(addr, &login("alice", "alice-pw")).await;
        again.send(b"SUB x 1\r\nPUB x 2\r\nok\r\n").await;
        let (lines, msgs) = again.ping_collect().await;
        assert!(lines.is_empty() && msgs.len() == 1, "{lines:?} {msgs:?}");
        assert_refused(addr, &login("bob", "bob-pw")).await;
        assert_refused(addr, r#"{"verbose":false,"pedantic":false}"#).await;
        let (lines, _) = alice.ping_collect().await;
        assert!(lines.is_empty(), "{lines:?}");
    }
    assert!(
        !std::fs::read_to_string(&server.log)
            .unwrap()
            .contains("Reloaded server configuration")
    );

    // A good file still reloads afterwards.
    std::fs::write(&file, good.replace("alice", "carol")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("Reloaded server configuration").await;
    Raw::handshake(addr, &login("carol", "carol-pw")).await;
    assert_refused(addr, &login("alice", "alice-pw")).await;
}

/// Cluster files both servers accept (route certificates from the dev
/// PKI, so nats-server can load them): (name, text).
fn good_cluster_configs(dir: &TempDir) -> Vec<(&'static str, String)> {
    DevPki::generate(&DevOptions::default())
        .expect("dev PKI")
        .write_to(&dir.0, true)
        .expect("write PKI");
    let (cert, key, ca) = (
        dir.path("route-cert.pem").display().to_string(),
        dir.path("route-key.pem").display().to_string(),
        dir.path("ca.pem").display().to_string(),
    );
    let hash = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG";
    vec![
        (
            "full",
            format!(
                "listen: \"127.0.0.1:-1\"\n\
                 cluster {{\n  name: east\n  listen: \"127.0.0.1:-1\"\n  \
                 routes: [\n    nats-route://ru:p%40ss@127.0.0.1:7222\n    \
                 \"nats://[::1]:7223\"\n    tls://localhost:7224\n  ]\n  \
                 advertise: \"east-1.example.com:7222\"\n  no_advertise: true\n  \
                 connect_retries: 5\n  \
                 authorization {{\n    user: ru\n    password: \"{hash}\"\n    timeout: \"3s\"\n  }}\n  \
                 tls {{\n    cert_file: \"{cert}\"\n    key_file: \"{key}\"\n    ca_file: \"{ca}\"\n    \
                 verify: true\n    verify_cert_and_check_known_urls: true\n    timeout: \"3s\"\n  }}\n  \
                 ping_interval: \"10s\"\n  ping_max: 4\n  pool_size: -1\n  compression: off\n}}\n"
            ),
        ),
        ("minimal", "cluster { port: -1 }\n".into()),
        (
            "host_port",
            "cluster {\n  host: 127.0.0.1\n  port: 6222\n  routes = [\n    nats://127.0.0.1:6223\n  ]\n}\n"
                .into(),
        ),
        (
            "v6_advertise",
            "cluster {\n  listen: \"[::1]:6222\"\n  cluster_advertise: \"[::1]\"\n  compression: false\n}\n"
                .into(),
        ),
    ]
}

/// rnats accepts these cluster files without a warning, and so does
/// nats-server (whose `-t` fails on warnings) when it is on PATH.
#[test]
fn cluster_configs_are_accepted_by_both_servers() {
    let dir = TempDir::new("cfg-cluster-good");
    let nats = on_path("nats-server");
    if nats.is_none() {
        println!("nats-server not on PATH: checking rnats-server only");
    }
    for (name, text) in good_cluster_configs(&dir) {
        let file = dir.path(&format!("{name}.conf"));
        std::fs::write(&file, &text).expect("write config");
        let path = file.to_str().unwrap();
        let (ok, out) = check(RNATS_BIN, path);
        assert!(ok && !out.contains("warning"), "{name}: {out}\n{text}");
        if let Some(nats) = &nats {
            let (ok, out) = check(nats.to_str().unwrap(), path);
            assert!(ok, "{name}: nats-server refused it: {out}\n{text}");
        }
    }
}

/// nats-server's cluster flags, through the binary (Go-style single dash
/// too); flags override the file.
#[test]
fn cluster_flags() {
    let dir = TempDir::new("cfg-cluster-flags");
    let no_port = dir.path("no-port.conf");
    std::fs::write(&no_port, "cluster {\n  name: east\n}\n").unwrap();
    let no_port = no_port.to_str().unwrap();
    let with_port = dir.path("port.conf");
    std::fs::write(&with_port, "cluster {\n  port: 6222\n}\n").unwrap();
    let with_port = with_port.to_str().unwrap();
    let accepted: &[&[&str]] = &[
        &[
            "-t",
            "-cluster",
            "nats://127.0.0.1:-1",
            "-routes",
            "nats://127.0.0.1:7222, nats://127.0.0.1:7223",
            "-cluster_name",
            "east",
            "-cluster_advertise",
            "127.0.0.1:7000",
            "-no_advertise",
            "-connect_retries",
            "3",
        ],
        &["-t", "--cluster_listen", "nats://ru:rp@127.0.0.1:6222"],
        // The flag gives the file's cluster its port.
        &["-t", "-c", no_port, "--cluster", "nats://127.0.0.1:-1"],
        // "" turns the file's cluster off.
        &["-t", "-c", no_port, "--cluster", ""],
    ];
    for args in accepted {
        let (ok, out) = check_args(RNATS_BIN, args);
        assert!(ok, "{args:?}: {out}");
    }
    let refused: &[(&[&str], &str)] = &[
        (
            &["-t", "--routes", "nats://127.0.0.1:7222"],
            "solicited routes require cluster capabilities, e.g. --cluster",
        ),
        (
            &[
                "-t",
                "-c",
                with_port,
                "--cluster",
                "",
                "--routes",
                "nats://h:1",
            ],
            "solicited routes require cluster capabilities",
        ),
        (
            &["-t", "--cluster", "nats://ru@127.0.0.1:6222"],
            "expected cluster password to be set",
        ),
        (&["-t", "--cluster", "127.0.0.1:6222"], "invalid --cluster"),
        (
            &[
                "-t",
                "--cluster",
                "nats://127.0.0.1:-1",
                "--cluster_name",
                "a b",
            ],
            "cluster name cannot contain spaces",
        ),
        (
            &[
                "-t",
                "--cluster",
                "nats://127.0.0.1:-1",
                "--routes",
                "nats://u:secret@h",
            ],
            "nats://u:[REDACTED]@h: no port",
        ),
        (
            &["-t", "--cluster_name", "east"],
            "--cluster_name needs a cluster",
        ),
        (&["-t", "-c", no_port], "cluster has no port"),
    ];
    for (args, want) in refused {
        let (ok, out) = check_args(RNATS_BIN, args);
        assert!(
            !ok && out.contains(want),
            "{args:?}: want {want:?} in {out}"
        );
        assert!(!out.contains("secret"), "{args:?}: a password in {out}");
    }
}

/// Any cluster change on SIGHUP is refused with nats-server's wording and
/// the running configuration stays; an unchanged cluster reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_cluster_change() {
    let dir = TempDir::new("cfg-cluster-hup");
    let file = dir.path("server.conf");
    let good = "listen: \"127.0.0.1:-1\"\ncluster {\n  listen: \"127.0.0.1:-1\"\n  name: east\n}\n";
    let (mut server, addr) = spawn_on(&dir, &file, good).await;
    let changed = [
        good.replace(
            "name: east",
            "name: east\n  routes: [nats://127.0.0.1:7222]",
        ),
        good.replace("name: east", "name: west"),
        good.replace(
            "  listen: \"127.0.0.1:-1\"\n",
            "  listen: \"127.0.0.1:7333\"\n",
        ),
    ];
    let wants = [
        "config reload not supported for Cluster",
        "config reload not supported for Cluster",
        "config reload not supported for cluster port: old=-1, new=7333",
    ];
    for (i, (text, want)) in changed.iter().zip(wants).enumerate() {
        let line = refused_reload(&mut server, &file, text, i).await;
        assert!(line.contains(want), "{line}");
        let mut c = Raw::handshake(addr, r#"{"verbose":false}"#).await;
        c.send(b"SUB x 1\r\nPUB x 2\r\nok\r\n").await;
        let (lines, msgs) = c.ping_collect().await;
        assert!(lines.is_empty() && msgs.len() == 1, "{lines:?} {msgs:?}");
    }
    std::fs::write(&file, good).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("Reloaded server configuration").await;
}

/// The configuration inside the Kubernetes manifest (its ConfigMap's
/// `rnats.conf: |` block, indented under it).
fn k8s_config() -> String {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cluster-configs/k8s/rnats.yaml"
    ))
    .expect("read cluster-configs/k8s/rnats.yaml");
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "rnats.conf: |");
    lines
        .next()
        .expect("a `rnats.conf: |` block in the manifest");
    let block: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
    assert!(!block.is_empty(), "empty rnats.conf block");
    block.iter().map(|l| format!("{}\n", &l[4..])).collect()
}

/// The deployment configurations we ship (the container image's default
/// and the Kubernetes StatefulSet's) pass `-t` without a warning on
/// rnats-server; the image's also on nats-server when it is on PATH (the
/// StatefulSet's uses the rnats-only `watch_config`).
#[test]
fn shipped_deployment_configs_pass_the_check() {
    let dir = TempDir::new("cfg-deploy");
    let nats = on_path("nats-server");
    if nats.is_none() {
        println!("nats-server not on PATH: checking rnats-server only");
    }
    let image_default = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cluster-configs/docker/rnats.conf"
    ))
    .expect("read cluster-configs/docker/rnats.conf");
    for (name, text) in [("docker", image_default), ("k8s", k8s_config())] {
        let file = dir.path(&format!("{name}.conf"));
        std::fs::write(&file, &text).expect("write config");
        let path = file.to_str().unwrap();
        let (ok, out) = check(RNATS_BIN, path);
        assert!(ok && !out.contains("warning"), "{name}: {out}\n{text}");
        if let Some(nats) = nats.as_ref().filter(|_| name == "docker") {
            let (ok, out) = check(nats.to_str().unwrap(), path);
            assert!(ok, "{name}: nats-server refused it: {out}\n{text}");
        }
    }
    assert!(k8s_config().contains("watch_config"));
}

/// `watch_config` reloads on a change, as SIGHUP does, including a
/// Kubernetes-style ConfigMap update (the file is a symlink through a
/// `..data` link that is swapped atomically); a bad edit keeps the running
/// configuration and is reported once, not on every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_on_a_change_like_a_configmap_update() {
    const FAILED: &str = "Failed to reload server configuration";
    const RELOADED: &str = "Reloaded server configuration";
    let dir = TempDir::new("cfg-watch");
    let conf = |user: &str| {
        format!(
            "listen: \"127.0.0.1:-1\"\nwatch_config: \"100ms\"\n\
             authorization {{\n  users: [ {{user: {user}, password: \"{user}-pw\"}} ]\n}}\n\
             auth_limits {{ max_failures: 0 }}\n"
        )
    };
    // The kubelet's layout: server.conf -> ..data/server.conf, ..data -> ..v1.
    // (spawn_on writes the first configuration through the links.)
    std::fs::create_dir(dir.path("..v1")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.path("..data")).unwrap();
    std::os::unix::fs::symlink("..data/server.conf", dir.path("server.conf")).unwrap();
    let (mut server, addr) = spawn_on(&dir, &dir.path("server.conf"), &conf("alice")).await;
    Raw::handshake(addr, &login("alice", "alice-pw")).await;

    // The update: a new directory, then the ..data link swapped by rename.
    std::fs::create_dir(dir.path("..v2")).unwrap();
    std::fs::write(dir.path("..v2/server.conf"), conf("carol")).unwrap();
    std::os::unix::fs::symlink("..v2", dir.path("..data_tmp")).unwrap();
    std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
    std::fs::remove_dir_all(dir.path("..v1")).unwrap();
    wait_log_count(&mut server, RELOADED, 1).await;
    Raw::handshake(addr, &login("carol", "carol-pw")).await;
    assert_refused(addr, &login("alice", "alice-pw")).await;

    // A bad edit: refused, the running configuration kept.
    std::fs::write(
        dir.path("..v2/server.conf"),
        conf("dave") + "bogus_key: 1\n",
    )
    .unwrap();
    wait_log_count(&mut server, FAILED, 1).await;
    Raw::handshake(addr, &login("carol", "carol-pw")).await;
    assert_refused(addr, &login("dave", "dave-pw")).await;

    // Fixed: reloads, and the bad file was reported once although the
    // watch kept checking it meanwhile.
    std::fs::write(dir.path("..v2/server.conf"), conf("dave")).unwrap();
    let log = wait_log_count(&mut server, RELOADED, 2).await;
    Raw::handshake(addr, &login("dave", "dave-pw")).await;
    assert_eq!(log.matches(FAILED).count(), 1, "{log}");
}
