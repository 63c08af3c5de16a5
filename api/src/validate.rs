//! Input rules that are part of the contract: what a username, password or client id may be.
//! The server enforces them at the edge; clients may check them first.

/// 1 to 64 characters from `[A-Za-z0-9_.@-]`.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
}

/// Passwords: 8 to 1024 characters. Returns what is wrong.
pub fn check_password_policy(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < 8 {
        return Err("must be at least 8 characters");
    }
    if password.len() > 1024 {
        return Err("must be at most 1024 bytes");
    }
    Ok(())
}

/// Client ids: 1 to 128 characters from `[A-Za-z0-9_.:-]`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(valid_username("ops.admin@eu-1"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username(&"x".repeat(65)));
        assert!(check_password_policy("12345678").is_ok());
        assert!(check_password_policy("1234567").is_err());
        assert!(check_password_policy(&"x".repeat(1025)).is_err());
        assert!(valid_client_id("acme:prod-1"));
        assert!(!valid_client_id("acme/prod"));
    }
}
