//! A strict reader of the Prometheus text exposition format (0.0.4), so the
//! tests can check that `/metrics` parses and read exact values from it:
//! metric and label name syntax, label value escapes, `# TYPE` before a
//! family's samples and at most once, histogram suffixes, cumulative buckets
//! ending in `+Inf` equal to `_count`, and no series twice.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line: name, labels (sorted), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// Sum of the samples named `name` whose labels include every pair in `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn is_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(first_ok)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// Parses `text`, or says which line is wrong and why.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut seen_series = HashSet::new();
    let mut families_with_samples = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) if is_name(name, true) => {}
                (Some("TYPE"), Some(name), Some(kind)) if is_name(name, true) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail("unknown type"));
                    }
                    if families_with_samples.contains(name) || out.types.contains_key(name) {
                        return Err(fail("TYPE after samples or twice"));
                    }
                    out.types.insert(name.to_string(), kind.to_string());
                }
                (Some("HELP" | "TYPE"), _, _) => return Err(fail("bad HELP/TYPE line")),
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|why| fail(&why))?;
        let family = family_of(&sample.name, &out.types);
        families_with_samples.insert(family.to_string());
        let key = format!("{}{:?}", sample.name, sample.labels);
        if !seen_series.insert(key) {
            return Err(fail("series repeated"));
        }
        out.samples.push(sample);
    }
    check_histograms(&out)?;
    Ok(out)
}

/// The family a sample belongs to (histogram samples carry a suffix).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    name
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name, true) {
        return Err("bad metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end;
        loop {
            // label name
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if inner[start..].starts_with('}') {
                end = start + 1;
                break;
            }
            let eq = inner[start..].find('=').ok_or("label without =")? + start;
            let key = &inner[start..eq];
            if !is_name(key, false) {
                return Err(format!("bad label name {key:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    end = i + 1;
                    break;
                }
                _ => return Err("expected , or } after a label".into()),
            }
        }
        rest = &inner[end..];
    }
    let mut fields = rest.trim_start_matches(' ').split(' ');
    let value_text = fields.next().ok_or("no value")?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Buckets cumulative and ending in `+Inf` equal to `_count`, per series.
fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (family, _) in exposition.types.iter().filter(|(_, t)| *t == "histogram") {
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exposition.samples.iter().filter(|s| s.name == bucket) {
            let le = s.labels.get("le").ok_or(format!("{bucket} without le"))?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("bad le {le}"))?
            };
            let mut rest = s.labels.clone();
            rest.remove("le");
            series
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in series {
            let sorted = buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            let last = buckets.last().ok_or("no buckets")?;
            let count = exposition
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .ok_or(format!("{family}_count missing for {labels}"))?;
            if !sorted || last.0 != f64::INFINITY || last.1 != count.value {
                return Err(format!(
                    "{family} {labels}: buckets not cumulative or +Inf != count"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_prometheus_rejects() {
        assert!(parse("# TYPE a counter\na 1\n").is_ok());
        assert!(parse("a{b=\"x\\\"y\"} 2\n").is_ok());
        assert!(parse("1a 1\n").is_err());
        assert!(parse("a{b=x} 1\n").is_err());
        assert!(parse("a 1\na 2\n").is_err());
        assert!(parse("a x\n").is_err());
        assert!(parse("a 1\n# TYPE a counter\n").is_err());
        let bad_hist = "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n";
        assert!(parse(bad_hist).is_err());
    }
}
