//! Property tests of the shared codecs: the dot codec round-trips any message and decodes the
//! same in any pieces; the line reader gives the same lines in any pieces.

use mailroom_net::dot::{DotDecoder, DotEncoder};
use mailroom_net::lines::{LineEvent, LineReader};
use proptest::prelude::*;

/// Input octets rich in what matters here: CR, LF, dots, and ordinary text.
fn wire() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b'.'),
            Just(b'a'),
            any::<u8>()
        ],
        0..300,
    )
}

/// Cuts `input` at the given points (taken modulo its length, sorted).
fn pieces(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for c in cuts.into_iter().chain([input.len()]) {
        out.push(input[last..c].to_vec());
        last = c;
    }
    out
}

fn decode(pieces: &[Vec<u8>]) -> (Vec<u8>, Option<usize>, bool) {
    let mut decoder = DotDecoder::new();
    let (mut body, mut offset, mut bare) = (Vec::new(), 0, false);
    for piece in pieces {
        let d = decoder.decode(piece, Some(&mut body));
        bare |= d.bare;
        if d.ended {
            return (body, Some(offset + d.consumed), bare);
        }
        offset += piece.len();
    }
    (body, None, bare)
}

fn lines(limit: usize, pieces: &[Vec<u8>]) -> Vec<LineEvent> {
    let mut reader = LineReader::with_limit(limit);
    let mut events = Vec::new();
    for piece in pieces {
        let mut rest = &piece[..];
        while !rest.is_empty() {
            let (used, event) = reader.read(rest);
            rest = &rest[used..];
            match event {
                Some(e) => events.push(e),
                None => assert!(rest.is_empty()),
            }
        }
    }
    events
}

proptest! {
    #[test]
    fn dot_codec_round_trips_with_crlf_line_ends(message in wire(), cuts in prop::collection::vec(any::<usize>(), 0..4)) {
        let mut encoder = DotEncoder::whole();
        let mut wire = Vec::new();
        for piece in pieces(&message, &cuts) {
            encoder.encode(&piece, &mut wire);
        }
        encoder.finish(&mut wire);
        let wire_len = wire.len();
        wire.extend_from_slice(b"NOOP\r\n");
        let (body, end, _) = decode(&pieces(&wire, &cuts));
        prop_assert_eq!(end, Some(wire_len));
        let mut expected = Vec::new();
        for (i, &b) in message.iter().enumerate() {
            if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
                expected.push(b'\r');
            }
            expected.push(b);
        }
        if !expected.is_empty() && !expected.ends_with(b"\n") {
            expected.extend_from_slice(b"\r\n");
        }
        prop_assert_eq!(body, expected);
    }

    #[test]
    fn dot_decoder_is_split_invariant(input in wire(), cuts in prop::collection::vec(any::<usize>(), 1..5)) {
        prop_assert_eq!(decode(std::slice::from_ref(&input)), decode(&pieces(&input, &cuts)));
    }

    #[test]
    fn line_reader_is_split_invariant(input in wire(), cuts in prop::collection::vec(any::<usize>(), 1..5), limit in 1usize..64) {
        prop_assert_eq!(lines(limit, std::slice::from_ref(&input)), lines(limit, &pieces(&input, &cuts)));
    }
}
