//! [`Secret`]: a credential (password, token, URL with a password, key text) that must never be
//! printed.
//!
//! It wraps `secrecy`'s `SecretString`, so the text is zeroed when the last copy is dropped, and
//! prints as `<redacted>` in `Debug` output (what `zone-node check-config` shows and what ends up in
//! logs). It has no `Display`, so it cannot slip into a message by `{}`: reading it takes an
//! explicit [`Secret::expose`]. It has no `PartialEq` either: compare exposed values where a test
//! needs to, and credentials from callers in constant time.

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer};

/// A value that must not be printed.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The text itself: for the one place that must use it (a connection, a login, a header).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A plain string in a configuration file.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter22");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter22");
        assert_eq!(Secret::default().expose(), "");
    }

    #[test]
    fn reads_as_a_plain_string() {
        #[derive(Deserialize)]
        struct File {
            password: Secret,
        }
        let file: File = toml::from_str("password = \"hunter22\"").unwrap();
        assert_eq!(file.password.expose(), "hunter22");
    }
}
