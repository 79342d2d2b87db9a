//! The one error type of config loading: where (file, line) and what (the key
//! and why), so `--check` output points at the fix.

use std::fmt;

/// A config that could not be read or is invalid.
#[derive(Debug)]
pub struct ConfigError {
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {}: {}", self.origin, line, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The dotted key of a serde path, with array indices: `upstream[0].servers`.
/// Empty for errors outside any key (TOML syntax errors).
pub(super) fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    // `toml::Spanned` deserializes as a struct with private field names; they
    // are plumbing, not keys the user wrote.
    const SPANNED_FIELD: &str = "$__serde_spanned_private_";
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with(SPANNED_FIELD) {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}
