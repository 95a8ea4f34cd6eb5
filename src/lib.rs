//! timewheel: an order-timeout engine.

pub mod protocol;
