//! SCRAM-SHA-256 server side for the admin console (RFC 5802 / RFC 7677).
//!
//! The admin console authenticates its own roles, so pgbranch plays the
//! PostgreSQL *server* role here, the way PostgreSQL does it: mechanism
//! `SCRAM-SHA-256` only (no `-PLUS`, no channel binding), the user name of the
//! SCRAM exchange ignored in favour of the startup packet's, and secrets stored
//! in the `pg_authid.rolpassword` text form ([`Verifier`]).
//!
//! This module is pure: the caller frames AuthenticationSASL /
//! SASLInitialResponse / AuthenticationSASLContinue / SASLResponse /
//! AuthenticationSASLFinal and hands the message contents to
//! [`ServerExchange::start`] and [`ServerExchange::finish`].
//! Unknown roles get a [`Verifier::mock`], so the exchange looks the same for
//! them until the proof fails.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

const PREFIX: &str = "SCRAM-SHA-256$";
const MOCK_ITERATIONS: u32 = 4096;
/// PostgreSQL's SCRAM_DEFAULT_SALT_LEN, so mock salts look like real ones.
const MOCK_SALT_LEN: usize = 16;
const SERVER_NONCE_LEN: usize = 18;

/// A stored SCRAM-SHA-256 secret, as in pg_authid.rolpassword:
/// `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Verifier {
    /// Parses the text form; the error says what is wrong without quoting the text.
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or("it does not start with `SCRAM-SHA-256$`")?;
        let malformed = "expected `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`";
        let (params, keys) = rest.split_once('$').ok_or(malformed)?;
        let (iterations, salt) = params.split_once(':').ok_or(malformed)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(malformed)?;
        let iterations = match iterations.parse::<u32>() {
            Ok(n) if n > 0 && iterations.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err("the iteration count is not a positive integer".into()),
        };
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| "the salt is not valid base64")?;
        if salt.is_empty() {
            return Err("the salt is empty".into());
        }
        Ok(Verifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// Hashes a plaintext password with a random salt (SASLprep as PostgreSQL does).
    pub fn from_password(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Verifier::parse(&text).expect("postgres-protocol produces well-formed SCRAM secrets")
    }

    /// A verifier no password matches, for unknown user names.
    ///
    /// Deterministic per `user` and `secret` (a per-process random key kept by
    /// the caller): the salt is derived from HMAC(secret, user) and the
    /// iteration count is PostgreSQL's default, so repeated attempts see the
    /// same parameters as for a real role. The keys are HMAC outputs too;
    /// matching them would take a SHA-256 preimage of an unknown value.
    pub fn mock(user: &str, secret: &[u8; 32]) -> Verifier {
        let derive = |label: &[u8]| hmac(secret, &[label, user.as_bytes()]);
        Verifier {
            iterations: MOCK_ITERATIONS,
            salt: derive(b"pgbranch mock salt\0")[..MOCK_SALT_LEN].to_vec(),
            stored_key: derive(b"pgbranch mock stored key\0"),
            server_key: derive(b"pgbranch mock server key\0"),
        }
    }
}

fn decode_key(text: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| format!("the {what} is not valid base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("the {what} is not 32 bytes long"))
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The client's message is malformed or violates the protocol (08P01).
    #[error("{0}")]
    Protocol(String),
    /// Wrong password, or unknown user via a mock verifier (28P01).
    #[error("password authentication failed")]
    Failed,
}

fn proto(msg: &str) -> ScramError {
    ScramError::Protocol(msg.to_string())
}

/// The server's state between its first and final messages.
pub struct ServerExchange {
    stored_key: [u8; 32],
    server_key: [u8; 32],
    /// The GS2 header exactly as the client sent it (`n,,` or `y,,`).
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// Client nonce followed by server nonce.
    nonce: String,
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerExchange").finish_non_exhaustive()
    }
}

