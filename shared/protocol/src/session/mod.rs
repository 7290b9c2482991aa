//! The session cores: each end's connection and channel state machines, sans-IO, in the style
//! of quinn-proto. Frames and `now` go in; frames to send, events for the application and the
//! next deadline come out. The server's connection task and the client's driver are thin
//! drivers around them (a socket, a clock, a task), and the two cores are tested as a pair in
//! simulated time (`tests/session_pair.rs`).
//!
//! - [`server`]: one connection as the server sees it.
//! - [`client`]: the client across connections (reconnects included).
//! - [`timers`]: the one deadline table each core keeps.
//! - [`error_budget`]: how many channel errors a connection may cause (§6.8).

pub mod client;
pub mod error_budget;
pub mod server;
pub mod timers;

pub use client::{
    ClientConfig, ClientEvent, ClientSession, Credential, NotSent, RequestFailure, Status, Transmit,
};
pub use error_budget::ErrorBudget;
pub use server::{ServerConfig, ServerOutput, ServerSession};
pub use timers::Timers;
