//! `quire-server verify [DOC] --node URL…`: compares what each running server holds with
//! what the store holds, by state digest (docs/SCALING.md).
//!
//! Each node is asked over HTTP (or HTTPS, trusting `--ca-cert`) for `/digests` (with a read token minted from the
//! shared secret), which lists the documents it has loaded, each with its digest and the
//! stored update it covers. The store's digest of each document is computed here. A node whose
//! head is behind the store's is still catching up: that document alone is asked again until
//! `--settle` has passed. The answer is one line per document and source:
//!
//! ```text
//! DOC  stored  HEAD  DIGEST
//! DOC  NODE    HEAD  DIGEST  same | DIFFERENT | behind
//! ```
//!
//! and the exit status is 0 when every node that holds a document holds the store's digest,
//! 1 otherwise (a difference, a node still behind, or a node that did not answer or answered
//! nonsense). A document asked for that no node has loaded is listed as such, with the
//! store's digest; it differs from nothing.
// The command line answers on standard output by design.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use quire_protocol::StateDigest;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::auth::{unix_now, Claims, Grant, Secret};
use crate::divergence::{stored_digest, DigestLine, HeldDigest};
use crate::store::AnyStore;

/// How long one node may take to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two rounds while some node is still behind.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What one node holds of one document, against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Same,
    Different,
    Behind,
}

