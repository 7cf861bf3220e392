//! `fogbank config check FILE`: every problem of a config file, each with
//! its line and key, rather than the first one a start would stop at; and
//! `fogbank config show`: the effective config, its secrets masked.
//!
//! Serde stops at the first key it cannot take. To name them all, the
//! check finds the key the error points at, takes it out of the document,
//! and deserializes again, until the rest deserializes; then the checks
//! serde cannot make ([`Validate::problems`]) run on what is left. Lines
//! are those of the file as written.

use std::fmt;
use std::ops::Range;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml_edit::{DocumentMut, ImDocument, Item, TableLike};

/// A config type whose values serde accepted but which may still be wrong.
pub trait Validate {
    /// `(key, reason)` for every problem; `key` is dotted (`log.format`).
    fn problems(&self) -> Vec<(String, String)>;
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based, when the key is in the file.
    pub line: Option<usize>,
    /// Dotted, array elements by index (`auth.tokens.0.scopes`); empty
    /// for the file as a whole.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (Some(line), false) => write!(f, "line {line}: {}: {}", self.key, self.reason),
            (Some(line), true) => write!(f, "line {line}: {}", self.reason),
            (None, false) => write!(f, "{}: {}", self.key, self.reason),
            (None, true) => write!(f, "{}", self.reason),
        }
    }
}

/// Keys serde refused, at most: a file with more is not worth reading on.
const MAX_PROBLEMS: usize = 100;

/// Every problem of `text` as a config of type `T`; empty when it is good.
pub fn check<T: DeserializeOwned + Validate>(text: &str) -> Vec<Problem> {
    let original = match ImDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            // A syntax error leaves nothing to walk: it is the one problem.
            return vec![Problem {
                line: error.span().map(|span| line_of(text, span.start)),
                key: String::new(),
                reason: error.message().trim().to_owned(),
            }];
        }
    };
    let mut problems = Vec::new();
    let mut current = text.to_owned();
    loop {
        let error = match toml::from_str::<T>(&current) {
            Ok(config) => {
                problems.extend(config.problems().into_iter().map(|(key, reason)| Problem {
                    line: line_of_key(&original, text, &key),
                    key,
                    reason,
                }));
                problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
                return problems;
            }
            Err(error) => error,
        };
        let reason = error.message().trim().to_owned();
        let path = error.span().and_then(|span| {
            let document = ImDocument::parse(current.as_str()).ok()?;
            let mut path = Vec::new();
            path_at(document.as_table(), span.start, &mut path).then_some(path)
        });
        let Some(path) = path.filter(|path| !path.is_empty()) else {
            problems.push(Problem {
                line: None,
                key: String::new(),
                reason,
            });
            return problems;
        };
        let key = path.join(".");
        problems.push(Problem {
            line: line_of_key(&original, text, &key),
            key,
            reason,
        });
        let Ok(mut document) = current.parse::<DocumentMut>() else {
            return problems;
        };
        if problems.len() >= MAX_PROBLEMS || !remove(document.as_table_mut(), &path) {
            return problems;
        }
        current = document.to_string();
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of a dotted key in the file, or of the nearest table above it
/// that is there (a problem of `mqtt` as a whole is on its header).
fn line_of_key(document: &ImDocument<&str>, text: &str, key: &str) -> Option<usize> {
    let mut table: &dyn TableLike = document.as_table();
    let mut line = None;
    let mut segments = key.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (found_key, item) = table.get_key_value(segment)?;
        let span = found_key.span().or_else(|| item.span());
        line = span.map(|span| line_of(text, span.start)).or(line);
        match item {
            Item::ArrayOfTables(array) => {
                let Some(index) = segments.peek().and_then(|s| s.parse::<usize>().ok()) else {
                    return line;
                };
                segments.next();
                let element = array.get(index)?;
                line = element
                    .span()
                    .map(|span| line_of(text, span.start))
                    .or(line);
                table = element;
            }
            Item::Value(toml_edit::Value::Array(array)) => {
                if let Some(index) = segments.peek().and_then(|s| s.parse::<usize>().ok()) {
                    line = array
                        .get(index)
                        .and_then(|value| value.span())
                        .map(|span| line_of(text, span.start))
                        .or(line);
                }
                return line;
            }
            other => match other.as_table_like() {
                Some(inner) => table = inner,
                None => return line,
            },
        }
    }
    line
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|span| span.contains(&offset))
}

/// Pushes onto `path` the keys down to the deepest key or value at
/// `offset`; whether there is one.
fn path_at(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    for (name, item) in table.iter() {
        path.push(name.to_owned());
        let here = table
            .get_key_value(name)
            .is_some_and(|(key, _)| contains(key.span(), offset))
            || contains(item.span(), offset);
        let deeper = match item {
            Item::ArrayOfTables(array) => array.iter().enumerate().any(|(index, element)| {
                path.push(index.to_string());
                if path_at(element, offset, path) {
                    return true;
                }
                path.pop();
                false
            }),
            other => other
                .as_table_like()
                .is_some_and(|inner| path_at(inner, offset, path)),
        };
        if deeper || here {
            return true;
        }
        path.pop();
    }
    false
}

