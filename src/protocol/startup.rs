//! Untagged startup-phase packets: StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest.
//!
//! Parameter names and values are kept as raw bytes: they are in the
//! client's encoding, and anything pgbranch does not consume must reach the
//! server unchanged.

use super::{
    read_u32, take_cstr, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE,
};

/// Longest startup-phase packet accepted (PostgreSQL's own limit is 10,000).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: Vec<u8> },
    Startup(StartupMessage),
}

/// Why a startup packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2")]
    UnsupportedProtocol { major: u32, minor: u32 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    BadLayout,
    #[error("invalid cancel request packet")]
    BadCancel,
}

/// A StartupMessage: protocol version and ordered parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub version: u32,
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StartupMessage {
    /// Value of parameter `name`, if the client sent it.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Value of `name` as text (lossy), for logs and decisions.
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Sets `name` to `value`, keeping its position if already present.
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.params.iter_mut().find(|(k, _)| k == name.as_bytes()) {
            Some((_, v)) => *v = value,
            None => self.params.push((name.as_bytes().to_vec(), value)),
        }
    }

    /// Keeps only the last occurrence of each parameter, as PostgreSQL
    /// uses the last one: the proxy must read exactly what the server will
    /// (a first `replication=false` must not hide a later
    /// `replication=database`). Names PostgreSQL compares exactly (`user`,
    /// `database`, `options`, `replication`, `_pq_.*`) are compared
    /// exactly; all others are settings, compared case-insensitively.
    pub fn keep_last_occurrences(&mut self) {
        fn key(name: &[u8]) -> (bool, Vec<u8>) {
            let exact = matches!(name, b"user" | b"database" | b"options" | b"replication")
                || name.starts_with(b"_pq_.");
            if exact {
                (true, name.to_vec())
            } else {
                (false, name.to_ascii_lowercase())
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(self.params.len());
        for (k, v) in self.params.drain(..).rev() {
            if seen.insert(key(&k)) {
                kept.push((k, v));
            }
        }
        kept.reverse();
        self.params = kept;
    }

    pub fn remove(&mut self, name: &str) {
        self.params.retain(|(k, _)| k != name.as_bytes());
    }

    /// Encodes the message, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        body.extend_from_slice(&self.version.to_be_bytes());
        for (k, v) in &self.params {
            body.extend_from_slice(k);
            body.push(0);
            body.extend_from_slice(v);
            body.push(0);
        }
        body.push(0);
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Decodes a startup-phase packet body (everything after the length word).
pub fn parse_startup_packet(body: &[u8]) -> Result<StartupPacket, StartupError> {
    if body.len() < 4 {
        return Err(StartupError::BadLength);
    }
    let code = read_u32(body, 0);
    match code {
        SSL_REQUEST_CODE if body.len() == 4 => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST_CODE if body.len() == 4 => Ok(StartupPacket::GssEnc),
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(StartupError::BadLength),
        CANCEL_REQUEST_CODE => {
            // 3.0: 4-byte key; 3.2: up to 256 bytes.
            if body.len() < 12 || body.len() > 8 + 256 {
                return Err(StartupError::BadCancel);
            }
            Ok(StartupPacket::Cancel {
                pid: read_u32(body, 4) as i32,
                secret: body[8..].to_vec(),
            })
        }
        version => {
            let (major, minor) = (version >> 16, version & 0xffff);
            // Minor versions above ours are allowed: the server answers with
            // NegotiateProtocolVersion, which the proxy relays.
            if major != PROTOCOL_3_0 >> 16 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            let mut params = Vec::new();
            let mut rest = &body[4..];
            loop {
                let (name, tail) = take_cstr(rest).ok_or(StartupError::BadLayout)?;
                if name.is_empty() {
                    if !tail.is_empty() {
                        return Err(StartupError::BadLayout);
                    }
                    break;
                }
                let (value, tail) = take_cstr(tail).ok_or(StartupError::BadLayout)?;
                params.push((name.to_vec(), value.to_vec()));
                rest = tail;
            }
            Ok(StartupPacket::Startup(StartupMessage { version, params }))
        }
    }
}

/// Encodes a CancelRequest packet (length prefix included).
pub fn cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + secret.len());
    out.extend_from_slice(&((12 + secret.len()) as u32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    out
}

/// Encodes an SSLRequest packet.
pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PROTOCOL_3_2;

    fn body_of(packet: &[u8]) -> &[u8] {
        &packet[4..]
    }

    #[test]
    fn startup_roundtrip_keeps_order_and_bytes() {
        let msg = StartupMessage {
            version: PROTOCOL_3_0,
            params: vec![
                (b"user".to_vec(), b"alice".to_vec()),
                (b"database".to_vec(), b"app".to_vec()),
                (b"application_name".to_vec(), vec![0xe9, b'x']),
            ],
        };
        let bytes = msg.encode();
        assert_eq!(read_u32(&bytes, 0) as usize, bytes.len());
        assert_eq!(
            parse_startup_packet(body_of(&bytes)).unwrap(),
            StartupPacket::Startup(msg)
        );
    }

    #[test]
    fn last_occurrence_wins_with_postgresql_name_rules() {
        let mut m = StartupMessage {
            version: PROTOCOL_3_0,
            params: vec![
                (b"replication".to_vec(), b"false".to_vec()),
                (b"user".to_vec(), b"a".to_vec()),
                (b"DateStyle".to_vec(), b"ISO".to_vec()),
                (b"replication".to_vec(), b"database".to_vec()),
                (b"datestyle".to_vec(), b"SQL".to_vec()),
                (b"USER".to_vec(), b"b".to_vec()),
            ],
        };
        m.keep_last_occurrences();
        assert_eq!(m.get("replication"), Some(&b"database"[..]));
        assert_eq!(m.get("user"), Some(&b"a"[..]));
        assert_eq!(m.get("datestyle"), Some(&b"SQL"[..]));
        assert_eq!(m.get("DateStyle"), None);
        // `USER` is a setting name to PostgreSQL, not the login user.
        assert_eq!(m.get("USER"), Some(&b"b"[..]));
        assert_eq!(m.params.len(), 4);
    }

    #[test]
    fn special_requests() {
        assert_eq!(
            parse_startup_packet(body_of(&ssl_request())).unwrap(),
            StartupPacket::Ssl
        );
        let c = cancel_request(42, &[1, 2, 3, 4]);
        assert_eq!(
            parse_startup_packet(body_of(&c)).unwrap(),
            StartupPacket::Cancel {
                pid: 42,
                secret: vec![1, 2, 3, 4]
            }
        );
        assert_eq!(
            parse_startup_packet(&GSSENC_REQUEST_CODE.to_be_bytes()).unwrap(),
            StartupPacket::GssEnc
        );
    }

    #[test]
    fn malformed_packets_are_refused() {
        assert_eq!(parse_startup_packet(&[0, 3]), Err(StartupError::BadLength));
        let mut v2 = (2u32 << 16).to_be_bytes().to_vec();
        v2.push(0);
        assert!(matches!(
            parse_startup_packet(&v2),
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        let mut unterminated = PROTOCOL_3_0.to_be_bytes().to_vec();
        unterminated.extend_from_slice(b"user\0bob");
        assert_eq!(
            parse_startup_packet(&unterminated),
            Err(StartupError::BadLayout)
        );
        let mut trailing = PROTOCOL_3_0.to_be_bytes().to_vec();
        trailing.extend_from_slice(b"user\0bob\0\0junk");
        assert_eq!(
            parse_startup_packet(&trailing),
            Err(StartupError::BadLayout)
        );
        let mut cancel = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        cancel.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(parse_startup_packet(&cancel), Err(StartupError::BadCancel));
    }

    #[test]
    fn newer_minor_version_is_accepted() {
        let mut b = PROTOCOL_3_2.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0u\0\0");
        assert!(matches!(
            parse_startup_packet(&b),
            Ok(StartupPacket::Startup(StartupMessage { version, .. })) if version == PROTOCOL_3_2
        ));
    }
}

#[cfg(test)]
mod proptests {
    //! Startup packets come from unauthenticated clients: parsing must never
    //! panic, and whatever the proxy encodes must parse back unchanged.

    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Bytes without NUL (names and values travel as C strings).
    fn cstr(min: usize) -> impl Strategy<Value = Vec<u8>> {
        vec(1u8..=255, min..24)
    }

    proptest! {
        #[test]
        fn parse_never_panics(body in vec(any::<u8>(), 0..300)) {
            let _ = parse_startup_packet(&body);
        }

        /// Same, with a valid request code or protocol version up front so
        /// that the interesting branches are reached, not only BadLength;
        /// and whatever is accepted is exactly what its encoding gives, so
        /// no byte of an accepted packet is ignored or invented.
        #[test]
        fn accepted_packets_are_canonical(
            code in prop_oneof![
                Just(SSL_REQUEST_CODE),
                Just(GSSENC_REQUEST_CODE),
                Just(CANCEL_REQUEST_CODE),
                (0u32..4).prop_map(|minor| PROTOCOL_3_0 | minor),
                any::<u32>(),
            ],
            rest in prop_oneof![
                vec(prop_oneof![Just(0u8), any::<u8>()], 0..16),
                vec(prop_oneof![Just(0u8), any::<u8>()], 0..300),
                // A well-formed parameter list, cut short or followed by junk.
                (vec((cstr(1), cstr(0)), 0..4), 0usize..4, vec(any::<u8>(), 0..3)).prop_map(
                    |(params, cut, junk)| {
                        let m = StartupMessage { version: PROTOCOL_3_0, params };
                        let mut b = m.encode()[8..].to_vec();
                        b.truncate(b.len().saturating_sub(cut));
                        b.extend_from_slice(&junk);
                        b
                    }
                ),
            ],
        ) {
            let mut body = code.to_be_bytes().to_vec();
            body.extend_from_slice(&rest);
            match parse_startup_packet(&body) {
                Ok(StartupPacket::Ssl) => prop_assert_eq!(&body[..], &ssl_request()[4..]),
                Ok(StartupPacket::GssEnc) => {
                    prop_assert_eq!(body, GSSENC_REQUEST_CODE.to_be_bytes().to_vec())
                }
                Ok(StartupPacket::Cancel { pid, secret }) => {
                    prop_assert!((4..=256).contains(&secret.len()), "key of {}", secret.len());
                    prop_assert_eq!(&body[..], &cancel_request(pid, &secret)[4..])
                }
                Ok(StartupPacket::Startup(m)) => prop_assert_eq!(&body[..], &m.encode()[4..]),
                Err(_) => {}
            }
        }

        #[test]
        fn startup_message_roundtrips(
            minor in 0u32..=0xffff,
            params in vec((cstr(1), cstr(0)), 0..12),
        ) {
            let msg = StartupMessage { version: PROTOCOL_3_0 | minor, params };
            let bytes = msg.encode();
            prop_assert_eq!(read_u32(&bytes, 0) as usize, bytes.len());
            prop_assert_eq!(
                parse_startup_packet(&bytes[4..]),
                Ok(StartupPacket::Startup(msg))
            );
        }

        #[test]
        fn cancel_request_roundtrips(pid in any::<i32>(), secret in vec(any::<u8>(), 4..=256)) {
            let bytes = cancel_request(pid, &secret);
            prop_assert_eq!(read_u32(&bytes, 0) as usize, bytes.len());
            prop_assert_eq!(
                parse_startup_packet(&bytes[4..]),
                Ok(StartupPacket::Cancel { pid, secret })
            );
        }
    }
}
