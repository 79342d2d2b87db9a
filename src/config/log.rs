//! `[log]`: the access log — where lines go and in which format. The lines are
//! written by a writer thread, never by a shard (see `access_log`).

use std::path::PathBuf;

use super::{
    raw::RawLog,
    resolver::{Keyword, Resolver},
    ConfigError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    Off,
    Stdout,
    File(PathBuf),
}

/// `[log] format`: one line per request in either format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// The NCSA combined format nginx and Apache write by default.
    Combined,
    /// One JSON object per line.
    Json,
}

impl Keyword for AccessFormat {
    const ALL: &'static [Self] = &[AccessFormat::Combined, AccessFormat::Json];
    fn name(self) -> &'static str {
        match self {
            AccessFormat::Combined => "combined",
            AccessFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub access: AccessTarget,
    pub format: AccessFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: AccessTarget::Off,
            format: AccessFormat::Combined,
        }
    }
}

impl Resolver<'_> {
    pub(super) fn log(&self, raw: RawLog) -> Result<LogConfig, ConfigError> {
        let access = match raw.access {
            None => AccessTarget::Off,
            Some(text) => match text.get_ref().as_str() {
                "off" => AccessTarget::Off,
                "stdout" => AccessTarget::Stdout,
                "" => return Err(self.invalid("log.access", text.span(), "is empty")),
                path => AccessTarget::File(PathBuf::from(path)),
            },
        };
        Ok(LogConfig {
            access,
            format: self.keyword("log.format", raw.format, AccessFormat::Combined)?,
        })
    }
}
