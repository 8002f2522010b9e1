//! The group catalog: which groups this node hosts, with the configuration
//! each started from, and which it was removed from. One small text file,
//! `GROUPS`, in the data directory. A change appends one line and syncs it
//! (a later line about a group supersedes an earlier one), so creating
//! ten thousand groups costs ten thousand small appends, not ten thousand
//! rewrites of a growing file; every boot rewrites it compacted, durably
//! (temporary file, fsync, rename, fsync of the directory). A last line
//! without its newline is a torn append that was never acknowledged, and
//! is ignored:
//!
//! ```text
//! # synod group catalog: one line per group
//! group 1 hosted voters 1,2,3 learners -
//! group 2 hosted voters - learners -
//! group 3 removed
//! group 4 hosted voters 1,2,3 learners -
//! group 4 service
//! ```
//!
//! * `hosted` with voters: the group was created here with that bootstrap
//!   configuration (what it is before its log says otherwise). A node that
//!   is not among a new group's voters neither stores nor ticks it.
//! * `hosted` with no voters: a replica that joined a running group (made
//!   a learner); it learns the configuration from the leader's log or
//!   snapshot and never campaigns before it is promoted.
//! * a line `joining` (written by `synod init --join`): this node joined
//!   a running cluster, so it starts no group from a bootstrap
//!   configuration; it hosts a group only once added to it as a learner.
//! * `forced at I term T voters ...`: an operator forced this
//!   configuration on this replica (unsafe recovery) when its log ended at
//!   index I in term T; given back to the core at every start until the
//!   core retires it (a configuration written after it is committed), and
//!   then removed.
//! * `service`: the group was created at run time (or joined) as a group
//!   of the node's service, the actor type the application registered for
//!   run-time groups (`Node::serve_groups_of`); the node itself starts it
//!   again at the next boot, once the service is registered. Groups
//!   without it are started by the application's `spawn` at boot.
//! * `group G unforced` (journal only): the override of `forced` was
//!   retired.
//! * `removed`: the group removed this node; its log and snapshots were
//!   deleted (or are deleted at the next boot if the node stopped in
//!   between), and the application's `spawn` at boot does not bring it
//!   back. Adding the node again (as a learner) clears the mark.
//!
//! The catalog is read at boot and before a group starts, so the bootstrap
//! configuration never depends on what the application passes at a later
//! boot (its configuration file may list more nodes after a grow).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use synod_core::{ForcedVoters, Membership, NodeId};
use synod_storage::GroupId;

use crate::identity::IdentityError;

/// The catalog's file name in the data directory.
pub const FILE: &str = "GROUPS";

/// What the catalog says about one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Hosted here, started from this configuration (empty: a replica that
    /// joined a running group and learns its configuration from the
    /// leader).
    Hosted(Membership),
    /// Removed from this node; not to be started again unless re-added.
    Removed,
}

/// The catalog of one data directory.
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    joining: bool,
    records: BTreeMap<GroupId, Record>,
    forced: BTreeMap<GroupId, ForcedVoters>,
    service: BTreeSet<GroupId>,
}

