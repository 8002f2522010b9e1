//! Support for the tests that put the decoders facing the network and the
//! disk (frames, WAL segments, snapshot files, the TOML config) under
//! mutation. Hidden from the docs: it exists for this workspace's tests,
//! and lives here because synod-storage is the lowest crate whose tests
//! need it (synod-actors and synod use it as an ordinary dependency, so
//! nothing is duplicated).
//!
//! ```text
//!  valid encodings ──► Mutator (seeded) ──► damaged input ──► check(decode)
//!                                                              │ catch_unwind: a panic names the seed
//!                                                              │ PeakAlloc: largest single allocation
//!                                                              ▼
//!                                                  Tally (cases, Ok, Err, peak)
//! ```
//!
//! A test binary installs [`PeakAlloc`] as its global allocator; [`check`]
//! then measures the largest single allocation the decoder made on the
//! test's thread, so a length field claiming 4 GiB that is believed shows
//! up as a failure (and one above [`REFUSE_ABOVE`] is refused outright
//! instead of exhausting the machine).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};

use synod_core::rng::SplitMix64;

/// Allocations larger than this are refused: a fallible caller
/// (`try_reserve`) gets an error, an infallible one aborts the process with
/// "memory allocation failed" right after [`PeakAlloc`] printed the seed of
/// the case that asked. No decoder of ours may ever need 1 GiB.
pub const REFUSE_ABOVE: usize = 1 << 30;

/// The environment variable that sets the number of random cases of the
/// long (`#[ignore]`d) runs.
pub const CASES_VAR: &str = "SYNOD_FUZZ_CASES";

thread_local! {
    /// Largest single allocation on this thread since the last reset.
    static PEAK: Cell<usize> = const { Cell::new(0) };
    /// Seed of the case running on this thread (for the refusal message).
    static SEED: Cell<u64> = const { Cell::new(0) };
}

/// Records a request for `size` bytes; false if it must be refused.
fn note(size: usize) -> bool {
    if size > REFUSE_ABOVE {
        // Written straight to the process's stderr (the test harness
        // captures only `eprintln!`), because if the caller cannot handle
        // the refusal the process aborts next. A fallible caller
        // (`try_reserve`) turns it into an error and the case goes on.
        let seed = SEED.try_with(Cell::get).unwrap_or(0);
        let mut line = [0u8; 160];
        let mut w = &mut line[..];
        let _ = std::io::Write::write_fmt(
            &mut w,
            format_args!("PeakAlloc: refused {size} bytes (case seed {seed})\n"),
        );
        let left = w.len();
        let _ = std::io::Write::write_all(&mut std::io::stderr(), &line[..line.len() - left]);
        return false;
    }
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
    true
}

/// A global allocator that forwards to [`System`] and records, per thread,
/// the largest single allocation made (and refuses, without recording,
/// any above [`REFUSE_ABOVE`]).
///
/// ```
/// use synod_storage::testkit::{measure, PeakAlloc};
///
/// #[global_allocator]
/// static ALLOC: PeakAlloc = PeakAlloc;
///
/// fn main() {
///     let (v, peak) = measure(|| vec![0u8; 1000]);
///     assert_eq!(v.len(), 1000);
///     assert!(peak >= 1000);
/// }
/// ```
pub struct PeakAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments, or
// returns null (allowed: it reports an allocation failure). `note` touches
// only const-initialised thread-locals without destructors, which never
// allocate.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the largest single allocation it
/// made on this thread (0 unless [`PeakAlloc`] is the global allocator).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PEAK.with(|p| p.set(0));
    let r = f();
    (r, PEAK.with(Cell::get))
}

/// The number of random cases for a run: `SYNOD_FUZZ_CASES` if set (the
/// long runs), else `default` (the short batch CI runs).
pub fn cases(default: u64) -> u64 {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What a batch of cases did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases run.
    pub cases: u64,
    /// Cases the decoder accepted.
    pub ok: u64,
    /// Cases the decoder refused with a typed error.
    pub err: u64,
    /// Largest single allocation seen in any case, in bytes.
    pub peak_alloc: usize,
}

