//! The option registry both crates use: an option's key, flag, environment variable, type,
//! default and description in one place ([`OptionSpec`]), one parser per value type, settings
//! loaded from defaults, a YAML file and the command line ([`Settings`]), and the Markdown table
//! the docs are generated from ([`markdown_table`]).
//!
//! The filesystem's mount options (`statefs::options::OPTIONS`, docs/CONFIG.md) and the RocksDB
//! tuning keys (`statefs_backend::rocks_options::KEYS`, docs/ROCKSDB_OPTIONS.md) are two lists of
//! [`OptionSpec`]; the `statefs` CLI builds its flags from the first.
//!
//! Value syntax, the same everywhere (Flink's):
//! - sizes: a whole number with an optional unit `b`, `kb`, `mb`, `gb`, `tb` (1024-based; `k`, `kib`
//!   and the like too), e.g. `256mb`;
//! - durations: a whole number with a unit `ms`, `s`, `min`, `h`, `d`, e.g. `100ms`; a bare number
//!   is milliseconds;
//! - booleans: `true` or `false`.
//!
//! Every value that does not fit (an unknown unit, a number out of range) is an error.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A size ([`parse_bytes`]).
    Bytes,
    /// A non-negative whole number.
    Count,
    /// A number (decimal).
    Number,
    /// A number above 0 and below 1.
    Ratio,
    Bool,
    /// A duration ([`parse_duration`]).
    Duration,
    Text,
    /// A credential: text that is never shown (not in errors, not in logs) and is refused on a
    /// command line, which every local user can read in `/proc/PID/cmdline`. It comes from the
    /// environment or from a config file only its owner can read.
    Secret,
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// How the docs name the type.
    pub fn name(&self) -> String {
        match self {
            Kind::Bytes => "bytes".into(),
            Kind::Count => "count".into(),
            Kind::Number => "number".into(),
            Kind::Ratio => "ratio in (0, 1)".into(),
            Kind::Bool => "bool".into(),
            Kind::Duration => "duration".into(),
            Kind::Text => "text".into(),
            Kind::Secret => "secret".into(),
            Kind::Choice(c) => c.join(" \\| "),
        }
    }
}

/// One option.
#[derive(Debug)]
pub struct OptionSpec {
    pub key: &'static str,
    /// The command-line flag that sets it (`--name`); empty: none. A secret's flag is accepted by
    /// the parser only to be refused with an explanation.
    pub flag: &'static str,
    /// An environment variable the flag reads when it is not given; empty: none.
    pub env: &'static str,
    pub kind: Kind,
    /// Default, in the option's own syntax; empty = unset.
    pub default: &'static str,
    pub description: &'static str,
}

impl OptionSpec {
    pub const fn new(
        key: &'static str,
        flag: &'static str,
        kind: Kind,
        default: &'static str,
        description: &'static str,
    ) -> OptionSpec {
        OptionSpec {
            key,
            flag,
            env: "",
            kind,
            default,
            description,
        }
    }

    /// This option, with its flag reading environment variable `env` when not given.
    pub const fn with_env(mut self, env: &'static str) -> OptionSpec {
        self.env = env;
        self
    }

    /// Parses `raw` as this option's value.
    pub fn parse(&self, raw: &str) -> Result<Value, OptionError> {
        parse_value(self.kind, raw).map_err(|why| OptionError::BadValue {
            key: self.key.into(),
            // A secret's value is never repeated back.
            value: if self.kind == Kind::Secret {
                "(hidden)".into()
            } else {
                raw.into()
            },
            why,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionError {
    #[error("unknown configuration key `{0}` (`statefs config` lists them)")]
    UnknownKey(String),
    #[error("bad value {value:?} for `{key}`: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    #[error("configuration file {path}: {why}")]
    File { path: String, why: String },
    #[error(
        "`{0}` is a secret: a command line is readable by every local user (/proc/PID/cmdline). \
         Set it in the environment (AWS_SECRET_ACCESS_KEY) or in a config file only you can read"
    )]
    SecretOnCommandLine(String),
    #[error("`{key}` ({flag}) is required")]
    Missing {
        key: &'static str,
        flag: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bytes(u64),
    Count(u64),
    Number(f64),
    Bool(bool),
    Duration(Duration),
    Text(String),
    Secret(Secret),
}

/// A credential's value; its `Debug` never shows it.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// Splits `12mb` into `(12, "mb")`.
fn number_and_unit(s: &str) -> Result<(u64, String), String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n = num
        .parse()
        .map_err(|_| format!("expected a whole number with a unit, not {s:?}"))?;
    Ok((n, unit.trim().to_string()))
}

/// A size: a whole number with an optional unit (`b`, `kb`, `mb`, `gb`, `tb`; 1024-based).
///
/// ```
/// use statefs_store::options::parse_bytes;
/// assert_eq!(parse_bytes("256mb"), Ok(256 << 20));
/// assert_eq!(parse_bytes("4096"), Ok(4096));
/// assert!(parse_bytes("9999999999tb").is_err()); // too large: never wraps
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(s)
        .map_err(|_| "expected a number with an optional unit (b, kb, mb, gb, tb)".to_string())?;
    let mult: u64 = match unit.as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (b, kb, mb, gb, tb)")),
    };
    n.checked_mul(mult).ok_or_else(|| "too large".to_string())
}

