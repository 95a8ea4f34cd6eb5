//! timewheel: close unpaid orders on time.
//!
//! An in-memory hierarchical timing wheel, ticked on a dedicated thread,
//! hands due orders to a worker pool that runs the close-order task. Order
//! ids are scheduled and cancelled in O(1).
//!
//! # Layout
//! - [`wheel`]: the timing wheel itself (levels, slots, entries, index);
//!   single-threaded, pure data.
//! - [`engine`]: the sharded wheel, the ticker thread and the worker pool;
//!   the embedded API ([`Engine`]).
//! - [`handler`]: the close-order task ([`Handler`]) and its retry policy.
//! - [`journal`]: the durable Redis journal: group-committed writes,
//!   rebuild at start, outage handling; the exactly-once Redis Stream sink.
//! - [`sink`]: ready-made close-order handlers: the HTTP webhook.
//! - [`cluster`]: cluster mode: partitions by hash slot, leases and
//!   fencing epochs in Redis, failover, client routing.
//! - [`clock`]: time sources, including a manual clock for tests.
//! - [`limits`]: how long an id and a delay may be, in one leaf module.
//! - [`id`]: order ids, stored inline when short.
//! - [`protocol`]: the wire format: request framing (inline and RESP),
//!   typed commands, RESP2/RESP3 replies.
//! - [`server`]: the `mio` event loop, connections, commands, pub/sub.
//! - [`tls`]: PEM certificate files to rustls configurations, for every
//!   hop (clients, `/metrics`, the journal's Redis, the webhook).
//! - `model` and `fuzzing` (feature `testing`, hidden): a reference model
//!   of the engine and the fuzz targets' checks, for the tests and `fuzz/`
//!   only; the release binary contains neither.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod clock;
pub mod cluster;
pub mod engine;
pub mod handler;
pub mod id;
pub mod journal;
pub mod limits;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod model;
pub mod protocol;
pub mod server;
pub mod sink;
pub mod tls;
pub mod wheel;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzzing;

/// The README's example, compiled and run by `cargo test --doc`.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// docs/delivery.md's example, compiled and run by `cargo test --doc`.
#[doc = include_str!("../docs/delivery.md")]
#[cfg(doctest)]
pub struct DeliveryDoctests;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Builder, Change, Engine, MAX_DELAY_MS, Pending, ScheduleError, Stats};
pub use handler::{Fired, Handler, HandlerError, HandlerResult, RetryPolicy};
pub use id::{IntoOrderId, InvalidId, OrderId};
pub use journal::{Ack, AckStatus, Journal, JournalConfig, JournalError};
