//! The dot codec of SMTP DATA, POP3 RETR/TOP and NNTP articles (`mailroom-net`'s dot module).
//!
//! Checks: no panic; split-invariance of the decoder (body, end of data, bare line ends) and of
//! the encoder (wire form); round-trip: any message encoded (`DotEncoder::whole`) and decoded
//! again comes back with every line end as CRLF and a final line end, and nothing after the
//! end of data is taken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::split;
use mailroom_net::dot::{DotDecoder, DotEncoder};

/// Decodes the pieces in turn: (body, where data ended in the joined input, bare seen).
fn decode(pieces: &[&[u8]]) -> (Vec<u8>, Option<usize>, bool) {
    let mut decoder = DotDecoder::new();
    let (mut body, mut offset, mut bare) = (Vec::new(), 0, false);
    for piece in pieces {
        let d = decoder.decode(piece, Some(&mut body));
        assert!(d.consumed <= piece.len());
        bare |= d.bare;
        if d.ended {
            return (body, Some(offset + d.consumed), bare);
        }
        assert_eq!(d.consumed, piece.len(), "not ended, yet input left");
        offset += piece.len();
    }
    (body, None, bare)
}

fn encode(pieces: &[&[u8]]) -> Vec<u8> {
    let mut encoder = DotEncoder::whole();
    let mut wire = Vec::new();
    for piece in pieces {
        encoder.encode(piece, &mut wire);
    }
    encoder.finish(&mut wire);
    wire
}

fuzz_target!(|data: &[u8]| {
    let (at, input) = split(data);
    assert_eq!(
        decode(&[input]),
        decode(&[&input[..at], &input[at..]]),
        "split at {at}"
    );

    let wire = encode(&[input]);
    assert_eq!(wire, encode(&[&input[..at], &input[at..]]), "split at {at}");
    let mut with_more = wire.clone();
    with_more.extend_from_slice(b"QUIT\r\n");
    let (body, end, _) = decode(&[&with_more]);
    assert_eq!(
        end,
        Some(wire.len()),
        "the end of data is the encoder's last line"
    );
    let mut expected = Vec::with_capacity(input.len() + 2);
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' && (i == 0 || input[i - 1] != b'\r') {
            expected.push(b'\r');
        }
        expected.push(b);
    }
    if !expected.is_empty() && !expected.ends_with(b"\n") {
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(body, expected);
});