impl ServerExchange {
    /// Takes the SASLInitialResponse data (e.g. `n,,n=,r=<nonce>`) and returns
    /// the state and the server-first-message (`r=<nonce>,s=<salt>,i=<iterations>`).
    pub fn start(
        verifier: &Verifier,
        client_first: &[u8],
    ) -> Result<(ServerExchange, Vec<u8>), ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| proto("SCRAM client-first-message is not valid UTF-8"))?;
        let malformed = || proto("malformed SCRAM client-first-message");
        let (flag, rest) = text.split_once(',').ok_or_else(malformed)?;
        match flag {
            // "y": the client supports channel binding, but we offered none.
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(proto(
                    "channel binding is not supported by pgbranch's admin console",
                ))
            }
            _ => return Err(malformed()),
        }
        let (authzid, bare) = rest.split_once(',').ok_or_else(malformed)?;
        if authzid.starts_with("a=") {
            return Err(proto("SCRAM authorization identity (a=) is not supported"));
        } else if !authzid.is_empty() {
            return Err(malformed());
        }
        let gs2_header = &text[..text.len() - bare.len()];

        let mut parts = bare.split(',');
        let user = parts.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(proto("client requires an unsupported SCRAM extension"));
        }
        // The user name is ignored, as in PostgreSQL: the startup packet's counts.
        attr(user, 'n').ok_or_else(malformed)?;
        let client_nonce = parts
            .next()
            .and_then(|p| attr(p, 'r'))
            .ok_or_else(malformed)?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
            return Err(proto("invalid nonce in SCRAM client-first-message"));
        }
        check_extensions(parts)?;

        let mut server_nonce = [0u8; SERVER_NONCE_LEN];
        rand::rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = ServerExchange {
            stored_key: verifier.stored_key,
            server_key: verifier.server_key,
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// Takes the SASLResponse data (`c=<gs2 header b64>,r=<nonce>,p=<proof>`),
    /// checks it and the proof, and returns the server-final-message (`v=<signature>`).
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| proto("SCRAM client-final-message is not valid UTF-8"))?;
        let malformed = || proto("malformed SCRAM client-final-message");
        let (without_proof, proof) = text.rsplit_once(',').ok_or_else(malformed)?;
        let proof = attr(proof, 'p').ok_or_else(malformed)?;

        let mut parts = without_proof.split(',');
        let cbind = parts
            .next()
            .and_then(|p| attr(p, 'c'))
            .ok_or_else(malformed)?;
        let nonce = parts
            .next()
            .and_then(|p| attr(p, 'r'))
            .ok_or_else(malformed)?;
        check_extensions(parts)?;
        if cbind != STANDARD.encode(&self.gs2_header) {
            return Err(proto("SCRAM channel binding check failed"));
        }
        if nonce != self.nonce {
            return Err(proto("SCRAM nonce mismatch in client-final-message"));
        }
        let proof = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p.as_slice()).ok())
            .ok_or_else(|| proto("malformed SCRAM proof in client-final-message"))?;

        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        if !ct_eq(&computed, &self.stored_key) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// The value of `part` if it is `<name>=<value>`.
fn attr(part: &str, name: char) -> Option<&str> {
    part.strip_prefix(name)?.strip_prefix('=')
}

/// Optional extensions must be ignored (RFC 5802), but must look like `x=...`.
fn check_extensions<'a>(parts: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for part in parts {
        let b = part.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(proto("malformed SCRAM message attribute"));
        }
    }
    Ok(())
}

