//! timewheel: an order-timeout engine.