/// `verify`: returns whether everything agreed.
pub async fn verify(
    store: &AnyStore,
    secret: &Secret,
    nodes: &[String],
    tls: Option<&TlsConnector>,
    only: Option<&str>,
    settle: Duration,
) -> anyhow::Result<bool> {
    let uris = |doc: Option<&str>| -> anyhow::Result<Vec<Uri>> {
        nodes.iter().map(|url| node_uri(url, doc)).collect()
    };
    let first = uris(only)?;
    let token = secret.sign(&Claims {
        sub: "quire-server verify".into(),
        name: "verify".into(),
        exp: unix_now() + 600,
        nbf: None,
        docs: vec![Grant {
            pattern: only.map_or_else(|| "*".to_owned(), str::to_owned),
            write: false,
        }],
    });
    let deadline = Instant::now() + settle;
    let mut round = compare(store, &token, &first, tls, only).await?;
    loop {
        let behind = round.behind();
        if behind.is_empty() || Instant::now() >= deadline {
            round.print();
            return Ok(round.agreed());
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        // Only the documents still behind are asked again, each of every node.
        for doc in behind {
            let again = compare(store, &token, &uris(Some(&doc))?, tls, Some(&doc)).await?;
            round.replace(&doc, again);
        }
    }
}

/// One line of the answer.
#[derive(Debug)]
struct Row {
    doc: String,
    source: String,
    held: HeldDigest,
    /// `None` for the store's own line.
    verdict: Option<Verdict>,
}

#[derive(Debug, Default)]
struct Round {
    rows: Vec<Row>,
    /// Nodes that did not answer, with why.
    unreachable: Vec<(String, String)>,
    /// Documents asked for that no node has loaded: only the store's digest to show.
    not_loaded: Vec<String>,
}

impl Round {
    /// The documents some node is still behind on.
    fn behind(&self) -> BTreeSet<String> {
        self.rows
            .iter()
            .filter(|row| row.verdict == Some(Verdict::Behind))
            .map(|row| row.doc.clone())
            .collect()
    }

    /// Puts what was asked again about `doc` in place of what this round had of it.
    fn replace(&mut self, doc: &str, again: Round) {
        self.rows.retain(|row| row.doc != doc);
        self.rows.extend(again.rows);
        // Stable: each document's rows stay in their order, the store's first.
        self.rows.sort_by(|a, b| a.doc.cmp(&b.doc));
        self.not_loaded.retain(|d| d != doc);
        self.not_loaded.extend(again.not_loaded);
        for (node, why) in again.unreachable {
            if !self.unreachable.iter().any(|(known, _)| *known == node) {
                self.unreachable.push((node, why));
            }
        }
    }

    fn agreed(&self) -> bool {
        self.unreachable.is_empty()
            && self
                .rows
                .iter()
                .all(|row| matches!(row.verdict, None | Some(Verdict::Same)))
    }

    fn print(&self) {
        for (node, why) in &self.unreachable {
            println!("{node}\tunreachable: {why}");
        }
        for doc in &self.not_loaded {
            println!("{doc}\tnot loaded on any node");
        }
        for row in &self.rows {
            let verdict = match row.verdict {
                None => "",
                Some(Verdict::Same) => "\tsame",
                Some(Verdict::Different) => "\tDIFFERENT",
                Some(Verdict::Behind) => "\tbehind",
            };
            println!(
                "{}\t{}\t{}\t{}{verdict}",
                row.doc, row.source, row.held.head, row.held.digest
            );
        }
    }
}

/// Asks every node once and compares each document it holds with the store.
async fn compare(
    store: &AnyStore,
    token: &str,
    nodes: &[Uri],
    tls: Option<&TlsConnector>,
    only: Option<&str>,
) -> anyhow::Result<Round> {
    let mut round = Round::default();
    // Document → what each node holds of it.
    let mut held: BTreeMap<String, Vec<(String, HeldDigest)>> = BTreeMap::new();
    if let Some(doc) = only {
        held.entry(doc.to_owned()).or_default();
    }
    for node in nodes {
        let name = node_name(node);
        let answer = tokio::time::timeout(NODE_TIMEOUT, node_digests(node, token, tls)).await;
        let lines = match answer {
            Ok(Ok(lines)) => lines
                .into_iter()
                .map(|line| Ok((parse_digest(&line.digest)?, line)))
                .collect::<anyhow::Result<Vec<_>>>(),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(anyhow::anyhow!("no answer in time")),
        };
        match lines {
            Ok(lines) => {
                for (digest, line) in lines {
                    let head = line.head;
                    let on_node = (name.clone(), HeldDigest { head, digest });
                    held.entry(line.doc).or_default().push(on_node);
                }
            }
            Err(err) => round.unreachable.push((name, format!("{err:#}"))),
        }
    }
    for (doc, on_nodes) in held {
        if on_nodes.is_empty() {
            round.not_loaded.push(doc.clone());
        }
        let stored = stored_digest(store, &doc)
            .await
            .with_context(|| format!("reading `{doc}` from the store"))?;
        round.rows.push(Row {
            doc: doc.clone(),
            source: "stored".into(),
            held: stored,
            verdict: None,
        });
        for (node, on_node) in on_nodes {
            let verdict = if on_node.head < stored.head {
                Verdict::Behind
            } else if on_node == stored {
                Verdict::Same
            } else {
                Verdict::Different
            };
            round.rows.push(Row {
                doc: doc.clone(),
                source: node,
                held: on_node,
                verdict: Some(verdict),
            });
        }
    }
    Ok(round)
}

fn parse_digest(hex: &str) -> anyhow::Result<StateDigest> {
    StateDigest::from_hex(hex).with_context(|| format!("a node sent `{hex}` as a digest"))
}

/// `http://host:port` → the node's `/digests` URI, asking for `only` if given.
fn node_uri(url: &str, only: Option<&str>) -> anyhow::Result<Uri> {
    let base: Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    let scheme = match base.scheme_str() {
        Some(scheme @ ("http" | "https")) if base.authority().is_some() => scheme,
        _ => bail!("`{url}`: give a node's address as http://host:port or https://host:port"),
    };
    let query = only.map_or_else(String::new, |doc| format!("?doc={}", percent_encode(doc)));
    let authority = base.authority().expect("checked").as_str();
    format!(
        "{scheme}://{authority}{}{query}",
        crate::http::digests::PATH
    )
    .parse()
    .context("building the node's URL")
}

fn node_name(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str())
    )
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Trusts the certificates in `files` (PEM), for nodes reached over https.
pub fn trusting(files: &[PathBuf]) -> anyhow::Result<Option<TlsConnector>> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    for file in files {
        let certs = CertificateDer::pem_file_iter(file)
            .with_context(|| format!("reading {}", file.display()))?;
        for cert in certs {
            let cert = cert.with_context(|| format!("a certificate in {}", file.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("using the certificate in {}", file.display()))?;
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// One GET of a node's `/digests`, over TLS for https.
async fn node_digests(
    uri: &Uri,
    token: &str,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<Vec<DigestLine>> {
    let authority = uri.authority().context("the URL names no host")?;
    let https = uri.scheme_str() == Some("https");
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, port))
        .await
        .context("connecting")?;
    if !https {
        return get_digests(stream, uri, token).await;
    }
    let tls = tls.context("an https node needs --ca-cert")?;
    let name = ServerName::try_from(host.to_owned()).context("the URL's host")?;
    let stream = tls.connect(name, stream).await.context("TLS handshake")?;
    get_digests(stream, uri, token).await
}

async fn get_digests<IO>(io: IO, uri: &Uri, token: &str) -> anyhow::Result<Vec<DigestLine>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let authority = uri.authority().context("the URL names no host")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let request = Request::get(uri.clone())
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let response = sender.send_request(request).await.context("asking")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        bail!("answered {status}: {}", body.trim());
    }
    body.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).with_context(|| format!("unreadable line `{line}`")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_asked_again_replaces_its_rows_alone() {
        let held = |head| HeldDigest {
            head,
            digest: StateDigest([head as u8; 32]),
        };
        let row = |doc: &str, source: &str, head, verdict| Row {
            doc: doc.into(),
            source: source.into(),
            held: held(head),
            verdict,
        };
        let mut round = Round {
            rows: vec![
                row("a", "stored", 2, None),
                row("a", "n1", 1, Some(Verdict::Behind)),
                row("b", "stored", 5, None),
                row("b", "n1", 5, Some(Verdict::Same)),
            ],
            ..Round::default()
        };
        assert_eq!(round.behind(), BTreeSet::from(["a".to_owned()]));
        let again = Round {
            rows: vec![
                row("a", "stored", 2, None),
                row("a", "n1", 2, Some(Verdict::Same)),
            ],
            unreachable: vec![("n2".into(), "no answer in time".into())],
            ..Round::default()
        };
        round.replace("a", again);
        assert!(round.behind().is_empty());
        let order: Vec<(&str, &str)> = round
            .rows
            .iter()
            .map(|r| (r.doc.as_str(), r.source.as_str()))
            .collect();
        assert_eq!(
            order,
            [("a", "stored"), ("a", "n1"), ("b", "stored"), ("b", "n1")]
        );
        assert_eq!(round.unreachable.len(), 1);
        assert!(!round.agreed());
    }

    #[test]
    fn node_urls_must_be_plain_http() {
        let uri = node_uri("http://127.0.0.1:7700", Some("team/a b")).unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:7700/digests?doc=team%2Fa%20b"
        );
        assert_eq!(node_name(&uri), "http://127.0.0.1:7700");
        let tls = node_uri("https://localhost:7700", None).unwrap();
        assert_eq!(tls.to_string(), "https://localhost:7700/digests");
        assert!(node_uri("ws://127.0.0.1:7700", None).is_err());
        assert!(node_uri("127.0.0.1:7700", None).is_err());
    }
}
