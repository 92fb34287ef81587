//! `semclip-health-probe`: asks a gRPC server for its `grpc.health.v1.Health/Check` status
//! and exits 0 only when the answer is `SERVING`.
//!
//! Container images of the SemCLIP daemons carry no shell, no `grpcurl` and no
//! `grpc_health_probe`, so Docker's `HEALTHCHECK` needs a program of its own. This one uses
//! the standard library only: it speaks just enough HTTP/2 (cleartext, prior knowledge) to
//! send one unary call, and reads the reply's DATA frames without decoding response
//! headers. Kubernetes does not need it: its `grpc:` probes call the same service natively.
//!
//! Exit status: 0 serving, 1 bad usage, 2 could not connect, 3 the call failed or the reply
//! was not a health answer, 4 the server answered with a status other than `SERVING`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: semclip-health-probe [--service NAME] [--timeout SECONDS] HOST:PORT

Calls grpc.health.v1.Health/Check on HOST:PORT (plain-text HTTP/2) and exits 0 when the
server answers SERVING. --service asks about one named service instead of the whole
server (the empty name). --timeout bounds the whole check (default 3 seconds).

Exit status: 0 serving, 1 bad usage, 2 could not connect, 3 call failed, 4 not serving.";

/// The stream that carries the one call; client-initiated streams are odd, 1 is the first.
const STREAM_ID: u32 = 1;

/// HTTP/2 frame types (RFC 9113, section 6).
const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_PING: u8 = 0x6;
const FRAME_GOAWAY: u8 = 0x7;

/// HTTP/2 frame flags used here.
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;

/// Frames larger than this are refused rather than read (the default maximum is 16 KiB).
const MAX_FRAME_LEN: usize = 1 << 20;

/// What the probe was asked to do.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    /// `host:port` of the server.
    address: String,
    /// Service name to ask about; empty asks about the server as a whole.
    service: String,
    /// Bound on the whole check, connect included.
    timeout: Duration,
}

/// Why a check did not end in `SERVING`, with the exit status that reports it.
#[derive(Debug)]
enum ProbeError {
    Usage(String),
    Connect(String),
    Call(String),
    NotServing(String),
}

impl ProbeError {
    fn exit_code(&self) -> u8 {
        match self {
            ProbeError::Usage(_) => 1,
            ProbeError::Connect(_) => 2,
            ProbeError::Call(_) => 3,
            ProbeError::NotServing(_) => 4,
        }
    }

    fn message(&self) -> &str {
        match self {
            ProbeError::Usage(m)
            | ProbeError::Connect(m)
            | ProbeError::Call(m)
            | ProbeError::NotServing(m) => m,
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let outcome = parse_args(&argv).and_then(|args| check(&args).map(|s| (args, s)));
    match outcome {
        Ok((args, status)) => {
            println!("{}: {}", args.address, status_name(status));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("semclip-health-probe: {}", err.message());
            if matches!(err, ProbeError::Usage(_)) {
                eprintln!("{USAGE}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

fn parse_args(argv: &[String]) -> Result<Args, ProbeError> {
    let mut address = None;
    let mut service = String::new();
    let mut timeout = Duration::from_secs(3);
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| ProbeError::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--service" => service = value("--service")?,
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        ProbeError::Usage(format!("--timeout must be positive seconds, not {v:?}"))
                    })?;
                timeout = Duration::from_secs_f64(secs);
            }
            flag if flag.starts_with("--") => {
                return Err(ProbeError::Usage(format!("unknown option {flag}")))
            }
            positional => {
                if address.replace(positional.to_string()).is_some() {
                    return Err(ProbeError::Usage("give exactly one HOST:PORT".into()));
                }
            }
        }
    }
    let address = address.ok_or_else(|| ProbeError::Usage("missing HOST:PORT".into()))?;
    Ok(Args {
        address,
        service,
        timeout,
    })
}

/// Runs one health check and returns the `ServingStatus` number the server answered, which
/// is 1 (`SERVING`) on success.
fn check(args: &Args) -> Result<u64, ProbeError> {
    let deadline = Instant::now() + args.timeout;
    let mut stream = connect(&args.address, args.timeout)?;
    let call_err = |e: io::Error| ProbeError::Call(format!("{}: {}", args.address, io_words(&e)));

    stream
        .write_all(&request_bytes(&args.address, &args.service))
        .map_err(call_err)?;
    let body = read_reply(&mut stream, deadline).map_err(|e| match e {
        ReplyError::Io(e) => call_err(e),
        ReplyError::Protocol(m) => ProbeError::Call(format!("{}: {m}", args.address)),
    })?;

    // Say goodbye politely; the answer is already in hand, so failures here do not matter.
    let _ = stream.write_all(&frame(FRAME_GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]));
    let _ = stream.shutdown(std::net::Shutdown::Both);

    let status = parse_health_reply(&body)
        .map_err(|m| ProbeError::Call(format!("{}: {m}", args.address)))?;
    if status == 1 {
        Ok(status)
    } else {
        let what = if args.service.is_empty() {
            "server".to_string()
        } else {
            format!("service {:?}", args.service)
        };
        // The response's trailers (grpc-status) are not decoded, so an unknown service,
        // which some servers answer with NOT_FOUND and an empty message, reads as UNKNOWN.
        let hint = if status == 0 {
            " (the answer an unknown service name can get too)"
        } else {
            ""
        };
        Err(ProbeError::NotServing(format!(
            "{}: {what} is {}{hint}",
            args.address,
            status_name(status)
        )))
    }
}

fn connect(address: &str, timeout: Duration) -> Result<TcpStream, ProbeError> {
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| ProbeError::Connect(format!("{address}: cannot resolve ({e})")))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let why = last.map_or_else(|| "no address".to_string(), |e| io_words(&e));
    Err(ProbeError::Connect(format!("{address}: {why}")))
}

