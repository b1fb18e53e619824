//! Keys in URLs and JSON: binary-safe by percent-encoding (RFC 3986), since a key need not
//! be UTF-8. A path segment is decoded from the raw request path, not from a string a
//! framework already decoded, so every byte value survives.

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes left as they are when encoding: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a key in a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid percent-encoding in the key")]
    BadEncoding,
    /// No key at all.
    #[error("the key is empty")]
    Empty,
}

/// Decodes a percent-encoded key (a URL path segment or query value). `+` is a plus sign,
/// not a space. Refuses a `%` not followed by two hexadecimal digits rather than keeping
/// it as it is, so every key has one spelling.
pub fn decode_key(encoded: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = encoded.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(KeyError::BadEncoding)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(KeyError::BadEncoding);
            }
        }
    }
    let key: Vec<u8> = percent_decode(bytes).collect();
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(key)
}

/// Percent-encodes bytes (a key or a value in JSON), leaving unreserved characters as
/// they are: ASCII stays readable, anything else survives.
pub fn encode_bytes(bytes: &[u8]) -> String {
    // Non-UTF-8 bytes are encoded one by one; valid UTF-8 goes through the fast path.
    match std::str::from_utf8(bytes) {
        Ok(text) => utf8_percent_encode(text, UNRESERVED).to_string(),
        Err(_) => bytes.iter().fold(String::new(), |mut out, &b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
            out
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_survives_a_round_trip() {
        let key: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decode_key(&encode_bytes(&key)).unwrap(), key);
        assert_eq!(decode_key("a%2Fb+c").unwrap(), b"a/b+c");
        assert_eq!(encode_bytes(b"user-1.x_y~z"), "user-1.x_y~z");
    }

    #[test]
    fn malformed_encodings_are_refused() {
        for bad in ["%", "%4", "%zz", "a%g0"] {
            assert_eq!(decode_key(bad), Err(KeyError::BadEncoding), "{bad}");
        }
        assert_eq!(decode_key(""), Err(KeyError::Empty));
    }
}
