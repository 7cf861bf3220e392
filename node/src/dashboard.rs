//! The operator's dashboard at `/`: one page and its script, style and
//! chart library, embedded in the binary so that a gateway on a LAN with
//! no internet serves it whole (no CDN, no build step: the files in
//! `node/dashboard/` are what the browser runs).
//!
//! The page holds no data and needs no token: everything it shows it reads
//! from the REST API with the operator's token, so `read_requires_token`
//! and the write scopes apply to it as to any client.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::api::problem::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset::new("app.js", JS, include_bytes!("../dashboard/app.js")),
    Asset::new("app.css", CSS, include_bytes!("../dashboard/app.css")),
    Asset::new(
        "uPlot.iife.min.js",
        JS,
        include_bytes!("../dashboard/vendor/uPlot.iife.min.js"),
    ),
    Asset::new(
        "uPlot.min.css",
        CSS,
        include_bytes!("../dashboard/vendor/uPlot.min.css"),
    ),
];

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        Asset {
            name,
            content_type,
            body,
        }
    }
}

const INDEX: &[u8] = include_bytes!("../dashboard/index.html");

/// Scripts and styles from this gateway only; the page talks to this
/// gateway only. uPlot sets element styles, hence inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Small, and a new binary brings new files: always revalidated.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

async fn index() -> HttpResponse {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == name.as_str())
        .map(|a| page(a.content_type, a.body))
        .ok_or_else(|| ApiError::NoRoute(format!("the dashboard has no file {:?}", name.as_str())))
}

/// `/` and `/dashboard/{file}`, GET only.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(crate::api::get("/", index))
        .service(crate::api::get("/dashboard/{file}", asset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_files() {
        let index = std::str::from_utf8(INDEX).unwrap();
        for reference in index.split("\"/dashboard/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "index.html names {name}, which is not embedded"
            );
        }
        assert!(
            !index.contains("http://") && !index.contains("https://"),
            "nothing is fetched from elsewhere"
        );
    }
}
