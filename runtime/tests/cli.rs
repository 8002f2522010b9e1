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
    synod(cluster, "kv", args)
}

/// `synod <command> <args>` with the cluster in the environment.
fn synod(cluster: &LocalCluster, command: &str, args: &[&str]) -> Output {
    cluster
        .client_command(SYNOD.as_ref())
        .arg(command)
        .args(args)
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
    // watch: from the first put's revision, the changes under app/ in
    // order (the failed cas and the delete of an absent key changed
    // nothing and are not reported), one JSON line each.
    let first = put["revision"].as_u64().unwrap().to_string();
    let args = [
        "-o", "json", "watch", "app/", "--prefix", "--rev", &first, "--count", "5",
    ];
    let out = kv(&cluster, &args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let brief: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let what = e["type"].as_str().unwrap().to_string();
            let key = e["key"].as_str().unwrap().to_string();
            (what, key)
        })
        .collect();
    let expected = [
        ("put", "app/a"),
        ("put", "app/b"),
        ("put", "app/a"),
        ("put", "app/new"),
        ("delete", "app/b"),
    ];
    assert_eq!(
        brief,
        expected.map(|(w, k)| (w.to_string(), k.to_string())),
        "{events:?}"
    );
    assert_eq!(events[2]["value"], json!("10"));
    assert_eq!(events[0]["revision"], put["revision"]);
    // status: every node, with its group 1.
    let status = json_of(&cluster, &["status"], 0);
    let nodes = status.as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status}");
    for n in nodes {
        assert_eq!(n["groups"][0]["group"], json!(1), "{n}");
    }
    // synod status: a row per node and group, caught up (lag 0) once
    // every replica applied what was committed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "replicas never caught up"
        );
        let out = synod(&cluster, "status", &["-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = v["groups"].as_array().unwrap().clone();
        if rows.iter().all(|r| r["lag"] == json!(0)) {
            break rows;
        }
    };
    assert_eq!(status.len(), 3, "{status:?}");
    let leaders: Vec<&Value> = status.iter().filter(|r| r["role"] == "Leader").collect();
    assert_eq!(leaders.len(), 1, "{status:?}");
    for r in &status {
        assert_eq!(r["group"], json!(1));
        assert_eq!(r["leader"], leaders[0]["node"], "{r}");
    }
    let table = synod(&cluster, "status", &["--group", "1"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NODE  GROUP  ROLE"), "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    assert!(table.contains("Leader"), "{table}");
    // synod group -o json.
    let out = synod(
        &cluster,
        "group",
        &["members", "--group", "1", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let members: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(members["voters"], json!([1, 2, 3]), "{members}");
    assert_eq!(members["leader"], leaders[0]["node"], "{members}");
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
