//! The envelope around every membership datagram and reliable message: a fixed header with
//! the cluster label, then the body, encrypted when a keyring is set.
//!
//! ```text
//! | "SW" | version: u8 | kind: u8 | flags: u8 | label_len: u8 | label | body |
//! body, plaintext:  datagram: ( len: u16 BE | encoded Message )*    reliable: one encoded message
//! body, encrypted:  nonce (12) | AES-256-GCM ciphertext of the plaintext body | tag (16)
//! ```
//!
//! The header is the AEAD's associated data, so the label and kind cannot be swapped on an
//! encrypted packet. Packets with another label, kind or version are refused before their body
//! is looked at.

use crate::keyring::{Keyring, NONCE_BYTES, TAG_BYTES};
use crate::message::Message;
use shoal_core::codec;
use std::borrow::Cow;
use thiserror::Error;

const MAGIC: [u8; 2] = *b"SW";
const VERSION: u8 = 1;
const FLAG_ENCRYPTED: u8 = 1;
const FIXED_HEADER_BYTES: usize = 6;
/// Bytes of length prefix in front of each message in a datagram.
pub(crate) const PART_PREFIX_BYTES: usize = 2;

/// What an envelope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A datagram of messages.
    Datagram = 0,
    /// A reliable-channel request.
    Request = 1,
    /// A reliable-channel response.
    Response = 2,
}

/// Why an envelope was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Too short, wrong magic or version, or a body that does not split into messages.
    #[error("malformed packet")]
    Malformed,
    /// From a cluster with another label.
    #[error("packet from another cluster label")]
    WrongLabel,
    /// A datagram where a reliable message was expected, or the other way round.
    #[error("packet of the wrong kind")]
    WrongKind,
    /// Encrypted, and no key in the ring authenticates it.
    #[error("packet could not be decrypted with any key")]
    DecryptFailed,
    /// Plaintext while encryption is required.
    #[error("unencrypted packet refused")]
    Unencrypted,
    /// Encrypted, but this node has no keyring.
    #[error("encrypted packet and no keyring")]
    NoKeyring,
}

/// Wraps and unwraps envelopes for one cluster label and keyring.
#[derive(Clone, Debug)]
pub(crate) struct PacketCodec {
    label: String,
    keyring: Option<Keyring>,
    accept_plaintext: bool,
}

impl PacketCodec {
    pub(crate) fn new(label: String, keyring: Option<Keyring>, accept_plaintext: bool) -> Self {
        Self {
            label,
            keyring,
            accept_plaintext,
        }
    }

    pub(crate) fn keyring_mut(&mut self) -> &mut Option<Keyring> {
        &mut self.keyring
    }

    /// Bytes an envelope adds around its plaintext body.
    pub(crate) fn overhead(&self) -> usize {
        let crypto = if self.keyring.is_some() {
            NONCE_BYTES + TAG_BYTES
        } else {
            0
        };
        FIXED_HEADER_BYTES + self.label.len() + crypto
    }

    fn header(&self, kind: Kind, flags: u8) -> Vec<u8> {
        let mut header = Vec::with_capacity(FIXED_HEADER_BYTES + self.label.len());
        header.extend_from_slice(&MAGIC);
        header.push(VERSION);
        header.push(kind as u8);
        header.push(flags);
        // The config caps labels at 64 bytes.
        header.push(self.label.len() as u8);
        header.extend_from_slice(self.label.as_bytes());
        header
    }

    /// Wraps `body` in an envelope of `kind`.
    pub(crate) fn seal(&self, kind: Kind, body: &[u8]) -> Vec<u8> {
        match &self.keyring {
            None => {
                let mut out = self.header(kind, 0);
                out.extend_from_slice(body);
                out
            }
            Some(ring) => {
                let mut out = self.header(kind, FLAG_ENCRYPTED);
                let aad = out.clone();
                out.reserve(NONCE_BYTES + body.len() + TAG_BYTES);
                ring.seal(&aad, body, &mut out);
                out
            }
        }
    }

    /// Checks an envelope of `kind` and returns its plaintext body.
    pub(crate) fn open<'a>(
        &self,
        kind: Kind,
        bytes: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, PacketError> {
        if bytes.len() < FIXED_HEADER_BYTES || bytes[..2] != MAGIC || bytes[2] != VERSION {
            return Err(PacketError::Malformed);
        }
        let flags = bytes[4];
        let label_len = usize::from(bytes[5]);
        let header_len = FIXED_HEADER_BYTES + label_len;
        if bytes.len() < header_len || flags & !FLAG_ENCRYPTED != 0 {
            return Err(PacketError::Malformed);
        }
        if &bytes[FIXED_HEADER_BYTES..header_len] != self.label.as_bytes() {
            return Err(PacketError::WrongLabel);
        }
        if bytes[3] != kind as u8 {
            return Err(PacketError::WrongKind);
        }
        let (header, body) = bytes.split_at(header_len);
        if flags & FLAG_ENCRYPTED != 0 {
            let ring = self.keyring.as_ref().ok_or(PacketError::NoKeyring)?;
            ring.open(header, body)
                .map(Cow::Owned)
                .ok_or(PacketError::DecryptFailed)
        } else if self.keyring.is_some() && !self.accept_plaintext {
            Err(PacketError::Unencrypted)
        } else {
            Ok(Cow::Borrowed(body))
        }
    }
}

