//! AES-256-GCM keys for gossip encryption, with rotation.
//!
//! A keyring has one primary key, used to encrypt, and any number of older keys still
//! accepted when decrypting. Rotation without downtime: add the new key everywhere, then make
//! it primary everywhere, then remove the old one.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use std::fmt;
use thiserror::Error;

/// Bytes in an AES-256 key.
pub const KEY_BYTES: usize = 32;
/// Bytes in a GCM nonce, sent in front of the ciphertext.
pub const NONCE_BYTES: usize = 12;
/// Bytes in a GCM authentication tag, at the end of the ciphertext.
pub const TAG_BYTES: usize = 16;

/// What a keyring refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyringError {
    /// The primary key cannot be removed; make another key primary first.
    #[error("the primary key cannot be removed")]
    RemovePrimary,
    /// The key is not in the ring.
    #[error("the key is not in the keyring")]
    UnknownKey,
}

#[derive(Clone)]
struct Entry {
    key: [u8; KEY_BYTES],
    cipher: Aes256Gcm,
}

impl Entry {
    fn new(key: [u8; KEY_BYTES]) -> Self {
        Self {
            key,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }
}

/// A primary key and older keys still accepted.
#[derive(Clone)]
pub struct Keyring {
    /// `entries[0]` is the primary.
    entries: Vec<Entry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("keys", &self.entries.len())
            .finish()
    }
}

impl Keyring {
    /// A keyring with one key, which is primary.
    pub fn new(primary: [u8; KEY_BYTES]) -> Self {
        Self {
            entries: vec![Entry::new(primary)],
        }
    }

    /// Accepts `key` for decryption too (no effect if already present).
    pub fn add(&mut self, key: [u8; KEY_BYTES]) {
        if !self.entries.iter().any(|e| e.key == key) {
            self.entries.push(Entry::new(key));
        }
    }

    /// Makes `key`, which must already be in the ring, the one used to encrypt.
    pub fn use_key(&mut self, key: [u8; KEY_BYTES]) -> Result<(), KeyringError> {
        let index = self
            .entries
            .iter()
            .position(|e| e.key == key)
            .ok_or(KeyringError::UnknownKey)?;
        self.entries.swap(0, index);
        Ok(())
    }

    /// Stops accepting `key`. The primary cannot be removed.
    pub fn remove(&mut self, key: [u8; KEY_BYTES]) -> Result<(), KeyringError> {
        let index = self
            .entries
            .iter()
            .position(|e| e.key == key)
            .ok_or(KeyringError::UnknownKey)?;
        if index == 0 {
            return Err(KeyringError::RemovePrimary);
        }
        self.entries.remove(index);
        Ok(())
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a keyring has a primary key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` of `plaintext` under the primary key to `out`,
    /// authenticating `aad` too.
    ///
    /// The 96-bit nonce is random from the operating system's CSPRNG, as memberlist does: a
    /// deterministic generator would repeat nonces across restarts, and GCM must never reuse
    /// one. Random nonces are safe for well over 2^32 messages per key.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self.entries[0]
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
    }

    /// Decrypts `nonce ‖ ciphertext ‖ tag` with any accepted key; `None` if no key
    /// authenticates it (wrong key, tampering, truncation).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.entries.iter().find_map(|entry| {
            entry
                .cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad,
                    },
                )
                .ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_binds_the_aad() {
        let ring = Keyring::new([7; 32]);
        let mut sealed = Vec::new();
        ring.seal(b"label", b"hello", &mut sealed);
        assert_eq!(sealed.len(), NONCE_BYTES + 5 + TAG_BYTES);
        assert_eq!(ring.open(b"label", &sealed).unwrap(), b"hello");
        assert!(ring.open(b"other", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[NONCE_BYTES] ^= 1;
        assert!(ring.open(b"label", &tampered).is_none());
        assert!(ring.open(b"label", &sealed[..10]).is_none());
    }

    #[test]
    fn rotation_accepts_old_keys_until_removed() {
        let old = Keyring::new([1; 32]);
        let mut from_old = Vec::new();
        old.seal(b"", b"x", &mut from_old);

        let mut ring = Keyring::new([1; 32]);
        ring.add([2; 32]);
        ring.use_key([2; 32]).unwrap();
        assert_eq!(ring.open(b"", &from_old).unwrap(), b"x");
        let mut from_new = Vec::new();
        ring.seal(b"", b"y", &mut from_new);
        assert!(old.open(b"", &from_new).is_none(), "new primary encrypts");

        assert_eq!(ring.remove([2; 32]), Err(KeyringError::RemovePrimary));
        ring.remove([1; 32]).unwrap();
        assert!(ring.open(b"", &from_old).is_none());
        assert_eq!(ring.remove([9; 32]), Err(KeyringError::UnknownKey));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn debug_hides_keys() {
        let ring = Keyring::new([0xAB; 32]);
        assert!(!format!("{ring:?}").contains("171"));
    }
}
