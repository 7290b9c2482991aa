//! The server's handling of what arrives on a document channel, under hostile input; the
//! check itself is `server/tests/support/channel_payload.rs`, shared with the regression tests.
//!
//! No panic may escape (`Room::apply` catches yrs panics, but libFuzzer's hook reports them
//! too, which is what we want to know), and memory stays under `-rss_limit_mb`.

#![no_main]

#[path = "../../tests/support/channel_payload.rs"]
mod channel_payload;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    channel_payload::check_channel_payload(data);
});
