//! Input rules that are part of the contract: what a username, password, client id, key (host
//! name, capability key), agent URL or agent token may be. The server enforces them at the edge;
//! clients (operator commands, the host simulator) may check them first.

use crate::error::{CodedError, ErrorCode};

/// Longest agent URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// A field that breaks its rule: which one, and why. Reads as `{field}: {reason}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl CodedError for FieldError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidField
    }

    fn public_message(&self) -> String {
        self.to_string()
    }
}

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
    if n > 1024 {
        return Err("must be at most 1024 characters");
    }
    Ok(())
}

/// Client ids: 1 to 128 characters from `[A-Za-z0-9_.:-]`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

/// True when `key` matches `[A-Za-z0-9_.:-]{1,64}`: safe in logs, URLs and metric labels. Host
/// names, instance names and capability keys follow it.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// An agent URL: http(s), with a host, at most [`MAX_URL_LEN`] bytes.
pub fn validate_agent_url(url: &str) -> Result<(), FieldError> {
    let bad = |reason: &str| FieldError { field: "agent_url", reason: reason.into() };
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(bad(&format!("must be 1 to {MAX_URL_LEN} bytes long")));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("must be an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.chars().any(|c| c.is_whitespace()) {
        return Err(bad("must name a host, without spaces"));
    }
    Ok(())
}

/// An agent token: 16 to 256 printable ASCII characters (it travels in a header).
pub fn validate_agent_token(token: &str) -> Result<(), FieldError> {
    if !(16..=256).contains(&token.len()) || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FieldError {
            field: "agent_token",
            reason: "must be 16 to 256 printable ASCII characters, without spaces".into(),
        });
    }
    Ok(())
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

    #[test]
    fn keys() {
        assert!(valid_key("free-disk"));
        assert!(valid_key("site:eu.dc_1"));
        assert!(valid_key(&"k".repeat(64)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(65)));
        assert!(!valid_key("a b"));
        assert!(!valid_key("a/b"));
        assert!(!valid_key("é"));
    }

    #[test]
    fn agent_urls() {
        assert!(validate_agent_url("http://10.0.0.1:9000").is_ok());
        assert!(validate_agent_url("https://agent.example/hosts/h-1").is_ok());
        for bad in ["", "ftp://x", "http://", "http:///path", "http://a b", "agent:9000"] {
            let e = validate_agent_url(bad).unwrap_err();
            assert_eq!(e.field, "agent_url", "{bad:?}");
            assert_eq!(e.code(), ErrorCode::InvalidField);
        }
        let long = format!("http://{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_agent_url(&long).unwrap_err().to_string().starts_with("agent_url: must be 1 to 2048"));
    }

    #[test]
    fn agent_tokens() {
        assert!(validate_agent_token(&"t".repeat(16)).is_ok());
        assert!(validate_agent_token(&"t".repeat(256)).is_ok());
        for bad in ["t".repeat(15), "t".repeat(257), format!("{} x", "t".repeat(16)), format!("{}é", "t".repeat(16))] {
            assert_eq!(validate_agent_token(&bad).unwrap_err().field, "agent_token", "{bad:?}");
        }
    }
}
