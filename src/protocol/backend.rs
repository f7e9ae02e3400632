//! The few backend messages the proxy builds or reads: ErrorResponse,
//! BackendKeyData, the SASL mechanism list, NegotiateProtocolVersion.

use super::{backend_tag, put_message, read_u32, take_cstr};

/// Severity of an ErrorResponse the proxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error the proxy reports to a client in PostgreSQL's own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    /// Five-character SQLSTATE.
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            ..Self::fatal(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Encodes the ErrorResponse message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(64 + self.message.len());
        let mut field = |code: u8, value: &str| {
            body.push(code);
            // A NUL inside a field would end it early: PostgreSQL strings
            // cannot contain NUL, so drop any that slipped into a message.
            body.extend(value.bytes().filter(|&b| b != 0));
            body.push(0);
        };
        field(b'S', self.severity.as_str());
        field(b'V', self.severity.as_str());
        field(b'C', self.code);
        field(b'M', &self.message);
        if let Some(d) = &self.detail {
            field(b'D', d);
        }
        if let Some(h) = &self.hint {
            field(b'H', h);
        }
        body.push(0);
        put_message(out, backend_tag::ERROR_RESPONSE, &body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Fields of an ErrorResponse or NoticeResponse body, by field code.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some((value, tail)) = take_cstr(tail) else {
            break;
        };
        fields.push((code, String::from_utf8_lossy(value).into_owned()));
        rest = tail;
    }
    fields
}

/// The raw value of field `code` of an ErrorResponse or NoticeResponse
/// body, borrowed (no allocation: the relay reads every ErrorResponse).
pub fn error_field(body: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            return None;
        }
        let (value, tail) = take_cstr(tail)?;
        if c == code {
            return Some(value);
        }
        rest = tail;
    }
    None
}

/// The SQLSTATE of an ErrorResponse body, if present.
pub fn error_code(body: &[u8]) -> Option<String> {
    error_field(body, b'C').map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Whether an ErrorResponse body has severity FATAL or PANIC (the
/// untranslated `V` field, or `S` from servers before 9.6).
pub fn error_is_fatal(body: &[u8]) -> bool {
    matches!(
        error_field(body, b'V').or_else(|| error_field(body, b'S')),
        Some(b"FATAL" | b"PANIC")
    )
}

/// The text columns of a DataRow (NULL as empty).
pub fn data_row_text(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if body.len() < 2 {
        return out;
    }
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    for _ in 0..n {
        if at + 4 > body.len() {
            break;
        }
        let len = read_u32(body, at) as i32;
        at += 4;
        if len < 0 {
            out.push(String::new());
            continue;
        }
        let end = (at + len as usize).min(body.len());
        out.push(String::from_utf8_lossy(&body[at..end]).into_owned());
        at = end;
    }
    out
}

/// BackendKeyData: process id and secret key (4 bytes in protocol 3.0, up to
/// 256 bytes from 3.2 on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: Vec<u8>,
}

impl BackendKey {
    pub fn parse(body: &[u8]) -> Option<Self> {
        if body.len() < 8 || body.len() > 4 + 256 {
            return None;
        }
        Some(Self {
            pid: read_u32(body, 0) as i32,
            secret: body[4..].to_vec(),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(4 + self.secret.len());
        body.extend_from_slice(&self.pid.to_be_bytes());
        body.extend_from_slice(&self.secret);
        put_message(out, backend_tag::BACKEND_KEY_DATA, &body);
    }
}

/// Authentication request codes ('R' messages).
pub mod auth {
    pub const OK: u32 = 0;
    pub const KERBEROS_V5: u32 = 2;
    pub const CLEARTEXT: u32 = 3;
    pub const MD5: u32 = 5;
    pub const GSS: u32 = 7;
    pub const GSS_CONTINUE: u32 = 8;
    pub const SSPI: u32 = 9;
    pub const SASL: u32 = 10;
    pub const SASL_CONTINUE: u32 = 11;
    pub const SASL_FINAL: u32 = 12;
}

/// The mechanism names of an AuthenticationSASL body (after the code).
pub fn sasl_mechanisms(body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = body.get(4..).unwrap_or_default();
    while let Some((name, tail)) = take_cstr(rest) {
        if name.is_empty() {
            break;
        }
        out.push(name.to_vec());
        rest = tail;
    }
    out
}

/// Rebuilds an AuthenticationSASL message without the channel-binding
/// mechanisms (`*-PLUS`). Channel binding through a proxy would bind to the
/// wrong TLS connection, so the client must not be offered it.
/// Returns `None` when no mechanism would remain.
pub fn sasl_without_plus(body: &[u8]) -> Option<Vec<u8>> {
    let kept: Vec<Vec<u8>> = sasl_mechanisms(body)
        .into_iter()
        .filter(|m| !m.ends_with(b"-PLUS"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut new_body = auth::SASL.to_be_bytes().to_vec();
    for m in kept {
        new_body.extend_from_slice(&m);
        new_body.push(0);
    }
    new_body.push(0);
    let mut out = Vec::new();
    put_message(&mut out, backend_tag::AUTHENTICATION, &new_body);
    Some(out)
}

/// The newest minor protocol version a NegotiateProtocolVersion body names.
pub fn negotiated_minor(body: &[u8]) -> Option<u32> {
    (body.len() >= 4).then(|| read_u32(body, 0) & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_roundtrip() {
        let e = PgError::fatal("08006", "cannot reach").with_hint("start it");
        let bytes = e.to_bytes();
        assert_eq!(bytes[0], b'E');
        assert_eq!(read_u32(&bytes, 1) as usize, bytes.len() - 1);
        let fields = error_fields(&bytes[5..]);
        assert!(fields.contains(&(b'C', "08006".into())));
        assert!(fields.contains(&(b'H', "start it".into())));
        assert!(error_is_fatal(&bytes[5..]));
        assert!(!error_is_fatal(
            &PgError::error("22012", "x").to_bytes()[5..]
        ));
        assert_eq!(error_field(&bytes[5..], b'M'), Some(&b"cannot reach"[..]));
        assert_eq!(error_field(&bytes[5..], b'D'), None);
        assert_eq!(error_code(&bytes[5..]).as_deref(), Some("08006"));
    }

    #[test]
    fn plus_mechanisms_are_removed() {
        let mut body = auth::SASL.to_be_bytes().to_vec();
        body.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let msg = sasl_without_plus(&body).unwrap();
        assert_eq!(sasl_mechanisms(&msg[5..]), vec![b"SCRAM-SHA-256".to_vec()]);

        let mut only_plus = auth::SASL.to_be_bytes().to_vec();
        only_plus.extend_from_slice(b"SCRAM-SHA-256-PLUS\0\0");
        assert!(sasl_without_plus(&only_plus).is_none());
    }

    #[test]
    fn backend_key_lengths() {
        assert!(BackendKey::parse(&[0, 0, 0, 1, 1, 2, 3, 4]).is_some());
        assert!(BackendKey::parse(&[0, 0, 0, 1, 1, 2, 3]).is_none());
        let long = [7u8; 4 + 32];
        let k = BackendKey::parse(&long).unwrap();
        assert_eq!(k.secret.len(), 32);
        let mut out = Vec::new();
        k.encode(&mut out);
        assert_eq!(&out[5..], &long[..]);
    }
}
