//! The configuration as a whole: defaults, the environment over the file, errors that name the
//! setting, and the table kept in step with the file structs and the operations guide.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::settings::SETTINGS;
use super::*;
use crate::secret::Secret;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::load(None, &|name| map.get(name).cloned())
}

#[test]
fn embedded_defaults() {
    let c = load(&[]).unwrap();
    assert_eq!(c.zone.name, "default");
    assert_eq!(c.api_url(), "http://127.0.0.1:8080");
    assert_eq!(c.database_url(), "sqlite://./data/zone.db");
    assert_eq!(c.bus.url.expose(), "memory://");
    assert_eq!(c.bus_prefix(), "default");
    assert_eq!(c.heartbeat_interval(), Duration::from_secs(1));
    assert_eq!(c.dead_after(), Duration::from_secs(5));
    let f = &c.federation;
    assert_eq!((f.poll_interval(), f.poll_timeout(), f.failure_threshold), (ms(5000), ms(1000), 3));
    assert_eq!((f.poll_jitter(), f.max_concurrent_polls, f.hop_limit), (ms(100), 32, 8));
    assert_eq!((f.forward_timeout(), f.scatter_deadline()), (ms(60_000), ms(5000)));
    assert_eq!(f.lookup_cache_capacity, 1_000_000);
    assert!(f.secret_key_file.is_none() && f.secret_key.is_none());
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn federation_settings_from_the_environment() {
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let c = load(&[
        ("ZONE_POLL_INTERVAL_MS", "500"),
        ("ZONE_POLL_TIMEOUT_MS", "400"),
        ("ZONE_POLL_FAILURE_THRESHOLD", "5"),
        ("ZONE_HOP_LIMIT", "4"),
        ("ZONE_FORWARD_TIMEOUT_MS", "1000"),
        ("ZONE_SCATTER_DEADLINE_MS", "250"),
        ("ZONE_SECRET_KEY_FILE", "/etc/zone/secret.key"),
        ("ZONE_SECRET_KEY", key),
    ])
    .unwrap();
    let f = &c.federation;
    assert_eq!((f.poll_interval(), f.poll_timeout(), f.failure_threshold, f.hop_limit), (ms(500), ms(400), 5, 4));
    assert_eq!((f.forward_timeout(), f.scatter_deadline()), (ms(1000), ms(250)));
    assert_eq!(f.secret_key_file.as_deref(), Some(Path::new("/etc/zone/secret.key")));
    assert_eq!(f.secret_key.as_ref().map(Secret::expose), Some(key));
    assert!(!format!("{c:?}").contains(key), "the key reaches Debug output");
}

#[test]
fn the_secret_key_is_never_read_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.toml");
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    std::fs::write(&path, format!("[federation]\nsecret_key = \"{key}\"\n")).unwrap();
    let err = Config::load(Some(&path), &|_| None).unwrap_err().to_string();
    assert!(err.contains("secret_key"), "{err}");
    std::fs::write(&path, "[federation]\npoll_interval_ms = 200\npoll_jitter_ms = 200\n").unwrap();
    let err = Config::load(Some(&path), &|_| None).unwrap_err().to_string();
    assert!(err.contains("federation.poll_jitter_ms"), "{err}");
}

#[test]
fn environment_wins_and_prefix_follows_name() {
    let c = load(&[("ZONE_NAME", "eu-west"), ("ZONE_LISTEN", "0.0.0.0:9000"), ("ZONE_API_URL", "https://eu.example/")])
        .unwrap();
    assert_eq!(c.bus_prefix(), "eu-west");
    assert_eq!(c.api_url(), "https://eu.example");
}

#[test]
fn several_brokers_are_one_setting() {
    let c = load(&[("ZONE_BUS_URL", "amqp://zone:pw@mq1:5672,zone:pw@mq2:5672/zone")]).expect("two brokers");
    assert_eq!(c.bus.url.expose(), "amqp://zone:pw@mq1:5672,zone:pw@mq2:5672/zone");
}

