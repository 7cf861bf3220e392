//! The operator's dashboards at `/` — the gateway's, and the SD-IoT
//! controller's on the controller's own address: one page shell, their
//! scripts, a style sheet and a chart library, embedded in the binary so
//! that a gateway on a LAN with no internet serves them whole (no CDN, no
//! build step: the files in `node/dashboard/` are what the browser runs).
//!
//! The page holds no data and needs no token: everything it shows it reads
//! from the REST API with the operator's token, so `read_requires_token`
//! and the write scopes apply to it as to any client.

use std::sync::LazyLock;

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
    Asset::new("common.js", JS, include_bytes!("../dashboard/common.js")),
    Asset::new("app.js", JS, include_bytes!("../dashboard/app.js")),
    Asset::new(
        "controller.js",
        JS,
        include_bytes!("../dashboard/controller.js"),
    ),
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

/// The page both dashboards share; `{{title}}`, `{{nav}}` and
/// `{{script}}` are filled in for each.
const SHELL: &str = include_str!("../dashboard/shell.html");

/// One dashboard: its title, its pages (fragment, name, label) and script.
struct Dashboard {
    title: &'static str,
    pages: &'static [(&'static str, &'static str, &'static str)],
    script: &'static str,
}

const GATEWAY: Dashboard = Dashboard {
    title: "fogbank",
    pages: &[
        ("#/", "cloud", "Cloud"),
        ("#/things", "things", "Things"),
        ("#/services", "services", "Services"),
        ("#/federation", "federation", "Federation"),
        ("#/health", "health", "Health"),
    ],
    script: "app.js",
};

const CONTROLLER: Dashboard = Dashboard {
    title: "fogbank controller",
    pages: &[("#/", "requests", "Requests"), ("#/sdvs", "sdvs", "SDVSs")],
    script: "controller.js",
};

impl Dashboard {
    fn page(&self) -> String {
        let nav: String = self
            .pages
            .iter()
            .map(|(href, name, label)| {
                format!("    <a href=\"{href}\" data-page=\"{name}\">{label}</a>\n")
            })
            .collect();
        SHELL
            .replace("{{title}}", self.title)
            .replace("{{nav}}", nav.trim_end())
            .replace("{{script}}", self.script)
    }
}

static GATEWAY_PAGE: LazyLock<String> = LazyLock::new(|| GATEWAY.page());
static CONTROLLER_PAGE: LazyLock<String> = LazyLock::new(|| CONTROLLER.page());

/// Scripts and styles from this gateway only; the page talks to this
/// gateway only. uPlot sets element styles, hence inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn respond(content_type: &'static str, body: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Small, and a new binary brings new files: always revalidated.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

const HTML: &str = "text/html; charset=utf-8";

async fn gateway_page() -> HttpResponse {
    respond(HTML, GATEWAY_PAGE.as_bytes())
}

async fn controller_page() -> HttpResponse {
    respond(HTML, CONTROLLER_PAGE.as_bytes())
}

async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == name.as_str())
        .map(|a| respond(a.content_type, a.body))
        .ok_or_else(|| ApiError::NoRoute(format!("the dashboard has no file {:?}", name.as_str())))
}

/// The gateway's dashboard: `/` and `/dashboard/{file}`, GET only.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(crate::api::get("/", gateway_page))
        .service(crate::api::get("/dashboard/{file}", asset));
}

/// The controller's dashboard, on the controller's address.
pub fn configure_controller(config: &mut web::ServiceConfig) {
    config
        .service(crate::api::get("/", controller_page))
        .service(crate::api::get("/dashboard/{file}", asset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_page_names_only_embedded_files() {
        for dashboard in [GATEWAY, CONTROLLER] {
            let page = dashboard.page();
            assert!(!page.contains("{{"), "every blank filled: {page}");
            for reference in page.split("\"/dashboard/").skip(1) {
                let name = &reference[..reference.find('"').unwrap()];
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} names {name}, which is not embedded",
                    dashboard.title
                );
            }
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "nothing is fetched from elsewhere"
            );
            for (_, name, _) in dashboard.pages {
                assert!(page.contains(&format!("data-page=\"{name}\"")));
            }
        }
    }
}
