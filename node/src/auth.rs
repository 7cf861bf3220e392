//! Bearer tokens and their scopes.
//!
//! Tokens come from the config file and `FOGBANK_ADMIN_TOKEN`. A node that
//! has none would accept no writes at all, so its first run creates an
//! admin token in the data directory (mode 0600) and says where.

use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use crate::config::AuthConfig;

pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

struct Token {
    name: String,
    secret: String,
    scopes: Vec<Scope>,
}

/// Why a request was not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No or unknown token: 401.
    Unauthenticated,
    /// A valid token without the scope: 403.
    Forbidden { token: String, needed: Scope },
}

pub struct Tokens {
    /// Swapped whole on a reload (SIGHUP), so a request sees the old table
    /// or the new one, never a mix.
    table: RwLock<TokenTable>,
}

struct TokenTable {
    tokens: Vec<Token>,
    read_requires_token: bool,
}

/// Where the admin token came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    Configured,
    Created(PathBuf),
    Existing(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot create the admin token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin token in {0} is shorter than 16 characters")]
    Weak(PathBuf),
    #[error("no random numbers available for a new token: {0}")]
    Random(String),
}

impl Tokens {
    /// Builds the token table; creates or reads `DATA_DIR/admin.token` when
    /// nothing else grants admin rights.
    pub fn load(
        config: &AuthConfig,
        env_admin: Option<String>,
        data_dir: &Path,
    ) -> Result<(Self, AdminTokenSource), AuthError> {
        let mut tokens: Vec<Token> = config
            .tokens
            .iter()
            .map(|t| Token {
                name: t.name.clone(),
                secret: t.token.clone(),
                scopes: t.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            })
            .collect();
        let configured_admin = env_admin.or_else(|| config.admin_token.clone());
        let source = if let Some(secret) = configured_admin {
            tokens.push(Token {
                name: "admin".into(),
                secret,
                scopes: vec![Scope::Admin],
            });
            AdminTokenSource::Configured
        } else if tokens.is_empty() {
            let (secret, source) = admin_token_file(data_dir)?;
            tokens.push(Token {
                name: "admin".into(),
                secret,
                scopes: vec![Scope::Admin],
            });
            source
        } else {
            AdminTokenSource::Configured
        };
        let table = TokenTable {
            tokens,
            read_requires_token: config.read_requires_token,
        };
        Ok((
            Tokens {
                table: RwLock::new(table),
            },
            source,
        ))
    }

    /// Takes `other`'s tokens for every request from now on.
    pub fn replace(&self, other: Tokens) {
        *self.table.write() = other.table.into_inner();
    }

    /// How many tokens there are (the admin token included).
    pub fn count(&self) -> usize {
        self.table.read().tokens.len()
    }

    /// Checks an `Authorization` header value for a scope.
    pub fn check(&self, authorization: Option<&str>, needed: Scope) -> Result<(), Denied> {
        let table = self.table.read();
        if needed == Scope::Read && !table.read_requires_token {
            return Ok(());
        }
        let presented = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(Denied::Unauthenticated)?;
        let token = table
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.secret.as_bytes(), presented.as_bytes()))
            .ok_or(Denied::Unauthenticated)?;
        let allowed = token.scopes.iter().any(|s| {
            *s == Scope::Admin || *s == needed || (needed == Scope::Read && *s == Scope::Write)
        });
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden {
                token: token.name.clone(),
                needed,
            })
        }
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn admin_token_file(data_dir: &Path) -> Result<(String, AdminTokenSource), AuthError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim().to_owned();
            if secret.len() < 16 {
                return Err(AuthError::Weak(path));
            }
            Ok((secret, AdminTokenSource::Existing(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = new_secret()?;
            write_private(&path, &secret).map_err(|source| AuthError::Write {
                path: path.clone(),
                source,
            })?;
            Ok((secret, AdminTokenSource::Created(path)))
        }
        Err(source) => Err(AuthError::Read { path, source }),
    }
}

/// 32 random bytes, hex-encoded.
pub fn new_secret() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a new file only its owner can read; an existing one stays.
pub(crate) fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    #[test]
    fn first_run_creates_a_private_admin_token_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, source) = Tokens::load(&AuthConfig::default(), None, dir.path()).unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        assert_eq!(source, AdminTokenSource::Created(path.clone()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let secret = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert_eq!(secret.len(), 64);
        assert_eq!(
            tokens.check(Some(&format!("Bearer {secret}")), Scope::Write),
            Ok(())
        );
        let (_, again) = Tokens::load(&AuthConfig::default(), None, dir.path()).unwrap();
        assert_eq!(again, AdminTokenSource::Existing(path));
    }

    #[test]
    fn scopes_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            tokens: vec![
                TokenConfig {
                    name: "reader".into(),
                    token: "r".repeat(20),
                    scopes: vec!["read".into()],
                },
                TokenConfig {
                    name: "writer".into(),
                    token: "w".repeat(20),
                    scopes: vec!["write".into()],
                },
            ],
            admin_token: None,
            read_requires_token: true,
        };
        let (tokens, _) = Tokens::load(&config, Some("a".repeat(20)), dir.path()).unwrap();
        let bearer = |c: char| format!("Bearer {}", c.to_string().repeat(20));
        assert_eq!(
            tokens.check(None, Scope::Write),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            tokens.check(Some("Bearer nope"), Scope::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(tokens.check(Some(&bearer('r')), Scope::Read), Ok(()));
        assert!(matches!(
            tokens.check(Some(&bearer('r')), Scope::Write),
            Err(Denied::Forbidden { .. })
        ));
        assert_eq!(tokens.check(Some(&bearer('w')), Scope::Read), Ok(()));
        assert_eq!(tokens.check(Some(&bearer('w')), Scope::Write), Ok(()));
        assert_eq!(tokens.check(Some(&bearer('a')), Scope::Admin), Ok(()));
        assert!(
            !dir.path().join(ADMIN_TOKEN_FILE).exists(),
            "configured tokens need no file"
        );
    }
}
