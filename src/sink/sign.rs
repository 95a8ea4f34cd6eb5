//! Webhook signatures: `Timewheel-Signature: t=<unix s>,v1=<hex>`.
//!
//! The scheme is Stripe's: `v1` is the lowercase hex HMAC-SHA256, keyed
//! with a shared secret, of the signed payload `"<t>.<body>"`, where `t`
//! is the Unix time in seconds when the request was signed and `body` the
//! exact bytes sent. During a secret rotation the header carries one `v1=`
//! per secret (the current one first), so a receiver holding either secret
//! accepts the call; a receiver rejects a `t` further than its tolerance
//! (5 minutes is usual) from its own clock, which stops replays.
//! `docs/delivery.md` shows the receiver's side in several languages.
//!
//! Ground rules:
//! - Each attempt is signed anew, with its own `t`: a retry is not a replay.
//! - Secrets are never logged; [`Signer`]'s `Debug` shows only how many
//!   there are.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request header that carries the signature.
pub const HEADER: &str = "Timewheel-Signature";

/// Shortest secret accepted, in bytes: a shorter one could be guessed
/// offline from a single signed request.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a [`Signer`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// A secret is shorter than [`MIN_SECRET_LEN`] bytes (the first is 0,
    /// the previous one 1).
    TooShort {
        /// Which secret.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// More than two secrets: the current one and the one being retired.
    TooMany(usize),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::TooShort { index, len } => write!(
                f,
                "webhook secret{} is {len} bytes; at least {MIN_SECRET_LEN} are needed \
                 (e.g. `openssl rand -hex 32`)",
                if *index == 0 { "" } else { " (previous)" }
            ),
            SignError::TooMany(n) => write!(
                f,
                "{n} webhook secrets given; at most 2 (the current and the previous one)"
            ),
        }
    }
}

impl std::error::Error for SignError {}

/// Signs webhook bodies with one or two secrets.
#[derive(Clone)]
pub struct Signer {
    /// Keyed HMAC states, the current secret first; cloned per signature.
    keys: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// `secrets`: the current secret, then (during a rotation) the previous one.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Signer, SignError> {
        if secrets.len() > 2 {
            return Err(SignError::TooMany(secrets.len()));
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let secret = secret.as_ref();
            if secret.len() < MIN_SECRET_LEN {
                return Err(SignError::TooShort {
                    index,
                    len: secret.len(),
                });
            }
            keys.push(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size"));
        }
        Ok(Signer { keys })
    }

    /// The header value for `body` sent at Unix second `t`.
    pub fn header(&self, t: u64, body: &[u8]) -> String {
        let t = t.to_string();
        let mut out = format!("t={t}");
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(body);
            out.push_str(",v1=");
            push_hex(&mut out, &mac.finalize().into_bytes());
        }
        out
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 ("Jefe"), through the same code path.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let mut hex = String::new();
        push_hex(&mut hex, &mac.finalize().into_bytes());
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn header_signs_t_dot_body_once_per_secret() {
        let body = br#"{"id":"order-42","deadline_ms":1,"fired_ms":2,"attempt":1}"#;
        let current = "whsec_current_0123456789";
        let previous = "whsec_previous_0123456789";
        let one = Signer::new(&[current]).unwrap();
        let header = one.header(1_763_840_000, body);
        let expected = |secret: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(b"1763840000.");
            mac.update(body);
            let mut hex = String::new();
            push_hex(&mut hex, &mac.finalize().into_bytes());
            hex
        };
        assert_eq!(header, format!("t=1763840000,v1={}", expected(current)));
        let two = Signer::new(&[current, previous]).unwrap();
        assert_eq!(
            two.header(1_763_840_000, body),
            format!(
                "t=1763840000,v1={},v1={}",
                expected(current),
                expected(previous)
            )
        );
        // Another second, another signature.
        assert_ne!(one.header(1_763_840_001, body), header);
        assert!(!format!("{two:?}").contains("whsec"), "{two:?}");
    }

    #[test]
    fn short_or_too_many_secrets_are_refused() {
        assert_eq!(
            Signer::new(&["short"]).unwrap_err(),
            SignError::TooShort { index: 0, len: 5 }
        );
        let long = "x".repeat(MIN_SECRET_LEN);
        assert_eq!(
            Signer::new(&[long.as_str(), ""]).unwrap_err(),
            SignError::TooShort { index: 1, len: 0 }
        );
        assert_eq!(
            Signer::new(&[long.as_str(), &long, &long]).unwrap_err(),
            SignError::TooMany(3)
        );
        Signer::new(&[long.as_str()]).unwrap();
    }
}
