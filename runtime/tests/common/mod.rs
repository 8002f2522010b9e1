//! Helpers of the multi-process tests.

use std::time::{Duration, Instant};

/// Retries `f` until it succeeds or `secs` pass (then panics saying
/// `what`, with the last error).
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{what}: still failing after {secs} s: {e}"),
        }
    }
}
