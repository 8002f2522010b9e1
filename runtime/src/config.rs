//! Node configuration: a TOML file, overridable from the command line.
//!
//! ```toml
//! id = 1
//! listen = "127.0.0.1:7001"
//! data_dir = "data/node-1"
//!
//! [[peers]]
//! id = 2
//! addr = "127.0.0.1:7002"
//!
//! [[peers]]
//! id = 3
//! addr = "127.0.0.1:7003"
//!
//! [tls]
//! ca = "certs/ca.pem"
//! cert = "certs/node-1.pem"
//! key = "certs/node-1.key"
//!
//! [raft]                 # all optional
//! tick_ms = 50
//! election_ticks = 10    # election timeout: 10-20 ticks (500-1000 ms)
//! heartbeat_ticks = 2
//! snapshot_every = 100000 # entries between snapshots
//! max_uncommitted = 10000
//! propose_timeout_ms = 10000
//! lease_reads = false    # Client::read_lease without a round (bounded clock drift)
//! balance_leaders = true # move leaderships until each node leads about its share
//! quiesce = true         # idle groups stop heartbeating and ticking (every node must agree)
//!
//! [net]                  # optional
//! own_thread = false     # run QUIC on a thread of its own (see Placement::Threads)
//!
//! [storage]              # all optional
//! fsync = "always"       # "always", "never", or an interval like "10ms"
//! segment_mb = 64
//!
//! [log]
//! level = "warn"         # "error", "warn", "info", "debug"
//!
//! [service]              # what `synod node` hosts
//! kv_groups = 8          # groups 1..=8 of the built-in KvStore
//! # kv_voters = [1, 2, 3] # their starting voters (default: every node)
//! ```
//!
//! Unknown keys are errors (a typo must not silently fall back to a
//! default).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use synod_actors::GroupConfig;
use synod_core::NodeId;
use synod_net::TlsMaterial;
use synod_storage::{SyncPolicy, WalOptions};

use crate::error::ConfigError;

/// A peer node.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
}

/// TLS files (PEM).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate (for `node-<id>.synod`).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// Raft timing and limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Milliseconds per tick.
    pub tick_ms: u64,
    /// Election timeout in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Entries between snapshots (0: never).
    pub snapshot_every: u64,
    /// Most uncommitted entries per group before `Busy`.
    pub max_uncommitted: usize,
    /// How long a command may wait for its result.
    pub propose_timeout_ms: u64,
    /// Allow lease reads (`Client::read_lease`): a leader within its lease
    /// answers without a heartbeat round. Assumes bounded clock drift (see
    /// docs/USER_GUIDE.md); every node must agree. Off by default.
    pub lease_reads: bool,
    /// Run the leader balancer: a node leading clearly more than its share
    /// of the groups hands leaderships to nodes leading fewer (leader
    /// transfer), e.g. after a node restarted (docs/OPERATIONS.md). On by
    /// default; each node decides for itself.
    pub balance_leaders: bool,
    /// Let idle groups quiesce: no heartbeats and no ticks until something
    /// happens, node-level beats standing in for their leaders'
    /// heartbeats (docs/ARCHITECTURE.md, "Ten thousand groups"). On by
    /// default; every node of a cluster should agree.
    pub quiesce: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let g = GroupConfig::default();
        RaftConfig {
            tick_ms: g.tick.as_millis() as u64,
            election_ticks: g.election_ticks,
            heartbeat_ticks: g.heartbeat_ticks,
            snapshot_every: g.snapshot_every,
            max_uncommitted: g.max_uncommitted,
            propose_timeout_ms: g.propose_timeout.as_millis() as u64,
            lease_reads: g.lease_reads,
            balance_leaders: g.balance_leaders,
            quiesce: g.quiesce,
        }
    }
}

/// WAL settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"always"` (default), `"never"`, or an interval such as `"10ms"`.
    pub fsync: String,
    /// Segment size in MiB.
    pub segment_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: "always".into(),
            segment_mb: 64,
        }
    }
}

/// Transport settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NetSettings {
    /// Run the QUIC transport on a thread of its own.
    pub own_thread: bool,
}

/// Logging.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Lowest level written to stderr.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "warn".into(),
        }
    }
}

