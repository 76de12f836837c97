//! The control protocol's wire format (`switch::ctl::wire`).

use switch::ctl::wire::{HEADER_LEN, Message, Repr};

/// Parses arbitrary bytes as one control message. Whatever parses re-emits to bytes of the
/// length the value announces ([`Repr::buffer_len`]) that parse to the same value, and a
/// checked message's header agrees with the bytes.
pub fn round_trip(data: &[u8]) {
    let Ok(m) = Message::new_checked(data) else {
        return;
    };
    assert!(data.len() >= HEADER_LEN);
    let Ok(r) = Repr::parse(&m) else {
        return;
    };
    assert_eq!(r.kind(), m.kind(), "parsed value of another kind");
    let b = r.to_bytes();
    assert_eq!(b.len(), r.buffer_len(), "emitted length");
    let again = Repr::from_bytes(&b).unwrap_or_else(|e| panic!("re-emitted {r:?} refused: {e}"));
    assert_eq!(again, r, "value changed through emit and parse");
    // Emitting the value again writes the same bytes.
    assert_eq!(again.to_bytes(), b);
}
