//! SharedConfig: the console of Pravega's StateSynchronizer example, on
//! Synod's [`SharedState`]. A configuration (string keys and values) is
//! shared by every process that opens it; run one console per terminal
//! against the same cluster and group.
//!
//! Its semantics are the point. Reads (`GET`, `GET_ALL`) come from this
//! process's local copy: a change made by another process shows only after
//! `REFRESH` or an update here. A conditional change (`REPLACE k, new,
//! current`, `REMOVE k, current`, `PUT_IF_ABSENT`) is decided against the
//! local copy and appended only if the stream is still at the copy's
//! revision; if another process wrote first, the copy is brought up to
//! date and the change decided again, so a change made against a stale
//! copy fails if the fresh one says so, and leaves the copy fresh.
//!
//! ```text
//! # a cluster: three `synod node` processes (see the user guide), then
//! export SYNOD_ENDPOINTS=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//! export SYNOD_CA=certs/ca.pem SYNOD_CERT=certs/client-admin.pem SYNOD_KEY=certs/client-admin.key
//! cargo run --release --bin shared-config -- --group 1 --name app-config
//! ```
//!
//! `shared-config node --config node-1.toml` runs a node itself (the same
//! as `synod node`), so the example needs no other binary.

/// mimalloc, as the `synod` binary (docs/BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use synod::shared::{SharedState, SharedStateError, Update};

/// Removals between two compactions (as in Pravega's SharedMap).
const REMOVALS_BEFORE_COMPACTION: u32 = 5;

/// The shared configuration (BTreeMap: `GET_ALL` lists keys in order).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Config(BTreeMap<String, String>);

/// The updates of a [`Config`].
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Change {
    Put(String, String),
    Remove(String),
    Clear,
}

impl Update<Config> for Change {
    fn apply_to(&self, c: &mut Config) {
        match self {
            Change::Put(k, v) => {
                c.0.insert(k.clone(), v.clone());
            }
            Change::Remove(k) => {
                c.0.remove(k);
            }
            Change::Clear => c.0.clear(),
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "shared-config",
    about = "A shared configuration console (Pravega's SharedConfig)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// How to reach the cluster (flags, or SYNOD_ENDPOINTS, SYNOD_CA,
    /// SYNOD_CERT and SYNOD_KEY), as for `synod kv`.
    #[command(flatten)]
    cluster: Option<synod::cli::ClusterArgs>,
    /// The group holding the shared configuration.
    #[arg(long, default_value_t = 1)]
    group: u64,
    /// The shared configuration's name (one group holds many).
    #[arg(long, default_value = "config")]
    name: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a Synod node instead (as `synod node`).
    Node(synod::cli::NodeArgs),
}

const HELP: &str = "\
Enter one of the following commands at the prompt:
GET_ALL - print every property of the shared config (from the local copy).
GET {key} - print the property {key} (from the local copy).
PUT {key}, {value} - set {key} to {value}; prints the old value if there was one.
PUT_IF_ABSENT {key}, {value} - set {key} to {value} only if it is not set.
REMOVE {key} [, {currentValue}] - remove {key}; with {currentValue}, only if that is its value.
REPLACE {key}, {newValue} [, {currentValue}] - set {key} if it is set; with {currentValue}, only if that is its value.
CLEAR - remove every property.
REFRESH - bring the local copy up to date.
HELP - print this list.
QUIT - leave.";

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Node(a)) => synod::cli::run_node(a),
        None => console(&cli),
    };
    if let Err(e) = result {
        eprintln!("shared-config: {e}");
        std::process::exit(1);
    }
}

fn console(cli: &Cli) -> Result<(), String> {
    let Some(cluster) = &cli.cluster else {
        return Err(
            "give the cluster's nodes, CA and a client certificate and key (--node, \
                    --ca, --cert, --key, or SYNOD_ENDPOINTS, SYNOD_CA, SYNOD_CERT, SYNOD_KEY)"
                .into(),
        );
    };
    synod::cli::with_client(cluster, Duration::from_secs(10), |client| async move {
        let mut shared = SharedConfig {
            state: SharedState::with_client(client, cli.group, cli.name.clone()),
            removals: 0,
        };
        shared
            .state
            .initialize(Config::default())
            .await
            .map_err(|e| e.to_string())?;
        println!("{HELP}");
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            print!("> ");
            let _ = std::io::stdout().flush();
            let Some(Ok(line)) = lines.next() else { break };
            match shared.run(line.trim()).await {
                Ok(Some(out)) => println!("{out}"),
                Ok(None) => break,
                Err(e) => println!("error: {e}"),
            }
        }
        Ok(())
    })
}

struct SharedConfig {
    state: SharedState<Config, Change>,
    removals: u32,
}

/// `{a}, {b}, ...` of a command line, trimmed.
fn args(rest: &str) -> Vec<String> {
    if rest.trim().is_empty() {
        return Vec::new();
    }
    rest.split(',').map(|s| s.trim().to_string()).collect()
}