impl Tally {
    /// Prints the tally (shown with `--nocapture`, and recorded by the long
    /// runs).
    pub fn report(&self, name: &str) {
        println!(
            "fuzz {name}: {} cases, {} decoded, {} typed errors, 0 panics, largest allocation {} bytes",
            self.cases, self.ok, self.err, self.peak_alloc
        );
    }
}

/// Runs one case: `decode` under `catch_unwind` with its allocations
/// measured. Panics, naming `what`, the seed and the input, if the decoder
/// panicked (or an oracle inside `decode` failed) or if it allocated more
/// than `limit` bytes at once. Otherwise counts the outcome in `tally`.
pub fn check<E: std::fmt::Display>(
    what: &str,
    seed: u64,
    input: &[u8],
    limit: usize,
    tally: &mut Tally,
    decode: impl FnOnce() -> Result<(), E>,
) {
    SEED.with(|s| s.set(seed));
    let (result, peak) = measure(|| panic::catch_unwind(AssertUnwindSafe(decode)));
    tally.cases += 1;
    tally.peak_alloc = tally.peak_alloc.max(peak);
    match result {
        Ok(Ok(())) => tally.ok += 1,
        Ok(Err(_)) => tally.err += 1,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!(
                "{what}: case with seed {seed} panicked: {msg}\ninput ({} bytes): {}",
                input.len(),
                hex(input)
            );
        }
    }
    assert!(
        peak <= limit,
        "{what}: case with seed {seed} allocated {peak} bytes at once (limit {limit})\n\
         input ({} bytes): {}",
        input.len(),
        hex(input)
    );
}

/// Lower-case hex of up to the first 256 bytes of `b` (for failure reports).
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 * b.len().min(256) + 3);
    for x in b.iter().take(256) {
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > 256 {
        s.push_str("...");
    }
    s
}

/// Values that length and count fields should be tried with.
const INTERESTING: [u64; 14] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    16 << 20,
    (16 << 20) + 1,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// msgpack markers that announce a length: bin/str/array/map with 16- and
/// 32-bit lengths, and ext with a 32-bit length.
const MSGPACK_LENGTH_MARKERS: [u8; 9] = [0xc5, 0xc6, 0xc9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf];

/// A seeded generator of damaged inputs derived from valid encodings: the
/// same seed gives the same input, so a failing case replays.
#[derive(Clone, Debug)]
pub struct Mutator {
    rng: SplitMix64,
}

