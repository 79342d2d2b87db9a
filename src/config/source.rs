//! Where the config comes from — a file, `./config.toml`, or the built-in
//! defaults — and the command line's override on top. Kept so that a reload
//! (SIGHUP, `POST /reload`) reads the same place the process started from.

use std::path::PathBuf;

use super::{Config, ConfigError, DEFAULT_CONFIG};

#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config`; `None`: `./config.toml` if it exists, else the built-in defaults.
    pub path: Option<PathBuf>,
    /// `--shards`, overriding `server.shards` and `server.cpus`.
    pub shards: Option<usize>,
}

impl ConfigSource {
    /// Reads and validates the config from its source.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let default_path = PathBuf::from("config.toml");
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None if default_path.exists() => Config::load(&default_path)?,
            None => Config::parse(DEFAULT_CONFIG, "built-in config")?,
        };
        if let Some(shards) = self.shards {
            config.server.shards = shards;
            config.server.cpus.clear();
        }
        Ok(config)
    }
}
