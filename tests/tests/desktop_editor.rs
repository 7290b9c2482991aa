//! The real desktop app's own dialogs and its live-preview editor (tauri-driver +
//! WebKitWebDriver under Xvfb, the real server, a headless quire-client peer): new, rename and
//! remove through the app's dialogs, trusting a certificate from the status bar, and the
//! Markdown surface with a remote cursor, in light and dark. Run by scripts/test.sh
//! (QUIRE_E2E_DESKTOP=1). The apps run one at a time (WebKit is heavy).

use std::path::PathBuf;

use quire_tests::app_ui::{
    click, cursor_awareness, dialog_open, open_in_app, peer, peer_with_index, sidebar_titles,
    type_in_dialog, until_app_text, until_connection, until_dialog_closed, until_index,
    until_script, with_suffix, DEADLINE, ENTER, ESCAPE, TEXT_END,
};
use quire_tests::client_util::append;
use quire_tests::desktop::{enabled, settings, Desktop};
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;
use quire_tests::webdriver::WebDriver;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until the sidebar lists exactly `titles` (in its order).
async fn until_sidebar(app: &WebDriver, what: &str, titles: &[&str]) {
    wait::until(what, DEADLINE, || async {
        (sidebar_titles(app).await == titles).then_some(())
    })
    .await;
}

/// The id of the document whose sidebar title is `title`.
async fn doc_id_titled(app: &WebDriver, title: &str) -> String {
    let script = format!(
        "const item = Array.from(document.querySelectorAll('[data-testid=doc-item]')).find(i => i.querySelector('.title').textContent === {}); return item ? item.dataset.doc : '';",
        serde_json::json!(title)
    );
    until_script(
        app,
        &script,
        &format!("a document titled {title:?}"),
        |id| !id.is_empty(),
    )
    .await
}

#[tokio::test]
async fn new_rename_and_remove_go_through_the_apps_own_dialogs() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (_peer, index, _docs) = peer_with_index(&server, &token, &[("doc/keep", "Keep")]).await;
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    until_sidebar(&app, "the peer's document listed", &["Keep"]).await;

    // New: the app's dialog, not the webview's prompt(), with "Untitled" offered.
    click(&app, "[data-testid=new-doc]").await;
    app.wait_for("[data-testid=dialog]", DEADLINE).await;
    let offered = app
        .execute("return document.querySelector('[data-testid=dialog-input]').value;")
        .await
        .unwrap();
    assert_eq!(offered.as_str(), Some("Untitled"));
    type_in_dialog(&app, &format!("Minutes of Monday{ENTER}")).await;
    until_dialog_closed(&app).await;
    let id = doc_id_titled(&app, "Minutes of Monday").await;
    // It opens in a tab of its own, and the peer sees it in the workspace.
    app.wait_for(&format!(".pane[data-doc='{id}'] .cm-content"), DEADLINE)
        .await;
    until_index(&index, "the new document at the peer", |titles| {
        titles.get(&id).map(String::as_str) == Some("Minutes of Monday")
    })
    .await;

    // Rename, offered the current title; a blank one is refused in the dialog itself.
    click(&app, &format!("[data-doc='{id}'] [data-testid=rename-doc]")).await;
    type_in_dialog(&app, &format!("   {ENTER}")).await;
    let refusal = until_script(
        &app,
        "const e = document.querySelector('[data-testid=dialog-error]'); return e ? e.textContent : '';",
        "the refusal of a blank title",
        |text| !text.is_empty(),
    )
    .await;
    assert_eq!(refusal, "A title cannot be empty.");
    assert!(dialog_open(&app).await, "a blank title closed the dialog");
    type_in_dialog(&app, &format!("Minutes, Monday{ENTER}")).await;
    until_dialog_closed(&app).await;
    until_index(&index, "the rename at the peer", |titles| {
        titles.get(&id).map(String::as_str) == Some("Minutes, Monday")
    })
    .await;

    // Escape cancels a rename: nothing changes.
    click(&app, &format!("[data-doc='{id}'] [data-testid=rename-doc]")).await;
    type_in_dialog(&app, &format!("Not this{ESCAPE}")).await;
    until_dialog_closed(&app).await;
    until_sidebar(&app, "both documents", &["Keep", "Minutes, Monday"]).await;

    // Remove asks first, naming the document; Escape keeps it, confirming removes it.
    click(&app, "[data-doc='doc/keep'] [data-testid=delete-doc]").await;
    let message = app.text_of("[data-testid=dialog-message]").await;
    assert!(message.contains("“Keep”"), "the dialog says {message:?}");
    let cancel = app.wait_for("[data-testid=dialog-cancel]", DEADLINE).await;
    app.send_keys(&cancel, ESCAPE).await.unwrap();
    until_dialog_closed(&app).await;
    assert_eq!(sidebar_titles(&app).await, ["Keep", "Minutes, Monday"]);
    click(&app, "[data-doc='doc/keep'] [data-testid=delete-doc]").await;
    click(&app, "[data-testid=dialog-confirm]").await;
    until_dialog_closed(&app).await;
    until_sidebar(&app, "the removal", &["Minutes, Monday"]).await;
    until_index(&index, "the removal at the peer", |titles| {
        !titles.contains_key("doc/keep")
    })
    .await;
    desktop.quit(app).await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_trusted_from_the_status_bar() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    // The app has never seen this server's certificate.
    let mut unseen = settings(&server, &token, "Ada");
    unseen["trustedFingerprint"] = serde_json::Value::Null;
    let mut desktop = Desktop::new(Some(unseen));
    let app = desktop.launch().await;
    until_connection(&app, "untrusted").await;

    click(&app, "[data-testid=trust-cert]").await;
    let message = app.text_of("[data-testid=dialog-message]").await;
    let hex = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_lowercase()
    };
    assert!(
        hex(&message).contains(&hex(&server.fingerprint)),
        "the dialog should show the server's fingerprint {}: {message:?}",
        server.fingerprint
    );
    // Cancel first: still untrusted, nothing stored.
    click(&app, "[data-testid=dialog-cancel]").await;
    until_dialog_closed(&app).await;
    until_connection(&app, "untrusted").await;
    // Then trust it: connected, and remembered in the settings.
    click(&app, "[data-testid=trust-cert]").await;
    click(&app, "[data-testid=dialog-confirm]").await;
    until_connection(&app, "connected").await;
    let stored = std::fs::read_to_string(desktop.dirs.path().join("config/settings.json"))
        .expect("the app's settings");
    assert!(
        hex(&stored).contains(&hex(&server.fingerprint)),
        "the settings do not hold the trusted fingerprint: {stored}"
    );
    desktop.quit(app).await;
}

