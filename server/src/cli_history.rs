//! The command line's history and trash commands: `versions`, `version`, `restore`, `trash`,
//! `untrash`, `purge`. They work on the database directly, like `export` and `import`. Those
//! that change a document a running server may hold in memory (`restore`, `trash DOC`) refuse
//! while a server serves the data directory: there, the app (or any client, PROTOCOL §5.4,
//! §6.9) does the same through the server.
// The command line answers on standard output by design.
#![allow(clippy::print_stdout)]

use std::path::Path;

use anyhow::{bail, Context};
use quire_protocol::request::{VersionInfo, VersionKind};

use crate::room::merge_stored;
use crate::room_versions::now_ms;
use crate::serve_lock::{try_lock, LockError, ServeLock};
use crate::store::{AnyStore, Append, NewVersion, QuotaFull, Store};
use crate::versions::HistoryPolicy;

/// The author recorded for versions made from the command line.
const CLI_AUTHOR: &str = "command line";

/// `versions DOC`: one line per version, newest first.
pub async fn list_versions(store: &AnyStore, doc: &str) -> anyhow::Result<()> {
    let versions = store.list_versions(doc).await?;
    if versions.is_empty() {
        println!("no versions of `{doc}`");
    }
    for version in versions {
        println!("{}", describe(&version));
    }
    Ok(())
}

fn describe(version: &VersionInfo) -> String {
    let kind = match version.kind {
        VersionKind::Auto => "auto",
        VersionKind::Named => "named",
        VersionKind::BeforeRestore => "before-restore",
    };
    let name = if version.name.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", version.name)
    };
    format!(
        "{:>6}  {}  {kind:<14} {:>9} B  {}{name}",
        version.id,
        utc(version.created_ms),
        version.size,
        version.authors.join(", "),
    )
}

/// `version DOC --name NAME`: saves what is stored of the document as a named version.
pub async fn create_version(
    store: &AnyStore,
    doc: &str,
    name: &str,
    policy: &HistoryPolicy,
) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty() || name.len() > quire_protocol::request::MAX_VERSION_NAME {
        bail!(
            "a version name is 1 to {} bytes",
            quire_protocol::request::MAX_VERSION_NAME
        );
    }
    let state = stored_state(store, doc).await?;
    let version = NewVersion {
        created_ms: now_ms(),
        kind: VersionKind::Named,
        name,
        authors: &[CLI_AUTHOR.to_owned()],
        state: &state,
    };
    match store.save_version(doc, version, policy).await? {
        Ok(info) => println!("{}", describe(&info)),
        Err(QuotaFull) => bail!("the named versions of `{doc}` fill its quota; delete one first"),
    }
    Ok(())
}

/// `restore DOC VERSION`: appends the edit that makes the document's text the version's,
/// after saving the current state as a version (which undoes it).
pub async fn restore(
    store: &AnyStore,
    dir: &Path,
    doc: &str,
    id: u64,
    policy: &HistoryPolicy,
) -> anyhow::Result<()> {
    let _lock = lock_offline(dir, "restore from the app while it runs")?;
    let Some((info, target)) = store.load_version(doc, id).await? else {
        bail!("`{doc}` has no version {id} (see `quire-server versions {doc}`)");
    };
    let current = stored_state(store, doc).await?;
    let undo = NewVersion {
        created_ms: now_ms(),
        kind: VersionKind::BeforeRestore,
        name: "",
        authors: &[CLI_AUTHOR.to_owned()],
        state: &current,
    };
    let Ok(undo) = store.save_version(doc, undo, policy).await? else {
        unreachable!("only named versions are refused");
    };
    let text = crate::restore::text_of(&target)?;
    let client_id = crate::restore::fresh_client_id();
    match crate::restore::forward_edit(&current, &text, client_id)? {
        Some(edit) => {
            store.append_batch(&[Append { doc, data: &edit }]).await?;
            println!(
                "restored `{doc}` to version {} of {}; version {} holds what it replaced",
                info.id,
                utc(info.created_ms),
                undo.id
            );
        }
        None => println!("`{doc}` already has the text of version {}", info.id),
    }
    Ok(())
}

/// `trash`: what is in the trash and when it goes.
pub async fn list_trash(store: &AnyStore, policy: &HistoryPolicy) -> anyhow::Result<()> {
    let trash = store.list_trash().await?;
    if trash.is_empty() {
        println!("the trash is empty");
    }
    let retention = policy.trash_retention.as_millis() as u64;
    for (doc, trashed_ms) in trash {
        println!(
            "{doc}  trashed {}  purged after {}",
            utc(trashed_ms),
            utc(trashed_ms + retention)
        );
    }
    Ok(())
}

/// `trash DOC`: moves a document to the trash.
pub async fn trash(store: &AnyStore, dir: &Path, doc: &str) -> anyhow::Result<()> {
    let _lock = lock_offline(dir, "move it to the trash from the app while it runs")?;
    if store.trash(doc, now_ms()).await? {
        println!("moved `{doc}` to the trash");
    } else {
        println!("`{doc}` was in the trash already");
    }
    Ok(())
}

/// `untrash DOC`.
pub async fn untrash(store: &AnyStore, doc: &str) -> anyhow::Result<()> {
    if !store.untrash(doc).await? {
        bail!("`{doc}` is not in the trash");
    }
    println!("brought `{doc}` back from the trash");
    Ok(())
}

/// `purge [DOC]`: deletes for good one trashed document, or every one whose time is up.
pub async fn purge(
    store: &AnyStore,
    doc: Option<&str>,
    policy: &HistoryPolicy,
) -> anyhow::Result<()> {
    let gone = match doc {
        Some(doc) => {
            let gone = store.purge(Some(doc), u64::MAX).await?;
            if gone.is_empty() {
                bail!("`{doc}` is not in the trash");
            }
            gone
        }
        None => crate::trash::purge_expired(store, policy.trash_retention, now_ms()).await?,
    };
    for doc in &gone {
        println!("deleted `{doc}` for good");
    }
    println!("purged {} document(s)", gone.len());
    Ok(())
}

/// Takes the serve lock, or explains why the command cannot run now.
fn lock_offline(dir: &Path, instead: &str) -> anyhow::Result<ServeLock> {
    match try_lock(dir) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held) => bail!(
            "a server is serving {}: stop it first, or {instead}",
            dir.display()
        ),
        Err(err) => Err(err).context("checking for a running server"),
    }
}

async fn stored_state(store: &AnyStore, doc: &str) -> anyhow::Result<Vec<u8>> {
    let stored = store.load(doc).await?;
    if stored.is_empty() {
        bail!("no document `{doc}`");
    }
    merge_stored(&stored).map_err(|e| anyhow::anyhow!("document `{doc}` is corrupt: {e}"))
}

/// `2026-12-06 01:02 UTC` from milliseconds since the Unix epoch.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Days to a civil date (the proleptic Gregorian calendar), after Howard Hinnant's
    // published algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc(1_780_000_000_000), "2026-05-28 20:26 UTC");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00 UTC");
    }
}
