//! Sinks: where a fired order goes to be closed.
//!
//! A sink is a [`Handler`](crate::Handler): the worker pool calls it once
//! per attempt, retries an `Err` with backoff, and dead-letters an order
//! whose attempts are used up. Implement the trait for your own sink; a
//! plain closure `Fn(&Fired) -> HandlerResult` is one too.
//!
//! - [`webhook`]: `POST` a JSON body per order to an HTTP endpoint
//!   ([`WebhookSink`]); at least once, with an `Idempotency-Key`, over
//!   `http://` or `https://`.
//! - [`sign`]: the `Timewheel-Signature` header (HMAC-SHA256), so the
//!   endpoint can tell our calls from anyone else's.
//! - The Redis Stream sink (`timewheel serve --stream KEY`) is not a
//!   handler: moving an order into the stream must be atomic with removing
//!   it from the journal for the hand-off to be exactly once, so it is a
//!   journal setting ([`crate::JournalConfig::stream`]).
//!
//! See `docs/delivery.md` for the guarantees of each.

pub mod sign;
pub mod webhook;

pub use sign::{SignError, Signer};
pub use webhook::{DeliveryError, WebhookConfig, WebhookError, WebhookSink};
