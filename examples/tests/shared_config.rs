//! Two `shared-config` consoles against a three-node cluster (node
//! processes of the example binary itself), driven through a scripted
//! session: reads come from each process's local copy, so a change shows
//! in the other only after it refreshes or updates; a conditional change
//! made against a stale copy fails and brings the copy up to date; every
//! fifth removal and each clear compact the stream.

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use synod::local::{ClusterOptions, LocalCluster};
use synod::shared::StreamFetch;

const EXE: &str = env!("CARGO_BIN_EXE_shared-config");

/// One console process: lines in, everything up to the next prompt out.
struct Console {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    out: mpsc::Receiver<String>,
}

impl Console {
    fn start(name: &'static str, cluster: &LocalCluster) -> Console {
        let mut child = cluster
            .client_command(EXE.as_ref())
            .args(["--group", "1", "--name", "app"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the console");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        // A reader thread splits the output at the prompts.
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut chunk = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = r.read(&mut byte) {
                chunk.push(byte[0]);
                if chunk.ends_with(b"> ") && (chunk.len() == 2 || chunk[chunk.len() - 3] == b'\n') {
                    chunk.truncate(chunk.len() - 2);
                    let text = String::from_utf8_lossy(&chunk).trim_end().to_string();
                    if tx.send(text).is_err() {
                        return;
                    }
                    chunk.clear();
                }
            }
            let _ = r.read_to_end(&mut chunk);
        });
        let mut c = Console {
            name,
            child,
            stdin,
            out,
        };
        let banner = c.output();
        assert!(banner.contains("GET_ALL"), "{name}: {banner}");
        c
    }

    /// What the console printed before its next prompt (60 s at most).
    fn output(&mut self) -> String {
        match self.out.recv_timeout(Duration::from_secs(60)) {
            Ok(s) => s,
            Err(e) => panic!("{}: no prompt: {e}", self.name),
        }
    }

    /// Runs one command line; its output.
    fn run(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write a command");
        let out = self.output();
        eprintln!("[{}] > {line}\n{out}", self.name);
        out
    }

    fn quit(mut self) {
        writeln!(self.stdin, "QUIT").expect("write QUIT");
        let status = self.child.wait().expect("console exit");
        assert!(status.success(), "{}: {status}", self.name);
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options(dir: &Path) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, EXE.into(), vec!["node".into()]);
    o.kv_groups = 1;
    o.tick_ms = 20;
    o
}

/// The stream's base revision (raised by each compaction).
fn base(cluster: &LocalCluster) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = cluster.client().unwrap();
        let fetch = StreamFetch {
            name: "app".into(),
            from: 0,
        };
        let got = client.read(1, fetch).await.unwrap().expect("the stream");
        client.close().await;
        got.initial.expect("an initial state").0
    })
}

#[test]
fn two_consoles_see_each_other_only_after_a_refresh_or_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path())).unwrap();
    let mut a = Console::start("A", &cluster);
    let mut b = Console::start("B", &cluster);

    assert_eq!(a.run("PUT color, red"), "color = red (new)");
    assert_eq!(a.run("GET color"), "color = red");
    // B's copy is older than A's write.
    assert_eq!(b.run("GET color"), "color is not set");
    assert_eq!(b.run("GET_ALL"), "(empty)");
    assert!(b.run("REFRESH").starts_with("refreshed: revision"));
    assert_eq!(b.run("GET color"), "color = red");

    // A changes it; B, stale, tries a change conditional on "red": its
    // closure first sees red, the append is refused, the fresh copy says
    // blue, and the change is not made. B's copy is now up to date.
    assert_eq!(
        a.run("REPLACE color, blue, red"),
        "color = blue (replaced red)"
    );
    assert_eq!(b.run("GET color"), "color = red");
    assert_eq!(
        b.run("REPLACE color, green, red"),
        "not replaced: color = blue"
    );
    assert_eq!(b.run("GET color"), "color = blue");

    // An unconditional-looking PUT is still computed against the fresh
    // state: it reports the value it replaced, even one A wrote after B's
    // last refresh.
    assert_eq!(a.run("PUT size, L"), "size = L (new)");
    assert_eq!(b.run("PUT size, XL"), "size = XL (old value: L)");
    assert_eq!(a.run("GET size"), "size = L", "A has not refreshed");
    // A change that writes nothing is decided on the local copy alone:
    // no append, so no conflict and no refresh.
    assert_eq!(a.run("PUT_IF_ABSENT size, S"), "not added: size = L");
    assert_eq!(a.run("GET size"), "size = L");
    // One that writes is refused as stale, and the copy catches up.
    assert_eq!(a.run("REPLACE size, M, L"), "not replaced: size = XL");
    assert_eq!(a.run("GET size"), "size = XL");
    assert_eq!(b.run("PUT_IF_ABSENT shape, round"), "shape = round (added)");
    assert_eq!(b.run("REMOVE shape, square"), "not removed: shape = round");

    // Every fifth removal compacts the stream.
    let before = base(&cluster);
    for i in 0..4 {
        a.run(&format!("PUT k{i}, v{i}"));
        assert_eq!(
            a.run(&format!("REMOVE k{i}")),
            format!("removed k{i} (was v{i})")
        );
    }
    assert_eq!(base(&cluster), before, "four removals: no compaction yet");
    assert_eq!(a.run("REMOVE shape, round"), "removed shape (compacted)");
    let compacted = base(&cluster);
    assert!(compacted > before, "base {before} -> {compacted}");
    // B, far behind the compaction, refreshes from the new initial state.
    assert!(b.run("REFRESH").starts_with("refreshed"));
    assert_eq!(b.run("GET_ALL"), "color = blue\nsize = XL");

    // CLEAR empties it for everyone (after their refresh) and compacts.
    assert_eq!(b.run("CLEAR"), "cleared (compacted)");
    assert!(base(&cluster) > compacted);
    assert_eq!(a.run("GET_ALL"), "color = blue\nsize = XL");
    a.run("REFRESH");
    assert_eq!(a.run("GET_ALL"), "(empty)");
    assert!(a.run("FROB").starts_with("unknown command"));
    assert!(a.run("PUT onlykey").starts_with("usage: PUT"));
    a.quit();
    b.quit();
}
