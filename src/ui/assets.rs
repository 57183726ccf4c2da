//! The page's files, compiled into the binary: nothing is fetched from
//! anywhere but this listener. They hold no data; the API behind them
//! authenticates every call.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("assets/approvals.html");
const STYLESHEET: &str = include_str!("assets/approvals.css");
const SCRIPT: &str = include_str!("assets/approvals.js");
const ICON: &str = include_str!("assets/icon.svg");

pub async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

pub async fn icon() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/svg+xml")], ICON)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether any tag has an `on…=` attribute.
    fn has_event_handler_attribute(html: &str) -> bool {
        html.split('<').skip(1).any(|tag| {
            let tag = tag.split('>').next().unwrap_or_default();
            tag.split_whitespace().skip(1).any(|attr| {
                attr.starts_with("on")
                    && attr[2..].starts_with(|c: char| c.is_ascii_alphabetic())
                    && attr.contains('=')
            })
        })
    }

    #[test]
    fn the_handler_check_finds_handlers() {
        assert!(has_event_handler_attribute("<img src=x onerror=alert(1)>"));
        assert!(!has_event_handler_attribute("<p class=x>only one</p>"));
    }

    /// Everything the page loads comes from this listener, and no markup
    /// carries inline script or style (the CSP would refuse it anyway).
    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_inlines_no_script() {
        for (name, text) in [("html", PAGE), ("css", STYLESHEET), ("js", SCRIPT)] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} contains {needle}");
            }
        }
        let lower = PAGE.to_ascii_lowercase();
        assert!(!lower.contains("<script>"), "inline script");
        assert!(!lower.contains("<style"), "inline style");
        assert!(!lower.contains(" style="), "inline style attribute");
        assert!(!has_event_handler_attribute(&lower), "inline event handler");
        // Text reaches the page as text only.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "the script uses {sink}");
        }
    }
}
