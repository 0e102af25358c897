//! JWT (RFC 7519) session tokens signed ES256K (RFC 8812) by a node's key.
//!
//! Only `alg: ES256K` is accepted, whatever the token says, so `alg: none` and algorithm
//! confusion cannot get through. The issuing node's address is both the `iss` claim and
//! the `kid` header, and the verifier looks up that node's public key among the nodes it
//! knows: a token signed by any other key is rejected.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::keys::{verify_compact, SigningKey};

pub const ALGORITHM: &str = "ES256K";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// What a session token says: who (`sub`), for which mesh (`aud`), issued by which node
/// (`iss`), and when it expires (`exp`, unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: Address,
    pub sub: Address,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is not a JWT (three base64url parts)")]
    Malformed,
    #[error("token algorithm `{0}` is not accepted (only ES256K)")]
    Algorithm(String),
    #[error("token was issued by {0}, which is not a node of this mesh")]
    UnknownIssuer(Address),
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is for mesh `{0}`, not this one")]
    Audience(String),
}

/// Signs `claims` into a compact JWS.
pub fn issue(key: &SigningKey, claims: &Claims) -> String {
    let header = Header {
        alg: ALGORITHM.into(),
        typ: Some("JWT".into()),
        kid: Some(key.address().to_string()),
    };
    // Serialising these plain structs cannot fail.
    let header_json = serde_json::to_vec(&header).unwrap_or_default();
    let claims_json = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let signature = key.sign_digest_compact(Sha256::digest(signing_input.as_bytes()).into());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Checks a token's algorithm, signature (by the key `issuer_key` returns for its issuer),
/// audience and expiry at `now` (unix seconds).
pub fn verify(
    token: &str,
    audience: &str,
    now: u64,
    issuer_key: impl Fn(&Address) -> Option<PublicKey>,
) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = decode_json(header_b64)?;
    if header.alg != ALGORITHM {
        return Err(JwtError::Algorithm(header.alg));
    }
    let claims: Claims = decode_json(claims_b64)?;
    let public = issuer_key(&claims.iss).ok_or(JwtError::UnknownIssuer(claims.iss))?;
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| JwtError::Malformed)?;
    let signing_input_len = header_b64.len() + 1 + claims_b64.len();
    let digest: [u8; 32] = Sha256::digest(&token.as_bytes()[..signing_input_len]).into();
    verify_compact(&public, digest, &signature).map_err(|_| JwtError::Signature)?;
    if claims.aud != audience {
        return Err(JwtError::Audience(claims.aud));
    }
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iss: Address, exp: u64) -> Claims {
        Claims {
            iss,
            sub: iss,
            aud: "test".into(),
            iat: 1,
            exp,
            jti: "j".into(),
        }
    }

    fn setup() -> (SigningKey, String) {
        let key = SigningKey::generate().expect("key");
        let token = issue(&key, &claims(key.address(), 100));
        (key, token)
    }

    #[test]
    fn a_fresh_token_verifies_with_its_issuer_key() {
        let (key, token) = setup();
        let verified = verify(&token, "test", 50, |a| (*a == key.address()).then(|| key.public_key()));
        assert_eq!(verified, Ok(claims(key.address(), 100)));
    }

    #[test]
    fn expired_wrong_audience_and_unknown_issuer_are_rejected() {
        let (key, token) = setup();
        let lookup = |a: &Address| (*a == key.address()).then(|| key.public_key());
        assert_eq!(verify(&token, "test", 100, lookup), Err(JwtError::Expired));
        assert_eq!(
            verify(&token, "other", 50, lookup),
            Err(JwtError::Audience("test".into()))
        );
        assert_eq!(
            verify(&token, "test", 50, |_| None),
            Err(JwtError::UnknownIssuer(key.address()))
        );
    }

    #[test]
    fn a_token_signed_by_another_key_is_rejected() {
        let (key, _) = setup();
        let forger = SigningKey::generate().expect("key");
        // The forger claims to be the known node but signs with its own key.
        let forged = issue(&forger, &claims(key.address(), 100));
        let verdict = verify(&forged, "test", 50, |a| (*a == key.address()).then(|| key.public_key()));
        assert_eq!(verdict, Err(JwtError::Signature));
    }

    #[test]
    fn alg_none_and_tampered_claims_are_rejected() {
        let (key, token) = setup();
        let lookup = |a: &Address| (*a == key.address()).then(|| key.public_key());
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let alg_none = format!("{none_header}.{}.", parts[1]);
        assert_eq!(
            verify(&alg_none, "test", 50, lookup),
            Err(JwtError::Algorithm("none".into()))
        );
        let mut tampered_claims = claims(key.address(), 100_000);
        tampered_claims.sub = SigningKey::generate().expect("key").address();
        let tampered_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered_claims).expect("json"));
        let tampered = format!("{}.{tampered_b64}.{}", parts[0], parts[2]);
        assert_eq!(verify(&tampered, "test", 50, lookup), Err(JwtError::Signature));
        assert_eq!(verify("a.b", "test", 50, lookup), Err(JwtError::Malformed));
        assert_eq!(verify("a.b.c.d", "test", 50, lookup), Err(JwtError::Malformed));
    }
}
