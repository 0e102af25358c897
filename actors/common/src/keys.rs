//! secp256k1 keys with Ethereum-compatible signatures.
//!
//! Signatures are 65-byte recoverable ECDSA over an EIP-191 personal_sign digest, so any
//! Ethereum wallet or library can produce a login or request signature we accept.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use secp256k1::ffi::CPtr;
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey, SignOnly};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::Address;
use crate::hash::{keccak256_parts, to_hex0x};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key file {path} does not hold a 32-byte hex secp256k1 secret key")]
    Malformed { path: String },
    #[error("no entropy from the operating system: {0}")]
    Entropy(String),
    #[error("libsecp256k1 refused to sign with this key")]
    Signing,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("a signature is 65 bytes of 0x-hex (r, s, v)")]
    Malformed,
    #[error("signature recovery byte v must be 0, 1, 27 or 28")]
    BadRecoveryId,
    #[error("signature has a high s value (not canonical)")]
    HighS,
    #[error("signature does not match the signed message")]
    Invalid,
}

/// A node's or client's secret key with its public key and address worked out once.
#[derive(Clone)]
pub struct SigningKey {
    secret: SecretKey,
    public: PublicKey,
    address: Address,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.address)
    }
}

impl SigningKey {
    /// A fresh key from the operating system's entropy.
    pub fn generate() -> Result<Self, KeyError> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| KeyError::Entropy(e.to_string()))?;
            if let Some(key) = Self::from_bytes(bytes) {
                return Ok(key);
            }
        }
    }

    /// `None` for the rare 32-byte strings that are not valid secret keys.
    pub fn from_bytes(bytes: [u8; 32]) -> Option<Self> {
        let secret = SecretKey::from_secret_bytes(bytes).ok()?;
        let public = secret.public_key();
        let address = Address::from_uncompressed_pubkey(&public.serialize_uncompressed());
        Some(SigningKey {
            secret,
            public,
            address,
        })
    }

    /// Reads a key file (hex text, optional 0x), as written by [`SigningKey::save`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: shown.clone(),
            source,
        })?;
        crate::hash::from_hex0x::<32>(text.trim())
            .and_then(Self::from_bytes)
            .ok_or(KeyError::Malformed { path: shown })
    }

    /// Writes the key as hex, readable by its owner only (mode 0600 from the start, so
    /// the secret is never briefly world-readable).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let text = format!("{}\n", to_hex0x(&self.secret.to_secret_bytes()));
        write_private(path, text.as_bytes()).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Loads the key at `path`, or creates and saves one. The flag says it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let key = Self::generate()?;
        key.save(path)?;
        Ok((key, true))
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The ECDH secret this key shares with `peer`'s (libsecp256k1's: SHA-256 of the
    /// shared point): only the holders of the two keys can compute it.
    pub fn shared_secret(&self, peer: &PublicKey) -> [u8; 32] {
        secp256k1::ecdh::SharedSecret::new(peer, &self.secret).to_secret_bytes()
    }

    /// EIP-191 personal_sign of `message`, as a wallet would sign it.
    pub fn sign_personal(&self, message: &[u8]) -> Signature65 {
        self.sign_digest_recoverable(personal_digest(message))
    }

    /// Recoverable signature of a 32-byte digest; v is 27 or 28 as wallets write it.
    pub fn sign_digest_recoverable(&self, digest: [u8; 32]) -> Signature65 {
        let signature = RecoverableSignature::sign_ecdsa_recoverable(Message::from_digest(digest), &self.secret);
        Signature65::from_recoverable(&signature)
    }

    /// A signer for a stream of digests on one thread (see [`BulkSigner`]).
    pub fn bulk_signer(&self) -> Result<BulkSigner, KeyError> {
        BulkSigner::new(self.secret)
    }

    /// Plain 64-byte (r, s) signature of a digest, low-s, as JWS ES256K wants it.
    pub fn sign_digest_compact(&self, digest: [u8; 32]) -> [u8; 64] {
        self.secret.sign_ecdsa(Message::from_digest(digest)).serialize_compact()
    }
}

/// Signs many digests with one key, on one thread, producing the same signatures as
/// [`SigningKey::sign_digest_recoverable`] (RFC 6979 nonces) at about half the cost.
///
/// libsecp256k1 blinds its signing computations with a random value held in the context
/// (a side-channel defence). secp256k1 0.33 re-blinds its shared context after *every*
/// signature, which costs as much as the signature itself; a node signs every transaction
/// id, so here a context of its own is blinded with fresh operating-system randomness
/// when created and again every [`BulkSigner::REBLIND_EVERY`] signatures.
pub struct BulkSigner {
    context: Secp256k1<SignOnly>,
    secret: SecretKey,
    until_reblind: u32,
}

