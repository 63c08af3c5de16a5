//! URLs made safe to print: the one place that hides the password of a database or broker URL
//! before it reaches a log line or an error message.

/// `url` with its password replaced by `***`, for logs and errors.
///
/// A URL without a password comes back exactly as given. One the `url` crate cannot parse but
/// that has an `@` loses everything between the scheme and its last `@` (user name included):
/// better too much hidden than a password shown because the URL was also malformed.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.password().is_none() => url.to_owned(),
        Ok(mut parsed) => match parsed.set_password(Some("***")) {
            Ok(()) => parsed.to_string(),
            Err(()) => redact_unparsed(url),
        },
        Err(_) => redact_unparsed(url),
    }
}

fn redact_unparsed(url: &str) -> String {
    let Some(at) = url.rfind('@') else { return url.to_owned() };
    match url.split_once("://") {
        Some((scheme, _)) if scheme.len() < at => format!("{scheme}://***{}", &url[at..]),
        _ => format!("***{}", &url[at..]),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_the_password_and_keeps_the_rest() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqp://guest:secret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(
            redact_url("postgres://zone:pw@db.example:5432/zone?sslmode=require"),
            "postgres://zone:***@db.example:5432/zone?sslmode=require"
        );
        // An `@` inside the password: the authority ends at the last one.
        assert_eq!(redact_url("amqp://u:p@ss@host/v"), "amqp://u:***@host/v");
    }

    #[test]
    fn leaves_urls_without_a_password_alone() {
        for url in [
            "postgres://root@h/db",
            "amqp://host:5672",
            "amqp://u@host",
            "memory://",
            "sqlite://./data/zone.db",
            "sqlite::memory:",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn a_malformed_url_never_shows_its_password() {
        for (url, shown) in [
            ("mysql://u:hunter22@h:port/db", "mysql://***@h:port/db"),
            ("amqp://u:hunter22@[::1/x", "amqp://***@[::1/x"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
