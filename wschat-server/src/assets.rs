//! The browser client's files: built into the binary from `static/`, or read
//! from `--static-dir` so an operator can serve their own.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

/// The files the binary carries: path, content type, body.
const EMBEDDED: &[(&str, &str, &str)] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
];

/// Where the client's files come from.
#[derive(Debug, Clone)]
pub(crate) enum Assets {
    Embedded,
    Dir(PathBuf),
}

impl Assets {
    /// The file for a request path (`/` is `/index.html`), with its
    /// content type; `None` when there is none.
    pub(crate) async fn get(&self, path: &str) -> Option<(&'static str, Bytes)> {
        let path = if path == "/" { "/index.html" } else { path };
        match self {
            Assets::Embedded => EMBEDDED
                .iter()
                .find(|(p, _, _)| *p == path)
                .map(|(_, ct, body)| (*ct, Bytes::from_static(body.as_bytes()))),
            Assets::Dir(dir) => {
                let relative = Path::new(path.trim_start_matches('/'));
                // Only plain names: no `..`, no absolute paths, no escapes.
                if !relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
                {
                    return None;
                }
                let body = tokio::fs::read(dir.join(relative)).await.ok()?;
                Some((content_type(path), body.into()))
            }
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_has_the_client() {
        let (ct, body) = Assets::Embedded.get("/").await.unwrap();
        assert!(ct.starts_with("text/html"));
        assert!(std::str::from_utf8(&body).unwrap().contains("app.js"));
        assert!(Assets::Embedded.get("/nope").await.is_none());
    }

    #[tokio::test]
    async fn a_directory_never_serves_outside_itself() {
        let dir = std::env::temp_dir().join(format!("wschat-assets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.css"), "x").unwrap();
        let assets = Assets::Dir(dir.join("sub"));
        assert_eq!(
            assets.get("/a.css").await.unwrap().0,
            "text/css; charset=utf-8"
        );
        assert!(assets.get("/../sub/a.css").await.is_none());
        assert!(assets.get("//etc/passwd").await.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