impl SharedConfig {
    fn local(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.state.state().map_or(&EMPTY, |c| &c.0)
    }

    /// Runs one command line; `None`: quit.
    async fn run(&mut self, line: &str) -> Result<Option<String>, SharedStateError> {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let a = args(rest);
        let usage = |u: &str| Ok(Some(format!("usage: {u}")));
        let out = match (cmd.to_ascii_uppercase().as_str(), a.as_slice()) {
            ("", _) => String::new(),
            ("GET_ALL", []) => {
                if self.local().is_empty() {
                    "(empty)".to_string()
                } else {
                    let lines: Vec<String> = self
                        .local()
                        .iter()
                        .map(|(k, v)| format!("{k} = {v}"))
                        .collect();
                    lines.join("\n")
                }
            }
            ("GET", [k]) => match self.local().get(k) {
                Some(v) => format!("{k} = {v}"),
                None => format!("{k} is not set"),
            },
            ("GET", _) => return usage("GET {key}"),
            ("PUT", [k, v]) => {
                match self
                    .change_if(k, |_| true, Change::Put(k.clone(), v.clone()))
                    .await?
                {
                    Some(o) => format!("{k} = {v} (old value: {o})"),
                    None => format!("{k} = {v} (new)"),
                }
            }
            ("PUT", _) => return usage("PUT {key}, {value}"),
            ("PUT_IF_ABSENT", [k, v]) => {
                let put = Change::Put(k.clone(), v.clone());
                match self.change_if(k, |seen| seen.is_none(), put).await? {
                    Some(e) => format!("not added: {k} = {e}"),
                    None => format!("{k} = {v} (added)"),
                }
            }
            ("PUT_IF_ABSENT", _) => return usage("PUT_IF_ABSENT {key}, {value}"),
            ("REMOVE", [k]) => {
                let remove = Change::Remove(k.clone());
                match self.change_if(k, |seen| seen.is_some(), remove).await? {
                    Some(o) => format!("removed {k} (was {o}){}", self.removed().await?),
                    None => format!("{k} is not set"),
                }
            }
            ("REMOVE", [k, current]) => {
                let remove = Change::Remove(k.clone());
                match self
                    .change_if(k, |seen| seen == Some(current), remove)
                    .await?
                {
                    Some(a) if &a == current => format!("removed {k}{}", self.removed().await?),
                    Some(a) => format!("not removed: {k} = {a}"),
                    None => format!("not removed: {k} is not set"),
                }
            }
            ("REMOVE", _) => return usage("REMOVE {key} [, {currentValue}]"),
            ("REPLACE", [k, new]) => {
                let put = Change::Put(k.clone(), new.clone());
                match self.change_if(k, |seen| seen.is_some(), put).await? {
                    Some(o) => format!("{k} = {new} (replaced {o})"),
                    None => format!("not replaced: {k} is not set"),
                }
            }
            ("REPLACE", [k, new, current]) => {
                let put = Change::Put(k.clone(), new.clone());
                match self.change_if(k, |seen| seen == Some(current), put).await? {
                    Some(a) if &a == current => format!("{k} = {new} (replaced {a})"),
                    Some(a) => format!("not replaced: {k} = {a}"),
                    None => format!("not replaced: {k} is not set"),
                }
            }
            ("REPLACE", _) => return usage("REPLACE {key}, {newValue} [, {currentValue}]"),
            ("CLEAR", []) => {
                self.state
                    .update_state(|_, u| u.push(Change::Clear))
                    .await?;
                self.state.compact(Config::clone).await?;
                "cleared (compacted)".to_string()
            }
            ("REFRESH", []) => {
                let revision = self.state.fetch_updates().await?;
                format!("refreshed: revision {revision}")
            }
            ("HELP", _) => HELP.to_string(),
            ("QUIT", _) => return Ok(None),
            (c, _) => format!("unknown command {c:?}; HELP lists them"),
        };
        Ok(Some(out))
    }

    /// Makes `change` if `applies` to the value of `key`, deciding on the
    /// local copy and again on a fresh one whenever another process wrote
    /// first; returns the value it decided on.
    async fn change_if(
        &mut self,
        key: &str,
        applies: impl Fn(Option<&String>) -> bool,
        change: Change,
    ) -> Result<Option<String>, SharedStateError> {
        self.state
            .update_state(|c, updates| {
                let seen = c.0.get(key).cloned();
                if applies(seen.as_ref()) {
                    updates.push(change.clone());
                }
                seen
            })
            .await
    }

    /// Counts a removal; every fifth compacts the stream.
    async fn removed(&mut self) -> Result<&'static str, SharedStateError> {
        self.removals += 1;
        if self.removals < REMOVALS_BEFORE_COMPACTION {
            return Ok("");
        }
        self.removals = 0;
        self.state.compact(Config::clone).await?;
        Ok(" (compacted)")
    }
}
