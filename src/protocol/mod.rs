//! The PostgreSQL wire protocol, as far as pgbranch needs it.
//!
//! This layer does no I/O. The relay frames the byte stream itself as
//! `(tag, length, body)` and forwards bytes; only the handful of messages the
//! proxy must read or build are decoded or encoded here (see
//! `docs/architecture.md` for why bytes are forwarded rather than re-encoded).

pub mod backend;
pub mod startup;

/// Request code of an SSLRequest packet.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of a GSSENCRequest packet.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Request code of a CancelRequest packet.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Protocol version 3.0.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// Protocol version 3.2 (PostgreSQL 18: longer cancel keys).
pub const PROTOCOL_3_2: u32 = (3 << 16) | 2;

/// Length of a message header: one tag byte and a four-byte length.
pub const HEADER_LEN: usize = 5;

/// Frontend (client → server) message tags the proxy cares about.
pub mod frontend_tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD: u8 = b'p';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
}

/// Backend (server → client) message tags the proxy cares about.
pub mod backend_tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const DATA_ROW: u8 = b'D';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_IN_RESPONSE: u8 = b'G';
}

/// Reads the big-endian `u32` at `at`. The caller guarantees four bytes.
#[inline]
pub fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Appends a tagged message (`tag`, length, `body`) to `out`.
pub fn put_message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Builds a complete Query ('Q') message for `sql`.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(sql.len() + 1);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + HEADER_LEN);
    put_message(&mut out, frontend_tag::QUERY, &body);
    out
}

/// Splits a NUL-terminated string off the front of `buf`.
pub fn take_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_message_is_framed() {
        let m = query_message("select 1");
        assert_eq!(m[0], b'Q');
        assert_eq!(read_u32(&m, 1) as usize, m.len() - 1);
        assert_eq!(&m[5..], b"select 1\0");
    }

    #[test]
    fn take_cstr_splits() {
        assert_eq!(take_cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(take_cstr(b"ab"), None);
    }
}
