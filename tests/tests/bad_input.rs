//! Bad input over the network: garbage bytes, a wrong protocol version, a
//! frame over the limit, undecodable frames, oversized keys and values, and
//! clients vanishing mid-request. Each gets a clear error or a closed
//! connection, and the node keeps serving other clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use monotable_client::{Client, ErrorCode, RangeOptions};
use monotable_proto::frame::{decode_payload, encode_frame};
use monotable_proto::limits::{
    HANDSHAKE_MAGIC, KEY_SIZE_MAX_BYTES, PROTOCOL_VERSION, VALUE_SIZE_MAX_BYTES,
};
use monotable_proto::{Command, ErrorInfo, Reply, Request, Response, ServerHello, WriteOp};
use monotable_tests::{runtime, Node};

fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn assert_closed(s: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("connection still sends data"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
}

fn handshake(addr: SocketAddr) -> TcpStream {
    let mut s = raw(addr);
    let mut hello = HANDSHAKE_MAGIC.to_vec();
    hello.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    s.write_all(&hello).expect("write");
    let reply: Result<ServerHello, ErrorInfo> =
        decode_payload(&read_frame(&mut s).expect("hello")).expect("decode");
    reply.expect("handshake accepted");
    s
}

fn request(s: &mut TcpStream, id: u64, command: Command) -> Response {
    let mut out = Vec::new();
    encode_frame(&Request { id, command }, &mut out).expect("encode");
    s.write_all(&out).expect("write");
    decode_payload(&read_frame(s).expect("reply")).expect("decode")
}

/// The node still answers a well-behaved client.
fn healthy(addr: SocketAddr) {
    let mut s = handshake(addr);
    assert_eq!(request(&mut s, 1, Command::Ping).result, Ok(Reply::Pong));
}

#[test]
fn bad_input_gets_clear_errors_and_harms_no_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let addr = node.addr;
    let rt = runtime();
    rt.block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        c.create_range("r", RangeOptions::default()).await.expect("create");
        c.put("r", "kept", "value").await.expect("put");
    });

    // Garbage instead of a handshake: an error frame, then the close.
    let mut s = raw(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let reply: Result<ServerHello, ErrorInfo> =
        decode_payload(&read_frame(&mut s).expect("frame")).expect("decode");
    let err = reply.expect_err("garbage refused");
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.message.contains("handshake"), "{}", err.message);
    assert_closed(&mut s);
    healthy(addr);

    // A protocol version from the future.
    let mut s = raw(addr);
    let mut hello = HANDSHAKE_MAGIC.to_vec();
    hello.extend_from_slice(&(PROTOCOL_VERSION + 98).to_be_bytes());
    s.write_all(&hello).expect("write");
    let reply: Result<ServerHello, ErrorInfo> =
        decode_payload(&read_frame(&mut s).expect("frame")).expect("decode");
    let err = reply.expect_err("version refused");
    assert_eq!(err.code, ErrorCode::ProtocolVersion);
    assert!(err.message.contains(&format!("{}", PROTOCOL_VERSION + 98)), "{}", err.message);
    assert_closed(&mut s);

    // A frame header announcing 4 GiB: refused before any allocation.
    let mut s = handshake(addr);
    s.write_all(&u32::MAX.to_be_bytes()).expect("write");
    let reply: Response = decode_payload(&read_frame(&mut s).expect("frame")).expect("decode");
    assert_eq!(reply.id, 0);
    assert_eq!(reply.result.expect_err("too large").code, ErrorCode::FrameTooLarge);
    assert_closed(&mut s);

    // A frame that is not a request.
    let mut s = handshake(addr);
    s.write_all(&5u32.to_be_bytes()).expect("write");
    s.write_all(&[0xc1, 0xff, 0x00, 0x13, 0x37]).expect("write");
    let reply: Response = decode_payload(&read_frame(&mut s).expect("frame")).expect("decode");
    assert_eq!(reply.result.expect_err("undecodable").code, ErrorCode::BadRequest);
    assert_closed(&mut s);

    // Oversized key and value: typed errors, and the connection goes on.
    let mut s = handshake(addr);
    let key = vec![b'k'; KEY_SIZE_MAX_BYTES + 1];
    let r = request(
        &mut s,
        7,
        Command::Get { range: "r".into(), key: key.clone().into(), snapshot: None },
    );
    assert_eq!(r.id, 7);
    assert_eq!(r.result.expect_err("key too large").code, ErrorCode::KeyTooLarge);
    let ops = vec![WriteOp::Put {
        key: b"v".to_vec().into(),
        value: vec![0u8; VALUE_SIZE_MAX_BYTES + 1].into(),
    }];
    let r = request(&mut s, 8, Command::Write { range: "r".into(), ops, atomic: false });
    assert_eq!(r.result.expect_err("value too large").code, ErrorCode::ValueTooLarge);
    let r = request(
        &mut s,
        9,
        Command::Get { range: "nope".into(), key: b"k".to_vec().into(), snapshot: None },
    );
    assert_eq!(r.result.expect_err("no range").code, ErrorCode::RangeNotFound);
    assert_eq!(request(&mut s, 10, Command::Ping).result, Ok(Reply::Pong));

    // The client library refuses the same before sending.
    rt.block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        let e = c.put("r", &key, "v").await.expect_err("refused locally");
        assert!(matches!(e, monotable_client::Error::Invalid(_)));
        assert_eq!(e.code(), Some(ErrorCode::KeyTooLarge));
    });

    // Clients that vanish: mid-handshake, mid-frame, and right after
    // sending a write without reading its reply.
    for _ in 0..20 {
        let mut s = raw(addr);
        s.write_all(&HANDSHAKE_MAGIC[..2]).expect("write");
        drop(s);
        let mut s = handshake(addr);
        s.write_all(&100u32.to_be_bytes()).expect("write");
        s.write_all(&[1, 2, 3]).expect("write");
        drop(s);
        let mut s = handshake(addr);
        let mut out = Vec::new();
        let ops =
            vec![WriteOp::Put { key: b"vanished".to_vec().into(), value: b"v".to_vec().into() }];
        encode_frame(
            &Request { id: 1, command: Command::Write { range: "r".into(), ops, atomic: true } },
            &mut out,
        )
        .expect("encode");
        s.write_all(&out).expect("write");
        drop(s);
    }
    healthy(addr);
    rt.block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        assert_eq!(c.get("r", "kept").await.expect("get"), Some(b"value".to_vec()));
        // Writes whose clients vanished are applied whole or not at all.
        let v = c.get("r", "vanished").await.expect("get");
        assert!(v.is_none() || v == Some(b"v".to_vec()));
    });
    assert!(node.stop(), "clean shutdown");
}