/// Takes the key at `path` out; whether it was there.
fn remove(table: &mut dyn TableLike, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(Item::ArrayOfTables(array)) => match rest {
                [index] => match index.parse::<usize>() {
                    Ok(index) if index < array.len() => {
                        array.remove(index);
                        true
                    }
                    _ => false,
                },
                [index, rest @ ..] => index
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| array.get_mut(index))
                    .is_some_and(|element| remove(element, rest)),
                [] => false,
            },
            Some(item) => item
                .as_table_like_mut()
                .is_some_and(|inner| remove(inner, rest)),
            None => false,
        },
    }
}

/// Keys whose values are secrets: `config show` prints them masked.
const SECRET_KEYS: &[&str] = &["token", "admin_token", "password"];
const MASK: &str = "********";

/// `config` as TOML in its structs' order, every secret masked.
pub fn show<T: Serialize>(config: &T) -> Result<String, ShowError> {
    let mut document: DocumentMut = toml::to_string(config)?.parse()?;
    mask(document.as_table_mut());
    Ok(document.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error("cannot write the config as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
    #[error("cannot read back the config's TOML: {0}")]
    Parse(#[from] toml_edit::TomlError),
}

fn mask(table: &mut dyn TableLike) {
    for (key, item) in table.iter_mut() {
        if SECRET_KEYS.contains(&key.get()) && item.is_str() {
            *item = toml_edit::value(MASK);
        } else if let Item::ArrayOfTables(array) = item {
            array.iter_mut().for_each(|element| mask(element));
        } else if let Some(inner) = item.as_table_like_mut() {
            mask(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn problems(text: &str) -> Vec<String> {
        check::<Config>(text)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_good_file_has_no_problem() {
        assert!(problems("gateway_id = \"gw-a\"\n[log]\nformat = \"json\"\n").is_empty());
        assert!(problems("").is_empty());
    }

    #[test]
    fn a_syntax_error_is_the_one_problem_with_its_line() {
        assert_eq!(problems("gateway_id = \"gw-a\"\n[http\n").len(), 1);
        assert!(problems("gateway_id = \"gw-a\"\n[http\n")[0].starts_with("line 2: "));
    }

    #[test]
    fn every_refused_key_is_named_in_every_kind_of_table() {
        let text = "\
[mqtt]
mode = \"embedded\"
listen = 5

[[auth.tokens]]
name = \"a\"
token = \"0123456789abcdef\"
scopes = [\"read\"]

[[auth.tokens]]
name = \"b\"
token = \"0123456789abcdef\"
scope = \"admin\"

[store]
max_mb = -1
coap = { enabled = \"yes\" }
";
        assert_eq!(
            problems(text),
            [
                "line 3: mqtt.listen: invalid type: integer `5`, expected socket address",
                // Token b, its misspelt key taken out, lacks its scopes.
                "line 5: auth.tokens: missing field `scopes`",
                "line 13: auth.tokens.1.scope: unknown field `scope`, expected one of `name`, `token`, `scopes`",
                "line 16: store.max_mb: invalid value: integer `-1`, expected u64",
                "line 17: store.coap: unknown field `coap`, expected one of `sync_writes`, `cache_mb`, `max_age_secs`, `max_mb`, `retention_interval_secs`",
            ]
        );
    }

    #[test]
    fn checks_serde_cannot_make_come_after_and_sort_by_line() {
        let text = "[log]\nformat = \"xml\"\n[cloud]\npeers = [\"/ip4/1.2.3.4/tcp/1\", \"nowhere\"]\n[http]\nmax_body_bytes = 0\n";
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("line 2: log.format: "), "{found:?}");
        assert!(
            found[1].starts_with("line 4: cloud.peers.1: \"nowhere\""),
            "{found:?}"
        );
        assert!(
            found[2].starts_with("line 6: http.max_body_bytes: must be positive"),
            "{found:?}"
        );
    }

    #[test]
    fn show_masks_every_secret_and_keeps_the_rest() {
        let mut config = Config::default();
        config.mqtt.password = Some("broker-secret".into());
        config.auth.tokens.push(crate::config::TokenConfig {
            name: "ops".into(),
            token: "token-secret-0123".into(),
            scopes: vec!["read".into()],
        });
        config.auth.admin_token = Some("admin-secret-0123".into());
        let shown = show(&config).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(shown.matches(MASK).count(), 3, "{shown}");
        let back: Config = toml::from_str(&shown).unwrap();
        let mut expected = config.mqtt.clone();
        expected.password = Some(MASK.into());
        assert_eq!(back.mqtt, expected);
        assert_eq!(back.gateway_id, config.gateway_id);
    }

    proptest::proptest! {
        /// The shipped example with a line taken out and another put in:
        /// a check of it never panics, and every line it names is in it.
        #[test]
        fn any_edit_of_the_example_is_checked_without_a_panic(
            removed in 0usize..400,
            inserted_at in 0usize..400,
            inserted in "[a-z_.\\[\\] =\"0-9{},-]{0,40}",
        ) {
            let example = include_str!("../../deploy/fogbank.example.toml");
            let mut lines: Vec<&str> = example.lines().collect();
            if removed < lines.len() {
                lines.remove(removed);
            }
            lines.insert(inserted_at.min(lines.len()), &inserted);
            let text = lines.join("\n");
            for problem in check::<Config>(&text) {
                proptest::prop_assert!(problem.line.is_none_or(|line| line >= 1 && line <= lines.len()));
            }
        }
    }
}
