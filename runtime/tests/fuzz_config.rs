//! The node configuration parser under mutation: a valid TOML file damaged
//! byte by byte (flips, truncations, huge numbers, splices, random bytes)
//! and edited as TOML (unknown keys and tables, values of the wrong type or
//! out of range, deep nesting). Parsing, validating and deriving the
//! engine's settings must give a config or a typed `ConfigError`, never a
//! panic, and never allocate much more than the text.
//!
//! The `#[test]` runs a short fixed-seed batch; the `#[ignore]`d one runs
//! `SYNOD_FUZZ_CASES` cases (docs/STORAGE.md, "Decoders under mutation").

use std::fs;

use synod::{ConfigError, NodeConfig};
use synod_storage::testkit::{self, Mutator, PeakAlloc, Tally};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Every section and key the parser knows.
const VALID: &str = r#"id = 1
listen = "127.0.0.1:7001"
data_dir = "data/node-1"

[[peers]]
id = 2
addr = "127.0.0.1:7002"

[[peers]]
id = 3
addr = "[::1]:7003"

[tls]
ca = "certs/ca.pem"
cert = "certs/node-1.pem"
key = "certs/node-1.key"

[raft]
tick_ms = 50
election_ticks = 10
heartbeat_ticks = 2
snapshot_every = 100000
max_uncommitted = 10000
propose_timeout_ms = 10000

[net]
own_thread = false

[storage]
fsync = "10ms"
segment_mb = 64

[log]
level = "warn"

[service]
kv_groups = 8
"#;

const KEYS: [&str; 24] = [
    "id",
    "listen",
    "data_dir",
    "peers",
    "addr",
    "tls",
    "ca",
    "cert",
    "key",
    "raft",
    "tick_ms",
    "election_ticks",
    "heartbeat_ticks",
    "snapshot_every",
    "max_uncommitted",
    "propose_timeout_ms",
    "net",
    "own_thread",
    "storage",
    "fsync",
    "segment_mb",
    "level",
    "kv_groups",
    "unknown_key",
];

/// TOML values of every type, at the edges of the ranges our fields have.
const VALUES: [&str; 26] = [
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "1e400",
    "nan",
    "-inf",
    "0x7fffffff",
    "true",
    "\"\"",
    "\"always\"",
    "\"18446744073709551615ms\"",
    "\"99999999999999999999s\"",
    "\"255.255.255.255:65535\"",
    "\"[::]:0\"",
    "\"\\u0000\"",
    "'''\n'''",
    "[]",
    "[1, \"a\", {}]",
    "{}",
    "{ id = 2 }",
    "1979-05-27T07:32:00Z",
    "\"\u{10ffff}\"",
];

/// One TOML-level edit of `text`: replace a value, add a key or table,
/// or nest deeply.
fn edit(m: &mut Mutator, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = m.below(lines.len() + 1);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match m.below(4) {
        0 => {
            // Replace the value of a `key = value` line.
            if let Some(line) = out.get_mut(at) {
                if let Some((key, _)) = line.split_once('=') {
                    *line = format!("{key}= {}", m.pick(&VALUES));
                }
            }
        }
        1 => {
            let line = format!("{} = {}", m.pick(&KEYS), m.pick(&VALUES));
            out.insert(at, line);
        }
        2 => {
            let kind = if m.rng().chance(1, 2) { "[" } else { "[[" };
            let close = if kind == "[" { "]" } else { "]]" };
            out.insert(at, format!("{kind}{}{close}", m.pick(&KEYS)));
        }
        _ => {
            // Deep nesting, as arrays or inline tables.
            let depth = 1 + m.below(3000);
            let line = if m.rng().chance(1, 2) {
                format!(
                    "{} = {}{}",
                    m.pick(&KEYS),
                    "[".repeat(depth),
                    "]".repeat(depth)
                )
            } else {
                format!(
                    "{} = {}{}",
                    m.pick(&KEYS),
                    "{ a = ".repeat(depth),
                    "}".repeat(depth)
                )
            };
            out.insert(at, line);
        }
    }
    out.join("\n")
}

/// Parses, validates and derives everything a node derives from a config.
fn load(text: &str) -> Result<(), ConfigError> {
    let cfg = NodeConfig::from_toml(text)?;
    cfg.validate()?;
    let _ = cfg.group_config();
    let _ = cfg.wal_options();
    Ok(())
}

fn run_config(cases: u64, seed0: u64) -> Tally {
    let mut tally = Tally::default();
    load(VALID).expect("the sample config is valid");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    for cut in 0..VALID.len() {
        let input = &VALID.as_bytes()[..cut];
        let text = String::from_utf8_lossy(input);
        testkit::check(
            "config truncation",
            cut as u64,
            input,
            limit(input),
            &mut tally,
            || load(&text),
        );
    }
    for i in 0..cases {
        let seed = seed0 + i;
        let mut m = Mutator::new(seed);
        let input = if m.rng().chance(1, 2) {
            edit(&mut m, VALID).into_bytes()
        } else {
            let edited = edit(&mut m, VALID);
            m.mutate(VALID.as_bytes(), edited.as_bytes())
        };
        if m.rng().chance(1, 8) {
            // Through the file, so bytes that are not UTF-8 meet the reader.
            fs::write(&file, &input).unwrap();
            testkit::check(
                "config file",
                seed,
                &input,
                limit(&input),
                &mut tally,
                || {
                    let cfg = NodeConfig::from_file(&file)?;
                    cfg.validate()
                },
            );
        } else {
            let text = String::from_utf8_lossy(&input);
            testkit::check(
                "config text",
                seed,
                &input,
                limit(&input),
                &mut tally,
                || load(&text),
            );
        }
    }
    tally
}

/// Parsing may build a document a few times the size of the text.
fn limit(input: &[u8]) -> usize {
    64 * input.len() + (256 << 10)
}

#[test]
fn configs_under_mutation_parse_or_fail_typed() {
    let t = run_config(testkit::cases(3000), 1);
    t.report("config");
    assert!(t.ok > 0 && t.err > 0, "the batch should see both outcomes");
}

/// The long run: `SYNOD_FUZZ_CASES=200000 cargo test --release -p synod
/// --test fuzz_config -- --ignored --nocapture` (seeds disjoint from the CI
/// batch).
#[test]
#[ignore]
fn long_configs() {
    run_config(testkit::cases(50_000), 1 << 32).report("config (long)");
}