/// RFC 5802 `printable`: %x21-2B / %x2D-7E (no comma).
fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x2b | 0x2d..=0x7e)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs the client up to its final message; returns it with the server state.
    fn first_round(
        v: &Verifier,
        password: &str,
        cb: ChannelBinding,
    ) -> (ScramSha256, ServerExchange) {
        let mut client = ScramSha256::new(password.as_bytes(), cb);
        let (exchange, server_first) = ServerExchange::start(v, client.message()).unwrap();
        client.update(&server_first).unwrap();
        (client, exchange)
    }

    fn login(v: &Verifier, password: &str, cb: ChannelBinding) -> Result<(), ScramError> {
        let (mut client, exchange) = first_round(v, password, cb);
        let server_final = exchange.finish(client.message())?;
        client
            .finish(&server_final)
            .expect("client verifies the server signature");
        Ok(())
    }

    #[test]
    fn correct_password_succeeds_both_ways() {
        let v = Verifier::from_password("secret");
        login(&v, "secret", ChannelBinding::unsupported()).unwrap();
        login(&v, "secret", ChannelBinding::unrequested()).unwrap();
    }

    #[test]
    fn wrong_password_fails() {
        let v = Verifier::from_password("secret");
        let r = login(&v, "Secret", ChannelBinding::unsupported());
        assert!(matches!(r, Err(ScramError::Failed)), "{r:?}");
    }

    #[test]
    fn saslprep_is_consistent() {
        let v = Verifier::from_password("pässword");
        login(&v, "pässword", ChannelBinding::unsupported()).unwrap();
    }

    #[test]
    fn mock_verifier_rejects_everything_and_is_deterministic() {
        let key = [7u8; 32];
        let v = Verifier::mock("bob", &key);
        for pw in ["", "bob", "secret"] {
            let r = login(&v, pw, ChannelBinding::unsupported());
            assert!(matches!(r, Err(ScramError::Failed)), "{r:?}");
        }
        assert_eq!(v, Verifier::mock("bob", &key));
        assert_eq!(v.iterations, 4096);
        assert_ne!(v, Verifier::mock("alice", &key));
        assert_ne!(v, Verifier::mock("bob", &[8u8; 32]));
    }

    #[test]
    fn parse_round_trips_and_reports_errors() {
        let text = postgres_protocol::password::scram_sha_256(b"secret");
        let v = Verifier::parse(&text).unwrap();
        assert_eq!(v.to_string(), text);
        let stored_b64 = STANDARD.encode(v.stored_key);
        let salt_b64 = STANDARD.encode(&v.salt);
        let debug = format!("{v:?}");
        assert_eq!(debug, "Verifier { iterations: 4096, .. }");
        assert!(!debug.contains(&stored_b64) && !debug.contains(&salt_b64));

        let key16 = STANDARD.encode([1u8; 16]);
        let bad = [
            text.replacen("SCRAM-SHA-256$", "SCRAM-SHA-1$", 1),
            text.replacen("$4096:", "$4k:", 1),
            text.replacen("$4096:", "$0:", 1),
            text.replacen(&salt_b64, "!!not base64!!", 1),
            text.replacen(&stored_b64, "@@@@", 1),
            text.replacen(&stored_b64, &key16, 1),
            text.replacen(&format!("{stored_b64}:"), &stored_b64, 1),
            "md5abcdef".to_string(),
        ];
        for b in &bad {
            let e = Verifier::parse(b).unwrap_err();
            assert!(!e.contains(&stored_b64) && !e.contains(&salt_b64), "{e}");
        }
    }

    #[test]
    fn refuses_bad_client_first() {
        let v = Verifier::from_password("secret");
        let bound = ScramSha256::new(b"secret", ChannelBinding::tls_server_end_point(vec![1; 32]));
        assert!(bound.message().starts_with(b"p=tls-server-end-point,,"));
        match ServerExchange::start(&v, bound.message()) {
            Err(ScramError::Protocol(m)) => assert!(m.contains("channel binding"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        for msg in [
            &b"n,a=bob,n=,r=abc"[..],
            b"n,,m=ext,n=,r=abc",
            b"n,,n=,r=",
            b"n,,n=,r=a\x01b",
            b"n,,n=",
            b"x,,n=,r=abc",
            b"n,,n=,r=abc,1",
            b"\xff,,n=,r=abc",
        ] {
            let r = ServerExchange::start(&v, msg).map(|_| ());
            assert!(matches!(r, Err(ScramError::Protocol(_))), "{msg:?}: {r:?}");
        }
        // Optional extensions after the nonce are ignored, as RFC 5802 says.
        assert!(ServerExchange::start(&v, b"n,,n=bob,r=abc,x=1").is_ok());
    }

    #[test]
    fn refuses_tampered_client_final() {
        let v = Verifier::from_password("secret");
        let tamper: [fn(&str) -> String; 4] = [
            |m| m.replacen(",r=", ",r=X", 1),
            |m| m.replacen("c=biws", "c=eSws", 1),
            |m| m.split(",p=").next().unwrap_or_default().to_string(),
            |m| format!("{m}A"),
        ];
        for t in tamper {
            let (client, exchange) = first_round(&v, "secret", ChannelBinding::unsupported());
            let msg = t(std::str::from_utf8(client.message()).unwrap());
            let r = exchange.finish(msg.as_bytes());
            assert!(matches!(r, Err(ScramError::Protocol(_))), "{msg}: {r:?}");
        }
    }
}
