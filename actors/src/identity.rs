//! A node's identity on disk, and whether it lost its durable state.
//!
//! Raft assumes a replica's term, vote and log survive; a node restarted on
//! an empty data directory (a wiped or replaced disk) breaks that silently:
//! it could vote a second time in a term it already voted in. Two files in
//! the data directory make the loss visible:
//!
//! ```text
//!  data_dir/IDENTITY    "node = 3\nincarnation = 9b1c...\n": whose directory this is
//!  data_dir/REJOINING   present from a boot on an empty directory until every
//!                       group caught up from a leader
//! ```
//!
//! A directory without a log or snapshots is empty: the node may be new or
//! may have lost its disk; it cannot tell, so it boots *rejoining*: each
//! group restricts its votes (see `synod_core::Config::rejoining`) until
//! its log holds what a leader first told it was committed. That holds too
//! when `IDENTITY` survived but the log did not (a replaced WAL volume). A
//! new cluster still elects its first leaders (candidates with empty logs
//! get the votes), but a new node that never caught up cannot help elect
//! a leader with a log: an operator vouches for a new node with
//! [`Identity::init_new`] (`synod init`), which leaves a `NEW` marker that
//! the first start consumes. The `REJOINING` marker survives a crash
//! before the catch-up, so a second boot is just as careful.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use synod_core::NodeId;

/// Name of the identity file.
pub const IDENTITY_FILE: &str = "IDENTITY";
/// Name of the marker of a node that has not caught up since it booted on
/// an empty directory.
pub const REJOINING_FILE: &str = "REJOINING";
/// Name of the marker an operator leaves with [`Identity::init_new`]: this
/// directory belongs to a new node, which has never voted or acknowledged
/// anything; removed once the node's log exists.
pub const NEW_FILE: &str = "NEW";

/// What the data directory says about this node.
#[derive(Debug)]
pub struct Identity {
    dir: PathBuf,
    /// The node id the directory belongs to.
    pub node_id: NodeId,
    /// A random number written when the directory was first used: a new one
    /// means the node lost its previous state.
    pub incarnation: u64,
    /// Whether the node booted on an empty directory (now or in an earlier
    /// boot) and has not caught up in every group since.
    pub rejoining: bool,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory belongs to another node.
    #[error(
        "the data directory {dir} belongs to node {found}, not node {expected}: point each node \
         at its own directory"
    )]
    WrongNode {
        /// The directory.
        dir: PathBuf,
        /// The id this node was started with.
        expected: NodeId,
        /// The id in the directory's IDENTITY file.
        found: NodeId,
    },
    /// The identity file is damaged.
    #[error(
        "the identity file {path} is damaged ({reason}); restore it or move the directory away"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `synod init` on a directory that already holds a node's state.
    #[error(
        "the data directory {dir} already holds a node's state: `init` is only for a new node \
         (to rejoin after losing a disk, just start the node on an empty directory)"
    )]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// An I/O error.
    #[error("cannot use the data directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Identity {
    /// Reads (or, on a first boot, writes) the identity of `dir` for node
    /// `node_id`. `has_state` says whether the directory already holds a
    /// log or snapshots (a directory from before identity files existed).
    pub fn open(dir: &Path, node_id: NodeId, has_state: bool) -> Result<Identity, IdentityError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(IDENTITY_FILE);
        let marker = dir.join(REJOINING_FILE);
        if path.exists() {
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            let (found, incarnation) = parse(&text).map_err(|reason| IdentityError::Damaged {
                path: path.clone(),
                reason,
            })?;
            if found != node_id {
                return Err(IdentityError::WrongNode {
                    dir: dir.to_path_buf(),
                    expected: node_id,
                    found,
                });
            }
            let vouched_new = dir.join(NEW_FILE).exists();
            if !has_state && !vouched_new && !marker.exists() {
                // The identity survived, the log did not: lost state.
                write_durably(dir, &marker, b"the log was gone at boot\n")?;
            }
            return Ok(Identity {
                dir: dir.to_path_buf(),
                node_id,
                incarnation,
                rejoining: !vouched_new && marker.exists(),
            });
        }
        // No identity yet. A directory with state predates identity files:
        // adopt it. An empty one may be a new node or a lost disk: mark it
        // rejoining *before* the identity exists, so a crash in between
        // cannot leave an identity without the marker.
        let rejoining = !has_state;
        if rejoining {
            write_durably(dir, &marker, b"booted on an empty data directory\n")?;
        }
        let incarnation = boot_random(node_id);
        let text = format!("node = {node_id}\nincarnation = {incarnation:016x}\n");
        write_durably(dir, &path, text.as_bytes())?;
        Ok(Identity {
            dir: dir.to_path_buf(),
            node_id,
            incarnation,
            rejoining,
        })
    }

    /// Writes the identity of a NEW node into `dir` (an operator's word that
    /// it never voted or acknowledged anything: a new cluster, or a node
    /// added to one), so that its first start does not restrict its votes.
    /// Refuses a directory that already holds state.
    pub fn init_new(dir: &Path, node_id: NodeId) -> Result<(), IdentityError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(IDENTITY_FILE);
        let has_state =
            path.exists() || ["wal", "snapshots"].iter().any(|d| has_files(&dir.join(d)));
        if has_state {
            return Err(IdentityError::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        write_durably(dir, &dir.join(NEW_FILE), b"initialized as a new node\n")?;
        let incarnation = boot_random(node_id);
        let text = format!("node = {node_id}\nincarnation = {incarnation:016x}\n");
        write_durably(dir, &path, text.as_bytes())
    }

    /// The node started on a directory vouched new and its log now exists:
    /// drop the `NEW` marker (a later boot without a log is a lost disk).
    pub fn started(&self) -> Result<(), IdentityError> {
        let new = self.dir.join(NEW_FILE);
        if new.exists() {
            fs::remove_file(&new).map_err(io(&new))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Every group caught up: remove the marker, so the next boot is a
    /// normal one.
    pub fn caught_up(&mut self) -> Result<(), IdentityError> {
        let marker = self.dir.join(REJOINING_FILE);
        if marker.exists() {
            fs::remove_file(&marker).map_err(io(&marker))?;
            sync_dir(&self.dir)?;
        }
        self.rejoining = false;
        Ok(())
    }
}

/// Whether `dir` exists and holds anything (a log, snapshots).
pub fn has_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn parse(text: &str) -> Result<(NodeId, u64), String> {
    let mut node = None;
    let mut incarnation = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "node" => node = value.trim().parse::<NodeId>().ok(),
            "incarnation" => incarnation = u64::from_str_radix(value.trim(), 16).ok(),
            _ => {}
        }
    }
    match (node, incarnation) {
        (Some(n), Some(i)) => Ok((n, i)),
        _ => Err("expected the lines `node = <id>` and `incarnation = <hex>`".into()),
    }
}

