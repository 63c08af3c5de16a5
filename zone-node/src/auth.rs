//! Passwords and bearer tokens.
//!
//! INTERFACE CONTRACT (skeleton): argon2id password hashes; tokens are 32 random bytes,
//! base64url, of which only the SHA-256 (hex) is stored.

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let _ = password;
    todo!()
}

/// Checks a password against a PHC hash; false on mismatch or a malformed hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let _ = (password, phc);
    todo!()
}

/// A new random bearer token.
pub fn new_token() -> String {
    todo!()
}

/// The SHA-256 of a token in lowercase hex: what the database stores.
pub fn token_hash(token: &str) -> String {
    let _ = token;
    todo!()
}

/// A random password for the bootstrap admin: 24 characters, alphanumeric.
pub fn generate_password() -> String {
    todo!()
}