fn io_words(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::UnexpectedEof => "connection closed by the server".into(),
        _ => e.to_string(),
    }
}

/// The client preface, an empty SETTINGS frame, the call's HEADERS and its one DATA frame.
fn request_bytes(authority: &str, service: &str) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(FRAME_SETTINGS, 0, 0, &[]));

    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack_literal(&mut block, name, value);
    }
    out.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, STREAM_ID, &block));

    // HealthCheckRequest { string service = 1; } behind gRPC's 5-byte message prefix.
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut data = vec![0u8];
    data.extend_from_slice(&(message.len() as u32).to_be_bytes());
    data.extend(message);
    out.extend(frame(FRAME_DATA, FLAG_END_STREAM, STREAM_ID, &data));
    out
}

/// One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK "literal header field without indexing, new name", no Huffman coding
/// (RFC 7541, section 6.2.2).
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    for s in [name, value] {
        hpack_int(out, 0x00, 7, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

/// HPACK integer with an `n`-bit prefix whose high bits hold `first` (RFC 7541, 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: u64) {
    let max = (1u64 << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[derive(Debug)]
enum ReplyError {
    Io(io::Error),
    Protocol(String),
}

impl From<io::Error> for ReplyError {
    fn from(e: io::Error) -> Self {
        ReplyError::Io(e)
    }
}

/// Reads frames until the call's stream ends and returns the DATA bytes it carried.
fn read_reply(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, ReplyError> {
    let mut body = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut).into());
        }
        stream.set_read_timeout(Some(left))?;

        let mut head = [0u8; 9];
        stream.read_exact(&mut head)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_FRAME_LEN {
            return Err(ReplyError::Protocol(format!(
                "frame of {len} bytes is too large"
            )));
        }
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload)?;

        match kind {
            FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                stream.write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))?;
            }
            FRAME_PING if flags & FLAG_ACK == 0 => {
                stream.write_all(&frame(FRAME_PING, FLAG_ACK, 0, &payload))?;
            }
            FRAME_DATA if id == STREAM_ID => {
                body.extend_from_slice(unpad(&payload, flags)?);
                if flags & FLAG_END_STREAM != 0 {
                    return Ok(body);
                }
            }
            FRAME_HEADERS if id == STREAM_ID && flags & FLAG_END_STREAM != 0 => {
                return Ok(body);
            }
            FRAME_RST_STREAM if id == STREAM_ID => {
                let code = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                return Err(ReplyError::Protocol(format!(
                    "the server reset the call (HTTP/2 error code {code})"
                )));
            }
            FRAME_GOAWAY => {
                if !body.is_empty() {
                    return Ok(body);
                }
                return Err(ReplyError::Protocol(
                    "the server closed the connection (GOAWAY) before answering; \
                     is it a gRPC server?"
                        .into(),
                ));
            }
            // WINDOW_UPDATE, PRIORITY, acknowledgements and response headers need no answer.
            _ => {}
        }
    }
}

