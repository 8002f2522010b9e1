//! Linearizable reads (thesis §6.4): a read returns a state that includes
//! every write acknowledged before the read started. With ReadIndex the
//! read is served at the state machine once it applied up to the read
//! index, and state machine safety makes every replica's entry at an index
//! the same; so the read is linearizable iff its read index is at least
//! the index of every write acknowledged before it began.

use std::collections::BTreeMap;

use synod_core::Index;

use super::Violation;

/// Name of the invariant.
pub const NAME: &str = "linearizable reads (§6.4)";

/// Reads in flight and the bound each must meet.
#[derive(Debug, Default)]
pub struct LinearizableReads {
    /// Highest log index of a write acknowledged so far.
    acked_index: Index,
    /// Per read (an opaque key chosen by the simulator): the acknowledged
    /// index its answer must reach.
    pending: BTreeMap<(usize, u64, u64), Index>,
    checked: u64,
}

impl LinearizableReads {
    /// A write at `index` was acknowledged to its client.
    pub fn observe_ack(&mut self, index: Index) {
        self.acked_index = self.acked_index.max(index);
    }

    /// A read `key` starts now.
    pub fn start(&mut self, key: (usize, u64, u64)) {
        self.pending.insert(key, self.acked_index);
    }

    /// Read `key` was answered with `index` (by `node`, for the report).
    pub fn answer(
        &mut self,
        key: (usize, u64, u64),
        node: u64,
        index: Index,
    ) -> Result<(), Violation> {
        let Some(must) = self.pending.remove(&key) else {
            return Ok(());
        };
        self.checked += 1;
        if index < must {
            return Err(Violation::new(
                NAME,
                format!(
                    "node {node} answered read {} with read index {index}, but a write at \
                     index {must} was acknowledged before the read started",
                    key.2
                ),
            ));
        }
        Ok(())
    }

    /// Read `key` will never be answered (refused, or its node crashed).
    pub fn forget(&mut self, key: (usize, u64, u64)) {
        self.pending.remove(&key);
    }

    /// Reads answered and checked.
    pub fn checked(&self) -> u64 {
        self.checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_index_below_an_earlier_acknowledged_write_fires() {
        let mut c = LinearizableReads::default();
        c.observe_ack(7);
        c.start((0, 0, 1));
        let v = c.answer((0, 0, 1), 1, 6).unwrap_err();
        assert_eq!(v.invariant, NAME);
        assert_eq!(c.checked(), 1);
    }

    #[test]
    fn writes_acknowledged_after_the_read_started_do_not_bind_it() {
        let mut c = LinearizableReads::default();
        c.observe_ack(3);
        c.start((1, 0, 2));
        c.observe_ack(9);
        assert_eq!(c.answer((1, 0, 2), 2, 3), Ok(()));
        // Unknown or forgotten reads are not checked.
        c.start((1, 0, 3));
        c.forget((1, 0, 3));
        assert_eq!(c.answer((1, 0, 3), 2, 0), Ok(()));
        assert_eq!(c.checked(), 1);
    }
}