/// What the `synod node` command hosts.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Groups `1..=kv_groups` of the built-in [`crate::kv::KvStore`].
    pub kv_groups: u64,
    /// The voters those groups start with (empty: every node). A node not
    /// listed hosts none of them until it is added as a learner; list the
    /// original set here for the life of the cluster (the groups' later
    /// changes live in their logs).
    pub kv_voters: Vec<NodeId>,
}

/// Everything a node needs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (>= 1, unique in the cluster).
    pub id: NodeId,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Where the WAL and snapshots live (one directory per node).
    pub data_dir: PathBuf,
    /// Every other node.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// TLS files.
    pub tls: TlsFiles,
    /// Raft settings.
    #[serde(default)]
    pub raft: RaftConfig,
    /// WAL settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Transport settings.
    #[serde(default)]
    pub net: NetSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Hosted services.
    #[serde(default)]
    pub service: ServiceConfig,
}

impl NodeConfig {
    /// Reads and validates a TOML file. Relative paths in it are taken
    /// relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = NodeConfig::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        if let Some(base) = path.parent() {
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    /// Parses TOML (no validation: call [`NodeConfig::validate`]).
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.data_dir,
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Checks everything that can be checked without starting: ids, peers,
    /// timing, the fsync policy. TLS files are checked by
    /// [`NodeConfig::load_tls`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return invalid("id must be >= 1 (0 is reserved)".into());
        }
        let mut ids = BTreeSet::new();
        for p in &self.peers {
            if p.id == 0 {
                return invalid("peer id 0 is reserved; use ids >= 1".into());
            }
            if p.id == self.id {
                return invalid(format!(
                    "peer id {} is this node's own id; list only the other nodes",
                    p.id
                ));
            }
            if !ids.insert(p.id) {
                return invalid(format!("peer id {} is listed twice", p.id));
            }
            if p.addr == self.listen {
                return invalid(format!(
                    "peer {} has this node's own listen address {}",
                    p.id, p.addr
                ));
            }
        }
        let mut addrs = BTreeSet::new();
        for p in &self.peers {
            if !addrs.insert(p.addr) {
                return invalid(format!("address {} is given to two peers", p.addr));
            }
        }
        for &v in &self.service.kv_voters {
            if v != self.id && !ids.contains(&v) {
                return invalid(format!(
                    "service.kv_voters lists node {v}, which is neither this node nor a peer; \
                     list it in peers or remove it"
                ));
            }
        }
        let r = &self.raft;
        if r.tick_ms == 0 {
            return invalid("raft.tick_ms must be >= 1".into());
        }
        if r.heartbeat_ticks == 0 || r.heartbeat_ticks >= r.election_ticks {
            return invalid(format!(
                "raft.heartbeat_ticks ({}) must be >= 1 and below raft.election_ticks ({})",
                r.heartbeat_ticks, r.election_ticks
            ));
        }
        if r.max_uncommitted == 0 || r.propose_timeout_ms == 0 {
            return invalid("raft.max_uncommitted and raft.propose_timeout_ms must be >= 1".into());
        }
        parse_fsync(&self.storage.fsync)?;
        if self.storage.segment_mb == 0 || self.storage.segment_mb > 2048 {
            return invalid("storage.segment_mb must be between 1 and 2048".into());
        }
        parse_level(&self.log.level)?;
        Ok(())
    }

    /// Loads the TLS files and checks the certificate is this node's.
    pub fn load_tls(&self) -> Result<TlsMaterial, ConfigError> {
        let m = TlsMaterial::from_pem_files(&self.tls.ca, &self.tls.cert, &self.tls.key)
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let name = synod_net::tls::node_name(self.id);
        if !synod_net::tls::cert_is_for(&m.chain[0], &name) {
            return Err(ConfigError::Tls(format!(
                "{} is not a certificate for {name} (this node is {}): each node needs its own",
                self.tls.cert.display(),
                self.id
            )));
        }
        Ok(m)
    }

    /// The engine's group settings.
    pub fn group_config(&self) -> GroupConfig {
        let r = &self.raft;
        GroupConfig {
            tick: Duration::from_millis(r.tick_ms),
            election_ticks: r.election_ticks,
            heartbeat_ticks: r.heartbeat_ticks,
            snapshot_every: r.snapshot_every,
            max_uncommitted: r.max_uncommitted,
            propose_timeout: Duration::from_millis(r.propose_timeout_ms),
            lease_reads: r.lease_reads,
            balance_leaders: r.balance_leaders,
            quiesce: r.quiesce,
            ..GroupConfig::default()
        }
    }

    /// The WAL's options (validated config assumed).
    pub fn wal_options(&self) -> WalOptions {
        WalOptions {
            segment_size: self.storage.segment_mb << 20,
            sync: parse_fsync(&self.storage.fsync).unwrap_or(SyncPolicy::Always),
            ..WalOptions::default()
        }
    }
}

