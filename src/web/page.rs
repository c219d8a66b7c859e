//! The chat page, compiled into the binary: one HTML file, its script and
//! its style sheet (`page/`), written without a build step or anything
//! loaded from elsewhere. The script opens `ws` beside the page (a relative
//! URL, so it also works under a proxy's sub-path) and renders every line
//! with `textContent`, so nothing a user types can become markup.

/// The files of the page, by path: content type and bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("page/index.html"),
    ),
    (
        "/chat.js",
        "text/javascript; charset=utf-8",
        include_str!("page/chat.js"),
    ),
    (
        "/chat.css",
        "text/css; charset=utf-8",
        include_str!("page/chat.css"),
    ),
];

/// The asset served at `path`, if there is one.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, kind, body)| (*kind, body.as_bytes()))
}
