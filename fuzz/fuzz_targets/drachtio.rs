//! The drachtio control connection: the frame decoder fed in arbitrary pieces, and every
//! payload through both message parsers.
//!
//! Properties: the frames (and the first error) do not depend on how the stream was split;
//! nothing buffered or returned exceeds the input or the payload limit; an encoded frame
//! decodes back to itself; messages the app builds parse back to the fields they were built
//! from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_sidecar::drachtio::frame::{encode_unchecked, FrameDecoder, FrameError};
use sbc_sidecar::drachtio::message::{self, AppMessage, ServerMessage};
use sbc_sidecar_fuzz::assert_linear;

/// Small enough that the fuzzer meets the limit; large enough for real payloads.
const MAX_PAYLOAD: usize = 2048;

/// Decodes the stream pushed in pieces of the given sizes.
fn decode(stream: &[u8], pieces: &[usize]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(MAX_PAYLOAD);
    let mut frames = Vec::new();
    let mut at = 0;
    let mut sizes = pieces.iter().copied().cycle();
    while at < stream.len() {
        let n = sizes.next().unwrap_or(stream.len()).clamp(1, stream.len() - at);
        decoder.push(&stream[at..at + n]);
        at += n;
        assert!(decoder.buffered() <= at, "decoder holds more than it was given");
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= MAX_PAYLOAD);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn check_payload(payload: &[u8]) {
    match ServerMessage::parse(payload) {
        Ok(ServerMessage::Sip(d)) => {
            assert_linear("delivery", d.sip.len() + d.address.len() + d.transaction_id.len(), payload.len(), 1, 0);
        }
        Ok(ServerMessage::Response(r)) => {
            assert!(r.tokens.len() <= payload.len());
            let _ = r.echo_transaction_id();
        }
        Ok(ServerMessage::Other { .. }) | Err(_) => {}
    }
    if let Ok(AppMessage::Sip { msg_id, transaction_id, sip, .. }) = AppMessage::parse(payload) {
        let rebuilt = message::sip_response(&msg_id, &transaction_id, &sip);
        match AppMessage::parse(&rebuilt) {
            Ok(AppMessage::Sip { msg_id: m, transaction_id: t, dialog_id, proxy, sip: s }) => {
                assert_eq!((m, t, s), (msg_id, transaction_id, sip));
                assert!(dialog_id.is_empty() && proxy.is_empty());
            }
            other => panic!("rebuilt sip message parses as {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // First bytes: how to cut the stream; the rest: the stream.
    let (cuts, stream) = data.split_at(data.len().min(4));
    let pieces: Vec<usize> = cuts.iter().map(|&b| usize::from(b) + 1).collect();

    let whole = decode(stream, &[stream.len().max(1)]);
    let split = decode(stream, &pieces);
    let bytewise = decode(stream, &[1]);
    assert_eq!(split, whole, "frames depend on how the stream was split");
    assert_eq!(bytewise, whole, "frames depend on how the stream was split");
    assert_linear("frames", whole.0.iter().map(Vec::len).sum(), stream.len(), 1, 0);

    for frame in &whole.0 {
        let mut decoder = FrameDecoder::new(MAX_PAYLOAD);
        decoder.push(&encode_unchecked(frame));
        assert_eq!(decoder.next_frame(), Ok(Some(frame.clone())));
        assert_eq!(decoder.buffered(), 0);
        check_payload(frame);
    }
    check_payload(stream);
});
