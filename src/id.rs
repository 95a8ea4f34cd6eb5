//! Order ids: byte strings of 1..=128 printable ASCII bytes.
//!
//! An [`OrderId`] is 24 bytes. Ids of up to [`INLINE_CAPACITY`] bytes (the
//! common case: `o:12345678`, a UUID without dashes is 32) live inline and
//! cost no heap allocation; longer ones are boxed. This keeps a wheel entry
//! at 32 bytes with its slot links (40 with its deadline), which is what
//! makes the 64-bytes-per-timer budget reachable.

use std::fmt;

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Longest id stored without a heap allocation. 22 bytes of payload plus a
/// length byte plus the enum tag make 24 bytes, the size of the boxed form.
pub const INLINE_CAPACITY: usize = 22;

/// An order id. Cheap to compare and hash; short ids are stored inline.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OrderId(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE_CAPACITY] },
    Heap(Box<[u8]>),
}

/// The id was empty, longer than [`MAX_ID_LEN`], or held a byte outside
/// printable ASCII without space (0x21..=0x7E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidId;

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid id")
    }
}

impl std::error::Error for InvalidId {}

/// Whether `bytes` is a valid order id.
pub fn is_valid_id(bytes: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7E).contains(b))
}

impl OrderId {
    /// Validates and copies `bytes` into an id.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<OrderId, InvalidId> {
        let bytes = bytes.as_ref();
        if !is_valid_id(bytes) {
            return Err(InvalidId);
        }
        Ok(OrderId::from_valid(bytes))
    }

    fn from_valid(bytes: &[u8]) -> OrderId {
        if bytes.len() <= INLINE_CAPACITY {
            let mut buf = [0u8; INLINE_CAPACITY];
            buf[..bytes.len()].copy_from_slice(bytes);
            OrderId(Repr::Inline {
                len: bytes.len() as u8,
                buf,
            })
        } else {
            OrderId(Repr::Heap(bytes.into()))
        }
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Heap(bytes) => bytes,
        }
    }

    /// The id as a string (ids are ASCII by construction).
    pub fn as_str(&self) -> &str {
        // Validation admits only 0x21..=0x7E, which is valid UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The empty id, which [`OrderId::new`] never returns: marks a free
    /// wheel entry without an `Option` tag that would have to be read
    /// before the entry's other fields could be written.
    pub(crate) const VACANT: OrderId = OrderId(Repr::Inline {
        len: 0,
        buf: [0; INLINE_CAPACITY],
    });

    /// Whether this is [`OrderId::VACANT`].
    pub(crate) fn is_vacant(&self) -> bool {
        matches!(self.0, Repr::Inline { len: 0, .. })
    }

    /// Whether the id needed a heap allocation.
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl PartialEq for Repr {
    fn eq(&self, other: &Repr) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Repr {}

impl std::hash::Hash for Repr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes().hash(state)
    }
}

impl Repr {
    fn bytes(&self) -> &[u8] {
        match self {
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Heap(bytes) => bytes,
        }
    }
}

/// What the engine's schedule calls take as an id: an [`OrderId`], used as
/// it is (it was validated when it was made), or bytes and strings,
/// validated here. So an id parsed once, as the server does, is not checked
/// twice.
pub trait IntoOrderId {
    /// The id, or [`InvalidId`].
    fn into_order_id(self) -> Result<OrderId, InvalidId>;
}

impl IntoOrderId for OrderId {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        Ok(self)
    }
}

impl IntoOrderId for &OrderId {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        Ok(self.clone())
    }
}

impl IntoOrderId for &str {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        OrderId::new(self)
    }
}

impl IntoOrderId for String {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        OrderId::new(self)
    }
}

impl IntoOrderId for &String {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        OrderId::new(self)
    }
}

impl IntoOrderId for &[u8] {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        OrderId::new(self)
    }
}

impl IntoOrderId for Vec<u8> {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        OrderId::new(self)
    }
}

impl<const N: usize> IntoOrderId for &[u8; N] {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        OrderId::new(self)
    }
}

impl<const N: usize> IntoOrderId for [u8; N] {
    fn into_order_id(self) -> Result<OrderId, InvalidId> {
        OrderId::new(self)
    }
}

impl TryFrom<&str> for OrderId {
    type Error = InvalidId;
    fn try_from(s: &str) -> Result<OrderId, InvalidId> {
        OrderId::new(s)
    }
}

impl AsRef<[u8]> for OrderId {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrderId({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_24_bytes() {
        assert_eq!(std::mem::size_of::<OrderId>(), 24);
    }

    #[test]
    fn inline_up_to_capacity_then_heap() {
        let at = "x".repeat(INLINE_CAPACITY);
        let over = "x".repeat(INLINE_CAPACITY + 1);
        assert!(OrderId::new(&at).unwrap().is_inline());
        assert!(!OrderId::new(&over).unwrap().is_inline());
        assert_eq!(OrderId::new(&over).unwrap().as_str(), over);
    }

    #[test]
    fn validation_boundaries() {
        assert_eq!(OrderId::new(""), Err(InvalidId));
        assert!(OrderId::new("a".repeat(MAX_ID_LEN)).is_ok());
        assert_eq!(OrderId::new("a".repeat(MAX_ID_LEN + 1)), Err(InvalidId));
        assert_eq!(OrderId::new([0x20]), Err(InvalidId));
        assert!(OrderId::new([0x21]).is_ok());
        assert!(OrderId::new([0x7E]).is_ok());
        assert_eq!(OrderId::new([0x7F]), Err(InvalidId));
        assert_eq!(OrderId::new(b"a\r\nb"), Err(InvalidId));
    }

    #[test]
    fn equality_ignores_representation_padding() {
        let a = OrderId::new("order-1").unwrap();
        let b = OrderId::new(String::from("order-1")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, OrderId::new("order-2").unwrap());
    }
}
