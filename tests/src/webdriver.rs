//! A small W3C WebDriver client over hyper: just the calls the desktop end-to-end tests make
//! (sessions, finding elements, clicks, keys, text, scripts, screenshots).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[derive(Debug, Clone)]
pub struct WebDriver {
    addr: SocketAddr,
    session: String,
}

#[derive(Debug, Clone)]
pub struct Element(String);

/// One HTTP request to the driver; returns the JSON `value` or the WebDriver error.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", addr.to_string())
        .header("Content-Type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{status}: {e}"))?;
    let value = value.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!("{status}: {value}"))
    }
}

impl WebDriver {
    /// Starts a session running the Tauri app at `application`.
    pub async fn start(addr: SocketAddr, application: &str) -> Result<Self, String> {
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "wry",
                "tauri:options": { "application": application }
            }}
        });
        let value = call(addr, "POST", "/session", Some(capabilities)).await?;
        let session = value["sessionId"]
            .as_str()
            .ok_or("no session ID")?
            .to_owned();
        Ok(Self { addr, session })
    }

    async fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let value = self
            .session_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        value[ELEMENT]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .ok_or_else(|| format!("no element id for {css}"))
    }

    /// Waits until `css` matches an element.
    pub async fn wait_for(&self, css: &str, deadline: Duration) -> Element {
        let start = tokio::time::Instant::now();
        loop {
            match self.find(css).await {
                Ok(element) => return element,
                Err(err) if start.elapsed() >= deadline => {
                    let page = self.text_of("body").await;
                    panic!(
                        "no element {css} after {deadline:?}: {err}; the page shows: {page:.600}"
                    );
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, element: &Element) -> Result<(), String> {
        self.session_call(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    pub async fn send_keys(&self, element: &Element, text: &str) -> Result<(), String> {
        self.session_call(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await
        .map(drop)
    }

    pub async fn text(&self, element: &Element) -> Result<String, String> {
        let value = self
            .session_call("GET", &format!("/element/{}/text", element.0), None)
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Runs `script` in the page (`return …` gives the value).
    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The text of the first element matching `css`, or "" when there is none.
    pub async fn text_of(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : '';",
            json!(css)
        );
        self.execute(&script)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let value = self.session_call("GET", "/screenshot", None).await?;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    /// Ends the session, which closes the app.
    pub async fn quit(self) {
        let _ = call(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        )
        .await;
    }
}