#[test]
fn bad_values_name_the_setting() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("ZONE_LISTEN", "localhost")], "ZONE_LISTEN"),
        (&[("ZONE_LISTEN", "127.0.0.1:0")], "ZONE_LISTEN"),
        (&[("ZONE_DEAD_AFTER_MS", "1000")], "ZONE_DEAD_AFTER_MS"),
        (&[("ZONE_DEAD_AFTER_MS", "soon")], "ZONE_DEAD_AFTER_MS"),
        (&[("ZONE_BUS_URL", "redis://x")], "ZONE_BUS_URL"),
        (&[("ZONE_BUS_URL", "amqp://mq1/%2f,http://mq2/%2f")], "ZONE_BUS_URL"),
        (&[("ZONE_BUS_URL", "amqp://u:p@mq1,/%2f")], "ZONE_BUS_URL"),
        (&[("ZONE_DATABASE_URL", "mysql://u:pw@h/db")], "ZONE_DATABASE_URL"),
        (&[("ZONE_NAME", "bad name")], "ZONE_NAME"),
        (&[("ZONE_API_URL", "ftp://x")], "ZONE_API_URL"),
        (&[("ZONE_ADMIN_PASSWORD", "short")], "ZONE_ADMIN_PASSWORD"),
        (&[("ZONE_POLL_INTERVAL_MS", "10")], "ZONE_POLL_INTERVAL_MS (federation.poll_interval_ms)"),
        (&[("ZONE_POLL_INTERVAL_MS", "often")], "ZONE_POLL_INTERVAL_MS"),
        (&[("ZONE_POLL_TIMEOUT_MS", "5")], "ZONE_POLL_TIMEOUT_MS (federation.poll_timeout_ms)"),
        (&[("ZONE_POLL_FAILURE_THRESHOLD", "0")], "ZONE_POLL_FAILURE_THRESHOLD (federation.failure_threshold)"),
        (&[("ZONE_POLL_FAILURE_THRESHOLD", "99999999999")], "ZONE_POLL_FAILURE_THRESHOLD"),
        (&[("ZONE_HOP_LIMIT", "0")], "ZONE_HOP_LIMIT (federation.hop_limit)"),
        (&[("ZONE_HOP_LIMIT", "65")], "ZONE_HOP_LIMIT"),
        (&[("ZONE_FORWARD_TIMEOUT_MS", "5")], "ZONE_FORWARD_TIMEOUT_MS (federation.forward_timeout_ms)"),
        (&[("ZONE_SCATTER_DEADLINE_MS", "0")], "ZONE_SCATTER_DEADLINE_MS (federation.scatter_deadline_ms)"),
        (&[("ZONE_SECRET_KEY", "hunter22hunter22")], "ZONE_SECRET_KEY"),
    ];
    for (vars, setting) in cases {
        let err = load(vars).unwrap_err().to_string();
        assert!(err.contains(setting), "{err} should name {setting}");
    }
    let err = load(&[("ZONE_DATABASE_URL", "mysql://u:hunter22@h/db")]).unwrap_err().to_string();
    assert!(!err.contains("hunter22"), "{err} leaks the password");
    let err = load(&[("ZONE_SECRET_KEY", "hunter22hunter22")]).unwrap_err().to_string();
    assert!(!err.contains("hunter22"), "{err} leaks the key");
}

#[test]
fn unknown_file_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.toml");
    std::fs::write(&path, "[zone]\nnmae = \"typo\"\n").unwrap();
    let err = Config::load(Some(&path), &|_| None).unwrap_err().to_string();
    assert!(err.contains("nmae"), "{err}");
}

