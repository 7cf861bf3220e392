//! Requests the gateway starts (REGISTER, MESSAGE, PUBLISH), sent through
//! their digest challenges: 401 from a registrar, 407 from a proxy, and a
//! `stale=true` nonce answered again rather than taken as a refusal.

use sip_auth::{ClientAuthenticator, DigestAuthenticator, RequestParts, ResponseParts};
use sip_core::transaction::TsxResponse;
use sip_core::transport::TargetTransportInfo;
use sip_core::{Endpoint, Request};
use sip_types::header::typed::Contact;
use sip_types::uri::{NameAddr, SipUri};
use sip_types::{Method, Name};
use sip_ua::dialog::ClientDialogBuilder;

use crate::shared::Shared;

/// Digest challenges answered for one request, at most.
const MAX_CHALLENGES: usize = 4;

/// Sends the request `make` builds (again after each challenge, with
/// fresh credentials) and returns the first final answer that is not a
/// challenge. An error says why there is none.
pub async fn send(
    endpoint: &Endpoint,
    authenticator: &mut DigestAuthenticator,
    target: &mut TargetTransportInfo,
    mut make: impl FnMut() -> Request,
) -> Result<TsxResponse, String> {
    for _ in 0..MAX_CHALLENGES {
        let mut request = make();
        authenticator.authorize_request(&mut request.headers);
        let method = request.line.method.clone();
        let mut transaction = endpoint
            .send_request(request, target)
            .await
            .map_err(|e| format!("cannot send {method}: {e}"))?;
        let response = transaction
            .receive_final()
            .await
            .map_err(|e| format!("no answer to {method}: {e}"))?;
        let code = response.line.code.into_u16();
        if code != 401 && code != 407 {
            return Ok(response);
        }
        let request = transaction.request();
        authenticator
            .handle_rejection(
                RequestParts {
                    line: &request.msg.line,
                    headers: &request.msg.headers,
                    body: &request.msg.body,
                },
                ResponseParts {
                    line: &response.line,
                    headers: &response.headers,
                    body: &response.body,
                },
            )
            .map_err(|e| format!("{code}: {e}"))?;
    }
    Err("the server kept challenging".into())
}

/// Requests outside any dialog from an address of record of this gateway
/// to `target`: one From tag and Call-ID, a CSeq counting up with each
/// retry. A MESSAGE carries no Contact (RFC 3428).
pub struct Outgoing {
    builder: ClientDialogBuilder,
    method: Method,
}

impl Outgoing {
    /// From the gateway's own address of record.
    pub fn new(
        endpoint: &Endpoint,
        shared: &Shared,
        method: Method,
        target: SipUri,
    ) -> Result<Outgoing, String> {
        Self::from(endpoint, shared, shared.hub.gateway(), method, target)
    }

    /// From the address of record of `user` (a thing).
    pub fn from(
        endpoint: &Endpoint,
        shared: &Shared,
        user: &str,
        method: Method,
        target: SipUri,
    ) -> Result<Outgoing, String> {
        Ok(Outgoing {
            builder: ClientDialogBuilder::new(
                endpoint.clone(),
                NameAddr::uri(shared.aor(user)?),
                Contact::new(NameAddr::uri(shared.contact(user)?)),
                target,
            ),
            method,
        })
    }

    pub fn next(&mut self) -> Request {
        let mut request = self.builder.create_request(self.method.clone(), None);
        if self.method == Method::MESSAGE {
            request.headers.remove(&Name::CONTACT);
        }
        request
    }
}
