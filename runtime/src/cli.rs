//! The `synod` command line: run a node, make dev certificates, talk to a
//! cluster. Other binaries (the demo, the benchmarks) embed [`run_node`]
//! so they can start node processes of themselves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use synod_core::NodeId;
use synod_net::TlsMaterial;

use crate::client::{Client, ClientConfig};
use crate::config::{Fsync, LogLevel, NodeConfig, PeerConfig};
use crate::kv::{CompareAndSwap, Delete, Get, KvStore, Len, Put, Scan};
use crate::node::Node;

/// `synod node`: runs one node until SIGINT/SIGTERM.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// The node's TOML config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Override `id`.
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Override `listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Override `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Replace the peers: `ID=ADDR`, repeatable.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<PeerConfig>,
    /// Override `log.level`.
    #[arg(long)]
    pub log_level: Option<LogLevel>,
    /// Override `storage.fsync`.
    #[arg(long)]
    pub fsync: Option<Fsync>,
    /// Override `service.kv_groups`.
    #[arg(long)]
    pub kv_groups: Option<u64>,
}

/// Parses a node address as the command line takes it: `ID=ADDR`, like
/// `2=127.0.0.1:7002`.
fn parse_peer(s: &str) -> Result<PeerConfig, String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=ADDR, like 2=127.0.0.1:7002"))?;
    Ok(PeerConfig {
        id: id.parse().map_err(|e| format!("{s:?}: bad id: {e}"))?,
        addr: addr
            .parse()
            .map_err(|e| format!("{s:?}: bad address: {e}"))?,
    })
}