#[test]
fn shipped_config_files_parse() {
    for file in ["default.toml", "production.example.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(file);
        Config::load(Some(&path), &|_| None).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn a_number_that_is_not_one_names_the_setting_exactly() {
    let numeric = [
        "ZONE_HEARTBEAT_INTERVAL_MS",
        "ZONE_DEAD_AFTER_MS",
        "ZONE_BODY_LIMIT_BYTES",
        "ZONE_TOKEN_TTL_SECS",
        "ZONE_HOST_REPORT_INTERVAL_MS",
        "ZONE_HOST_MAX_MISSED_REPORTS",
        "ZONE_AGENT_TIMEOUT_MS",
        "ZONE_POLL_INTERVAL_MS",
        "ZONE_POLL_TIMEOUT_MS",
        "ZONE_POLL_FAILURE_THRESHOLD",
        "ZONE_HOP_LIMIT",
        "ZONE_FORWARD_TIMEOUT_MS",
        "ZONE_SCATTER_DEADLINE_MS",
    ];
    for env in numeric {
        let key = SETTINGS.iter().find(|s| s.env == env).map(|s| s.key).unwrap_or_else(|| panic!("{env}"));
        let err = load(&[(env, "soon")]).unwrap_err().to_string();
        assert_eq!(err, format!("invalid setting {env} ({key}) = \"soon\": must be a whole number"));
    }
    let err = load(&[("ZONE_DEAD_AFTER_MS", "1000")]).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid setting ZONE_DEAD_AFTER_MS (cluster.dead_after_ms) = \"1000\": must be at least 3 heartbeat \
         intervals (3000 ms)"
    );
    let err = load(&[("ZONE_TOKEN_TTL_SECS", "59")]).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid setting ZONE_TOKEN_TTL_SECS (http.token_ttl_secs) = \"59\": must be between 60 and 86400 (24 hours)"
    );
    // A token lives at most a day: a stolen one is not good for a month.
    let err = load(&[("ZONE_TOKEN_TTL_SECS", "86401")]).unwrap_err().to_string();
    assert!(err.contains("between 60 and 86400 (24 hours)"), "{err}");
    assert!(load(&[("ZONE_TOKEN_TTL_SECS", "86400")]).is_ok());
}

/// The fields a file may hold, as `section.field`, read from serde's own "expected one of" list.
fn file_keys() -> Vec<String> {
    let expected = |toml_text: &str| -> Vec<String> {
        let err = toml::from_str::<Config>(toml_text).unwrap_err().to_string();
        let list = &err[err.find("expected").unwrap_or_else(|| panic!("{err}"))..];
        list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    };
    let mut keys = Vec::new();
    for section in expected("not_a_section = 1") {
        for field in expected(&format!("[{section}]\nnot_a_field = 1")) {
            keys.push(format!("{section}.{field}"));
        }
    }
    keys
}

#[test]
fn the_table_names_every_setting_once_and_the_guide_lists_it() {
    let file: std::collections::BTreeSet<String> = file_keys().into_iter().collect();
    let table: std::collections::BTreeSet<String> =
        SETTINGS.iter().map(|s| s.key).filter(|k| *k != "-").map(str::to_owned).collect();
    assert_eq!(file.len(), 36, "{file:?}");
    assert_eq!(table, file, "every file key is a row of the table, and every row a file key");

    let guide = include_str!("../../../docs/operations.md");
    let mut names = std::collections::HashSet::new();
    for setting in SETTINGS {
        for name in [setting.env, setting.key].into_iter().filter(|n| *n != "-") {
            assert!(names.insert(name), "{name} is in the table twice");
            assert!(guide.contains(&format!("`{name}`")), "docs/operations.md does not list {name}");
        }
    }
}

#[test]
fn check_config_prints_no_secret() {
    let c = load(&[
        ("ZONE_DATABASE_URL", "postgres://zone:hunter22@db/zone"),
        ("ZONE_BUS_URL", "amqp://zone:hunter22@mq/%2f"),
        ("ZONE_ADMIN_PASSWORD", "hunter22hunter22"),
    ])
    .unwrap();
    let shown = format!("{c:#?}");
    assert!(!shown.contains("hunter22"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
