//! slog setup: structured, leveled records to stderr, asynchronously.

use slog::{o, Drain, Level, Logger};

/// A logger writing records at `level` and above to stderr. Keep the guard
/// alive as long as the logger is used: dropping it flushes the queue.
pub fn stderr_logger(level: Level, node: u64) -> (Logger, slog_async::AsyncGuard) {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = drain.filter_level(level).fuse();
    // Blocking overflow: a slow terminal slows the node down instead of
    // silently dropping records (slog-async's default drops, STACK.md #11).
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .build_with_guard();
    (Logger::root(drain.fuse(), o!("node" => node)), guard)
}

/// A logger that discards everything.
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}