/// A duration: a whole number with a unit (`ms`, `s`, `min`, `h`, `d`); a bare number is
/// milliseconds, as in Flink.
///
/// ```
/// use std::time::Duration;
/// use statefs_store::options::parse_duration;
/// assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s)
        .map_err(|_| "expected a number with a unit (ms, s, min, h, d)".to_string())?;
    let ms_per: u64 = match unit.as_str() {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" | "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (ms, s, min, h, d)"
            ));
        }
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| "too large".to_string())
}

/// Parses `raw` as a value of `kind`; the error says what was expected.
pub fn parse_value(kind: Kind, raw: &str) -> Result<Value, String> {
    match kind {
        Kind::Bytes => parse_bytes(raw).map(Value::Bytes),
        Kind::Count => raw
            .trim()
            .parse()
            .map(Value::Count)
            .map_err(|_| "expected a whole number".into()),
        Kind::Number => match raw.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Value::Number(n)),
            _ => Err("expected a number".into()),
        },
        Kind::Ratio => match raw.trim().parse::<f64>() {
            Ok(r) if r > 0.0 && r < 1.0 => Ok(Value::Number(r)),
            _ => Err("expected a number above 0 and below 1".into()),
        },
        Kind::Bool => match raw.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("expected true or false".into()),
        },
        Kind::Duration => parse_duration(raw).map(Value::Duration),
        Kind::Text => Ok(Value::Text(raw.to_string())),
        Kind::Secret => Ok(Value::Secret(Secret(raw.to_string()))),
        Kind::Choice(choices) => {
            if choices.contains(&raw.trim()) {
                Ok(Value::Text(raw.trim().to_string()))
            } else {
                Err(format!("expected one of {}", choices.join(", ")))
            }
        }
    }
}

/// Values by key of one registry: defaults, then a YAML file, then the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    registry: &'static [OptionSpec],
    values: BTreeMap<&'static str, Value>,
}

impl Settings {
    /// The defaults of `registry`.
    pub fn new(registry: &'static [OptionSpec]) -> Settings {
        let values = registry
            .iter()
            .filter(|o| !o.default.is_empty())
            .map(|o| (o.key, o.parse(o.default).expect("registry defaults parse")))
            .collect();
        Settings { registry, values }
    }

