//! The node's configuration: one TOML file per node (`--config FILE`), overridden by `ZONE_*`
//! environment variables, then validated once at start.
//!
//! A bad value stops the node before it touches the database or the bus, with a message that
//! names the setting both ways (`ZONE_DEAD_AFTER_MS` / `cluster.dead_after_ms`) and says what is
//! wrong. Secrets (the bootstrap admin password, URLs with passwords, the secret key) are
//! [`Secret`]s and never appear in `Debug` output, errors or logs.
//!
//! # Layout
//! - [`file`]: the structs a file is read into, their defaults and accessors
//! - [`settings`]: the table of settings: each one's variable, file key, parsing and check
//! - this file: loading (file, then environment, then checks) and [`ConfigError`]

mod file;
mod settings;

use std::path::{Path, PathBuf};

pub use file::{Config, HttpConfig};

/// A setting that is wrong, named both as its environment variable and its file key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {env} ({key}) = {value:?}: {problem}")]
    Invalid { env: &'static str, key: &'static str, value: String, problem: String },
}

impl Config {
    /// Reads the file (if any), applies the environment, validates.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
                toml::from_str::<Config>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?
            }
            None => Config::default(),
        };
        settings::apply_env(&mut config, env)?;
        settings::check(&mut config)?;
        Ok(config)
    }

    /// Reads the process environment.
    pub fn load_from_process(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, &|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests;
