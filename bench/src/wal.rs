//! WAL workloads: concurrent group-committed appends, the disk's raw
//! fdatasync latency for comparison, and recovery of a large log.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use synod_core::{Entry, EntryKind};
use synod_storage::{LogStore, SharedWal, SyncPolicy, Wal, WalOptions, WriteBatch};

/// Options of the `wal` workload.
#[derive(clap::Args, Debug)]
pub struct WalArgs {
    /// Groups appending at once; each has its own appender thread that
    /// appends one entry and waits for it to be durable (closed loop).
    #[arg(long, default_value_t = 100)]
    pub groups: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Entries per append (per group per round trip).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Directory for the log (default: a fresh directory under the current
    /// one, removed afterwards; /tmp may be a RAM disk).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Segment size in MiB.
    #[arg(long, default_value_t = 64)]
    pub segment_mb: u64,
    /// Skip fdatasync (measures everything but the disk).
    #[arg(long)]
    pub no_sync: bool,
}

/// Options of the `fsync` workload.
#[derive(clap::Args, Debug)]
pub struct FsyncArgs {
    /// Seconds to run each variant.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Bytes written before each fdatasync.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Directory to write in (default: under the current one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Options of the `wal-recovery` workload.
#[derive(clap::Args, Debug)]
pub struct RecoveryArgs {
    /// Size of the log to build, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
    /// Groups the entries are spread over.
    #[arg(long, default_value_t = 100)]
    pub groups: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Directory for the log (default: under the current one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Drop the OS page cache before reopening (needs root), to measure a
    /// cold start.
    #[arg(long)]
    pub drop_caches: bool,
}

/// A scratch directory on the real disk (not /tmp, which may be tmpfs).
fn scratch(dir: &Option<PathBuf>) -> Result<(tempfile::TempDir, PathBuf), String> {
    let base = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let t = tempfile::Builder::new()
        .prefix("synod-bench-")
        .tempdir_in(&base)
        .map_err(|e| format!("{}: {e}", base.display()))?;
    let p = t.path().to_path_buf();
    Ok((t, p))
}

fn payload(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![0xAB; size])
}

fn micros(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
}

/// Runs the `wal` workload and prints its one-line summary.
pub fn run_wal(a: &WalArgs) -> Result<(), String> {
    if a.groups == 0 || a.batch == 0 {
        return Err("--groups and --batch must be at least 1".into());
    }
    let (_tmp, dir) = scratch(&a.dir)?;
    let opts = WalOptions {
        segment_size: a.segment_mb << 20,
        sync: if a.no_sync {
            SyncPolicy::Never
        } else {
            SyncPolicy::Always
        },
        ..WalOptions::default()
    };
    let wal = Wal::open(&dir, opts).map_err(|e| e.to_string())?;
    let shared = Arc::new(SharedWal::new(wal));
    let stop = Arc::new(AtomicBool::new(false));
    let data = payload(a.size);
    let start = Instant::now();
    let threads: Vec<_> = (1..=a.groups)
        .map(|group| {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            let data = data.clone();
            let batch = a.batch;
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || -> Result<(Histogram<u64>, u64), String> {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .map_err(|e| e.to_string())?;
                    let mut next = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        let entries = (0..batch as u64)
                            .map(|k| Entry {
                                term: 1,
                                index: next + k,
                                kind: EntryKind::Normal(data.clone()),
                            })
                            .collect();
                        let mut b = WriteBatch::new();
                        b.append(group, entries);
                        let t = Instant::now();
                        shared.write(b).map_err(|e| e.to_string())?;
                        hist.saturating_record(t.elapsed().as_micros() as u64);
                        next += batch as u64;
                    }
                    Ok((hist, next - 1))
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut entries = 0u64;
    for t in threads {
        let (h, n) = t.join().map_err(|_| "an appender panicked".to_string())??;
        hist.add(&h).map_err(|e| e.to_string())?;
        entries += n;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = shared.with(|w| w.stats()).map_err(|e| e.to_string())?;
    let mb = stats.bytes_written as f64 / (1 << 20) as f64;
    println!(
        "groups: {}, entry_bytes: {}, batches: {}, records: {}, fsyncs: {}, seconds: {:.1}",
        a.groups, a.size, stats.batches, stats.records, stats.fsyncs, elapsed
    );
    println!(
        "entries/s: {:.0}, MB/s: {:.1}, fsyncs/entry: {:.4}, p50_us: {}, p99_us: {}",
        entries as f64 / elapsed,
        mb / elapsed,
        stats.fsyncs as f64 / entries.max(1) as f64,
        micros(&hist, 0.50),
        micros(&hist, 0.99),
    );
    Ok(())
}

/// Measures the disk's raw write + fdatasync latency, two ways: appending
/// to a growing file, and overwriting a pre-zeroed one (what the WAL does).
pub fn run_fsync(a: &FsyncArgs) -> Result<(), String> {
    let (_tmp, dir) = scratch(&a.dir)?;
    let block = vec![0x5Au8; a.size];
    for (name, prealloc) in [("append", false), ("overwrite-preallocated", true)] {
        let path = dir.join(format!("{name}.dat"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let cap = 256u64 << 20;
        if prealloc {
            let zeros = vec![0u8; 1 << 20];
            for k in 0..(cap >> 20) {
                f.write_all_at(&zeros, k << 20).map_err(|e| e.to_string())?;
            }
            f.sync_all().map_err(|e| e.to_string())?;
        }
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(a.seconds);
        let mut off = 0u64;
        while Instant::now() < deadline {
            let t = Instant::now();
            f.write_all_at(&block, off).map_err(|e| e.to_string())?;
            f.sync_data().map_err(|e| e.to_string())?;
            hist.saturating_record(t.elapsed().as_micros() as u64);
            off = (off + a.size as u64) % (cap - a.size as u64);
        }
        println!(
            "fsync {name}: {} bytes + fdatasync, n: {}, p50_us: {}, p99_us: {}, max_us: {}",
            a.size,
            hist.len(),
            micros(&hist, 0.50),
            micros(&hist, 0.99),
            hist.max()
        );
    }
    Ok(())
}

fn drop_page_cache() -> Result<(), String> {
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("cannot drop the page cache (run as root?): {e}"))
}

/// Builds a log of `size_mb` and measures how long opening it takes.
pub fn run_recovery(a: &RecoveryArgs) -> Result<(), String> {
    let (_tmp, dir) = scratch(&a.dir)?;
    let target = a.size_mb << 20;
    let data = payload(a.size);
    let t = Instant::now();
    let mut entries = 0u64;
    {
        let opts = WalOptions {
            sync: SyncPolicy::Never,
            ..WalOptions::default()
        };
        let mut wal = Wal::open(&dir, opts).map_err(|e| e.to_string())?;
        let mut next = vec![1u64; a.groups as usize + 1];
        while wal.stats().bytes_written < target {
            let mut b = WriteBatch::new();
            for g in 1..=a.groups {
                let i = next[g as usize];
                b.append(
                    g,
                    (i..i + 16)
                        .map(|index| Entry {
                            term: 1,
                            index,
                            kind: EntryKind::Normal(data.clone()),
                        })
                        .collect(),
                );
                next[g as usize] += 16;
                entries += 16;
            }
            wal.append(&b).map_err(|e| e.to_string())?;
            wal.sync().map_err(|e| e.to_string())?;
        }
        let opts_sync = wal.stats();
        println!(
            "built: {} entries, {:.0} MiB in {} segments, {:.1} s",
            entries,
            opts_sync.bytes_written as f64 / (1 << 20) as f64,
            wal.segment_count(),
            t.elapsed().as_secs_f64()
        );
    }
    sync_all(&dir)?;
    if a.drop_caches {
        drop_page_cache()?;
    }
    let t = Instant::now();
    let wal = Wal::open(&dir, WalOptions::default()).map_err(|e| e.to_string())?;
    let open = t.elapsed().as_secs_f64();
    let recovered: u64 = wal
        .groups()
        .iter()
        .filter_map(|g| wal.group(*g))
        .map(|s| s.len())
        .sum();
    if recovered != entries {
        return Err(format!("recovered {recovered} entries of {entries}"));
    }
    println!(
        "recovery: {} entries, {} groups, {:.0} MiB, cold_cache: {}, seconds: {:.2}, MB/s: {:.0}",
        recovered,
        wal.groups().len(),
        target as f64 / (1 << 20) as f64,
        a.drop_caches,
        open,
        target as f64 / (1 << 20) as f64 / open
    );
    Ok(())
}

fn sync_all(dir: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_file() {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(())
}
