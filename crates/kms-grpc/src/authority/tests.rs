//! The adapter against hand-built client byte streams, read back with an independent HPACK
//! decoder standing in for h2's.

#![allow(clippy::unwrap_used, reason = "test code")]

use loona_hpack::{Decoder, Encoder};
use tokio::io::AsyncReadExt as _;

use super::NormalizeAuthority;
use super::frames::{MAX_FRAME_SIZE, MAX_HEADER_BLOCK};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (
            b":path".to_vec(),
            b"/thalescpl.io.ekms.istio.v1.KeyManagementService/GenerateDEK".to_vec(),
        ),
        (b":authority".to_vec(), authority.to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"te".to_vec(), b"trailers".to_vec()),
        (b"authorization".to_vec(), b"Bearer not-a-secret".to_vec()),
    ]
}

fn encode(enc: &mut Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    enc.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])))
}

/// Runs `input` through the adapter and returns what h2 would read.
async fn through(input: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    tokio::io::AsyncWriteExt::write_all(&mut client, &input).await?;
    drop(client);
    let mut adapter = NormalizeAuthority::new(server);
    let mut out = Vec::new();
    adapter.read_to_end(&mut out).await?;
    Ok(out)
}

/// Splits h2's view into frames: (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE));
    bytes = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// Decodes every header block h2 would see, with one decoder for the connection.
fn server_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut dec = Decoder::new();
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    for (kind, flags, _, payload) in frames(bytes) {
        match kind {
            0x1 => {
                assert_eq!(flags & 0x8, 0, "re-encoded frames are unpadded");
                let skip = if flags & 0x20 != 0 { 5 } else { 0 };
                block.extend_from_slice(&payload[skip..]);
            }
            0x9 => block.extend_from_slice(&payload),
            _ => continue,
        }
        if flags & 0x4 != 0 {
            blocks.push(dec.decode(&block).unwrap());
            block.clear();
        }
    }
    blocks
}

fn authority_of(block: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
    block
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| &v[..])
}

#[tokio::test]
async fn socket_paths_empty_and_valid_authorities_all_come_out_acceptable() {
    for (sent, expected) in [
        (
            &b"%2Ftmp%2Frun%2Fhsm-plugin-server.sock"[..],
            &b"localhost"[..],
        ),
        (b"/tmp/run/hsm-plugin-server.sock", b"localhost"),
        (b"", b"localhost"),
        (b"localhost", b"localhost"),
        (b"127.0.0.1:31400", b"127.0.0.1:31400"),
    ] {
        let mut enc = Encoder::new();
        let headers = request(sent);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(0x1, 0x4, 1, &encode(&mut enc, &headers)));
        input.extend(frame(0x0, 0x1, 1, b"\0\0\0\0\x02hi"));
        let out = through(input.clone()).await.unwrap();
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority_of(&blocks[0]), Some(expected), "sent {sent:?}");
        let mut want = headers.clone();
        want[3].1 = expected.to_vec();
        assert_eq!(blocks[0], want, "every other field is unchanged");
        assert!(super::block::acceptable(authority_of(&blocks[0]).unwrap()));
        if sent == expected {
            assert_eq!(
                out, input,
                "an acceptable authority leaves the bytes as they were"
            );
        }
        // DATA passes through.
        assert_eq!(frames(&out).last().unwrap().3, b"\0\0\0\0\x02hi");
    }
}

#[tokio::test]
async fn an_absent_authority_passes_through() {
    let mut enc = Encoder::new();
    let mut headers = request(b"x");
    headers.remove(3);
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x1, 0x5, 1, &encode(&mut enc, &headers)));
    let out = through(input.clone()).await.unwrap();
    assert_eq!(out, input);
}

#[tokio::test]
async fn dynamic_table_state_survives_rewrites_and_verbatim_blocks() {
    // The client's encoder indexes fields, so later requests refer to its dynamic table;
    // a valid block first (verbatim), then socket paths (rewritten), then references only.
    let mut enc = Encoder::new();
    let mut input = PREFACE.to_vec();
    let sequence: Vec<&[u8]> = vec![
        b"localhost",
        b"%2Ftmp%2Fs",
        b"%2Ftmp%2Fs",
        b"localhost",
        b"/tmp/s",
    ];
    for (i, authority) in sequence.iter().enumerate() {
        let stream = u32::try_from(2 * i + 1).unwrap();
        let mut headers = request(authority);
        headers.push((b"x-call".to_vec(), format!("{i}").into_bytes()));
        input.extend(frame(0x1, 0x4, stream, &encode(&mut enc, &headers)));
    }
    let out = through(input).await.unwrap();
    let blocks = server_view(&out);
    assert_eq!(blocks.len(), sequence.len());
    for (i, block) in blocks.iter().enumerate() {
        assert_eq!(authority_of(block), Some(&b"localhost"[..]), "block {i}");
        assert_eq!(block.last().unwrap().1, format!("{i}").into_bytes());
        assert_eq!(block[2].1, request(b"").remove(2).1);
    }
}

