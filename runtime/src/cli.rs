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
    let config = args.load()?;
    let level = config.log.level.slog();
    let (logger, _guard) = crate::logging::stderr_logger(level, config.id);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let node = Node::start(config.clone(), logger.clone())
            .await
            .map_err(|e| format!("node {} cannot start: {e}", config.id))?;
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
/// expected value did not match (nothing written).
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

fn print_membership(m: &crate::MembershipInfo) {
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
    match &args.op {
        GroupOp::TransferLeader(a) => with_client(&a.cluster, GROUP_TIMEOUT, |client| async move {
            client
                .transfer_leader(a.group, a.to)
                .await
                .map_err(|e| e.to_string())?;
            println!("group {}: node {} leads", a.group, a.to);
            Ok(())
        }),
        GroupOp::Members(a) => membership_call(&a.cluster, |client| async move {
            client.membership(a.group).await
        }),
        GroupOp::AddLearner(a) => membership_call(&a.cluster, |client| async move {
            client.add_learner(a.group, a.node).await
        }),
        GroupOp::Promote(a) => membership_call(&a.cluster, |client| async move {
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
                print_membership(&m);
                Ok(())
            })
        }
        GroupOp::RemoveMember(a) => membership_call(&a.cluster, |client| async move {
            client.remove_member(a.group, a.node).await
        }),
        GroupOp::Create(a) => with_client(&a.cluster, GROUP_TIMEOUT, |client| async move {
            client
                .create_group(a.id, &a.nodes)
                .await
                .map_err(|e| e.to_string())?;
            let nodes: Vec<String> = a.nodes.iter().map(|n| n.to_string()).collect();
            println!("group {}: hosted by nodes {}", a.id, nodes.join(","));
            Ok(())
        }),
        GroupOp::Delete(a) => with_client(&a.cluster, GROUP_TIMEOUT, |client| async move {
            client.delete_group(a.id).await.map_err(|e| e.to_string())?;
            println!("group {}: deleted", a.id);
            Ok(())
        }),
    }
}

/// Runs a membership call with a client of the cluster `c` and prints the
/// configuration it answers.
fn membership_call<F, Fut>(c: &ClusterArgs, op: F) -> Result<(), String>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<crate::MembershipInfo, crate::SynodError>>,
{
    with_client(c, GROUP_TIMEOUT, |client| async move {
        let m = op(client).await.map_err(|e| e.to_string())?;
        print_membership(&m);
        Ok(())
    })
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
