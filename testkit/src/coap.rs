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
