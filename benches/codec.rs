//! Criterion benches for the wire envelope: encoding and decoding request and response
//! headers, and a whole request frame's header plus a 64-byte body.

use criterion::{criterion_group, criterion_main, Criterion};
use shoal::core::{
    codec, CorrelationId, Error, ErrorCode, LeaderHint, MethodId, NodeId, RequestHeader,
    ResponseHeader, PROTOCOL_VERSION,
};
use std::hint::black_box;

fn request_header() -> RequestHeader {
    RequestHeader {
        version: PROTOCOL_VERSION,
        correlation_id: CorrelationId::new(123_456),
        source: NodeId::new(42),
        timeout_ms: 5_000,
        method: MethodId::of("kv.put"),
    }
}

fn error_header() -> ResponseHeader {
    ResponseHeader::error(
        CorrelationId::new(123_456),
        Error::new(
            ErrorCode::NotLeader {
                hint: Some(LeaderHint {
                    node: NodeId::new(3),
                    addr: Some("10.0.0.3:7000".parse().unwrap()),
                }),
            },
            "term 9",
        ),
    )
}

fn envelope(c: &mut Criterion) {
    let request = request_header();
    let ok = ResponseHeader::ok(CorrelationId::new(123_456));
    let error = error_header();
    let body = vec![7u8; 64];

    let mut group = c.benchmark_group("envelope");
    let mut buf = Vec::with_capacity(256);
    group.bench_function("encode_request_header", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_into(black_box(&request), &mut buf, 1 << 20).unwrap();
        })
    });
    let bytes = codec::encode(&request).unwrap();
    group.bench_function("decode_request_header", |b| {
        b.iter(|| codec::decode::<RequestHeader>(black_box(&bytes), 1 << 20).unwrap())
    });
    group.bench_function("encode_ok_response_header", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_into(black_box(&ok), &mut buf, 1 << 20).unwrap();
        })
    });
    let bytes = codec::encode(&ok).unwrap();
    group.bench_function("decode_ok_response_header", |b| {
        b.iter(|| codec::decode::<ResponseHeader>(black_box(&bytes), 1 << 20).unwrap())
    });
    let bytes = codec::encode(&error).unwrap();
    group.bench_function("decode_not_leader_response_header", |b| {
        b.iter(|| codec::decode::<ResponseHeader>(black_box(&bytes), 1 << 20).unwrap())
    });
    group.bench_function("encode_request_with_64b_body", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_into(black_box(&request), &mut buf, 1 << 20).unwrap();
            codec::encode_into(black_box(&body), &mut buf, 1 << 20).unwrap();
        })
    });
    let mut frame = codec::encode(&request).unwrap();
    codec::encode_into(&body, &mut frame, 1 << 20).unwrap();
    group.bench_function("decode_request_with_64b_body", |b| {
        b.iter(|| {
            let (header, used) =
                codec::decode_prefix::<RequestHeader>(black_box(&frame), 1 << 20).unwrap();
            let body: Vec<u8> = codec::decode(&frame[used..], 1 << 20).unwrap();
            (header, body)
        })
    });
    group.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