/// Writes `path` through a temporary file, fsyncs it, renames it into
/// place and fsyncs the directory.
pub(crate) fn write_durably(dir: &Path, path: &Path, data: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// A number that differs per `salt` (a node id), process and moment: an
/// incarnation, or the seed of a boot's election timers.
pub fn boot_random(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_boots_rejoining_until_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut id = Identity::open(dir.path(), 3, false).unwrap();
        assert!(id.rejoining);
        // A crash before the catch-up: the next boot is still careful.
        let again = Identity::open(dir.path(), 3, false).unwrap();
        assert!(again.rejoining);
        assert_eq!(again.incarnation, id.incarnation);
        id.caught_up().unwrap();
        assert!(!Identity::open(dir.path(), 3, true).unwrap().rejoining);
    }

    #[test]
    fn a_vouched_new_node_starts_unrestricted_once_then_a_lost_log_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        Identity::init_new(dir.path(), 4).unwrap();
        let e = Identity::init_new(dir.path(), 4).unwrap_err();
        assert!(matches!(e, IdentityError::NotEmpty { .. }), "{e}");
        let id = Identity::open(dir.path(), 4, false).unwrap();
        assert!(!id.rejoining);
        id.started().unwrap();
        // The identity survives but the log is gone: lost state.
        let again = Identity::open(dir.path(), 4, false).unwrap();
        assert!(again.rejoining);
        assert!(dir.path().join(REJOINING_FILE).exists());
    }

    #[test]
    fn a_directory_with_state_from_before_identities_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Identity::open(dir.path(), 1, true).unwrap().rejoining);
    }

    #[test]
    fn another_nodes_directory_is_refused_and_a_damaged_identity_reported() {
        let dir = tempfile::tempdir().unwrap();
        Identity::open(dir.path(), 1, false).unwrap();
        let e = Identity::open(dir.path(), 2, false).unwrap_err();
        assert!(
            matches!(
                e,
                IdentityError::WrongNode {
                    expected: 2,
                    found: 1,
                    ..
                }
            ),
            "{e}"
        );
        fs::write(dir.path().join(IDENTITY_FILE), "garbage").unwrap();
        let e = Identity::open(dir.path(), 1, false).unwrap_err();
        assert!(matches!(e, IdentityError::Damaged { .. }), "{e}");
    }
}