impl NodeArgs {
    /// The config file with the overrides applied, validated.
    pub fn load(&self) -> Result<NodeConfig, String> {
        let mut c = NodeConfig::from_file(&self.config).map_err(|e| e.to_string())?;
        if let Some(v) = self.id {
            c.id = v;
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if !self.peers.is_empty() {
            c.peers = self.peers.clone();
        }
        if let Some(v) = self.log_level {
            c.log.level = v;
        }
        if let Some(v) = self.fsync {
            c.storage.fsync = v;
        }
        if let Some(v) = self.kv_groups {
            c.service.kv_groups = v;
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// `synod init`: the config and flags of `synod node`, plus `--join`.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// The node's config.
    #[command(flatten)]
    pub node: NodeArgs,
    /// The node joins a running cluster (a new machine, or one whose disk
    /// was replaced): it starts no group from `service.kv_voters`, and
    /// hosts a group only once added to it (`synod group add-learner`).
    #[arg(long)]
    pub join: bool,
}

/// `synod init`: vouches that a node is NEW (a new cluster, or with
/// `--join` a node added to a running one), so its first start does not
/// restrict its votes as a node that lost its disk would.
pub fn run_init(args: &InitArgs) -> Result<(), String> {
    let config = args.node.load()?;
    synod_actors::identity::Identity::init_new(&config.data_dir, config.id)
        .map_err(|e| e.to_string())?;
    if args.join {
        synod_actors::catalog::Catalog::init_joining(&config.data_dir)
            .map_err(|e| e.to_string())?;
    }
    println!(
        "node {}: {} initialized as a new node{}",
        config.id,
        config.data_dir.display(),
        if args.join {
            " joining a running cluster (add it with `synod group add-learner`)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Runs a node hosting the built-in `KvStore` groups of its config until
/// SIGINT or SIGTERM. Blocks; creates its own actix `System`.
pub fn run_node(args: &NodeArgs) -> Result<(), String> {
    run_node_with(args, |node, config, logger| async move {
        for group in 1..=config.service.kv_groups {
            let spawned = if config.service.kv_voters.is_empty() {
                node.spawn_replicated(group, KvStore::default()).await
            } else {
                node.spawn_replicated_on(group, &config.service.kv_voters, KvStore::default())
                    .await
            };
            spawned.map_err(|e| format!("group {group}: {e}"))?;
        }
        // Groups created at run time (`synod group create`) are key-value
        // stores too; the ones this node hosts start again now.
        let resumed = node
            .serve_groups_of(KvStore::default())
            .await
            .map_err(|e| format!("node {}: {e}", config.id))?;
        if !resumed.is_empty() {
            slog::info!(logger, "groups created at run time started again"; "groups" => resumed.len());
        }
        Ok(())
    })
}

/// Runs a node from `args` as `synod node` does (logging to stderr, until
/// SIGTERM or Ctrl-C, or until a write to its log fails), hosting what
/// `host` spawns on it instead of the key-value groups: an application's
/// own node binary. `host` runs once the node started; an error from it
/// stops the node.
///
/// ```no_run
/// # use synod::kv::KvStore as MyActor;
/// // `args` from clap (`#[command(flatten)] node: synod::cli::NodeArgs`).
/// fn run(args: &synod::cli::NodeArgs) -> Result<(), String> {
///     synod::cli::run_node_with(args, |node, _config, _logger| async move {
///         node.spawn_replicated(1, MyActor::default()).await.map_err(|e| e.to_string())?;
///         Ok(())
///     })
/// }
/// ```
pub fn run_node_with<F, Fut>(args: &NodeArgs, host: F) -> Result<(), String>
where
    F: FnOnce(Node, NodeConfig, slog::Logger) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let config = args.load()?;
    let level = config.log.level.slog();
    let (logger, _guard) = crate::logging::stderr_logger(level, config.id);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let node = Node::start(config.clone(), logger.clone())
            .await
            .map_err(|e| format!("node {} cannot start: {e}", config.id))?;
        if let Err(e) = host(node.clone(), config.clone(), logger.clone()).await {
            node.shutdown().await;
            return Err(e);
        }
        tokio::select! {
            _ = wait_for_signal() => {}
            reason = node.failed() => {
                // Fatal: memory can no longer be trusted to match the
                // disk. Exit non-zero; a restart recovers from the disk.
                slog::crit!(logger, "a write to the log failed: exiting; restart the node after \
                            checking the disk"; "error" => &reason);
                node.shutdown().await;
                return Err(format!(
                    "node {}: a write to the log failed ({reason}); the node stopped; restart \
                     it after checking the disk (it recovers from what is on disk)",
                    config.id
                ));
            }
        }
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                biased;
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `synod certs`: a dev CA and certificates.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Node ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<NodeId>,
    /// Client names, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "admin")]
    pub clients: Vec<String>,
}

/// Writes a dev CA and certificates for nodes and clients.
pub fn run_certs(args: &CertsArgs) -> Result<(), String> {
    let clients: Vec<&str> = args.clients.iter().map(String::as_str).collect();
    let certs = synod_net::tls::dev::generate(&args.out, "synod-dev-ca", &args.nodes, &clients)
        .map_err(|e| e.to_string())?;
    println!("CA: {}", certs.ca.display());
    for (id, f) in &certs.nodes {
        println!("node {id}: {} {}", f.cert.display(), f.key.display());
    }
    for (name, f) in &certs.clients {
        println!("client {name}: {} {}", f.cert.display(), f.key.display());
    }
    Ok(())
}

/// `synod kv`: a client of the built-in key-value groups.
///
/// Exit codes: 0 done; 1 the request failed (the message says whether it
/// may have been applied and what to do); 2 bad usage; 3 a `cas` whose
/// expected value did not match (nothing written); 4 a `watch --rev` that
/// was compacted.
#[derive(Args, Debug, Clone)]
pub struct KvArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The group.
    #[arg(long, default_value_t = 1)]
    pub group: u64,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// How long one request may take, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub op: KvOp,
}

/// How `synod kv` prints its answers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON value per command, for scripts.
    Json,
}

/// Operations of `synod kv`.
#[derive(Subcommand, Debug, Clone)]
pub enum KvOp {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (linearizable).
    Get {
        /// The key.
        key: String,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// Set a key only if its value is the one expected (exit code 3 when
    /// it is not: nothing was written, the current value is printed).
    Cas {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// The value it must have now.
        #[arg(long, required_unless_present = "absent", conflicts_with = "absent")]
        expected: Option<String>,
        /// It must not exist now.
        #[arg(long)]
        absent: bool,
    },
    /// List keys and values in key order (linearizable).
    Scan {
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Keys and revision of the group.
    Len,
    /// Print the changes of a key (or of every key with a prefix) as they
    /// are applied, one line each, until interrupted (or `--count`).
    /// Exit code 4 when `--rev` is older than the history the nodes keep
    /// (compacted): read the state and watch from the revision after it.
    Watch {
        /// The key (with `--prefix`: what the keys start with).
        key: String,
        /// Watch every key that starts with `key`.
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (default: the next change).
        #[arg(long)]
        rev: Option<u64>,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Every node's view of its groups.
    Status,
}

/// A failed `synod` command: what to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The process's exit code (see [`KvArgs`]).
    pub code: i32,
    /// What went wrong and what to do.
    pub message: String,
}

impl From<String> for Exit {
    fn from(message: String) -> Self {
        Exit { code: 1, message }
    }
}

/// Exit code of a `cas` whose expected value did not match.
pub const EXIT_CAS_MISMATCH: i32 = 3;

/// Exit code of a `watch` from a revision the nodes no longer keep.
pub const EXIT_COMPACTED: i32 = 4;

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Prints `json` (with `-o json`) or `human`.
fn say(output: Output, json: serde_json::Value, human: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{json}"),
        Output::Text => println!("{}", human()),
    }
}

/// Runs one `synod kv` operation.
pub fn run_kv(args: &KvArgs) -> Result<(), Exit> {
    let nodes = args.cluster.addrs();
    with_client(&args.cluster, args.timeout, |client| async move {
        run_kv_op(&client, args.group, args.output, &args.op, &nodes).await
    })
}

async fn run_kv_op(
    client: &Client,
    g: u64,
    out: Output,
    op: &KvOp,
    nodes: &BTreeMap<NodeId, SocketAddr>,
) -> Result<(), Exit> {
    use serde_json::json;
    match op {
        KvOp::Put { key, value } => {
            let put = Put {
                key: key.clone(),
                value: value.clone().into_bytes(),
            };
            let rev = client.send(g, put).await.map_err(|e| e.to_string())?;
            say(out, json!({ "revision": rev }), || {
                format!("ok, revision {rev}")
            });
        }
        KvOp::Get { key } => {
            let v = client
                .read(g, Get { key: key.clone() })
                .await
                .map_err(|e| e.to_string())?;
            let value = v.as_deref().map(text);
            say(out, json!({ "key": key, "value": value }), || {
                value.clone().unwrap_or_else(|| "(absent)".into())
            });
        }
        KvOp::Del { key } => {
            let existed = client
                .send(g, Delete { key: key.clone() })
                .await
                .map_err(|e| e.to_string())?;
            say(out, json!({ "key": key, "deleted": existed }), || {
                if existed {
                    "deleted".into()
                } else {
                    "(absent)".into()
                }
            });
        }
        KvOp::Cas {
            key,
            value,
            expected,
            ..
        } => {
            let cas = CompareAndSwap {
                key: key.clone(),
                expected: expected
                    .as_ref()
                    .map(|e| serde_bytes::ByteBuf::from(e.clone().into_bytes())),
                value: value.clone().into_bytes(),
            };
            match client.send(g, cas).await.map_err(|e| e.to_string())? {
                Ok(rev) => say(out, json!({ "swapped": true, "revision": rev }), || {
                    format!("ok, revision {rev}")
                }),
                Err(current) => {
                    let current = current.as_ref().map(|c| text(c));
                    say(
                        out,
                        json!({ "swapped": false, "current": current }),
                        || match &current {
                            Some(c) => format!("not swapped: the value is {c:?}"),
                            None => "not swapped: the key is absent".into(),
                        },
                    );
                    return Err(Exit {
                        code: EXIT_CAS_MISMATCH,
                        message: "the value was not the one expected; nothing was written".into(),
                    });
                }
            }
        }
        KvOp::Scan { prefix, limit } => {
            let scan = Scan {
                prefix: prefix.clone(),
                limit: *limit,
            };
            let pairs = client.read(g, scan).await.map_err(|e| e.to_string())?;
            let list: Vec<serde_json::Value> = pairs
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": text(v) }))
                .collect();
            say(out, serde_json::Value::Array(list), || {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", text(v)))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KvOp::Watch {
            key,
            prefix,
            rev,
            count,
        } => {
            let filter = if *prefix {
                crate::kv::KeyFilter::Prefix(key.clone())
            } else {
                crate::kv::KeyFilter::Key(key.clone())
            };
            let mut watch = crate::kv::watch(client, g, filter, *rev)
                .await
                .map_err(|e| e.to_string())?;
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                let event = match watch.next().await {
                    Some(Ok(e)) => e,
                    Some(Err(e @ crate::SynodError::Compacted { .. })) => {
                        return Err(Exit {
                            code: EXIT_COMPACTED,
                            message: e.to_string(),
                        })
                    }
                    Some(Err(e)) => return Err(e.to_string().into()),
                    None => break,
                };
                seen += 1;
                match event {
                    crate::kv::KvEvent::Put {
                        revision,
                        key,
                        value,
                    } => {
                        let value = text(&value);
                        say(
                            out,
                            json!({ "type": "put", "key": key, "value": value, "revision": revision }),
                            || format!("PUT {key} = {value} (revision {revision})"),
                        )
                    }
                    crate::kv::KvEvent::Delete { revision, key } => say(
                        out,
                        json!({ "type": "delete", "key": key, "revision": revision }),
                        || format!("DELETE {key} (revision {revision})"),
                    ),
                }
            }
        }
        KvOp::Len => {
            let (n, rev) = client.read(g, Len).await.map_err(|e| e.to_string())?;
            say(out, json!({ "keys": n, "revision": rev }), || {
                format!("keys: {n}, revision: {rev}")
            });
        }
        KvOp::Status if out == Output::Json => {
            let mut all = Vec::new();
            for &id in nodes.keys() {
                match client.status(id).await {
                    Ok(groups) => all.push(json!({
                        "node": id,
                        "groups": groups.iter().map(|s| json!({
                            "group": s.group,
                            "role": s.role,
                            "term": s.term,
                            "leader": s.leader,
                            "last": s.last_index,
                            "commit": s.commit,
                            "applied": s.applied,
                            "voters": s.voters,
                            "learners": s.learners,
                            "lag": s.progress.iter().map(|p| json!({
                                "node": p.node,
                                "matched": p.matched,
                                "lag": s.last_index.saturating_sub(p.matched),
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })),
                    Err(e) => all.push(json!({ "node": id, "error": e.to_string() })),
                }
            }
            println!("{}", serde_json::Value::Array(all));
        }
        KvOp::Status => {
            for &id in nodes.keys() {
                match client.status(id).await {
                    Ok(groups) => {
                        let led = groups
                            .iter()
                            .filter(|s| s.leader == Some(id) && s.role == "Leader")
                            .count();
                        let balance = match client.stats(id).await {
                            Ok(st) => format!(
                                "; leader balancer: {} rounds, {} leaderships handed over",
                                st.balance_rounds, st.balance_transfers
                            ),
                            Err(_) => String::new(),
                        };
                        println!("node {id}: leads {led} of {} groups{balance}", groups.len());
                        for s in groups {
                            let mut notes = String::new();
                            if s.rejoining {
                                notes.push_str(" REJOINING (booted on an empty data directory; votes restricted until caught up)");
                            }
                            if let Some(to) = s.transfer_to {
                                notes.push_str(&format!(" TRANSFERRING leadership to node {to} (writes refused meanwhile)"));
                            }
                            if s.followers_lost_state > 0 {
                                notes.push_str(&format!(
                                    " (repaired {} follower(s) that lost their state)",
                                    s.followers_lost_state
                                ));
                            }
                            println!(
                                "node {id} group {}: {} term {} leader {:?} last {} commit {} applied {} voters {:?} learners {:?}{notes}",
                                s.group, s.role, s.term, s.leader, s.last_index, s.commit, s.applied, s.voters, s.learners
                            );
                            for p in &s.progress {
                                println!(
                                    "  member {}: matched {} lag {}",
                                    p.node,
                                    p.matched,
                                    s.last_index.saturating_sub(p.matched)
                                );
                            }
                            if let Some(p) = s.poison {
                                println!(
                                    "  poisoned: the handler of {} panicked on entry {}: {}; \
                                     fix it and restart the node",
                                    p.message_type, p.index, p.panic_message
                                );
                            }
                        }
                    }
                    Err(e) => println!("node {id}: {e}"),
                }
            }
        }
    }
    Ok(())
}

/// How a client command reaches a cluster (`synod kv`, `synod group`):
/// its CA, a client certificate and the nodes' addresses, from flags or
/// the `SYNOD_*` environment variables.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Cluster CA certificate.
    #[arg(long, env = "SYNOD_CA")]
    pub ca: PathBuf,
    /// Client certificate.
    #[arg(long, env = "SYNOD_CERT")]
    pub cert: PathBuf,
    /// Client key.
    #[arg(long, env = "SYNOD_KEY")]
    pub key: PathBuf,
    /// The nodes, `ID=ADDR`: repeat the flag, or comma-separate them.
    #[arg(long = "node", env = "SYNOD_ENDPOINTS", value_delimiter = ',', value_parser = parse_peer, required = true)]
    pub nodes: Vec<PeerConfig>,
}

impl ClusterArgs {
    /// The nodes' addresses by id.
    pub fn addrs(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.nodes.iter().map(|p| (p.id, p.addr)).collect()
    }

    /// A client configuration for this cluster whose requests may take
    /// `timeout` each (the certificate files are read now).
    pub fn client_config(&self, timeout: Duration) -> Result<ClientConfig, String> {
        let tls = TlsMaterial::from_pem_files(&self.ca, &self.cert, &self.key)
            .map_err(|e| e.to_string())?;
        let mut cfg = ClientConfig::new(self.addrs(), tls);
        cfg.timeout = timeout;
        Ok(cfg)
    }
}

/// `synod group`: operations on a group's Raft membership and leadership.
#[derive(Args, Debug, Clone)]
pub struct GroupArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub op: GroupOp,
}

/// Operations of `synod group`.
#[derive(Subcommand, Debug, Clone)]
pub enum GroupOp {
    /// Hand the group's leadership to another node (Raft thesis §3.10),
    /// e.g. before restarting the leader's machine; returns once that node
    /// leads.
    TransferLeader(TransferLeaderArgs),
    /// Show the group's voters, learners and leader.
    Members(MembersArgs),
    /// Add a node as a learner: it hosts an empty replica and catches up
    /// by snapshot and log, without voting. Idempotent.
    AddLearner(MemberArgs),
    /// Make a learner a voter once it caught up (waits for that).
    /// Idempotent.
    Promote(MemberArgs),
    /// Remove a voter or learner (the leader included) and delete its
    /// replica on that node. Idempotent: run it again if the node was down.
    RemoveMember(MemberArgs),
    /// Create a group at run time on the nodes given (its voters); each
    /// hosts a replica of its service (`synod node`: the key-value store).
    /// Idempotent: run it again if a node was down.
    Create(CreateArgs),
    /// Delete a group: every replica stops and its log and snapshots are
    /// deleted; the id is not reused. Idempotent: run it again if a node
    /// was down.
    Delete(DeleteArgs),
    /// UNSAFE: force a new voter set on one surviving node's replica of a
    /// group that lost a majority of its voters for good. Run it on every
    /// survivor with the same --voters. Entries only the lost voters held
    /// are lost; read docs/OPERATIONS.md first.
    UnsafeForceVoters(ForceArgs),
}

/// `synod group create`.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// The new group's id (not one in use or deleted before).
    #[arg(long)]
    pub id: u64,
    /// Its voters, comma-separated node ids (each hosts a replica).
    #[arg(id = "voters", long = "nodes", value_delimiter = ',', required = true)]
    pub nodes: Vec<NodeId>,
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `synod group delete`.
#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    /// The group to delete.
    #[arg(long)]
    pub id: u64,
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `synod group unsafe-force-voters`.
#[derive(Args, Debug, Clone)]
pub struct ForceArgs {
    /// The group.
    #[arg(long)]
    pub group: u64,
    /// The surviving voters, comma-separated (the same on every survivor).
    #[arg(long, value_delimiter = ',', required = true)]
    pub voters: Vec<NodeId>,
    /// The survivor to force them on (one of `--node`).
    #[arg(long)]
    pub on: NodeId,
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `synod group members`.
#[derive(Args, Debug, Clone)]
pub struct MembersArgs {
    /// The group.
    #[arg(long)]
    pub group: u64,
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `synod group add-learner|promote|remove-member`.
#[derive(Args, Debug, Clone)]
pub struct MemberArgs {
    /// The group.
    #[arg(long)]
    pub group: u64,
    /// The node to add, promote or remove.
    #[arg(long)]
    pub node: NodeId,
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn print_membership(out: Output, m: &crate::MembershipInfo) {
    if out == Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "group": m.group,
                "voters": m.voters,
                "learners": m.learners,
                "leader": m.leader,
                "index": m.index,
                "committed": m.committed,
            })
        );
        return;
    }
    let ids = |v: &[NodeId]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    println!(
        "group {}: voters {} learners {} leader {} (configuration at index {}{})",
        m.group,
        ids(&m.voters),
        ids(&m.learners),
        m.leader.map_or("unknown".to_string(), |l| l.to_string()),
        m.index,
        if m.committed {
            ""
        } else {
            ", not committed yet"
        }
    );
}

/// `synod group transfer-leader`.
#[derive(Args, Debug, Clone)]
pub struct TransferLeaderArgs {
    /// The group.
    #[arg(long)]
    pub group: u64,
    /// The node that should lead it.
    #[arg(long)]
    pub to: NodeId,
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Runs one `synod group` operation.
pub fn run_group(args: &GroupArgs) -> Result<(), String> {
    use serde_json::json;
    let out = args.output;
    match &args.op {
        GroupOp::TransferLeader(a) => with_client(&a.cluster, GROUP_TIMEOUT, |client| async move {
            client
                .transfer_leader(a.group, a.to)
                .await
                .map_err(|e| e.to_string())?;
            say(out, json!({ "group": a.group, "leader": a.to }), || {
                format!("group {}: node {} leads", a.group, a.to)
            });
            Ok(())
        }),
        GroupOp::Members(a) => membership_call(&a.cluster, out, |client| async move {
            client.membership(a.group).await
        }),
        GroupOp::AddLearner(a) => membership_call(&a.cluster, out, |client| async move {
            client.add_learner(a.group, a.node).await
        }),
        GroupOp::Promote(a) => membership_call(&a.cluster, out, |client| async move {
            client.promote(a.group, a.node).await
        }),
        GroupOp::UnsafeForceVoters(a) => {
            with_client(&a.cluster, GROUP_TIMEOUT, |client| async move {
                let m = client
                    .unsafe_force_voters(a.on, a.group, &a.voters)
                    .await
                    .map_err(|e| e.to_string())?;
                eprintln!(
                "UNSAFE: node {} now counts only voters {:?} in group {}; force the same set on \
                 every other survivor, and wipe the lost nodes before they return",
                a.on, a.voters, a.group
            );
                print_membership(out, &m);
                Ok(())
            })
        }
        GroupOp::RemoveMember(a) => membership_call(&a.cluster, out, |client| async move {
            client.remove_member(a.group, a.node).await
        }),
        GroupOp::Create(a) => with_client(&a.cluster, GROUP_TIMEOUT, |client| async move {
            client
                .create_group(a.id, &a.nodes)
                .await
                .map_err(|e| e.to_string())?;
            let nodes: Vec<String> = a.nodes.iter().map(|n| n.to_string()).collect();
            say(out, json!({ "group": a.id, "nodes": a.nodes }), || {
                format!("group {}: hosted by nodes {}", a.id, nodes.join(","))
            });
            Ok(())
        }),
        GroupOp::Delete(a) => with_client(&a.cluster, GROUP_TIMEOUT, |client| async move {
            client.delete_group(a.id).await.map_err(|e| e.to_string())?;
            say(out, json!({ "group": a.id, "deleted": true }), || {
                format!("group {}: deleted", a.id)
            });
            Ok(())
        }),
    }
}

/// Runs a membership call with a client of the cluster `c` and prints the
/// configuration it answers.
fn membership_call<F, Fut>(c: &ClusterArgs, out: Output, op: F) -> Result<(), String>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<crate::MembershipInfo, crate::SynodError>>,
{
    with_client(c, GROUP_TIMEOUT, |client| async move {
        let m = op(client).await.map_err(|e| e.to_string())?;
        print_membership(out, &m);
        Ok(())
    })
}

/// `synod status`: one row per node and group.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only this group.
    #[arg(long)]
    pub group: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// How long each node may take to answer, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// One row of `synod status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusRow {
    /// The node asked.
    pub node: NodeId,
    /// The group.
    pub group: u64,
    /// Its replica's role there.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// The leader it believes in.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
    /// How far its applied index is behind the highest commit index any
    /// node reported for the group.
    pub lag: u64,
    /// Anything unusual (rejoining, transferring, poisoned).
    pub notes: String,
}

/// The rows of `synod status` from each node's answer (`Err`: that node
/// could not be asked), `group` alone if given.
pub fn status_rows(
    answers: &[(NodeId, Result<Vec<crate::GroupStatus>, String>)],
    group: Option<u64>,
) -> Vec<StatusRow> {
    let mut top: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, a) in answers {
        for s in a.iter().flatten() {
            let c = top.entry(s.group).or_default();
            *c = (*c).max(s.commit);
        }
    }
    let mut rows = Vec::new();
    for (node, a) in answers {
        for s in a.iter().flatten() {
            if group.is_some_and(|g| g != s.group) {
                continue;
            }
            let mut notes = Vec::new();
            if s.rejoining {
                notes.push("rejoining".to_string());
            }
            if let Some(to) = s.transfer_to {
                notes.push(format!("transferring to {to}"));
            }
            if let Some(p) = &s.poison {
                notes.push(format!("poisoned at {} ({})", p.index, p.message_type));
            }
            rows.push(StatusRow {
                node: *node,
                group: s.group,
                role: s.role.clone(),
                term: s.term,
                leader: s.leader,
                commit: s.commit,
                applied: s.applied,
                lag: top[&s.group].saturating_sub(s.applied),
                notes: notes.join(", "),
            });
        }
    }
    rows.sort_by_key(|r| (r.group, r.node));
    rows
}

/// Runs `synod status`.
pub fn run_status(args: &StatusArgs) -> Result<(), Exit> {
    let nodes = args.cluster.addrs();
    with_client(&args.cluster, args.timeout, |client| async move {
        let mut answers = Vec::new();
        for &id in nodes.keys() {
            answers.push((id, client.status(id).await.map_err(|e| e.to_string())));
        }
        let rows = status_rows(&answers, args.group);
        let down: Vec<(NodeId, String)> = answers
            .iter()
            .filter_map(|(n, a)| a.as_ref().err().map(|e| (*n, e.clone())))
            .collect();
        if args.output == Output::Json {
            let down: Vec<serde_json::Value> = down
                .iter()
                .map(|(n, e)| serde_json::json!({ "node": n, "error": e }))
                .collect();
            println!(
                "{}",
                serde_json::json!({ "groups": rows, "unreachable": down })
            );
        } else {
            print!("{}", status_table(&rows));
            for (n, e) in &down {
                println!("node {n}: unreachable: {e}");
            }
        }
        if down.len() == nodes.len() {
            return Err(Exit::from("no node answered".to_string()));
        }
        Ok(())
    })
}

/// `rows` as an aligned text table with a header.
pub fn status_table(rows: &[StatusRow]) -> String {
    let header = [
        "NODE", "GROUP", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "NOTES",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.node.to_string(),
                r.group.to_string(),
                r.role.clone(),
                r.term.to_string(),
                r.leader.map_or("-".into(), |l| l.to_string()),
                r.commit.to_string(),
                r.applied.to_string(),
                r.lag.to_string(),
                r.notes.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut text = String::new();
    let mut line = |row: Vec<&str>| {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(padded.join("  ").trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

/// How long one request of `synod group` may take.
const GROUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `op` with a client of the cluster `c` (requests of at most
/// `timeout` each), on a runtime of its own, and closes the client.
pub fn with_client<F, Fut, E>(c: &ClusterArgs, timeout: Duration, op: F) -> Result<(), E>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: From<String>,
{
    let cfg = c.client_config(timeout)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = Client::new(cfg).map_err(|e| e.to_string())?;
        let result = op(client.clone()).await;
        client.close().await;
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(group: u64, role: &str, commit: u64, applied: u64) -> crate::GroupStatus {
        crate::GroupStatus {
            group,
            role: role.into(),
            term: 2,
            leader: Some(1),
            last_index: commit,
            commit,
            applied,
            restarts: 0,
            rejoining: false,
            followers_lost_state: 0,
            poison: None,
            transfer_to: None,
            voters: vec![1, 2, 3],
            learners: vec![],
            progress: vec![],
        }
    }

    /// A replica's lag is how far its applied index is behind the highest
    /// commit any node reported for its group; an unreachable node gives
    /// no rows; `--group` filters.
    #[test]
    fn status_rows_measure_lag_against_the_groups_highest_commit() {
        let mut rejoining = replica(7, "Follower", 3, 1);
        rejoining.rejoining = true;
        let answers = vec![
            (
                1,
                Ok(vec![
                    replica(7, "Leader", 10, 10),
                    replica(8, "Leader", 4, 4),
                ]),
            ),
            (2, Ok(vec![replica(7, "Follower", 9, 6)])),
            (3, Ok(vec![rejoining])),
            (4, Err("unreachable".to_string())),
        ];
        let rows = status_rows(&answers, None);
        let brief: Vec<(u64, u64, u64)> = rows.iter().map(|r| (r.group, r.node, r.lag)).collect();
        assert_eq!(brief, vec![(7, 1, 0), (7, 2, 4), (7, 3, 9), (8, 1, 0)]);
        assert_eq!(rows[2].notes, "rejoining");
        assert_eq!(status_rows(&answers, Some(8)).len(), 1);
        let table = status_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[1],
            "1     7      Leader    2     1       10      10       0"
        );
    }
}
