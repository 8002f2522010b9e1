//! `SharedState` against real node processes (`synod node`): concurrent
//! optimistic updates add up exactly, compaction keeps old readers right.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use synod::local::{ClusterOptions, LocalCluster};
use synod::shared::{SharedState, SharedStateError, Update};
use synod::{Client, SynodError};

fn options(dir: &Path) -> ClusterOptions {
    let mut o = ClusterOptions::new(dir, env!("CARGO_BIN_EXE_synod").into(), vec!["node".into()]);
    o.kv_groups = 1;
    o.tick_ms = 20;
    o
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Counter(u64);

#[derive(Debug, Serialize, Deserialize)]
struct Add(u64);

impl Update<Counter> for Add {
    fn apply_to(&self, c: &mut Counter) {
        c.0 += self.0;
    }
}

fn counter(client: &Client, name: &str) -> SharedState<Counter, Add> {
    SharedState::with_client(client.clone(), 1, name)
}

/// Whether an error leaves the outcome unknown (the append may be in).
fn unknown(e: &SharedStateError) -> bool {
    matches!(
        e,
        SharedStateError::Synod(
            SynodError::Timeout { .. }
                | SynodError::ConnectionLost { .. }
                | SynodError::Stopped { .. }
        )
    )
}

/// Initializes `c` with `value`, retrying while the cluster elects its
/// first leader (up to 30 s).
async fn initialize(c: &mut SharedState<Counter, Add>, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.initialize(Counter(value)).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("initialize: {e}; again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("initialize: {e}"),
        }
    }
}

#[tokio::test]
async fn concurrent_increments_through_update_state_add_up_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path())).unwrap();
    let client = cluster.client().unwrap();
    let mut first = counter(&client, "hits");
    initialize(&mut first, 0).await;
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    // (acknowledged, unknown outcome, conflicts) over all writers.
    let totals = Rc::new(RefCell::new((0u64, 0u64, 0u64)));
    let local = tokio::task::LocalSet::new();
    for _ in 0..WRITERS {
        let (client, totals) = (client.clone(), Rc::clone(&totals));
        local.spawn_local(async move {
            let mut c = counter(&client, "hits");
            for _ in 0..EACH {
                match c.update_state(|_, updates| updates.push(Add(1))).await {
                    Ok(()) => totals.borrow_mut().0 += 1,
                    Err(e) if unknown(&e) => totals.borrow_mut().1 += 1,
                    Err(e) => panic!("an increment failed: {e}"),
                }
            }
            totals.borrow_mut().2 += c.stats().conflicts;
        });
    }
    local.await;
    let (acked, unknown, conflicts) = *totals.borrow();
    let mut reader = counter(&client, "hits");
    reader.fetch_updates().await.unwrap();
    let value = reader.state().unwrap().0;
    eprintln!(
        "{WRITERS} writers x {EACH}: {acked} acknowledged, {unknown} unknown, {conflicts} \
         conflicts retried, final value {value} at revision {}",
        reader.revision()
    );
    assert!(
        value >= acked && value <= acked + unknown,
        "final {value}, acknowledged {acked}, unknown {unknown}"
    );
    if unknown == 0 {
        assert_eq!(value, (WRITERS * EACH) as u64);
    }
    // Eight writers at once on one stream: some computed against a stale
    // copy, were refused, fetched, and ran their closure again.
    assert!(
        conflicts > 0,
        "no conflict: the retry path was not exercised"
    );
    assert_eq!(reader.revision(), 1 + value);
    client.close().await;
}

#[tokio::test]
async fn local_reads_are_stale_until_a_fetch_and_compaction_keeps_old_readers_right() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path())).unwrap();
    let client = cluster.client().unwrap();
    let mut writer = counter(&client, "total");
    let mut lagging = counter(&client, "total");
    // Before initialization: nothing to update.
    match lagging.update_state(|_, u| u.push(Add(1))).await {
        Err(SharedStateError::NotInitialized { group: 1, .. }) => {}
        other => panic!("expected NotInitialized, got {other:?}"),
    }
    initialize(&mut writer, 100).await;
    // A second initialize does not overwrite; it fetches.
    assert!(!lagging.initialize(Counter(7)).await.unwrap());
    assert_eq!(lagging.state().unwrap().0, 100);
    for _ in 0..3 {
        writer.update_state(|_, u| u.push(Add(1))).await.unwrap();
    }
    // The lagging copy does not see them until it fetches.
    assert_eq!(lagging.state().unwrap().0, 100);
    assert_eq!(lagging.fetch_updates().await.unwrap(), 4);
    assert_eq!(lagging.state().unwrap().0, 103);
    // More updates, then a compaction at the writer's revision.
    for _ in 0..5 {
        writer.update_unconditionally(vec![Add(10)]).await.unwrap();
    }
    let before = writer.bytes_written_since_compaction().await.unwrap();
    writer.compact(Counter::clone).await.unwrap();
    let after = writer.bytes_written_since_compaction().await.unwrap();
    assert!(after < before, "compaction: {before} -> {after} bytes");
    writer.update_state(|_, u| u.push(Add(1000))).await.unwrap();
    // The lagging reader's updates were compacted away: it starts over
    // from the new initial state and lands on the same value.
    lagging.fetch_updates().await.unwrap();
    assert_eq!(lagging.state().unwrap().0, 1153);
    assert_eq!(lagging.revision(), writer.revision());
    let mut fresh = counter(&client, "total");
    fresh.fetch_updates().await.unwrap();
    assert_eq!(fresh.state().unwrap().0, 1153);
    // A conditional update from the stale side (the lagging copy is
    // current now, so make it stale again) is refused, fetched, retried.
    writer.update_state(|_, u| u.push(Add(1))).await.unwrap();
    let seen = lagging
        .update_state(|c, u| {
            u.push(Add(1));
            c.0
        })
        .await
        .unwrap();
    assert_eq!(seen, 1154, "the closure ran again on the fresh copy");
    assert_eq!(lagging.stats().conflicts, 1);
    assert_eq!(lagging.state().unwrap().0, 1155);
    client.close().await;
}

/// `wait_for_updates` wakes on a write to its own stream (through a watch
/// of the group), not on writes to other streams of the group, and returns
/// unchanged when nothing is written in time.
#[tokio::test]
async fn wait_for_updates_wakes_on_a_write_to_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(options(dir.path())).unwrap();
    let client = cluster.client().unwrap();
    let mut reader = counter(&client, "hits");
    initialize(&mut reader, 5).await;
    let mut other = counter(&client, "other");
    initialize(&mut other, 0).await;
    let start = reader.revision();
    // Nothing written: back after the wait, unchanged.
    let t = Instant::now();
    assert_eq!(
        reader
            .wait_for_updates(Duration::from_millis(300))
            .await
            .unwrap(),
        start
    );
    assert!(t.elapsed() >= Duration::from_millis(300));

    let writer_client = client.clone();
    let writer = tokio::spawn(async move {
        let mut other = counter(&writer_client, "other");
        let mut hits = counter(&writer_client, "hits");
        for _ in 0..3 {
            other.update_state(|_, u| u.push(Add(1))).await.unwrap();
        }
        hits.update_state(|_, u| u.push(Add(10))).await.unwrap();
    });
    let mut reached = start;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.state().map(|c| c.0) != Some(15) {
        assert!(Instant::now() < deadline, "the write to hits never showed");
        reached = reader
            .wait_for_updates(Duration::from_secs(20))
            .await
            .unwrap();
    }
    assert_eq!(reached, start + 1);
    writer.await.unwrap();
}
