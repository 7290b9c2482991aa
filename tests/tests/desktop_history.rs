//! The real desktop app's history panel, trash and Markdown files (tauri-driver +
//! WebKitWebDriver under Xvfb, the real server, a headless quire-client peer): name a version,
//! edit, read the version's differences and restore it, and the peer gets it; delete a
//! document and bring it back from the trash, and delete one forever; export a document to a
//! Markdown file and import it again. Run by scripts/test.sh (QUIRE_E2E_DESKTOP=1), one app
//! at a time. With QUIRE_SCREENSHOT_OUT set (…/screenshot.png) the history panel and the
//! trash are captured beside it, in light and dark.

use std::path::PathBuf;

use quire_client::DocState;
use quire_tests::app_ui::{
    click, editor_text, index_titles, open_in_app, peer, peer_with_index, sidebar_titles,
    type_in_app, type_in_dialog, until_app_text, until_connection, until_dialog_closed,
    until_index, until_peer_text, until_script, with_suffix, DEADLINE, ENTER, TEXT_END,
};
use quire_tests::client_util::{append, until_state};
use quire_tests::desktop::{enabled, settings, Desktop};
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;
use quire_tests::webdriver::WebDriver;
use yrs::Transact;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Captures the app as it is, in light and in dark, as `<screenshot>-<name>(-dark).png`.
async fn screenshots(app: &WebDriver, desktop: &Desktop, name: &str) {
    let Some(base) = std::env::var_os("QUIRE_SCREENSHOT_OUT").map(PathBuf::from) else {
        return;
    };
    for (theme, suffix) in [
        ("light", format!("-{name}")),
        ("dark", format!("-{name}-dark")),
    ] {
        app.execute(&format!(
            "document.documentElement.dataset.theme = '{theme}'; return '';"
        ))
        .await
        .unwrap();
        // A WebDriver screenshot makes WebKit paint what it shows first.
        app.screenshot().await.unwrap();
        desktop.screenshot(&with_suffix(&base, &suffix));
    }
    app.execute("document.documentElement.dataset.theme = 'light'; return '';")
        .await
        .unwrap();
}

const PLAN: &str =
    "# Release plan\n\nShip on **Friday**.\n\n- Write the changelog\n- Tell the team";

#[tokio::test]
async fn a_named_version_is_read_with_its_differences_and_restored_for_everyone() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (_peer, docs) = peer(&server, &token, &[("doc/plan", "Release plan")]).await;
    append(&docs[0], PLAN);
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    open_in_app(&app, "doc/plan").await;
    until_app_text(&app, "the plan", |t| t.contains("Tell the team")).await;

    // Name a version through the panel's own dialog.
    click(&app, "[data-testid=show-history]").await;
    app.wait_for("[data-testid=no-versions]", DEADLINE).await;
    click(&app, "[data-testid=name-version]").await;
    type_in_dialog(&app, &format!("Before the review{ENTER}")).await;
    until_dialog_closed(&app).await;
    app.wait_for("[data-testid=version][data-kind=named]", DEADLINE)
        .await;
    let label = until_script(
        &app,
        "const v = document.querySelector('[data-testid=version][data-kind=named]'); return v ? Array.from(v.children).map(c => c.textContent).join('|') : '';",
        "the named version",
        |v| !v.is_empty(),
    )
    .await;
    assert!(label.starts_with("Before the review|"), "{label:?}");
    // The author is the token's holder, as the server knows it.
    assert!(label.ends_with("|Tester"), "the author is named: {label:?}");

    // Edit after it, in the app; the peer sees the edit.
    let editor = app
        .wait_for(".pane[data-doc='doc/plan'] .cm-content", DEADLINE)
        .await;
    app.send_keys(&editor, TEXT_END).await.unwrap();
    // Enter on a list item continues the list: the app types the "- " itself.
    type_in_app(&app, "doc/plan", &format!("{ENTER}Book the room")).await;
    until_peer_text(&docs[0], "the app's edit", |t| t.ends_with("Book the room")).await;

    // Reading the version marks what restoring it would change.
    click(&app, "[data-testid=version][data-kind=named]").await;
    let removed = until_script(
        &app,
        "return Array.from(document.querySelectorAll('[data-diff=onlyNow]')).map(e => e.textContent).join('|');",
        "the line only the current text has",
        |v| !v.is_empty(),
    )
    .await;
    assert_eq!(removed, "- Book the room");
    let summary = app.text_of("[data-testid=diff-summary]").await;
    assert!(summary.contains("removes 1"), "{summary:?}");
    assert!(
        editor_text(&app).await.contains("Book the room"),
        "reading changed nothing"
    );
    screenshots(&app, &desktop, "history").await;

    // Restore, after a confirmation: the peer gets the version's text as an edit.
    click(&app, "[data-testid=restore-version]").await;
    app.wait_for("[data-testid=dialog]", DEADLINE).await;
    click(&app, "[data-testid=dialog-confirm]").await;
    until_dialog_closed(&app).await;
    until_peer_text(&docs[0], "the restore", |t| t == PLAN).await;
    until_app_text(&app, "the restore in the app", |t| {
        !t.contains("Book the room")
    })
    .await;
    // The text it replaced is kept as a version, so the restore can be undone.
    app.wait_for("[data-testid=version][data-kind=beforeRestore]", DEADLINE)
        .await;
    desktop.quit(app).await;
}