impl Mutator {
    /// A mutator whose choices are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Mutator {
            rng: SplitMix64::new(seed),
        }
    }

    /// The generator (for choices the caller makes itself).
    pub fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// A value in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.range(0, n as u64) as usize
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.next_u64() as u8).collect()
    }

    /// `valid` damaged by one to three mutations; `other` (another valid
    /// encoding, possibly of another type) feeds splices and
    /// concatenations.
    pub fn mutate(&mut self, valid: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = valid.to_vec();
        let rounds = 1 + self.below(3);
        for _ in 0..rounds {
            self.mutate_once(&mut out, other);
        }
        out
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>, other: &[u8]) {
        match self.below(10) {
            0 => out.truncate(self.below(out.len())),
            1 => self.flip_bits(out),
            2 | 3 => self.length_field(out),
            4 => self.msgpack_length(out),
            5 => {
                // Overwrite a short run with random bytes.
                let at = self.below(out.len());
                let n = (1 + self.below(16)).min(out.len() - at);
                let b = self.bytes(n);
                out[at..at + n].copy_from_slice(&b);
            }
            6 => {
                // Insert or delete a short run.
                let at = self.below(out.len() + 1);
                if self.rng.chance(1, 2) {
                    let n = 1 + self.below(16);
                    let b = self.bytes(n);
                    out.splice(at..at, b);
                } else {
                    let n = (1 + self.below(16)).min(out.len() - at);
                    out.drain(at..at + n);
                }
            }
            7 => {
                // Splice: a prefix of this, a suffix of the other.
                let cut = self.below(out.len() + 1);
                let from = self.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            8 => {
                // Concatenation: two encodings back to back.
                let tail = if self.rng.chance(1, 2) {
                    out.clone()
                } else {
                    other.to_vec()
                };
                out.extend_from_slice(&tail);
            }
            _ => {
                // Random bytes, about as long as the input.
                let n = self.below(2 * out.len() + 16);
                *out = self.bytes(n);
            }
        }
    }

    fn flip_bits(&mut self, out: &mut [u8]) {
        if out.is_empty() {
            return;
        }
        let flips = 1 + self.below(8);
        for _ in 0..flips {
            let at = self.below(out.len());
            out[at] ^= 1 << self.below(8);
        }
    }

    /// Overwrites 1, 2, 4 or 8 bytes at a random offset with a value length
    /// fields are worth trying, little- or big-endian.
    fn length_field(&mut self, out: &mut [u8]) {
        let width = *self.pick(&[1usize, 2, 4, 8]);
        if out.len() < width {
            return;
        }
        let value = *self.pick(&INTERESTING);
        // Clamp to the field's width, so that u64::MAX in a 4-byte field
        // reads as u32::MAX, not as the low bytes of something else.
        let max = u64::MAX >> (64 - 8 * width);
        let value = value.min(max);
        let le = value.to_le_bytes();
        let be = value.to_be_bytes();
        let src = if self.rng.chance(1, 2) {
            &le[..width]
        } else {
            &be[8 - width..]
        };
        // Headers and footers, where length fields live, get half the
        // tries; aligned offsets are favoured the same way.
        let span = out.len() - width + 1;
        let at = match self.below(4) {
            0 => self.below(span.min(64)),
            1 => span - 1 - self.below(span.min(64)),
            2 => self.below(span) / width * width,
            _ => self.below(span),
        };
        out[at..at + width].copy_from_slice(src);
    }

    /// Writes a msgpack header that claims a huge (or random) length at a
    /// random offset: what a hostile peer sends to make a decoder allocate.
    fn msgpack_length(&mut self, out: &mut Vec<u8>) {
        let marker = *self.pick(&MSGPACK_LENGTH_MARKERS);
        let len = if self.rng.chance(1, 2) {
            u32::MAX
        } else {
            self.rng.next_u64() as u32
        };
        let mut header = vec![marker];
        match marker {
            0xc5 | 0xda | 0xdc | 0xde => header.extend_from_slice(&(len as u16).to_be_bytes()),
            _ => header.extend_from_slice(&len.to_be_bytes()),
        }
        let at = self.below(out.len() + 1);
        let end = (at + header.len()).min(out.len());
        out.splice(at..end, header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mutation() {
        let valid: Vec<u8> = (0..100).collect();
        for seed in 0..200 {
            let a = Mutator::new(seed).mutate(&valid, b"other");
            let b = Mutator::new(seed).mutate(&valid, b"other");
            assert_eq!(a, b);
        }
    }

    #[test]
    fn mutations_handle_empty_inputs() {
        for seed in 0..1000 {
            let _ = Mutator::new(seed).mutate(&[], &[]);
            let _ = Mutator::new(seed).mutate(&[1], &[]);
        }
    }

    #[test]
    fn check_reports_panics_with_the_seed() {
        let r = panic::catch_unwind(|| {
            check::<String>("t", 42, b"ab", usize::MAX, &mut Tally::default(), || {
                panic!("boom")
            })
        });
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("seed 42") && msg.contains("boom") && msg.contains("6162"));
    }
}