impl BulkSigner {
    /// Signatures between two blindings of the context.
    pub const REBLIND_EVERY: u32 = 256;

    fn new(secret: SecretKey) -> Result<Self, KeyError> {
        let mut signer = BulkSigner {
            context: Secp256k1::signing_only(),
            secret,
            until_reblind: 0,
        };
        signer.reblind()?;
        Ok(signer)
    }

    fn reblind(&mut self) -> Result<(), KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Entropy(e.to_string()))?;
        self.context.seeded_randomize(&seed);
        self.until_reblind = Self::REBLIND_EVERY;
        Ok(())
    }

    /// Recoverable signature of a 32-byte digest; v is 27 or 28 as wallets write it.
    pub fn sign(&mut self, digest: [u8; 32]) -> Result<Signature65, KeyError> {
        if self.until_reblind == 0 {
            self.reblind()?;
        }
        self.until_reblind -= 1;
        let message = Message::from_digest(digest);
        let mut signature = secp256k1::ffi::recovery::RecoverableSignature::new();
        // SAFETY: every pointer is valid for the call: the context lives in `self`, the
        // output is a local, the message and the secret key are 32-byte values of their
        // types; a null nonce-data pointer is allowed with the RFC 6979 nonce function.
        let signed = unsafe {
            secp256k1::ffi::recovery::secp256k1_ecdsa_sign_recoverable(
                self.context.ctx().as_ptr(),
                &mut signature,
                message.as_c_ptr(),
                self.secret.as_c_ptr(),
                secp256k1::ffi::secp256k1_nonce_function_rfc6979,
                std::ptr::null(),
            )
        };
        // libsecp256k1 fails only for an invalid secret key, which a `SecretKey` is not.
        if signed != 1 {
            return Err(KeyError::Signing);
        }
        Ok(Signature65::from_recoverable(&RecoverableSignature::from(signature)))
    }
}

/// Writes a file readable by its owner only (mode 0600 from creation, so a secret is never
/// briefly world-readable), creating its directory, and syncs it: keys and tokens.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its old mode on open: tighten it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// The EIP-191 version 0x45 digest: keccak256("\x19Ethereum Signed Message:\n" + len + message).
pub fn personal_digest(message: &[u8]) -> [u8; 32] {
    let length = message.len().to_string();
    keccak256_parts(&[b"\x19Ethereum Signed Message:\n", length.as_bytes(), message])
}

/// A 65-byte recoverable signature (r, s, v), written as 0x-hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature65(pub [u8; 65]);

impl Signature65 {
    fn from_recoverable(signature: &RecoverableSignature) -> Self {
        let (recovery_id, compact) = signature.serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&compact);
        out[64] = 27 + u8::from(recovery_id);
        Signature65(out)
    }

    /// The public key and address that signed `digest`. Rejects non-canonical (high-s)
    /// signatures so that one signed message has exactly one valid signature.
    pub fn recover_digest(&self, digest: [u8; 32]) -> Result<(PublicKey, Address), SignatureError> {
        let v = match self.0[64] {
            0 | 27 => 0,
            1 | 28 => 1,
            _ => return Err(SignatureError::BadRecoveryId),
        };
        let recovery_id = RecoveryId::try_from(v).map_err(|_| SignatureError::BadRecoveryId)?;
        let signature =
            RecoverableSignature::from_compact(&self.0[..64], recovery_id).map_err(|_| SignatureError::Malformed)?;
        let standard = signature.to_standard();
        let mut normalized = standard;
        normalized.normalize_s();
        if normalized != standard {
            return Err(SignatureError::HighS);
        }
        let public = signature
            .recover_ecdsa(Message::from_digest(digest))
            .map_err(|_| SignatureError::Invalid)?;
        let address = Address::from_uncompressed_pubkey(&public.serialize_uncompressed());
        Ok((public, address))
    }

    /// Who personal_signed `message` with this signature.
    pub fn recover_personal(&self, message: &[u8]) -> Result<Address, SignatureError> {
        self.recover_digest(personal_digest(message))
            .map(|(_, address)| address)
    }
}

/// Verifies a plain 64-byte (r, s) signature of `digest` by `public` (low-s only).
pub fn verify_compact(public: &PublicKey, digest: [u8; 32], signature: &[u8]) -> Result<(), SignatureError> {
    let signature = Signature::from_compact(signature).map_err(|_| SignatureError::Malformed)?;
    let mut normalized = signature;
    normalized.normalize_s();
    if normalized != signature {
        return Err(SignatureError::HighS);
    }
    signature
        .verify(Message::from_digest(digest), public)
        .map_err(|_| SignatureError::Invalid)
}