#[tokio::test]
async fn a_deleted_document_comes_back_from_the_trash_or_goes_for_good() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (_peer, index, docs) = peer_with_index(
        &server,
        &token,
        &[("doc/alpha", "Alpha notes"), ("doc/beta", "Beta draft")],
    )
    .await;
    append(&docs[0], "Alpha's words");
    append(&docs[1], "Beta's words");
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    wait::until("both documents listed", DEADLINE, || async {
        (sidebar_titles(&app).await == ["Alpha notes", "Beta draft"]).then_some(())
    })
    .await;

    // Delete Alpha: it leaves the list everywhere, and the peer's channel on it closes.
    click(&app, "[data-doc='doc/alpha'] [data-testid=delete-doc]").await;
    let message = app.text_of("[data-testid=dialog-message]").await;
    assert!(message.contains("trash"), "{message:?}");
    click(&app, "[data-testid=dialog-confirm]").await;
    until_dialog_closed(&app).await;
    until_index(&index, "Alpha out of the peer's list", |t| {
        !t.contains_key("doc/alpha")
    })
    .await;
    until_state(
        &mut docs[0].state(),
        "the peer's channel closed",
        DEADLINE,
        |s| matches!(s, DocState::Failed { code: 4410, .. }),
    )
    .await;

    // The trash lists it with its title; restoring brings it back, content and all.
    click(&app, "[data-testid=show-trash]").await;
    let item = app
        .wait_for("[data-testid=trash-item][data-doc='doc/alpha']", DEADLINE)
        .await;
    assert!(app.text(&item).await.unwrap().contains("Alpha notes"));
    screenshots(&app, &desktop, "trash").await;
    click(&app, "[data-doc='doc/alpha'] [data-testid=untrash-doc]").await;
    app.wait_for("[data-testid=trash-empty]", DEADLINE).await;
    until_index(&index, "Alpha back in the peer's list", |t| {
        t.get("doc/alpha").map(String::as_str) == Some("Alpha notes")
    })
    .await;
    open_in_app(&app, "doc/alpha").await;
    until_app_text(&app, "Alpha's content", |t| t.trim() == "Alpha's words").await;

    // Beta goes to the trash and then for good: nothing is left of it on the server.
    click(&app, "[data-doc='doc/beta'] [data-testid=delete-doc]").await;
    click(&app, "[data-testid=dialog-confirm]").await;
    until_dialog_closed(&app).await;
    click(&app, "[data-testid=show-trash]").await;
    click(&app, "[data-doc='doc/beta'] [data-testid=purge-doc]").await;
    let warning = app.text_of("[data-testid=dialog-message]").await;
    assert!(warning.contains("cannot be undone"), "{warning:?}");
    click(&app, "[data-testid=dialog-confirm]").await;
    until_dialog_closed(&app).await;
    app.wait_for("[data-testid=trash-empty]", DEADLINE).await;
    let listed = server.command(&["list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("doc/beta"));
    // The index forgets it too.
    until_index(&index, "Beta gone from the peer's list", |t| {
        !t.contains_key("doc/beta")
    })
    .await;
    let trash_map = {
        use yrs::Map;
        let map = index.doc().get_or_insert_map("trash");
        let txn = index.doc().transact();
        map.len(&txn)
    };
    assert_eq!(trash_map, 0, "the index's trash is empty");
    assert!(index_titles(&index).contains_key("doc/alpha"));
    desktop.quit(app).await;
}

#[tokio::test]
async fn a_document_is_exported_to_markdown_and_imported_again() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (peer_client, index, docs) =
        peer_with_index(&server, &token, &[("doc/notes", "Team notes")]).await;
    append(&docs[0], PLAN);
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let files = desktop.files_dir();
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    open_in_app(&app, "doc/notes").await;
    until_app_text(&app, "the notes", |t| t.contains("Tell the team")).await;

    // Export (Ctrl+Shift+E): the file dialog's answer is the test's directory.
    let editor = app
        .wait_for(".pane[data-doc='doc/notes'] .cm-content", DEADLINE)
        .await;
    app.send_keys(&editor, "\u{E009}\u{E008}e\u{E000}")
        .await
        .unwrap();
    let exported = files.join("Team notes.md");
    let text = wait::until("the exported file", DEADLINE, || {
        let text = std::fs::read_to_string(&exported).ok();
        std::future::ready(text.filter(|t| !t.is_empty()))
    })
    .await;
    assert_eq!(text, PLAN);

    // Import it again (Ctrl+O): a new document titled after the file, with its text, which
    // the peer sees in the workspace and can open.
    std::fs::write(
        files.join("Team notes.md"),
        format!("{PLAN}\n\nImported copy."),
    )
    .unwrap();
    app.send_keys(&editor, "\u{E009}o\u{E000}").await.unwrap();
    let mut new_id = String::new();
    until_index(&index, "the imported document", |t| {
        t.iter()
            .any(|(id, title)| id != "doc/notes" && title == "Team notes")
    })
    .await;
    for (id, title) in index_titles(&index) {
        if id != "doc/notes" && title == "Team notes" {
            new_id = id;
        }
    }
    let imported = peer_client
        .open(&new_id, quire_client::Access::Read)
        .await
        .unwrap();
    until_peer_text(&imported, "the imported text at the peer", |t| {
        t.ends_with("Imported copy.")
    })
    .await;
    desktop.quit(app).await;
}
