//! Passwords and bearer tokens.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane,
//! the OWASP baseline) and a random salt, stored as PHC strings that carry their own parameters,
//! so stronger settings later still verify old hashes. Tokens are 32 random bytes from the OS,
//! base64url without padding (43 characters); the database keeps only their SHA-256, so a leaked
//! table grants nothing.
//!
//! Hashing and verifying a password take tens of milliseconds of CPU: async callers should run
//! them under `tokio::task::spawn_blocking` rather than on a runtime worker.

use argon2::password_hash::rand_core::OsRng as PhcOsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// Random bytes in a bearer token.
pub const TOKEN_BYTES: usize = 32;
/// Length of a generated password.
pub const GENERATED_PASSWORD_LEN: usize = 24;

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut PhcOsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        // Only invalid parameters or salt can fail, and both are fixed here.
        .expect("argon2id with default parameters and a generated salt cannot fail")
        .to_string()
}

/// Checks a password against a PHC hash; false on mismatch or a malformed hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // The comparison inside is constant-time.
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// A new random bearer token.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of a token in lowercase hex: what the database stores.
///
/// A plain hash suffices (no salt, no slow hash): tokens have 256 bits of entropy, so there is
/// nothing to brute-force, and lookups must be by exact value.
pub fn token_hash(token: &str) -> String {
    // Into a buffer rather than through `hex::encode`'s char iterator: every request with a
    // token pays this, and the iterator cost about as much as the SHA-256.
    let mut text = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(token.as_bytes()), &mut text).expect("64 hex digits for 32 bytes");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

/// A random password for the bootstrap admin: 24 characters, alphanumeric.
pub fn generate_password() -> String {
    OsRng.sample_iter(&Alphanumeric).take(GENERATED_PASSWORD_LEN).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let phc = hash_password("correct horse");
        assert!(phc.starts_with("$argon2id$"), "not an argon2id PHC string: {phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash_password("same"), hash_password("same"));
    }

    #[test]
    fn malformed_hash_is_a_mismatch() {
        assert!(!verify_password("x", ""));
        assert!(!verify_password("x", "not a phc string"));
        assert!(!verify_password("x", "$argon2id$v=19$m=19456,t=2,p=1$broken"));
    }

    #[test]
    fn tokens_are_random_base64url() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in base64url without padding");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), TOKEN_BYTES);
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
    }

    #[test]
    fn generated_passwords() {
        let p = generate_password();
        assert_eq!(p.len(), GENERATED_PASSWORD_LEN);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()), "{p}");
        assert_ne!(p, generate_password());
    }
}
