//! The socket of the current connection: its reading half, read by the driver's loop, and a
//! writer task that owns the sending half, so that a slow socket never blocks the loop's
//! handling of the server's frames.

use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use quire_protocol::CloseCode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::transport::{LastRead, Socket};

/// Outgoing messages waiting for the writer task.
const OUT_QUEUE: usize = 1024;
/// How long a Close may take to go out when the client shuts down.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub(crate) struct Link {
    pub stream: SplitStream<Socket>,
    /// When bytes last arrived, even of a frame not yet whole (§8.1).
    pub last_read: LastRead,
    out: mpsc::Sender<WsMessage>,
    writer: JoinHandle<()>,
}

impl Link {
    pub(crate) fn new(socket: Socket, last_read: LastRead) -> Self {
        let (mut sink, stream) = socket.split();
        let (out, mut out_rx) = mpsc::channel::<WsMessage>(OUT_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let closing = matches!(message, WsMessage::Close(_));
                if sink.feed(message).await.is_err() {
                    return;
                }
                while let Ok(message) = out_rx.try_recv() {
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        Self {
            stream,
            last_read,
            out,
            writer,
        }
    }

    pub(crate) async fn send(&self, frame: Vec<u8>) {
        let _ = self.out.send(WsMessage::Binary(frame.into())).await;
    }

    /// Sends the Close frame for `code`, with its §10.1 reason text; the writer ends after it.
    /// Returns the writer, to wait for when the process may be about to exit.
    pub(crate) async fn close(self, code: CloseCode) -> JoinHandle<()> {
        let frame = CloseFrame {
            code: WsCode::from(code.as_u16()),
            reason: code.description().into(),
        };
        let _ = self.out.send(WsMessage::Close(Some(frame))).await;
        self.writer
    }

    /// Drops the socket without a Close: the server is presumed dead (§8.1).
    pub(crate) fn abandon(self) {
        self.writer.abort();
    }
}

/// Waits a little for a Close to go out.
pub(crate) async fn linger(writer: JoinHandle<()>) {
    let _ = tokio::time::timeout(CLOSE_LINGER, writer).await;
}
