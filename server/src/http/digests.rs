//! `GET /digests`: the state digest of each document loaded here, with the stored update it
//! covers, for `quire-server verify` to compare with the store (docs/SCALING.md). Each is
//! taken once everything the document's room applied before is stored.
//!
//! The request carries a token in `Authorization: Bearer`, as an upgrade does; only
//! documents it can read are listed (401 without a valid token). `?doc=ID` (percent-encoded)
//! asks for one document. The answer is one JSON object per line:
//! `{"doc":"…","head":12,"digest":"…64 hex digits…"}`. Listings run one at a time.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use quire_protocol::handshake::bearer_token;
use tokio::sync::Semaphore;

use super::{authenticate, header_pairs, refuse, text, Body};
use crate::divergence::DigestLine;
use crate::server::Server;
use crate::store::Store;

pub const PATH: &str = "/digests";

/// Listings run one at a time: each digests every loaded document the token reads (a pass over
/// each), so requests made together queue here rather than multiply that work.
static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);
/// A listing waits for each room to store what it applied: past this, 503.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

pub(super) async fn answer<S: Store>(
    server: &Server<S>,
    req: &Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let token = bearer_token(&header_pairs(req));
    let claims = match authenticate(server, token.as_deref(), peer) {
        Ok(claims) => claims,
        Err(refusal) => return refuse(refusal),
    };
    let only = match req.uri().query().map(one_doc).transpose() {
        Ok(only) => only.flatten(),
        Err(()) => {
            return text(
                StatusCode::BAD_REQUEST,
                "the doc parameter is not percent-encoded UTF-8\n",
            )
        }
    };
    let _turn = ONE_AT_A_TIME
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let listing = server.rooms.digests(|doc| {
        only.as_deref().is_none_or(|only| only == doc.as_str())
            && claims.access_for(doc.as_str()).is_some()
    });
    let Ok(digests) = tokio::time::timeout(ANSWER_WITHIN, listing).await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the documents' digests took too long (storage slow?); try again\n",
        );
    };
    let mut body = String::new();
    for (doc, held) in digests {
        let line = DigestLine {
            doc: doc.as_str().to_owned(),
            head: held.head,
            digest: held.digest.to_hex(),
        };
        body.push_str(&serde_json::to_string(&line).expect("plain fields serialize"));
        body.push('\n');
    }
    text(StatusCode::OK, body)
}

/// The `doc` parameter of a query, percent-decoded; `Err` if it does not decode to UTF-8.
fn one_doc(query: &str) -> Result<Option<String>, ()> {
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("doc=") {
            return percent_decode(value).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(text: &str) -> Result<String, ()> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or(())?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(());
            }
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doc_parameter_is_percent_decoded() {
        assert_eq!(one_doc("doc=team%2Fa%20b"), Ok(Some("team/a b".into())));
        assert_eq!(one_doc("x=1"), Ok(None));
        assert_eq!(one_doc("doc=%zz"), Err(()));
        assert_eq!(one_doc("doc=%ff"), Err(()));
        assert_eq!(one_doc("doc=%+5"), Err(()));
    }
}