#[tokio::test]
async fn padding_priority_and_continuations_are_handled() {
    let mut enc = Encoder::new();
    let mut headers = request(b"%2Fsock");
    headers.push((b"x-big".to_vec(), vec![b'v'; 3000]));
    let block = encode(&mut enc, &headers);
    let (a, b) = block.split_at(10);
    let mut payload = vec![4u8]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 3, 15]); // exclusive dependency on 3, weight 15
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0; 4]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x1, 0x8 | 0x20 | 0x1, 5, &payload));
    input.extend(frame(0x9, 0x4, 5, b));
    let out = through(input).await.unwrap();
    let fs = frames(&out);
    assert_eq!(fs[0].0, 0x1);
    assert_eq!(
        fs[0].1,
        0x20 | 0x1 | 0x4,
        "END_STREAM and PRIORITY kept, no PADDED"
    );
    assert_eq!(&fs[0].3[..5], &[0x80, 0, 0, 3, 15]);
    let blocks = server_view(&out);
    assert_eq!(authority_of(&blocks[0]), Some(&b"localhost"[..]));
    assert_eq!(blocks[0].last().unwrap().1.len(), 3000);
}

#[tokio::test]
async fn a_rewritten_block_larger_than_a_frame_is_split_into_continuations() {
    let mut enc = Encoder::new();
    let mut headers = request(b"/a/b.sock");
    for i in 0..5 {
        headers.push((format!("x-meta-{i}").into_bytes(), vec![b'm'; 8000]));
    }
    let block = encode(&mut enc, &headers);
    let mut input = PREFACE.to_vec();
    for chunk in block.chunks(MAX_FRAME_SIZE).enumerate() {
        let (i, part) = chunk;
        let last = (i + 1) * MAX_FRAME_SIZE >= block.len();
        let kind = if i == 0 { 0x1 } else { 0x9 };
        input.extend(frame(kind, if last { 0x4 } else { 0 }, 1, part));
    }
    let out = through(input).await.unwrap();
    let fs = frames(&out);
    assert!(fs.len() >= 3);
    assert!(fs.iter().all(|f| f.3.len() <= MAX_FRAME_SIZE));
    assert_eq!(server_view(&out)[0], {
        let mut want = headers.clone();
        want[3].1 = b"localhost".to_vec();
        want
    });
}

#[tokio::test]
async fn protocol_violations_close_the_connection() {
    let ok_block = encode(&mut Encoder::new(), &request(b"%2Fs"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "frame too large",
            frame(0x1, 0x4, 1, &vec![0; MAX_FRAME_SIZE + 1]),
        ),
        ("interleaved", {
            let mut v = frame(0x1, 0, 1, &ok_block);
            v.extend(frame(0x0, 0, 1, b"x"));
            v
        }),
        ("continuation of another stream", {
            let mut v = frame(0x1, 0, 1, &ok_block);
            v.extend(frame(0x9, 0x4, 3, b""));
            v
        }),
        ("push promise", frame(0x5, 0x4, 1, &[0, 0, 0, 2])),
        ("padding too long", frame(0x1, 0x8 | 0x4, 1, &[200, 0x82])),
        ("priority truncated", frame(0x1, 0x20 | 0x4, 1, &[0, 0])),
        ("bad index", frame(0x1, 0x4, 1, &[0xff, 0xff, 0xff, 0x0f])),
        (
            "table size beyond the setting",
            frame(0x1, 0x4, 1, &[0x3f, 0xe2, 0x1f, 0x82]),
        ),
        ("stream 0", frame(0x1, 0x4, 0, &ok_block)),
        ("block too large", {
            let mut v = Vec::new();
            let chunk = vec![0x82; MAX_FRAME_SIZE];
            v.extend(frame(0x1, 0, 1, &chunk));
            for _ in 0..(MAX_HEADER_BLOCK / MAX_FRAME_SIZE) {
                v.extend(frame(0x9, 0, 1, &chunk));
            }
            v
        }),
    ];
    for (name, body) in cases {
        let mut input = PREFACE.to_vec();
        input.extend(body);
        let err = through(input).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{name}");
    }
}

#[tokio::test]
async fn an_indexed_field_expanding_past_the_list_limit_is_refused() {
    // One 4 KiB entry in the client's table, then a block of 1-byte references to it.
    let mut enc = Encoder::new();
    let mut headers = request(b"%2Fs");
    headers.push((b"x-fill".to_vec(), vec![b'f'; 4000]));
    let first = encode(&mut enc, &headers);
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x1, 0x4, 1, &first));
    input.extend(frame(0x1, 0x4, 3, &[0x80 | 0x3e; 100]));
    let err = through(input).await.unwrap_err();
    assert!(err.to_string().contains("header list larger"), "{err}");
}

#[tokio::test]
async fn random_input_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut input = PREFACE.to_vec();
        let kind = [0x1u8, 0x9, 0x0, 0x4, 0x5][usize::try_from(next() % 5).unwrap()];
        let flags = u8::try_from(next() & 0x2d).unwrap();
        let len = usize::try_from(next() % 64).unwrap();
        let payload: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
        input.extend(frame(kind, flags, 1, &payload));
        if next() % 2 == 0 {
            input.extend(frame(0x9, 0x4, 1, &payload));
        }
        let _ = through(input).await;
    }
}

#[tokio::test]
async fn non_http2_input_passes_through_for_h2_to_refuse() {
    let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(through(input.clone()).await.unwrap(), input);
}
