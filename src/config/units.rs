//! Human-friendly units in the config file: durations ("150ms", "10s", "2m")
//! and byte sizes (`65536`, "64KiB", "1GiB").
//!
//! Pure parsing, no I/O; used only by `config::resolve`.

use std::time::Duration;

use serde::Deserialize;

/// A byte size as written in TOML: a bare integer (bytes) or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// Parses "10s", "150ms", "2m", "1h", "500us". A bare "0" means zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m or h, e.g. \"10s\")"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (expected e.g. \"10s\" or \"150ms\")"))?;
    let duration = match unit.trim() {
        "us" | "µs" => Duration::from_micros(value),
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" | "min" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}` (use us, ms, s, m or h)"
            ))
        }
    };
    Ok(duration)
}

/// Parses a byte size; units are binary (KiB = 1024) and the short forms K/KB/M/MB/G/GB
/// are read the same way, as nginx does.
pub fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) if *n >= 0 => return Ok(*n as u64),
        RawSize::Bytes(n) => return Err(format!("size {n} is negative")),
        RawSize::Text(text) => text.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (expected e.g. 65536 or \"64KiB\")"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}` (use KiB, MiB or GiB)"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&RawSize::Bytes(4096)), Ok(4096));
        assert_eq!(parse_size(&RawSize::Text("64KiB".into())), Ok(65536));
        assert_eq!(parse_size(&RawSize::Text("1GiB".into())), Ok(1 << 30));
        assert_eq!(parse_size(&RawSize::Text("16k".into())), Ok(16384));
        assert!(parse_size(&RawSize::Bytes(-1)).is_err());
        assert!(parse_size(&RawSize::Text("lots".into())).is_err());
        assert!(parse_size(&RawSize::Text("99999999999999999999".into())).is_err());
    }
}
