//! The SMTP client's reply parser (`mailroom_delivery::client::read_reply`), which reads what
//! remote servers answer RemoteDelivery.
//!
//! Checks: no panic; replies are bounded (an error, not memory, for an endless reply); a parsed
//! code is 3 digits; split-invariance: the replies read from the input are the same whatever
//! size of chunks the input arrives in (the buffer's capacity, from the first two octets).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_delivery::client::read_reply;
use mailroom_fuzz::split;
use tokio::io::BufReader;

fn replies(input: &[u8], chunk: usize) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut reader = BufReader::with_capacity(chunk.max(1), input);
        let mut all = Vec::new();
        // Each reply consumes at least one line; the input bounds the count.
        for _ in 0..=input.len() {
            match read_reply(&mut reader).await {
                Ok(reply) => {
                    assert!((100..1000).contains(&reply.code), "{}", reply.code);
                    all.push(format!("{reply:?}"));
                }
                Err(e) => {
                    all.push(format!("error {:?}", e.kind()));
                    break;
                }
            }
        }
        all
    })
}

fuzz_target!(|data: &[u8]| {
    let (at, input) = split(data);
    assert_eq!(replies(input, 8192), replies(input, at), "chunks of {at}");
});
