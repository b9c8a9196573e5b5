//! The container image (`scripts/docker-image`, FROM scratch) running a
//! three-node cluster on a Docker network this test creates: the nodes
//! find each other by name, clients on the host reach them through ports
//! published on 127.0.0.1, and a killed node rejoins when started again.
//!
//! Skips, saying so, when no Docker engine answers. The image is built
//! from the test build of rnats-server (and the libraries it links), so no
//! second compilation is needed.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::route_peers;
use common::*;
use futures::StreamExt;

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn engine_running() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Containers, network and image of one test run, removed on drop (also
/// when the test fails).
struct Fixture {
    tag: String,
    network: String,
    containers: Vec<String>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        let _ = docker(&["image", "rm", "-f", &self.tag]);
    }
}

impl Fixture {
    fn node(&mut self, name: &str) -> String {
        let container = format!("{}-{name}", self.network);
        let routes = "nats://a:6222,nats://b:6222,nats://c:6222";
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            &self.network,
            "--network-alias",
            name,
            "--read-only",
            "--cap-drop",
            "ALL",
            "-p",
            "127.0.0.1::4222",
            "-p",
            "127.0.0.1::8222",
            &self.tag,
            "-c",
            "/etc/rnats/rnats.conf",
            "-n",
            name,
            "--cluster_name",
            "docker-test",
            "--cluster",
            "nats://0.0.0.0:6222",
            "--routes",
            routes,
        ]);
        self.containers.push(container.clone());
        container
    }
}

/// The host address Docker published a container port on.
fn published(container: &str, port: &str) -> SocketAddr {
    let out = docker_ok(&["port", container, port]);
    let line = out
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("{container} {port} not published on 127.0.0.1: {out:?}"));
    line.parse()
        .unwrap_or_else(|e| panic!("{container}: bad port line {line:?}: {e}"))
}

async fn route_count(http: SocketAddr) -> usize {
    match try_json(http, "/routez").await {
        Some(v) => route_peers(&v).len(),
        None => 0,
    }
}

async fn wait_routes(http: SocketAddr, n: usize, container: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if route_count(http).await == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{container}: not {n} routes within 30s; logs:\n{}",
            String::from_utf8_lossy(&docker(&["logs", container]).stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deliver one message published on `from` to a subscriber on `to`.
async fn crosses(from: SocketAddr, to: SocketAddr, subject: &str) {
    let sub_client = async_nats::connect(format!("nats://{to}"))
        .await
        .expect("connect subscriber");
    let mut sub = sub_client
        .subscribe(subject.to_string())
        .await
        .expect("sub");
    sub_client.flush().await.expect("flush");
    let pub_client = async_nats::connect(format!("nats://{from}"))
        .await
        .expect("connect publisher");
    // The subscription's interest reaches `from` asynchronously: publish
    // until one arrives (bounded).
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            pub_client
                .publish(subject.to_string(), "hello".into())
                .await
                .expect("publish");
            pub_client.flush().await.expect("flush");
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
            {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{subject}: nothing crossed {from} -> {to} within 20s"));
    assert_eq!(&got.payload[..], b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_image_runs_a_cluster_that_survives_a_killed_node() {
    if !engine_running() {
        eprintln!("SKIP: no Docker engine answers `docker info`; the image test needs one");
        return;
    }
    let id = format!("rnats-test-{}", std::process::id());
    let tag = format!("{id}:latest");
    let root = env!("CARGO_MANIFEST_DIR");
    let build = Command::new("python3")
        .arg(format!("{root}/scripts/docker-image"))
        .args(["--bin", env!("CARGO_BIN_EXE_rnats-server"), "--tag", &tag])
        .output()
        .expect("run scripts/docker-image");
    let mut fx = Fixture {
        tag: tag.clone(),
        network: id.clone(),
        containers: Vec::new(),
    };
    assert!(
        build.status.success(),
        "scripts/docker-image failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );

    // The image is the binary and its libraries: no shell, run as nobody.
    assert_eq!(
        docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", &tag]),
        "65534:65534"
    );
    let shell = docker(&["run", "--rm", "--entrypoint", "/bin/sh", &tag, "-c", "true"]);
    assert!(!shell.status.success(), "the image has a shell");

    docker_ok(&["network", "create", &id]);
    let a = fx.node("a");
    let b = fx.node("b");
    let c = fx.node("c");
    let (a_cl, b_cl, c_cl) = (
        published(&a, "4222/tcp"),
        published(&b, "4222/tcp"),
        published(&c, "4222/tcp"),
    );
    let (a_http, b_http) = (published(&a, "8222/tcp"), published(&b, "8222/tcp"));
    for (http, name) in [(a_http, &a), (b_http, &b)] {
        wait_routes(http, 2, name).await;
    }
    crosses(a_cl, c_cl, "docker.a.c").await;
    crosses(c_cl, b_cl, "docker.c.b").await;

    // Chaos: kill b; a and c keep talking; b rejoins when started again.
    docker_ok(&["kill", &b]);
    wait_routes(a_http, 1, &a).await;
    crosses(a_cl, c_cl, "docker.after.kill").await;
    docker_ok(&["start", &b]);
    // Restarted, b may be published on another host port.
    let b_cl = published(&b, "4222/tcp");
    wait_routes(published(&b, "8222/tcp"), 2, &b).await;
    wait_routes(a_http, 2, &a).await;
    crosses(a_cl, b_cl, "docker.after.restart").await;
    drop(fx);
}