/// Parses a public key from its 33- or 65-byte encoding.
pub fn public_key_from_slice(bytes: &[u8]) -> Option<PublicKey> {
    PublicKey::from_slice(bytes).ok()
}

pub use secp256k1::PublicKey as Secp256k1PublicKey;

impl fmt::Display for Signature65 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex0x(&self.0))
    }
}

impl fmt::Debug for Signature65 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Signature65 {
    type Err = SignatureError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        crate::hash::from_hex0x::<65>(text)
            .map(Signature65)
            .ok_or(SignatureError::Malformed)
    }
}

impl Serialize for Signature65 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signature65 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The well-known first account of Hardhat/Anvil test nodes: private key and address,
    /// with a personal_sign signature of "hello" produced by ethers/eth_account.
    const TEST_SECRET: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const TEST_ADDRESS: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

    fn test_key() -> SigningKey {
        SigningKey::from_bytes(crate::hash::from_hex0x::<32>(TEST_SECRET).expect("hex")).expect("valid key")
    }

    #[test]
    fn the_bulk_signer_signs_exactly_like_the_key() {
        let key = test_key();
        let mut bulk = key.bulk_signer().expect("bulk signer");
        // Past a re-blinding, too: blinding never changes a deterministic signature.
        for n in 0..(BulkSigner::REBLIND_EVERY + 8) {
            let digest = keccak256_parts(&[&n.to_be_bytes()]);
            let signature = bulk.sign(digest).expect("sign");
            assert_eq!(signature, key.sign_digest_recoverable(digest), "digest {n}");
            let (_, address) = signature.recover_digest(digest).expect("recovers");
            assert_eq!(address, key.address());
        }
    }

    #[test]
    fn address_of_a_known_key() {
        assert_eq!(test_key().address().to_string(), TEST_ADDRESS);
    }

    #[test]
    fn personal_sign_matches_ethereum_tooling() {
        // eth_account: Account.sign_message(encode_defunct(text="hello"), TEST_SECRET)
        let expected = "0xf16ea9a3478698f695fd1401bfe27e9e4a7e8e3da94aa72b021125e31fa899cc573c48ea3fe1d4ab61a9db10c19032026e3ed2dbccba5a178235ac27f94504311c";
        let signature = test_key().sign_personal(b"hello");
        assert_eq!(signature.to_string(), expected);
        assert_eq!(
            signature.recover_personal(b"hello").expect("recovers").to_string(),
            TEST_ADDRESS
        );
    }

    #[test]
    fn tampered_message_or_signature_does_not_recover_the_signer() {
        let key = test_key();
        let signature = key.sign_personal(b"login");
        assert_ne!(signature.recover_personal(b"logout").ok(), Some(key.address()));
        let mut bad = signature;
        bad.0[64] = 5;
        assert_eq!(bad.recover_personal(b"login"), Err(SignatureError::BadRecoveryId));
    }

    #[test]
    fn high_s_twin_is_rejected() {
        let key = test_key();
        let signature = key.sign_personal(b"x");
        // s' = n - s with the recovery bit flipped is the malleable twin.
        let n: [u8; 32] =
            crate::hash::from_hex0x("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").expect("hex");
        let mut s = [0u8; 32];
        s.copy_from_slice(&signature.0[32..64]);
        let mut twin = signature;
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = n[i] as i16 - s[i] as i16 - borrow;
            borrow = if d < 0 {
                d += 256;
                1
            } else {
                0
            };
            twin.0[32 + i] = d as u8;
        }
        twin.0[64] = if signature.0[64] == 27 { 28 } else { 27 };
        assert_eq!(twin.recover_personal(b"x"), Err(SignatureError::HighS));
    }

    #[test]
    fn key_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let (key, created) = SigningKey::load_or_create(&path).expect("create");
        assert!(created);
        let (again, created) = SigningKey::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(key.address(), again.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, "not a key").expect("write");
        assert!(matches!(SigningKey::load(&path), Err(KeyError::Malformed { .. })));
    }

    #[test]
    fn compact_signatures_verify_only_for_their_digest() {
        let key = test_key();
        let digest = crate::keccak256(b"d");
        let signature = key.sign_digest_compact(digest);
        assert!(verify_compact(&key.public_key(), digest, &signature).is_ok());
        assert_eq!(
            verify_compact(&key.public_key(), crate::keccak256(b"e"), &signature),
            Err(SignatureError::Invalid)
        );
    }
}
