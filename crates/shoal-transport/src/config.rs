//! Transport configuration: limits and timeouts, each with its unit and default.

use std::time::Duration;

/// The largest frame any configuration may allow; the codec's own ceiling.
pub const MAX_FRAME_CEILING: usize = shoal_core::codec::MAX_MESSAGE_BYTES;

/// Limits and timeouts for RPC connections and datagrams.
///
/// Build one from [`TransportConfig::default`] (LAN values) or [`TransportConfig::local`]
/// (fast failure detection for tests on one machine), adjust fields, then call
/// [`TransportConfig::validate`]; servers and clients refuse an invalid one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest frame accepted or sent, in bytes, length prefix excluded. A peer announcing a
    /// larger frame is disconnected before anything is allocated. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Requests a single connection may have in flight, each way. A client waits (within the
    /// request's timeout) for a free slot; a server answers requests beyond it with
    /// `Overloaded`. Default 1024.
    pub max_in_flight_per_connection: usize,
    /// Bytes a connection may hold waiting for its socket to drain. Sends beyond it fail
    /// (`Overloaded` for a client's request; a server drops the response and counts it): a
    /// peer that stops reading must not grow our memory. At least `max_frame_bytes + 4`.
    /// Default 32 MiB.
    pub max_write_buffer_bytes: usize,
    /// Connections a server accepts at once; further ones wait in the listen backlog.
    /// Default 4096.
    pub max_connections: usize,
    /// Timeout used by calls that do not name their own. Default 5 s.
    pub default_request_timeout: Duration,
    /// Time allowed to establish TCP. Default 2 s.
    pub connect_timeout: Duration,
    /// Time allowed for the version handshake once connected. Default 2 s.
    pub handshake_timeout: Duration,
    /// Once a frame has started arriving, the time allowed for the rest of it. A peer that
    /// stalls mid-frame longer is disconnected. Default 10 s.
    pub frame_stall_timeout: Duration,
    /// First delay before reconnecting to a peer after a failed connect. Default 50 ms.
    pub reconnect_backoff_base: Duration,
    /// Longest delay between reconnect attempts. Default 5 s.
    pub reconnect_backoff_max: Duration,
    /// How long a shutting-down server waits for in-flight requests to finish before closing
    /// their connections anyway. Default 10 s.
    pub drain_timeout: Duration,
    /// Largest datagram sent or accepted, header included, in bytes. Keep it under the path
    /// MTU so datagrams are never fragmented. Default 1400.
    pub max_datagram_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            max_in_flight_per_connection: 1024,
            max_write_buffer_bytes: 32 << 20,
            max_connections: 4096,
            default_request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            frame_stall_timeout: Duration::from_secs(10),
            reconnect_backoff_base: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            max_datagram_bytes: 1400,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport config: {0}")]
pub struct ConfigError(pub String);

impl TransportConfig {
    /// The defaults: values for a LAN.
    pub fn lan() -> Self {
        Self::default()
    }

    /// Values for several processes on one machine: shorter timeouts and backoff.
    pub fn local() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            handshake_timeout: Duration::from_millis(500),
            reconnect_backoff_base: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(2),
            ..Self::default()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        if self.max_frame_bytes < 64 || self.max_frame_bytes > MAX_FRAME_CEILING {
            return fail(format!(
                "max_frame_bytes {} must be within 64..={MAX_FRAME_CEILING}",
                self.max_frame_bytes
            ));
        }
        if self.max_in_flight_per_connection == 0 || self.max_in_flight_per_connection > 1 << 20 {
            return fail("max_in_flight_per_connection must be within 1..=1048576".into());
        }
        if self.max_write_buffer_bytes < self.max_frame_bytes + crate::frame::LENGTH_PREFIX_BYTES {
            return fail("max_write_buffer_bytes must be at least max_frame_bytes + 4".into());
        }
        if self.max_connections == 0 {
            return fail("max_connections must be at least 1".into());
        }
        for (name, d) in [
            ("default_request_timeout", self.default_request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("frame_stall_timeout", self.frame_stall_timeout),
            ("reconnect_backoff_base", self.reconnect_backoff_base),
        ] {
            if d.is_zero() {
                return fail(format!("{name} must be positive"));
            }
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_base {
            return fail("reconnect_backoff_max must be at least reconnect_backoff_base".into());
        }
        if self.max_datagram_bytes < crate::datagram::DATAGRAM_HEADER_BYTES + 1
            || self.max_datagram_bytes > 65_507
        {
            return fail(format!(
                "max_datagram_bytes {} must be within {}..=65507",
                self.max_datagram_bytes,
                crate::datagram::DATAGRAM_HEADER_BYTES + 1
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        TransportConfig::default().validate().unwrap();
        TransportConfig::local().validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let mut c = TransportConfig {
            max_frame_bytes: usize::MAX,
            ..TransportConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("max_frame_bytes"));
        c = TransportConfig {
            connect_timeout: Duration::ZERO,
            ..TransportConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("connect_timeout"));
        c = TransportConfig {
            max_datagram_bytes: 5,
            ..TransportConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("max_datagram_bytes"));
    }
}
