//! timewheel: an order-timeout engine.

pub mod protocol;

#[doc(hidden)]
pub mod fuzzing;
