//! What a timer may be: the limits every layer checks, in one leaf module
//! (it imports nothing), so the wheel, the engine and the protocol agree
//! without depending on each other.

/// Longest delay accepted, in days: a year, leap day included.
pub const MAX_DELAY_DAYS: u64 = 366;

/// Longest delay accepted: [`MAX_DELAY_DAYS`] in milliseconds.
pub const MAX_DELAY_MS: u64 = MAX_DELAY_DAYS * 24 * 60 * 60 * 1000;

/// Latest deadline `ADDAT` accepts: 9999-12-31T23:59:59.999Z, in
/// milliseconds since the Unix epoch (10000-01-01 is 2_932_897 days after
/// 1970-01-01). Whether a deadline is too far from now is for the engine to
/// say.
pub const MAX_UNIX_MS: u64 = 2_932_897 * 24 * 60 * 60 * 1000 - 1;

/// Earliest deadline `ADDAT` accepts: 10^12 ms, 2001-09-09T01:46:40Z. A
/// smaller number is almost surely in seconds (`time()` in PHP, Python's
/// `int(time.time())`): read as milliseconds it would be a deadline in 1970
/// and close the order at once.
pub const MIN_UNIX_MS: u64 = 1_000_000_000_000;
