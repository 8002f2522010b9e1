//! Exponential backoff with jitter, shared by the transport (redialing a
//! peer), the engine (retrying a proposal or read while a group elects)
//! and the client (trying the next node). Built on `backon`: the delay d
//! doubles from `min` up to `max`, and each wait is d/2 plus a random part
//! of up to d/2 ("equal jitter": never longer than without jitter, so
//! failover does not slow down), so that many nodes or clients that failed
//! together do not retry in lockstep. The randomness is seeded when a seed is given (the
//! simulations replay exactly), from the OS otherwise.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays between retries: see the module docs.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    seed: Option<u64>,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// Delays d from `min` doubling up to `max`, each wait in [d/2, d],
    /// seeded by `seed` when given.
    pub fn new(min: Duration, max: Duration, seed: Option<u64>) -> Backoff {
        // backon adds a random part of up to the delay itself: halve it.
        let (min, max) = (min / 2, max / 2);
        Backoff {
            min,
            max,
            seed,
            delays: Self::build(min, max, seed),
        }
    }

    fn build(min: Duration, max: Duration, seed: Option<u64>) -> ExponentialBackoff {
        let b = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        match seed {
            Some(s) => b.with_jitter_seed(s).build(),
            None => b.build(),
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts over from `min` (after a success); the jitter goes on from
    /// where it was, not from the seed again.
    pub fn reset(&mut self) {
        let seed = self.seed.map(|s| s.wrapping_add(0x9E37_79B9_7F4A_7C15));
        self.seed = seed;
        self.delays = Self::build(self.min, self.max, seed);
    }

    /// Sleeps the next delay and says `true`; or, when that sleep would
    /// end past `deadline`, says `false` at once.
    pub async fn wait(&mut self, deadline: tokio::time::Instant) -> bool {
        let delay = self.next_delay();
        if tokio::time::Instant::now() + delay > deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delays grow from `min` to `max`, each within [d/2, d]; the same seed
    /// gives the same delays; different seeds (almost surely) do not.
    #[test]
    fn delays_grow_with_jitter_and_replay_by_seed() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(80));
        let delays = |seed| {
            let mut b = Backoff::new(min, max, Some(seed));
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = delays(7);
        assert_eq!(a, delays(7));
        assert_ne!(a, delays(8));
        let mut base = min;
        for d in &a {
            assert!(
                *d >= base / 2 && *d <= base,
                "{d:?} outside [{base:?}/2, {base:?}]"
            );
            base = (base * 2).min(max);
        }
        assert!(a.iter().skip(4).all(|d| *d >= max / 2));
        let mut b = Backoff::new(min, max, Some(7));
        b.next_delay();
        b.next_delay();
        b.reset();
        assert!(b.next_delay() <= min);
    }
}