impl Catalog {
    /// Reads the catalog of `dir` (empty if there is none yet).
    pub fn open(dir: &Path) -> Result<Catalog, IdentityError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        // An append torn by a crash was never acknowledged: drop it.
        let whole = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        let (joining, records, forced, service) =
            parse(whole).map_err(|reason| IdentityError::Damaged {
                path: path.clone(),
                reason,
            })?;
        let c = Catalog {
            dir: dir.to_path_buf(),
            joining,
            records,
            forced,
            service,
        };
        if !text.is_empty() && text != render(c.joining, &c.records, &c.forced, &c.service) {
            // Compact the journal once per boot.
            c.write()?;
        }
        Ok(c)
    }

    /// Appends `line` durably; a catalog not on disk yet is written whole
    /// (a new file needs its directory synced too).
    fn append(&self, line: &str) -> Result<(), IdentityError> {
        use std::io::Write as _;
        let path = self.dir.join(FILE);
        if !path.exists() {
            return self.write();
        }
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// Marks the (new) data directory `dir` as a node's that joins a
    /// running cluster: no group starts here from a bootstrap
    /// configuration.
    pub fn init_joining(dir: &Path) -> Result<(), IdentityError> {
        let mut c = Catalog::open(dir)?;
        c.joining = true;
        c.write()
    }

    /// Whether this node joined a running cluster (see
    /// [`Catalog::init_joining`]).
    pub fn joining(&self) -> bool {
        self.joining
    }

    /// The configuration forced on `group` here (see
    /// [`Catalog::set_forced`]).
    pub fn forced(&self, group: GroupId) -> Option<&ForcedVoters> {
        self.forced.get(&group)
    }

    /// Records durably the override forced on `group` (unsafe recovery),
    /// or (`None`) that the core retired it.
    pub fn set_forced(
        &mut self,
        group: GroupId,
        forced: Option<ForcedVoters>,
    ) -> Result<(), IdentityError> {
        if self.forced.get(&group) == forced.as_ref() {
            return Ok(());
        }
        let line = match &forced {
            Some(f) => forced_line(group, f),
            None => format!("group {group} unforced\n"),
        };
        let before = match forced {
            Some(f) => self.forced.insert(group, f),
            None => self.forced.remove(&group),
        };
        if let Err(e) = self.append(&line) {
            match before {
                Some(f) => self.forced.insert(group, f),
                None => self.forced.remove(&group),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Whether `group` is a group of the node's service (created at run
    /// time, started by the node itself at boot).
    pub fn is_service(&self, group: GroupId) -> bool {
        self.service.contains(&group)
    }

    /// Records durably that `group` is a group of the node's service (a
    /// no-op if it is already so). Kept once the group is removed, so the
    /// node finishes an interrupted deletion itself.
    pub fn mark_service(&mut self, group: GroupId) -> Result<(), IdentityError> {
        if !self.service.insert(group) {
            return Ok(());
        }
        if let Err(e) = self.append(&format!("group {group} service\n")) {
            self.service.remove(&group);
            return Err(e);
        }
        Ok(())
    }

    fn write(&self) -> Result<(), IdentityError> {
        let text = render(self.joining, &self.records, &self.forced, &self.service);
        crate::identity::write_durably(&self.dir, &self.dir.join(FILE), text.as_bytes())
    }

    /// What is recorded for `group`.
    pub fn get(&self, group: GroupId) -> Option<&Record> {
        self.records.get(&group)
    }

    /// Every record, by group.
    pub fn records(&self) -> &BTreeMap<GroupId, Record> {
        &self.records
    }

    /// Records `record` for `group` durably (a no-op if it is already so).
    pub fn set(&mut self, group: GroupId, record: Record) -> Result<(), IdentityError> {
        if self.records.get(&group) == Some(&record) {
            return Ok(());
        }
        let line = record_line(group, &record);
        let before = self.records.insert(group, record);
        if let Err(e) = self.append(&line) {
            // Memory keeps saying what the disk says.
            match before {
                Some(r) => self.records.insert(group, r),
                None => self.records.remove(&group),
            };
            return Err(e);
        }
        Ok(())
    }
}

fn ids(set: &std::collections::BTreeSet<NodeId>) -> String {
    if set.is_empty() {
        return "-".into();
    }
    set.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn render(
    joining: bool,
    records: &BTreeMap<GroupId, Record>,
    forced: &BTreeMap<GroupId, ForcedVoters>,
    service: &BTreeSet<GroupId>,
) -> String {
    let mut out = String::from("# synod group catalog: one line per group\n");
    if joining {
        out.push_str("joining\n");
    }
    for (&group, r) in records {
        out.push_str(&record_line(group, r));
    }
    for (&group, f) in forced {
        out.push_str(&forced_line(group, f));
    }
    for group in service {
        let _ = writeln!(out, "group {group} service");
    }
    out
}

fn record_line(group: GroupId, r: &Record) -> String {
    match r {
        Record::Hosted(m) => format!(
            "group {group} hosted voters {} learners {}\n",
            ids(&m.voters),
            ids(&m.learners)
        ),
        Record::Removed => format!("group {group} removed\n"),
    }
}

fn forced_line(group: GroupId, f: &ForcedVoters) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "group {group} forced at {} term {} voters {} learners {}",
        f.at,
        f.term,
        ids(&f.membership.voters),
        ids(&f.membership.learners)
    );
    out
}

fn parse_ids(s: &str, line: usize) -> Result<std::collections::BTreeSet<NodeId>, String> {
    if s == "-" {
        return Ok(Default::default());
    }
    s.split(',')
        .map(|id| {
            id.parse::<NodeId>()
                .map_err(|_| format!("line {line}: `{id}` is not a node id"))
        })
        .collect()
}

type Parsed = (
    bool,
    BTreeMap<GroupId, Record>,
    BTreeMap<GroupId, ForcedVoters>,
    BTreeSet<GroupId>,
);

fn parse(text: &str) -> Result<Parsed, String> {
    let mut out = BTreeMap::new();
    let mut forced = BTreeMap::new();
    let mut joining = false;
    let mut service = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "joining" {
            joining = true;
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["group", g, "forced", "at", at, "term", t, "voters", v, "learners", l] =
            words.as_slice()
        {
            let number = |w: &str| {
                w.parse::<u64>()
                    .map_err(|_| format!("line {}: `{w}` is not a number", n + 1))
            };
            let f = ForcedVoters {
                at: number(at)?,
                term: number(t)?,
                membership: Membership {
                    voters: parse_ids(v, n + 1)?,
                    learners: parse_ids(l, n + 1)?,
                },
            };
            forced.insert(number(g)?, f);
            continue;
        }
        if let ["group", g, "unforced"] = words.as_slice() {
            let g = g
                .parse::<GroupId>()
                .map_err(|_| format!("line {}: `{g}` is not a group id", n + 1))?;
            forced.remove(&g);
            continue;
        }
        if let ["group", g, "service"] = words.as_slice() {
            let g = g
                .parse::<GroupId>()
                .map_err(|_| format!("line {}: `{g}` is not a group id", n + 1))?;
            service.insert(g);
            continue;
        }
        let (group, record) = match words.as_slice() {
            ["group", g, "removed"] => (*g, Record::Removed),
            ["group", g, "hosted", "voters", v, "learners", l] => (
                *g,
                Record::Hosted(Membership {
                    voters: parse_ids(v, n + 1)?,
                    learners: parse_ids(l, n + 1)?,
                }),
            ),
            _ => return Err(format!("line {}: cannot read `{line}`", n + 1)),
        };
        let group = group
            .parse::<GroupId>()
            .map_err(|_| format!("line {}: `{group}` is not a group id", n + 1))?;
        out.insert(group, record);
    }
    Ok((joining, out, forced, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        assert!(c.records().is_empty());
        c.set(
            1,
            Record::Hosted(Membership {
                voters: [1, 2, 3].into(),
                learners: [4].into(),
            }),
        )
        .unwrap();
        c.set(2, Record::Hosted(Membership::default())).unwrap();
        c.set(3, Record::Removed).unwrap();
        let f = ForcedVoters {
            at: 77,
            term: 5,
            membership: Membership::with_voters([1]),
        };
        c.set_forced(1, Some(f.clone())).unwrap();
        c.mark_service(2).unwrap();
        let again = Catalog::open(dir.path()).unwrap();
        assert!(!again.joining());
        assert_eq!(again.records(), c.records());
        Catalog::init_joining(dir.path()).unwrap();
        let joined = Catalog::open(dir.path()).unwrap();
        assert!(joined.joining());
        assert_eq!(joined.records(), c.records());
        assert_eq!(again.get(3), Some(&Record::Removed));
        assert_eq!(again.forced(1), Some(&f));
        assert!(again.is_service(2) && !again.is_service(1));
        c.set_forced(1, None).unwrap();
        assert_eq!(Catalog::open(dir.path()).unwrap().forced(1), None);
        assert_eq!(again.get(2), Some(&Record::Hosted(Membership::default())));
    }

    #[test]
    fn changes_are_appended_then_compacted_and_a_torn_append_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut c = Catalog::open(dir.path()).unwrap();
        for g in 1..=100 {
            c.set(g, Record::Hosted(Membership::with_voters([1, 2, 3])))
                .unwrap();
        }
        c.set(7, Record::Removed).unwrap();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        // One line per change: appended, not rewritten.
        assert_eq!(lines, 1 + 100 + 1);
        // A crash in the middle of an append leaves a line without its end.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("group 8 rem");
        std::fs::write(&path, text).unwrap();
        let again = Catalog::open(dir.path()).unwrap();
        assert_eq!(again.records(), c.records());
        assert_eq!(again.get(7), Some(&Record::Removed), "the later line wins");
        // The boot compacted the journal: one line per group.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1 + 100);
        assert!(!text.contains("group 8 rem"), "{text}");
    }

    #[test]
    fn a_damaged_catalog_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            "group 1 hosted voters 1,x learners -\n",
        )
        .unwrap();
        let e = Catalog::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a node id"), "{e}");
        std::fs::write(dir.path().join(FILE), "group one removed\n").unwrap();
        assert!(Catalog::open(dir.path()).is_err());
    }
}
