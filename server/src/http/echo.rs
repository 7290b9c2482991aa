//! A plain WebSocket echo endpoint on the server's real connection code, for the Autobahn
//! conformance cases. Off unless `--echo-endpoint` is given; it never touches documents.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use quire_protocol::handshake::check_upgrade;
use quire_protocol::{CloseCode, Limits};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

use super::{header_pairs, http_version, refuse, switching_protocols, websocket_config};

pub const PATH: &str = "/echo";

pub fn upgrade(req: Request<Incoming>, limits: &Limits) -> Response<Full<Bytes>> {
    // The echo endpoint needs no subprotocol: add the one check_upgrade wants.
    let mut headers = header_pairs(&req);
    headers.push((
        "sec-websocket-protocol",
        quire_protocol::handshake::SUBPROTOCOL,
    ));
    let key = match check_upgrade(req.method().as_str(), http_version(&req), None, &headers) {
        Ok(upgrade) => upgrade.key,
        Err(refusal) => return refuse(&refusal),
    };
    let config = websocket_config(limits.max_message_size);
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        while let Some(message) = ws.next().await {
            let message = match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => message,
                Ok(_) => continue,
                Err(err) => {
                    let code = match err {
                        Error::Protocol(_) => CloseCode::ProtocolError,
                        Error::Utf8(_) => CloseCode::InvalidPayload,
                        Error::Capacity(_) => CloseCode::MessageTooBig,
                        _ => return,
                    };
                    let frame = CloseFrame {
                        code: WsCode::from(code.as_u16()),
                        reason: code.description().into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    return;
                }
            };
            if ws.send(message).await.is_err() {
                return;
            }
        }
    });
    switching_protocols(&key, None)
}
