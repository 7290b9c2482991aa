//! The server's handling of what arrives on a document channel, under hostile input; the
//! check itself is `server/tests/support/channel_payload.rs`, shared with the regression tests.
//!
//! No panic may escape (`Room::apply` catches yrs panics, but libFuzzer's hook reports them
//! too, which is what we want to know), and memory stays under `-rss_limit_mb`. The one
//! exception is the known, contained finding 6 (server/fuzz/README.md): with overflow checks
//! on, as in the release server, yrs's delete underflows on inputs the corpus already holds,
//! and every run would stop there at once. A panic at that site is left to `Room::apply` to
//! contain; the check that follows still holds the room to its reload invariant.

#![no_main]

#[path = "../../tests/support/channel_payload.rs"]
mod channel_payload;

/// Where yrs 0.28.1 underflows `block_len` in `TransactionMut::delete` (finding 6).
const KNOWN_CONTAINED: (&str, u32) = ("yrs-0.28.1/src/transaction.rs", 794);

libfuzzer_sys::fuzz_target!(
    init: {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let known = info.location().is_some_and(|at| {
                at.file().ends_with(KNOWN_CONTAINED.0) && at.line() == KNOWN_CONTAINED.1
            });
            if !known {
                report(info);
            }
        }));
    },
    |data: &[u8]| {
        channel_payload::check_channel_payload(data);
    }
);