const NOTES: &str = "# Monday planning\n\nThe **release** is on *Thursday*; the notes live in `docs/`.\n\n## To do\n\n- Review the [open issues](https://example.org/issues)\n- Write the changelog\n- Book the room\n\n> Ship small, ship often.\n\nAnything else goes here.";

#[tokio::test]
async fn the_editor_previews_markdown_and_shows_a_remote_cursor() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (_peer, docs) = peer(&server, &token, &[("doc/notes", "Monday planning")]).await;
    append(&docs[0], NOTES);
    let cursor_at = NOTES.find("changelog").expect("the peer's cursor") as u32;
    docs[0].set_awareness(Some(&cursor_awareness(
        &docs[0], "Grace", "#2da44e", cursor_at,
    )));
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    open_in_app(&app, "doc/notes").await;
    until_app_text(&app, "the peer's notes", |t| t.contains("Anything else")).await;
    // The app's caret goes to the end of the text, on its last line.
    let editor = app
        .wait_for(".pane[data-doc='doc/notes'] .cm-content", DEADLINE)
        .await;
    app.send_keys(&editor, TEXT_END).await.unwrap();

    // Away from the caret the markup is hidden: the heading shows without "# ", the bold
    // without its stars, the link without its address; the heading is larger than the text.
    until_app_text(&app, "the markup hidden", |t| {
        t.contains("Monday planning") && !t.contains("# Monday") && !t.contains("**")
    })
    .await;
    let text = quire_tests::app_ui::editor_text(&app).await;
    assert!(
        !text.contains("](https://"),
        "the link's address shows: {text:?}"
    );
    assert!(text.contains("open issues"), "{text:?}");
    let sizes = until_script(
        &app,
        "const h = document.querySelector('.cm-lp-h1'); const p = Array.from(document.querySelectorAll('.cm-line')).find(l => l.textContent.startsWith('Anything')); return h && p ? `${parseFloat(getComputedStyle(h).fontSize)} ${parseFloat(getComputedStyle(p).fontSize)}` : '';",
        "a heading and a paragraph",
        |v| !v.is_empty(),
    )
    .await;
    let (heading, body): (f64, f64) = {
        let mut parts = sizes.split(' ').map(|s| s.parse::<f64>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    assert!(heading > body * 1.5, "heading {heading}px, text {body}px");
    // The text is set in a proportional font, not the code font.
    let family = until_script(
        &app,
        "const c = document.querySelector('.cm-scroller'); return c ? getComputedStyle(c).fontFamily : '';",
        "the editor's font",
        |v| !v.is_empty(),
    )
    .await;
    assert!(
        !family.contains("monospace"),
        "the editor's font is {family:?}"
    );
    // The peer's cursor shows with its name.
    let name = until_script(
        &app,
        "const e = document.querySelector('.cm-ySelectionInfo'); return e ? e.textContent : '';",
        "the peer's cursor",
        |v| !v.is_empty(),
    )
    .await;
    assert_eq!(name, "Grace");

    // Dark follows the root's theme (set from the system's preference at start).
    let background = |theme: &'static str| {
        format!("document.documentElement.dataset.theme = '{theme}'; return getComputedStyle(document.querySelector('.cm-editor')).backgroundColor;")
    };
    let light = app.execute(&background("light")).await.unwrap();
    let dark = app.execute(&background("dark")).await.unwrap();
    assert_ne!(light, dark, "the editor looks the same in dark");

    if let Some(path) = std::env::var_os("QUIRE_SCREENSHOT_OUT") {
        let path = PathBuf::from(path);
        for (theme, file) in [
            ("light", path.clone()),
            ("dark", with_suffix(&path, "-dark")),
        ] {
            app.execute(&background(theme)).await.unwrap();
            // A WebDriver screenshot makes WebKit paint what it shows; the display capture
            // after it has the current content plus the window's native menu bar.
            app.screenshot().await.unwrap();
            desktop.screenshot(&file);
        }
    }
    desktop.quit(app).await;
}