    pub fn spec(&self, key: &str) -> Option<&'static OptionSpec> {
        self.registry.iter().find(|o| o.key == key)
    }

    pub fn set(&mut self, key: &str, raw: &str) -> Result<(), OptionError> {
        let spec = self
            .spec(key)
            .ok_or_else(|| OptionError::UnknownKey(key.to_string()))?;
        self.values.insert(spec.key, spec.parse(raw)?);
        Ok(())
    }

    /// Sets `key` from a command line (a flag or `--set`): refused for a secret, which every
    /// local user could read there.
    pub fn set_from_command_line(&mut self, key: &str, raw: &str) -> Result<(), OptionError> {
        if let Some(s) = self.spec(key).filter(|s| s.kind == Kind::Secret) {
            let shown = if s.flag.is_empty() { s.key } else { s.flag };
            return Err(OptionError::SecretOnCommandLine(shown.to_string()));
        }
        self.set(key, raw)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Reads a YAML mapping of keys to values ([`crate::yaml::yaml_pairs`]); `path` names it in
    /// errors.
    pub fn load_yaml(&mut self, text: &str, path: &str) -> Result<(), OptionError> {
        let pairs = crate::yaml::yaml_pairs(text).map_err(|why| OptionError::File {
            path: path.to_string(),
            why,
        })?;
        for (k, v) in pairs {
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// Reads a YAML config file ([`Settings::load_yaml`]). A file that sets a secret must be
    /// readable by its owner only: one that others can read is refused, naming the key and the
    /// mode, never the value.
    pub fn load_yaml_file(&mut self, path: &std::path::Path) -> Result<(), OptionError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let file_err = |why: String| OptionError::File {
            path: shown.clone(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let mode = std::fs::metadata(path)
            .map_err(|e| file_err(e.to_string()))?
            .permissions()
            .mode();
        let mut loaded = self.clone();
        loaded.load_yaml(&text, &shown)?;
        if let Some(secret) = self
            .registry
            .iter()
            .find(|o| o.kind == Kind::Secret && loaded.values.get(o.key) != self.values.get(o.key))
            && mode & 0o077 != 0
        {
            return Err(file_err(format!(
                "it holds a secret (`{}`) and other users can read it (mode {:o}): `chmod 600 {shown}`",
                secret.key,
                mode & 0o777
            )));
        }
        *self = loaded;
        Ok(())
    }

    /// Non-empty text (or a choice) of `key`.
    pub fn text(&self, key: &str) -> Option<String> {
        match self.values.get(key) {
            Some(Value::Text(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }

    /// The size of `key`, if set.
    pub fn bytes(&self, key: &str) -> Option<u64> {
        match self.values.get(key) {
            Some(Value::Bytes(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn count(&self, key: &str) -> Option<u64> {
        match self.values.get(key) {
            Some(Value::Count(n)) => Some(*n),
            _ => None,
        }
    }

    /// A number or ratio.
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.values.get(key) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.values.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn duration(&self, key: &str) -> Option<Duration> {
        match self.values.get(key) {
            Some(Value::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn secret(&self, key: &str) -> Option<&Secret> {
        match self.values.get(key) {
            Some(Value::Secret(s)) if !s.expose().is_empty() => Some(s),
            _ => None,
        }
    }
}

/// `registry` as a Markdown table; `key_prefix` is shown in the heading (keys are listed after
/// it), and the flag column appears when `with_flags`.
pub fn markdown_table(registry: &[OptionSpec], key_heading: &str, with_flags: bool) -> String {
    let mut out = if with_flags {
        format!("| {key_heading} | Flag | Type | Default | Description |\n|---|---|---|---|---|\n")
    } else {
        format!("| {key_heading} | Type | Default | Description |\n|---|---|---|---|\n")
    };
    for o in registry {
        let default = if o.default.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{}`", o.default)
        };
        let flag = match (
            o.flag.is_empty() || o.kind == Kind::Secret,
            o.env.is_empty(),
        ) {
            (true, _) => "(none)".to_string(),
            (false, true) => format!("`{}`", o.flag),
            (false, false) => format!("`{}` (env `{}`)", o.flag, o.env),
        };
        let columns = if with_flags {
            format!(
                "| `{}` | {flag} | {} | {default} | {} |\n",
                o.key,
                o.kind.name(),
                o.description
            )
        } else {
            format!(
                "| `{}` | {} | {default} | {} |\n",
                o.key,
                o.kind.name(),
                o.description
            )
        };
        out.push_str(&columns);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syntax_for_sizes_and_durations() {
        assert_eq!(parse_bytes("256mb"), Ok(256 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("12"), Ok(12));
        assert!(
            parse_bytes("99999999999tb")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_bytes("1 parsec").is_err());
        assert!(parse_bytes("-1kb").is_err());
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(
            parse_duration("18446744073709551615d")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn values_outside_their_type_are_refused() {
        assert!(parse_value(Kind::Ratio, "1").is_err());
        assert!(parse_value(Kind::Ratio, "0").is_err());
        assert_eq!(parse_value(Kind::Ratio, "0.5"), Ok(Value::Number(0.5)));
        assert!(parse_value(Kind::Number, "NaN").is_err());
        assert!(parse_value(Kind::Count, "-3").is_err());
        assert!(parse_value(Kind::Bool, "yes").is_err());
        assert!(parse_value(Kind::Choice(&["a", "b"]), "c").is_err());
    }

    static REGISTRY: &[OptionSpec] = &[
        OptionSpec::new("a.size", "--size", Kind::Bytes, "1kb", "A size."),
        OptionSpec::new("a.secret", "--secret", Kind::Secret, "", "A secret."),
    ];

    #[test]
    fn secrets_are_never_shown_and_never_taken_from_a_command_line() {
        let mut s = Settings::new(REGISTRY);
        assert_eq!(s.bytes("a.size"), Some(1024));
        let err = s.set_from_command_line("a.secret", "hunter2").unwrap_err();
        assert!(matches!(err, OptionError::SecretOnCommandLine(_)), "{err}");
        s.set("a.secret", "hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.secret("a.secret").unwrap().expose(), "hunter2");
        let err = s.set("a.size", "lots").unwrap_err().to_string();
        assert!(err.contains("a.size") && err.contains("lots"), "{err}");
        assert!(matches!(
            s.set("a.other", "1"),
            Err(OptionError::UnknownKey(_))
        ));
    }
}