/// The payload of a frame without its padding (RFC 9113, section 6.1).
fn unpad(payload: &[u8], flags: u8) -> Result<&[u8], ReplyError> {
    if flags & FLAG_PADDED == 0 {
        return Ok(payload);
    }
    let pad = *payload
        .first()
        .ok_or_else(|| ReplyError::Protocol("padded frame without pad length".into()))?
        as usize;
    if pad + 1 > payload.len() {
        return Err(ReplyError::Protocol("padding longer than the frame".into()));
    }
    Ok(&payload[1..payload.len() - pad])
}

/// Reads `HealthCheckResponse { ServingStatus status = 1; }` from a gRPC message body.
fn parse_health_reply(body: &[u8]) -> Result<u64, String> {
    if body.is_empty() {
        return Err("the server ended the call without a health answer \
                    (unknown service, or not a grpc.health.v1 server)"
            .into());
    }
    if body.len() < 5 {
        return Err(format!("truncated gRPC message ({} bytes)", body.len()));
    }
    if body[0] != 0 {
        return Err("the server sent a compressed message, which was not asked for".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let message = body
        .get(5..5 + len)
        .ok_or_else(|| format!("gRPC message of {len} bytes is cut short"))?;

    // proto3 leaves out default values: an empty message means status 0 (UNKNOWN).
    let mut status = 0;
    let mut pos = 0;
    while pos < message.len() {
        let key = read_varint(message, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = read_varint(message, &mut pos)?;
                if field == 1 {
                    status = v;
                }
            }
            1 => pos += 8,
            2 => {
                let n = read_varint(message, &mut pos)? as usize;
                pos += n;
            }
            5 => pos += 4,
            _ => return Err(format!("unexpected protobuf wire type {wire}")),
        }
        if pos > message.len() {
            return Err("malformed health answer".into());
        }
    }
    Ok(status)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated varint in health answer")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long in health answer".into())
}

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hpack_integers_follow_rfc7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
    }

    #[test]
    fn frames_have_a_nine_byte_header() {
        let f = frame(FRAME_DATA, FLAG_END_STREAM, 1, &[7, 8]);
        assert_eq!(f, [0, 0, 2, 0, 1, 0, 0, 0, 1, 7, 8]);
    }

    #[test]
    fn request_asks_for_the_named_service() {
        let bytes = request_bytes("h:1", "semclip.v1.Receiver");
        let tail = &bytes[bytes.len() - 5 - 21..];
        assert_eq!(&tail[..5], &[0, 0, 0, 0, 21]);
        assert_eq!(tail[5], 0x0a);
        assert_eq!(tail[6], 19);
        assert_eq!(&tail[7..], b"semclip.v1.Receiver");
    }

    #[test]
    fn health_replies_are_decoded() {
        assert_eq!(parse_health_reply(&[0, 0, 0, 0, 2, 0x08, 0x01]), Ok(1));
        assert_eq!(parse_health_reply(&[0, 0, 0, 0, 2, 0x08, 0x02]), Ok(2));
        assert_eq!(parse_health_reply(&[0, 0, 0, 0, 0]), Ok(0));
        assert!(parse_health_reply(&[]).is_err());
        assert!(parse_health_reply(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(parse_health_reply(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn arguments_are_checked() {
        let a = parse_args(&strings(&["--service", "x", "--timeout", "0.5", "h:1"])).unwrap();
        assert_eq!(a.address, "h:1");
        assert_eq!(a.service, "x");
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert!(matches!(parse_args(&[]), Err(ProbeError::Usage(_))));
        assert!(parse_args(&strings(&["--timeout", "-1", "h:1"])).is_err());
        assert!(parse_args(&strings(&["a:1", "b:2"])).is_err());
        assert!(parse_args(&strings(&["--bogus", "a:1"])).is_err());
    }

    #[test]
    fn closed_port_is_a_connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let args = parse_args(&strings(&[&address])).unwrap();
        let err = check(&args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err:?}");
    }

    #[test]
    fn a_server_that_is_not_grpc_is_a_call_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        });
        let args = parse_args(&strings(&["--timeout", "2", &address])).unwrap();
        let err = check(&args).unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err:?}");
        server.join().unwrap();
    }
}
