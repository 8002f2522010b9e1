//! `synod kv` against real node processes: put, get, del, cas, scan and
//! status, with the cluster given by `SYNOD_*` variables, `-o json`, and
//! the exit codes scripts rely on.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use synod::local::{ClusterOptions, LocalCluster};

const SYNOD: &str = env!("CARGO_BIN_EXE_synod");

fn options(dir: &Path) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, SYNOD.into(), vec!["node".into()]);
    o.kv_groups = 1;
    o.tick_ms = 20;
    o
}

/// `synod kv <args>` with the cluster in the environment.
fn kv(cluster: &LocalCluster, args: &[&str]) -> Output {
    let (ca, cert, key) = cluster.client_files().unwrap();
    let endpoints: Vec<String> = cluster
        .addrs()
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect();
    Command::new(SYNOD)
        .arg("kv")
        .args(args)
        .env("SYNOD_ENDPOINTS", endpoints.join(","))
        .env("SYNOD_CA", ca)
        .env("SYNOD_CERT", cert)
        .env("SYNOD_KEY", key)
        .output()
        .unwrap()
}

/// Runs `synod kv -o json <args>`, expects exit code `code`, parses stdout.
fn json_of(cluster: &LocalCluster, args: &[&str], code: i32) -> Value {
    let mut all = vec!["-o", "json", "--timeout", "30s"];
    all.extend_from_slice(args);
    let out = kv(cluster, &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "synod kv {args:?}: stdout {stdout}, stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout:?}: {e}"))
}

#[test]
fn kv_commands_print_json_and_exit_with_codes_scripts_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path())).unwrap();
    // The first put waits for the first leader (the client retries).
    let put = json_of(&cluster, &["put", "app/a", "1"], 0);
    assert!(put["revision"].as_u64().unwrap() >= 1, "{put}");
    json_of(&cluster, &["put", "app/b", "2"], 0);
    json_of(&cluster, &["put", "other", "3"], 0);
    assert_eq!(
        json_of(&cluster, &["get", "app/a"], 0),
        json!({"key": "app/a", "value": "1"})
    );
    assert_eq!(
        json_of(&cluster, &["get", "nope"], 0),
        json!({"key": "nope", "value": null})
    );
    assert_eq!(
        json_of(&cluster, &["scan", "--prefix", "app/"], 0),
        json!([{"key": "app/a", "value": "1"}, {"key": "app/b", "value": "2"}])
    );
    assert_eq!(
        json_of(&cluster, &["scan", "--limit", "1"], 0),
        json!([{"key": "app/a", "value": "1"}])
    );
    // cas: a match writes; a mismatch writes nothing, shows the current
    // value and exits with 3.
    let swapped = json_of(&cluster, &["cas", "app/a", "10", "--expected", "1"], 0);
    assert_eq!(swapped["swapped"], json!(true), "{swapped}");
    assert_eq!(
        json_of(&cluster, &["cas", "app/a", "20", "--expected", "1"], 3),
        json!({"swapped": false, "current": "10"})
    );
    assert_eq!(
        json_of(&cluster, &["cas", "app/new", "x", "--absent"], 0)["swapped"],
        json!(true)
    );
    assert_eq!(
        json_of(&cluster, &["cas", "app/new", "y", "--absent"], 3),
        json!({"swapped": false, "current": "x"})
    );
    assert_eq!(
        json_of(&cluster, &["del", "app/b"], 0),
        json!({"key": "app/b", "deleted": true})
    );
    assert_eq!(
        json_of(&cluster, &["del", "app/b"], 0),
        json!({"key": "app/b", "deleted": false})
    );
    let len = json_of(&cluster, &["len"], 0);
    assert_eq!(len["keys"], json!(3), "{len}");
    // status: every node, with its group 1.
    let status = json_of(&cluster, &["status"], 0);
    let nodes = status.as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status}");
    for n in nodes {
        assert_eq!(n["groups"][0]["group"], json!(1), "{n}");
    }
    // Text output, for people.
    let text = kv(&cluster, &["get", "app/a"]);
    assert_eq!(String::from_utf8_lossy(&text.stdout).trim(), "10");
    // Bad usage exits with 2 (clap), a failed request with 1.
    assert_eq!(kv(&cluster, &["cas", "k", "v"]).status.code(), Some(2));
    let unreachable = Command::new(SYNOD)
        .args(["kv", "--timeout", "1s", "get", "k"])
        .env("SYNOD_ENDPOINTS", "1=127.0.0.1:9")
        .env("SYNOD_CA", cluster.client_files().unwrap().0)
        .env("SYNOD_CERT", cluster.client_files().unwrap().1)
        .env("SYNOD_KEY", cluster.client_files().unwrap().2)
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(!unreachable.stderr.is_empty());
}
