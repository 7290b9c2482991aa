//! Signed access tokens: JWT with HS256 (HMAC-SHA-256), carrying the user, a display name, an
//! expiry, an optional not-before time and per-document rights as glob patterns. The server only verifies; `quire-server
//! token` mints. Any JWT library can mint compatible tokens with the same secret.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use quire_protocol::Access;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The secret file inside the data directory, made on first start.
pub const SECRET_FILE: &str = "secret.key";

/// A right to open the documents whose IDs match `pattern` (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub pattern: String,
    pub write: bool,
}

/// The token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User ID.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// Expiry, seconds since the Unix epoch: the token is refused from this second on.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch: the token is refused before this second.
    /// Optional; tokens minted by `quire-server token` leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub docs: Vec<Grant>,
}

impl Claims {
    /// The best access the token grants on `doc`, if any.
    pub fn access_for(&self, doc: &str) -> Option<Access> {
        let matching = self
            .docs
            .iter()
            .filter(|grant| glob_match(&grant.pattern, doc));
        matching
            .map(|grant| {
                if grant.write {
                    Access::Write
                } else {
                    Access::Read
                }
            })
            .max_by_key(|a| *a as u8)
    }

    /// The claims of `--no-auth` mode: one local user who may do anything, forever.
    pub fn local_user() -> Self {
        Claims {
            sub: "local".into(),
            name: "Local user".into(),
            exp: u64::MAX,
            nbf: None,
            docs: vec![Grant {
                pattern: "*".into(),
                write: true,
            }],
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not three base64url parts")]
    Malformed,
    #[error("token algorithm is not HS256")]
    Algorithm,
    #[error("token signature does not verify")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
}

impl TokenError {
    /// A short name of the failure for logs, e.g. `expired`.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::Signature => "signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
        }
    }
}

/// Seconds of clock difference between the token's issuer and this server that the time
/// claims tolerate, the same for `exp` and `nbf`. None today: `exp` is exact here and in the
/// connection's expiry timer (close 4001), which must change with it.
pub const CLOCK_SKEW_SECS: u64 = 0;

/// The HMAC key tokens are signed with.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Reads the data directory's secret, creating a random one (owner-only) if absent.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => B64
                .decode(text.trim())
                .map(Self)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = rand::random();
                write_private(&path, B64.encode(bytes).as_bytes())?;
                Ok(Self(bytes.to_vec()))
            }
            Err(err) => Err(err),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Verifies a token's signature and its time claims at `now` (Unix seconds): refused
    /// from `exp` on and before `nbf`, each with [`CLOCK_SKEW_SECS`] of allowance.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(header).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(|v| v.as_str()) != Some("HS256") {
            return Err(TokenError::Algorithm);
        }
        let signature = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&token.as_bytes()[..header_len(token)]);
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims =
            serde_json::from_slice(&B64.decode(payload).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        if claims.exp.saturating_add(CLOCK_SKEW_SECS) <= now {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// Length of `header.payload`, the signed part of a token.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Glob matching where `*` matches any run of characters, `/` included.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            name: "Alice".into(),
            exp,
            nbf: None,
            docs: vec![
                Grant {
                    pattern: "team/*".into(),
                    write: true,
                },
                Grant {
                    pattern: "public/*".into(),
                    write: false,
                },
                Grant {
                    pattern: "team/archive/*".into(),
                    write: false,
                },
            ],
        }
    }

    #[test]
    fn sign_then_verify() {
        let secret = Secret::new(b"k".to_vec());
        let token = secret.sign(&claims(100));
        assert_eq!(secret.verify(&token, 99), Ok(claims(100)));
        assert_eq!(secret.verify(&token, 100), Err(TokenError::Expired));
        assert_eq!(
            Secret::new(b"other".to_vec()).verify(&token, 1),
            Err(TokenError::Signature)
        );
        assert_eq!(secret.verify("a.b", 1), Err(TokenError::Malformed));
        let mut tampered = token.clone();
        tampered.insert(tampered.find('.').unwrap() + 3, 'x');
        assert!(secret.verify(&tampered, 1).is_err());
    }

    #[test]
    fn not_before_is_honoured_with_the_same_allowance_as_expiry() {
        let secret = Secret::new(b"k".to_vec());
        let token = secret.sign(&Claims {
            nbf: Some(50),
            ..claims(100)
        });
        let skew = CLOCK_SKEW_SECS;
        assert_eq!(
            secret.verify(&token, 49 - skew),
            Err(TokenError::NotYetValid)
        );
        assert!(secret.verify(&token, 50 - skew).is_ok());
        assert!(secret.verify(&token, 99 + skew).is_ok());
        assert_eq!(secret.verify(&token, 100 + skew), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_without_nbf_stay_without_it() {
        let secret = Secret::new(b"k".to_vec());
        let token = secret.sign(&claims(100));
        let payload = token.split('.').nth(1).unwrap();
        let json = String::from_utf8(B64.decode(payload).unwrap()).unwrap();
        assert!(!json.contains("nbf"), "{json}");
        // A token from another minter with a numeric nbf in the past verifies.
        let with_nbf = secret.sign(&Claims {
            nbf: Some(1),
            ..claims(100)
        });
        assert_eq!(secret.verify(&with_nbf, 1).unwrap().nbf, Some(1));
    }

    #[test]
    fn alg_none_is_refused() {
        let header = B64.encode(br#"{"alg":"none"}"#);
        let payload = B64.encode(serde_json::to_vec(&claims(100)).unwrap());
        let token = format!("{header}.{payload}.");
        assert_eq!(
            Secret::new(b"k".to_vec()).verify(&token, 1),
            Err(TokenError::Algorithm)
        );
    }

    #[test]
    fn rights_take_the_best_matching_grant() {
        let c = claims(1);
        assert_eq!(c.access_for("team/notes"), Some(Access::Write));
        assert_eq!(c.access_for("team/archive/2020"), Some(Access::Write));
        assert_eq!(c.access_for("public/readme"), Some(Access::Read));
        assert_eq!(c.access_for("private/diary"), None);
        assert_eq!(c.access_for("team"), None);
    }

    #[test]
    fn glob() {
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("a*c", "abc"));
        assert!(glob_match("a*c", "ac"));
        assert!(!glob_match("a*c", "ab"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*.md", "notes.md"));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
