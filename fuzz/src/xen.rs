//! The Xen control plane's parsers (`switch::xen_ctl`) and the xenstore wire reader
//! (`switch::xenstore`).

use switch::xen_ctl::{
    Answer, AttachRequest, MAX_EVTCHN_PORT, MAX_LIST_REFS, MAX_REFS, RefList, parse_u32,
};
use switch::xenstore::{PAYLOAD_MAX, encode, read_msg};

use crate::Input;

/// An `attach` node's value: what parses satisfies the documented grammar (a unicast MAC of
/// six hex pairs, a channel in range, 2 to 32 distinct references, a non-zero nonce) and
/// re-encodes to a value that parses to the same request. Also the decimal field parser:
/// whatever it accepts is canonical decimal.
pub fn attach(data: &[u8]) {
    if let Ok(r) = AttachRequest::parse(data) {
        let mac_field = data.split(|&c| c == b' ').nth(2).expect("five fields");
        assert!(
            mac_field.iter().enumerate().all(|(i, c)| if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_hexdigit()
            }),
            "MAC field {:?} accepted but not six hex pairs",
            String::from_utf8_lossy(mac_field)
        );
        assert!(r.mac[0] & 1 == 0 && r.mac != [0; 6]);
        assert!(r.nonce != 0);
        assert!(r.event_channel != 0 && r.event_channel < MAX_EVTCHN_PORT);
        assert!((2..=MAX_LIST_REFS).contains(&r.list_refs.len()));
        let mut refs = r.list_refs.clone();
        refs.sort_unstable();
        refs.dedup();
        assert_eq!(refs.len(), r.list_refs.len(), "repeated reference accepted");
        let e = r.encode();
        assert_eq!(
            AttachRequest::parse(e.as_bytes()).ok(),
            Some(r.clone()),
            "{e}"
        );
        assert_eq!(AttachRequest::nonce_of(e.as_bytes()), Some(r.nonce));
    }
    let mut inp = Input::new(data);
    let max = inp.u32();
    let v = inp.rest();
    if let Ok(n) = parse_u32("fuzz", v, max) {
        assert!(n <= max);
        assert_eq!(
            n.to_string().as_bytes(),
            v,
            "non-canonical decimal accepted"
        );
    }
}

/// A backend's `answer` node's value: what parses re-encodes to a value that parses to the
/// same answer (a refusal's reason cut at 512 characters as encoding does).
pub fn answer(data: &[u8]) {
    let Ok(a) = Answer::parse(data) else {
        return;
    };
    let e = a.encode();
    let again = Answer::parse(e.as_bytes()).unwrap_or_else(|_| panic!("{e:?} refused"));
    let want = match &a {
        Answer::Refused {
            nonce,
            instance,
            why,
        } => Answer::Refused {
            nonce: *nonce,
            instance: *instance,
            why: why.chars().take(512).collect(),
        },
        other => other.clone(),
    };
    assert_eq!(again, want);
    assert_eq!(again.nonce(), a.nonce());
}

/// A reference list copied out of an app's grant: what parses has 2 to `max` distinct
/// references that fit the bytes, and encodes to bytes that parse to the same list.
pub fn ref_list(data: &[u8]) {
    let mut inp = Input::new(data);
    let max = inp.below(MAX_REFS + 64);
    let raw = inp.rest();
    let Ok(l) = RefList::parse(raw, max) else {
        return;
    };
    let n = l.0.len();
    assert!(
        n >= 2 && n <= max.min(MAX_REFS),
        "{n} references, max {max}"
    );
    assert!(RefList::bytes(n) <= raw.len());
    let mut sorted = l.0.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "repeated reference accepted");
    let mut out = vec![0u8; RefList::bytes(n)];
    RefList::encode(&l.0, &mut out).expect("room");
    assert_eq!(RefList::parse(&out, max).ok(), Some(l));
}

/// Xenstore messages read from an arbitrary byte stream, as the server's reader does:
/// each message read is at most the payload limit and re-encodes to exactly the bytes it
/// was read from; reading stops at the first error.
pub fn xenstore_msg(data: &[u8]) {
    let mut r = std::io::Cursor::new(data);
    for _ in 0..64 {
        let at = r.position() as usize;
        let Ok(m) = read_msg(&mut r) else {
            return;
        };
        assert!(m.payload.len() <= PAYLOAD_MAX);
        let end = r.position() as usize;
        let e = encode(m.ty, m.req_id, m.tx_id, &m.payload).expect("within the limit");
        assert_eq!(e, data[at..end], "re-encoded message");
    }
}