/// Parses `always`, `never` or an interval (`10ms`, `1s`).
pub fn parse_fsync(s: &str) -> Result<SyncPolicy, ConfigError> {
    match s.trim() {
        "always" => Ok(SyncPolicy::Always),
        "never" => Ok(SyncPolicy::Never),
        other => parse_duration(other).map(SyncPolicy::Every).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "storage.fsync {other:?}: use \"always\", \"never\" or an interval like \"10ms\""
            ))
        }),
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        _ => None,
    }
}

/// Parses a log level name.
pub fn parse_level(s: &str) -> Result<slog::Level, ConfigError> {
    match s {
        "critical" => Ok(slog::Level::Critical),
        "error" => Ok(slog::Level::Error),
        "warn" | "warning" => Ok(slog::Level::Warning),
        "info" => Ok(slog::Level::Info),
        "debug" => Ok(slog::Level::Debug),
        "trace" => Ok(slog::Level::Trace),
        other => Err(ConfigError::Invalid(format!(
            "log.level {other:?}: use error, warn, info or debug"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        id = 1
        listen = "127.0.0.1:7001"
        data_dir = "data"
        [[peers]]
        id = 2
        addr = "127.0.0.1:7002"
        [tls]
        ca = "ca.pem"
        cert = "node-1.pem"
        key = "node-1.key"
    "#;

    fn invalid(extra: &str, replace: Option<(&str, &str)>) -> String {
        let mut text = format!("{BASE}\n{extra}");
        if let Some((a, b)) = replace {
            text = text.replace(a, b);
        }
        match NodeConfig::from_toml(&text).and_then(|c| c.validate().map(|_| c)) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = NodeConfig::from_toml(BASE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.raft.election_ticks, 10);
        assert_eq!(c.storage.fsync, "always");
        assert_eq!(c.log.level, "warn");
        assert!(c.raft.balance_leaders && c.group_config().balance_leaders);
    }

    #[test]
    fn quiescence_is_on_by_default_and_can_be_turned_off() {
        let c = NodeConfig::from_toml(BASE).unwrap();
        assert!(c.raft.quiesce && c.group_config().quiesce);
        let c = NodeConfig::from_toml(&format!("{BASE}\n[raft]\nquiesce = false\n")).unwrap();
        c.validate().unwrap();
        assert!(!c.group_config().quiesce);
    }

    #[test]
    fn the_leader_balancer_can_be_turned_off() {
        let c =
            NodeConfig::from_toml(&format!("{BASE}\n[raft]\nbalance_leaders = false\n")).unwrap();
        c.validate().unwrap();
        assert!(!c.group_config().balance_leaders);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(invalid("", Some(("id = 2", "id = 1"))).contains("own id"));
        assert!(
            invalid("[[peers]]\nid = 2\naddr = \"127.0.0.1:7003\"", None).contains("listed twice")
        );
        assert!(
            invalid("", Some(("127.0.0.1:7002", "127.0.0.1:7001"))).contains("own listen address")
        );
        assert!(invalid("[raft]\nheartbeat_ticks = 10", None).contains("heartbeat_ticks"));
        assert!(invalid("[storage]\nfsync = \"sometimes\"", None).contains("storage.fsync"));
        assert!(invalid("[log]\nlevel = \"loud\"", None).contains("log.level"));
        assert!(invalid("", Some(("id = 1\n", "id = 0\n"))).contains("id must be >= 1"));
        let typo = invalid("[raft]\ntik_ms = 5", None);
        assert!(typo.contains("tik_ms"), "{typo}");
    }

    #[test]
    fn fsync_policies_parse() {
        assert_eq!(parse_fsync("always").unwrap(), SyncPolicy::Always);
        assert_eq!(parse_fsync("never").unwrap(), SyncPolicy::Never);
        assert_eq!(
            parse_fsync("10ms").unwrap(),
            SyncPolicy::Every(Duration::from_millis(10))
        );
        assert!(parse_fsync("10").is_err());
    }
}
