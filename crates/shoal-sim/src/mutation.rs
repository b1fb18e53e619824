//! Seeded random and mutated inputs for hostile-input tests of decoders and handlers.
//!
//! A peer can send any bytes. The tests that check every peer-facing decoder and handler
//! feed them three kinds of input, all drawn from one seed so a failure replays exactly:
//! random bytes; mutations of valid encodings (bit flips, bytes set to boundary values,
//! insertions, deletions, duplicated or truncated spans, splices of two inputs); and integers
//! replaced by their largest encodings, so counters arrive at `u64::MAX` as an attacker
//! would send them. Mutating valid encodings gets past the first checks (lengths, tags,
//! checksums recomputed by the caller) and into the handlers behind them, which random bytes
//! alone rarely reach.
//!
//! ```
//! use shoal_sim::Mutator;
//! let corpus = vec![b"a valid encoding".to_vec()];
//! let mut mutator = Mutator::new(7);
//! for _ in 0..100 {
//!     let input = mutator.next_input(&corpus);
//!     // decode(&input) must return a result, never panic.
//!     assert!(input.len() <= Mutator::MAX_LEN);
//! }
//! ```

use shoal_core::{DetRng, Rng};

/// Draws hostile inputs from a seed (see the module docs).
#[derive(Debug)]
pub struct Mutator {
    rng: DetRng,
}

/// Byte values that sit on boundaries of lengths, tags and varints (bincode's varint
/// markers are 251 to 254).
const INTERESTING_BYTES: [u8; 10] = [0, 1, 0x7F, 0x80, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF];

impl Mutator {
    /// The longest input drawn, so a test's memory stays bounded whatever the corpus.
    pub const MAX_LEN: usize = 1 << 20;

    /// A mutator drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: DetRng::from_seed(seed),
        }
    }

    /// The next input: one time in eight random bytes, otherwise a corpus entry with one to
    /// four mutations (random bytes only if the corpus is empty).
    pub fn next_input(&mut self, corpus: &[Vec<u8>]) -> Vec<u8> {
        if corpus.is_empty() || self.rng.below(8) == 0 {
            let len = self.rng.below(256) as usize;
            return self.random_bytes(len);
        }
        let mut input = corpus[self.rng.below(corpus.len() as u64) as usize].clone();
        for _ in 0..1 + self.rng.below(4) {
            self.mutate(&mut input, corpus);
        }
        input.truncate(Self::MAX_LEN);
        input
    }

    /// `len` random bytes.
    pub fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.rng.below(256) as u8).collect()
    }

    /// Applies one random mutation to `input`; `corpus` supplies splices.
    pub fn mutate(&mut self, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        if input.is_empty() {
            input.push(self.byte());
            return;
        }
        let at = self.index(input.len());
        match self.rng.below(9) {
            0 => input[at] ^= 1 << self.rng.below(8),
            1 => input[at] = self.byte(),
            2 => input[at] = INTERESTING_BYTES[self.rng.below(10) as usize],
            3 => {
                let n = 1 + self.rng.below(16) as usize;
                let bytes = self.random_bytes(n);
                input.splice(at..at, bytes);
            }
            4 => {
                let end = (at + 1 + self.rng.below(16) as usize).min(input.len());
                input.drain(at..end);
            }
            5 => {
                let end = (at + 1 + self.rng.below(32) as usize).min(input.len());
                let span = input[at..end].to_vec();
                input.splice(at..at, span);
            }
            6 => input.truncate(at),
            7 => self.largest_integer_at(input, at),
            _ if corpus.is_empty() => input[at] = self.byte(),
            _ => {
                let other = &corpus[self.index(corpus.len())];
                if !other.is_empty() {
                    let from = self.index(other.len());
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
        }
    }

    /// Puts a largest integer at `at`: the byte there is read as the start of a bincode
    /// varint (one byte below 251; 251, 252 and 253 announce 2, 4 and 8 more bytes), which is
    /// replaced whole by the varint of `u64::MAX` or `u64::MAX - 1`, so the rest of the
    /// encoding stays aligned when `at` starts a field; or eight bytes are overwritten with a
    /// fixed-width big-endian `u64::MAX`.
    fn largest_integer_at(&mut self, input: &mut Vec<u8>, at: usize) {
        let (replacement, len) = match self.rng.below(3) {
            2 => (u64::MAX.to_be_bytes().to_vec(), 8),
            pick => {
                let value = if pick == 0 { u64::MAX } else { u64::MAX - 1 };
                let mut varint = vec![0xFD];
                varint.extend_from_slice(&value.to_le_bytes());
                let len = match input[at] {
                    0..=250 => 1,
                    251 => 3,
                    252 => 5,
                    253 => 9,
                    _ => 17,
                };
                (varint, len)
            }
        };
        let end = (at + len).min(input.len());
        input.splice(at..end, replacement);
    }

    fn byte(&mut self) -> u8 {
        self.rng.below(256) as u8
    }

    fn index(&mut self, len: usize) -> usize {
        self.rng.below(len as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_inputs() {
        let corpus = vec![b"hello, world".to_vec(), vec![0; 40]];
        let draw = |seed| {
            let mut m = Mutator::new(seed);
            (0..200).map(|_| m.next_input(&corpus)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn inputs_vary_and_include_the_largest_integers() {
        let corpus = vec![vec![0u8; 64]];
        let mut m = Mutator::new(1);
        let inputs: Vec<_> = (0..2000).map(|_| m.next_input(&corpus)).collect();
        assert!(inputs.iter().any(|i| i.len() < 64));
        assert!(inputs.iter().any(|i| i.len() > 64));
        let max = u64::MAX.to_be_bytes();
        assert!(inputs.iter().any(|i| i.windows(8).any(|w| w == max)));
        assert!(inputs.iter().all(|i| i.len() <= Mutator::MAX_LEN));
    }
}
