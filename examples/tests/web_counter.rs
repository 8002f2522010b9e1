//! `web-counter` end to end: three node processes of the example binary
//! host the counter, one `web-counter serve` process answers HTTP, and the
//! test speaks plain HTTP/1.1 to it. The group's leader is SIGKILLed
//! midway: the service answers 503 while the group elects, then carries
//! on, and every acknowledged add is in the final value.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use synod::local::{ClusterOptions, LocalCluster};

const EXE: &str = env!("CARGO_BIN_EXE_web-counter");

/// The HTTP front end; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(cluster: &LocalCluster) -> Server {
    let mut child = cluster
        .client_command(EXE.as_ref())
        .args(["serve", "--http", "127.0.0.1:0", "--timeout", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start web-counter serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the address");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("not an address line: {line:?}"))
        .parse()
        .expect("an address");
    Server { child, addr }
}

/// One HTTP/1.1 request; the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The `value` of a `{"value":N}` body.
fn value(body: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
    v["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("no value in {body}"))
}

/// Polls `GET /counter` until it answers 200 (60 s at most).
fn wait_readable(addr: SocketAddr) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http(addr, "GET", "/counter");
        if status == 200 {
            return value(&body);
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never readable: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn leader_of_group_1(cluster: &LocalCluster) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = cluster.client().expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = client.find_leader(1).await {
                client.close().await;
                return l;
            }
            assert!(Instant::now() < deadline, "no leader of group 1");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[test]
fn http_handlers_call_the_replicated_counter_through_a_leader_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = LocalCluster::start(ClusterOptions::new(
        dir.path(),
        EXE.into(),
        vec!["node".into()],
    ))
    .expect("cluster");
    let server = serve(&cluster);
    assert_eq!(wait_readable(server.addr), 0);

    // Adds answer the new value; a read sees the last one.
    let mut expected = 0;
    for n in 1..=10 {
        let (status, body) = http(server.addr, "POST", &format!("/counter/add?n={n}"));
        assert_eq!(status, 200, "{body}");
        expected += n;
        assert_eq!(value(&body), expected);
    }
    assert_eq!(
        http(server.addr, "GET", "/counter"),
        (200, format!("{{\"value\":{expected}}}"))
    );
    // Bad input is the client's error, not the cluster's.
    assert_eq!(http(server.addr, "POST", "/counter/add?n=ten").0, 400);
    assert_eq!(http(server.addr, "GET", "/nothing").0, 404);

    // Kill the group's leader; keep adding 1 until 20 adds succeeded.
    let leader = leader_of_group_1(&cluster);
    cluster.kill(leader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut acked, mut unavailable, mut last) = (0, 0, expected);
    while acked < 20 {
        let (status, body) = http(server.addr, "POST", "/counter/add?n=1");
        match status {
            200 => {
                acked += 1;
                let v = value(&body);
                assert!(v > last, "{v} after {last}: an acknowledged add is missing");
                last = v;
            }
            503 => {
                unavailable += 1;
                assert!(body.contains("retry_safe"), "{body}");
            }
            other => panic!("{other}: {body}"),
        }
        assert!(
            Instant::now() < deadline,
            "{acked} adds in 60 s after the kill"
        );
    }
    // Each 503 add may or may not have been applied (its outcome is
    // unknown); every acknowledged one is in, and the read sees the last.
    assert!(last >= expected + acked && last <= expected + acked + unavailable);
    assert_eq!(wait_readable(server.addr), last);
    eprintln!(
        "node {leader} killed: {acked} adds acknowledged after it, {unavailable} answered 503"
    );
}