/// Appends one length-prefixed message to a datagram body, if it fits within `limit` bytes
/// in total. Returns whether it was appended.
pub(crate) fn push_part(body: &mut Vec<u8>, part: &[u8], limit: usize) -> bool {
    let Ok(len) = u16::try_from(part.len()) else {
        return false;
    };
    if body.len() + PART_PREFIX_BYTES + part.len() > limit {
        return false;
    }
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(part);
    true
}

/// Appends one message, encoded in place with its length prefix, if it fits within `limit`
/// bytes in total. Returns whether it was appended; `body` is unchanged if not.
pub(crate) fn push_message(body: &mut Vec<u8>, message: &Message, limit: usize) -> bool {
    let start = body.len();
    if start + PART_PREFIX_BYTES > limit {
        return false;
    }
    body.extend_from_slice(&[0; PART_PREFIX_BYTES]);
    let room = limit.min(start + PART_PREFIX_BYTES + usize::from(u16::MAX));
    match codec::encode_into(message, body, room) {
        Ok(len) => {
            let len = u16::try_from(len).expect("bounded by room");
            body[start..start + PART_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
            true
        }
        Err(_) => {
            body.truncate(start);
            false
        }
    }
}

/// Splits a datagram body into its messages' bytes; malformed if a length runs past the end.
pub(crate) fn split_parts(mut body: &[u8]) -> Result<Vec<&[u8]>, PacketError> {
    let mut parts = Vec::new();
    while !body.is_empty() {
        if body.len() < PART_PREFIX_BYTES {
            return Err(PacketError::Malformed);
        }
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let rest = &body[PART_PREFIX_BYTES..];
        if len == 0 || rest.len() < len {
            return Err(PacketError::Malformed);
        }
        parts.push(&rest[..len]);
        body = &rest[len..];
    }
    if parts.is_empty() {
        return Err(PacketError::Malformed);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(label: &str, key: Option<u8>) -> PacketCodec {
        PacketCodec::new(label.into(), key.map(|k| Keyring::new([k; 32])), false)
    }

    #[test]
    fn round_trips_plain_and_encrypted() {
        for c in [codec("", None), codec("prod", None), codec("prod", Some(1))] {
            let sealed = c.seal(Kind::Datagram, b"body");
            assert_eq!(sealed.len(), 4 + c.overhead());
            assert_eq!(&*c.open(Kind::Datagram, &sealed).unwrap(), b"body");
            assert_eq!(c.open(Kind::Request, &sealed), Err(PacketError::WrongKind));
        }
    }

    #[test]
    fn refuses_other_labels_keys_and_garbage() {
        let prod = codec("prod", None);
        let sealed = codec("test", None).seal(Kind::Datagram, b"x");
        assert_eq!(
            prod.open(Kind::Datagram, &sealed),
            Err(PacketError::WrongLabel)
        );

        let k1 = codec("", Some(1));
        let from_k2 = codec("", Some(2)).seal(Kind::Datagram, b"x");
        assert_eq!(
            k1.open(Kind::Datagram, &from_k2),
            Err(PacketError::DecryptFailed)
        );
        let plain = codec("", None).seal(Kind::Datagram, b"x");
        assert_eq!(
            k1.open(Kind::Datagram, &plain),
            Err(PacketError::Unencrypted)
        );
        assert_eq!(
            codec("", None).open(Kind::Datagram, &from_k2),
            Err(PacketError::NoKeyring)
        );
        let lenient = PacketCodec::new(String::new(), Some(Keyring::new([1; 32])), true);
        assert!(lenient.open(Kind::Datagram, &plain).is_ok());

        for junk in [
            &b""[..],
            b"SW",
            b"XX\x01\x00\x00\x00",
            b"SW\x01\x00\x00\x09ab",
            b"SW\x01\x00\x80\x00",
        ] {
            assert_eq!(prod.open(Kind::Datagram, junk), Err(PacketError::Malformed));
        }
        // Every truncation of an encrypted packet is refused.
        let sealed = k1.seal(Kind::Datagram, b"hello world");
        for cut in 0..sealed.len() {
            assert!(k1.open(Kind::Datagram, &sealed[..cut]).is_err());
        }
    }

    #[test]
    fn parts_split_back_and_respect_the_limit() {
        let mut body = Vec::new();
        assert!(push_part(&mut body, b"abc", 100));
        assert!(push_part(&mut body, b"de", 100));
        assert!(!push_part(&mut body, &[0; 96], 100));
        assert_eq!(split_parts(&body).unwrap(), vec![&b"abc"[..], b"de"]);
        assert_eq!(
            split_parts(&body[..body.len() - 1]),
            Err(PacketError::Malformed)
        );
        assert_eq!(split_parts(&[]), Err(PacketError::Malformed));
        assert_eq!(split_parts(&[0, 0]), Err(PacketError::Malformed));
    }
}
