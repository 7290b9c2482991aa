//! The opening handshake, as a pure check of the HTTP upgrade request: what a server must
//! refuse, with which status, before any WebSocket exists. Servers run this before handing the
//! socket to a WebSocket library, because such libraries tend to drop bad handshakes without
//! answering (docs/PROTOCOL.md §2).

/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";
/// The `Sec-WebSocket-Protocol` value a client must offer and the server echoes.
pub const SUBPROTOCOL: &str = "quire.v1";
/// Query parameter that may carry the token where headers cannot be set (browsers).
pub const TOKEN_QUERY_PARAM: &str = "access_token";
/// The WebSocket version this protocol runs on.
pub const WEBSOCKET_VERSION: &str = "13";

/// An upgrade request refused before the WebSocket opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    /// A header the response must carry (426 names the supported version).
    pub header: Option<(&'static str, &'static str)>,
}

impl Refusal {
    const fn new(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            header: None,
        }
    }
}

/// What a well-formed upgrade request carries for the server to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Key`, for the `Sec-WebSocket-Accept` answer.
    pub key: String,
    /// The bearer token, from `Authorization` or the query; `None` when absent.
    pub token: Option<String>,
}

/// The HTTP version an upgrade must use, as written in the request line (RFC 6455 §4.1).
pub const HTTP_VERSION: &str = "HTTP/1.1";

/// Checks an upgrade request for the WebSocket path. `version` is the request line's HTTP
/// version as written there (`HTTP/1.1`); `headers` holds every header line (name, value), in
/// any case; `query` is the raw query string without `?`.
pub fn check_upgrade(
    method: &str,
    version: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Upgrade, Refusal> {
    if method != "GET" {
        return Err(Refusal::new(405, "the WebSocket upgrade must be a GET"));
    }
    if version != HTTP_VERSION {
        return Err(NOT_HTTP_1_1);
    }
    let hosts: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim())
        .collect();
    if !matches!(hosts.as_slice(), [host] if !host.is_empty()) {
        return Err(MISSING_HOST);
    }
    let values = |name: &'static str| header_values(headers, name);
    if !values("upgrade").any(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(Refusal::new(400, "missing `Upgrade: websocket`"));
    }
    if !values("connection").any(|v| v.eq_ignore_ascii_case("upgrade")) {
        return Err(Refusal::new(400, "missing `Connection: Upgrade`"));
    }
    let mut versions = values("sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(WEBSOCKET_VERSION), None) => {}
        _ => {
            return Err(Refusal {
                status: 426,
                reason: "unsupported WebSocket version",
                header: Some(("Sec-WebSocket-Version", WEBSOCKET_VERSION)),
            })
        }
    }
    let key = match values("sec-websocket-key").collect::<Vec<_>>().as_slice() {
        [key] if is_valid_key(key) => (*key).to_owned(),
        _ => return Err(Refusal::new(400, "missing or malformed Sec-WebSocket-Key")),
    };
    if !values("sec-websocket-protocol").any(|v| v == SUBPROTOCOL) {
        return Err(Refusal::new(
            400,
            "the client must offer the `quire.v1` subprotocol",
        ));
    }
    let token = bearer_token(headers).or_else(|| query.and_then(query_token));
    Ok(Upgrade { key, token })
}

/// Every comma-separated value of every header line called `name`, trimmed.
fn header_values<'h>(
    headers: &'h [(&'h str, &'h str)],
    name: &'static str,
) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
}

/// The refusal for an upgrade over any HTTP version but 1.1 (HTTP/1.0 has no upgrade).
pub const NOT_HTTP_1_1: Refusal = Refusal::new(400, "the WebSocket upgrade must use HTTP/1.1");
/// The refusal for an upgrade without exactly one non-empty `Host` header (RFC 6455 §4.1,
/// RFC 9112 §3.2).
pub const MISSING_HOST: Refusal = Refusal::new(400, "the upgrade must carry one `Host` header");
/// The refusal for a request without a usable token.
pub const UNAUTHORIZED: Refusal =
    Refusal::new(401, "missing, malformed, expired or unverifiable token");
/// The refusal for a valid token that grants nothing on this server.
pub const FORBIDDEN: Refusal = Refusal::new(403, "the token grants no access");
/// The refusal when one address holds too many connections.
pub const TOO_MANY_CONNECTIONS: Refusal =
    Refusal::new(429, "too many connections from this address");
/// The refusal while the server shuts down.
pub const SHUTTING_DOWN: Refusal = Refusal::new(503, "the server is shutting down");
/// The refusal while the server's memory budget is exceeded.
pub const OVERLOADED: Refusal = Refusal::new(503, "the server is overloaded; try again later");

/// A key is the base64 encoding of 16 bytes: 22 characters and `==`.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer_token(headers: &[(&str, &str)]) -> Option<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .find_map(|(_, v)| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
        .filter(|t| !t.is_empty())
}

fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == TOKEN_QUERY_PARAM && !value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const V11: &str = HTTP_VERSION;

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Host", "localhost"),
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Protocol", "other, quire.v1"),
            ("Authorization", "Bearer abc.def"),
        ]
    }

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        good().into_iter().filter(|(n, _)| *n != name).collect()
    }

    #[test]
    fn accepts_a_good_request() {
        let upgrade = check_upgrade("GET", V11, None, &good()).unwrap();
        assert_eq!(
            upgrade,
            Upgrade {
                key: KEY.into(),
                token: Some("abc.def".into())
            }
        );
    }

    #[test]
    fn token_may_come_from_the_query() {
        let upgrade = check_upgrade(
            "GET",
            V11,
            Some("x=1&access_token=t0k"),
            &without("Authorization"),
        )
        .unwrap();
        assert_eq!(upgrade.token.as_deref(), Some("t0k"));
        let upgrade = check_upgrade("GET", V11, None, &without("Authorization")).unwrap();
        assert_eq!(upgrade.token, None);
    }

    #[test]
    fn refusals_have_the_documented_status() {
        assert_eq!(
            check_upgrade("POST", V11, None, &good())
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            check_upgrade("GET", V11, None, &without("Upgrade"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            check_upgrade("GET", V11, None, &without("Connection"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            check_upgrade("GET", V11, None, &without("Sec-WebSocket-Key"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            check_upgrade("GET", V11, None, &without("Sec-WebSocket-Protocol"))
                .unwrap_err()
                .status,
            400
        );
        let old = check_upgrade("GET", V11, None, &without("Sec-WebSocket-Version")).unwrap_err();
        assert_eq!(
            (old.status, old.header),
            (426, Some(("Sec-WebSocket-Version", "13")))
        );
        for version in ["HTTP/1.0", "HTTP/0.9", "HTTP/2.0"] {
            assert_eq!(
                check_upgrade("GET", version, None, &good()),
                Err(NOT_HTTP_1_1),
                "{version}"
            );
        }
        assert_eq!(
            check_upgrade("GET", V11, None, &without("Host")),
            Err(MISSING_HOST)
        );
        let mut two_hosts = good();
        two_hosts.push(("host", "elsewhere"));
        assert_eq!(
            check_upgrade("GET", V11, None, &two_hosts),
            Err(MISSING_HOST)
        );
        let mut empty_host = without("Host");
        empty_host.push(("Host", " "));
        assert_eq!(
            check_upgrade("GET", V11, None, &empty_host),
            Err(MISSING_HOST)
        );
        let mut bad_key = without("Sec-WebSocket-Key");
        bad_key.push(("Sec-WebSocket-Key", "short"));
        assert_eq!(
            check_upgrade("GET", V11, None, &bad_key)
                .unwrap_err()
                .status,
            400
        );
    }
}
