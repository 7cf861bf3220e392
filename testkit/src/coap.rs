//! CoAP requests as a client or device in a benchmark writes them, from
//! RFC 7252 with coap-lite's codec (not the gateway's).

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

/// A confirmable request, its token the message id.
pub fn request(
    method: RequestType,
    path: &str,
    queries: &[&str],
    payload: &[u8],
    mid: u16,
) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(method);
    packet.header.message_id = mid;
    packet.set_token(mid.to_be_bytes().to_vec());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    for query in queries {
        packet.add_option(CoapOption::UriQuery, query.as_bytes().to_vec());
    }
    packet.payload = payload.to_vec();
    // A request of a few options and a short payload always encodes.
    packet.to_bytes_unlimited().unwrap_or_default()
}

/// A CoAP device that registers an observable `/count` at the gateway's
/// resource directory (`ep={endpoint}`) and, once the gateway observes it,
/// sends numbered confirmable notifications (RFC 7641), one at a time,
/// from `first` on, until `stop` or until the gateway stops answering.
/// Returns the numbers the gateway acknowledged: it acknowledges a
/// notification once what it carries is stored.
pub fn observed_counter(
    gateway: std::net::SocketAddr,
    endpoint: &str,
    first: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    let endpoint = endpoint.to_owned();
    std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buffer = [0u8; 2048];
        let mut receive = |socket: &std::net::UdpSocket| -> Option<Packet> {
            let (n, _) = socket.recv_from(&mut buffer).ok()?;
            Packet::from_bytes(&buffer[..n]).ok()
        };
        let mut mid: u16 = 0x4000;
        let mut value = first;
        let mut observation: Option<Vec<u8>> = None;
        // Answers a request of the gateway's: a GET of /count, observing or not.
        let answer = |socket: &std::net::UdpSocket,
                      request: &Packet,
                      value: u64,
                      observation: &mut Option<Vec<u8>>| {
            let mut response = Packet::new();
            response.header.set_type(MessageType::Acknowledgement);
            response.header.message_id = request.header.message_id;
            response.set_token(request.get_token().to_vec());
            response.header.code = MessageClass::Response(coap_lite::ResponseType::Content);
            if request.get_option(CoapOption::Observe).is_some() {
                *observation = Some(request.get_token().to_vec());
                response.add_option(CoapOption::Observe, vec![1]);
            }
            response.add_option(CoapOption::ContentFormat, vec![]);
            response.payload = value.to_string().into_bytes();
            let _ = socket.send_to(&response.to_bytes().unwrap_or_default(), gateway);
        };

        // Registered once the directory answers 2.01; observed once the
        // gateway's GET with Observe came.
        let started = Instant::now();
        let mut registered = false;
        let mut last_try = None::<Instant>;
        while observation.is_none() {
            if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(20) {
                return Vec::new();
            }
            if !registered && last_try.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                mid = mid.wrapping_add(1);
                let mut register = Packet::new();
                register.header.set_type(MessageType::Confirmable);
                register.header.code = MessageClass::Request(RequestType::Post);
                register.header.message_id = mid;
                register.set_token(mid.to_be_bytes().to_vec());
                register.add_option(CoapOption::UriPath, b"rd".to_vec());
                register.add_option(CoapOption::ContentFormat, vec![40]);
                register.add_option(CoapOption::UriQuery, format!("ep={endpoint}").into_bytes());
                register.payload = b"</count>;obs;rt=\"temperature\"".to_vec();
                let _ = socket.send_to(&register.to_bytes().unwrap_or_default(), gateway);
                last_try = Some(Instant::now());
            }
            let Some(packet) = receive(&socket) else {
                continue;
            };
            match packet.header.code {
                MessageClass::Response(_) if packet.header.message_id == mid => registered = true,
                MessageClass::Request(RequestType::Get) => {
                    answer(&socket, &packet, value, &mut observation)
                }
                _ => {}
            }
        }

        // Numbered notifications, each until its ACK (one retransmission).
        let mut acknowledged = Vec::new();
        let token = observation.clone().unwrap_or_default();
        while !stop.load(Ordering::Relaxed) {
            value += 1;
            mid = mid.wrapping_add(1);
            let mut notification = Packet::new();
            notification.header.set_type(MessageType::Confirmable);
            notification.header.message_id = mid;
            notification.header.code = MessageClass::Response(coap_lite::ResponseType::Content);
            notification.set_token(token.clone());
            let sequence = (value & 0xff_ffff) as u32;
            notification.add_option(CoapOption::Observe, sequence.to_be_bytes()[1..].to_vec());
            notification.add_option(CoapOption::ContentFormat, vec![]);
            notification.payload = value.to_string().into_bytes();
            let bytes = notification.to_bytes().unwrap_or_default();
            let mut acked = false;
            'send: for _ in 0..2 {
                let _ = socket.send_to(&bytes, gateway);
                let sent = Instant::now();
                while sent.elapsed() < Duration::from_secs(1) {
                    let Some(packet) = receive(&socket) else {
                        continue;
                    };
                    match (packet.header.get_type(), packet.header.code) {
                        (MessageType::Acknowledgement, _) if packet.header.message_id == mid => {
                            acked = true;
                            break 'send;
                        }
                        (MessageType::Reset, _) if packet.header.message_id == mid => break 'send,
                        (_, MessageClass::Request(RequestType::Get)) => {
                            let mut ignored = None;
                            answer(&socket, &packet, value, &mut ignored)
                        }
                        _ => {}
                    }
                }
            }
            if !acked {
                break;
            }
            acknowledged.push(value);
        }
        acknowledged
    })
}
