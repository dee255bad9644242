//! The browser client's files: built into the binary from `static/`, or
//! served from `--static-dir` so an operator can serve their own.
//!
//! Both carry a validator and answer conditional requests with `304`
//! (README, HTTP endpoints): the built-in files an `ETag` hashed from their
//! content at start, a folder's files `Last-Modified`. A folder is served
//! by tower-http's `ServeDir`, which streams each file in chunks; wschat
//! only decides first which paths it may serve: never a dotfile or
//! dot-folder (`/.env`, `/.git/config`), never a file that a symlink puts
//! outside the folder.

use std::hash::{DefaultHasher, Hasher};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use percent_encoding::percent_decode_str;
use tower_http::services::ServeDir;
use tower_http::services::fs::ServeFileSystemResponseBody;
use tracing::warn;

/// Every response body: bytes held in memory, or a file streamed by
/// `ServeDir`.
pub(crate) type Body = Either<Full<Bytes>, ServeFileSystemResponseBody>;

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

/// Browsers may keep a copy but ask each time whether it is still current
/// (a `304` costs no body), so a new version of the client shows at once.
const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("no-cache");

/// One built-in file and its `ETag`.
#[derive(Debug)]
pub(crate) struct File {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: HeaderValue,
}

/// Where the client's files come from.
#[derive(Debug)]
pub(crate) enum Assets {
    Embedded(Vec<File>),
    Dir { dir: PathBuf, files: ServeDir },
}

impl Assets {
    /// The built-in client, each file's `ETag` computed once here.
    pub(crate) fn embedded() -> Self {
        let files = EMBEDDED
            .iter()
            .map(|&(path, content_type, body)| {
                let mut hasher = DefaultHasher::new();
                hasher.write(body.as_bytes());
                let etag = format!("\"{:016x}\"", hasher.finish());
                File {
                    path,
                    content_type,
                    body,
                    etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
                }
            })
            .collect();
        Assets::Embedded(files)
    }

    /// The files in `dir`. Its path may be a symlink, switched to deploy a
    /// new version: what counts as inside is where it leads at each
    /// request.
    pub(crate) fn dir(dir: PathBuf) -> Self {
        if let Err(e) = std::fs::read_dir(&dir) {
            warn!(dir = %dir.display(), error = %e, "--static-dir cannot be read (yet)");
        }
        let files = ServeDir::new(&dir).append_index_html_on_directories(false);
        Assets::Dir { dir, files }
    }

    /// The answer to a GET or HEAD of `req`'s path (`/` is `/index.html`),
    /// or `None` when there is no such file to serve.
    pub(crate) async fn serve<B>(&self, req: Request<B>) -> Option<Response<Body>> {
        let index = req.uri().path() == "/";
        let mut response = match self {
            Assets::Embedded(files) => {
                let path = if index {
                    "/index.html"
                } else {
                    req.uri().path()
                };
                let file = files.iter().find(|f| f.path == path)?;
                file.answer(req.headers())
            }
            Assets::Dir { dir, files } => {
                let (mut parts, _) = req.into_parts();
                if index {
                    parts.uri = Uri::from_static("/index.html");
                }
                if !servable(dir, parts.uri.path()).await {
                    return None;
                }
                let req = Request::from_parts(parts, Empty::<Bytes>::new());
                let response = match files.clone().try_call(req).await {
                    Ok(response) => response.map(Either::Right),
                    Err(e) => {
                        warn!(error = %e, "cannot read a file of --static-dir");
                        return None;
                    }
                };
                if response.status() == StatusCode::NOT_FOUND {
                    return None;
                }
                response
            }
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, CACHE_CONTROL);
        Some(response)
    }
}

impl File {
    /// `200` with the file, or `304` when the request's `If-None-Match`
    /// names its `ETag` (weak comparison, as RFC 9110 asks for this
    /// header).
    fn answer(&self, request: &HeaderMap) -> Response<Body> {
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == self.etag);
        let mut response = if fresh {
            let mut response = Response::new(Either::Left(Full::default()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(
                self.body.as_bytes(),
            ))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            response
        };
        response
            .headers_mut()
            .insert(header::ETAG, self.etag.clone());
        response
    }
}

/// Whether wschat may serve the request path `path` from `dir`: a path of
/// plain names, none hidden, that still lies inside `dir`, with no hidden
/// name, once every symlink is resolved. The path is decoded as
/// `ServeDir` decodes it, so `%2e` and `%2F` hide nothing.
async fn servable(dir: &Path, path: &str) -> bool {
    let Ok(decoded) = percent_decode_str(path).decode_utf8() else {
        return false;
    };
    let relative = Path::new(decoded.trim_start_matches('/'));
    if !visible(relative) {
        return false;
    }
    let (Ok(root), Ok(real)) = (
        tokio::fs::canonicalize(dir).await,
        tokio::fs::canonicalize(dir.join(relative)).await,
    ) else {
        return false;
    };
    real.strip_prefix(&root).is_ok_and(visible)
}

/// Whether `path` is a series of names, none starting with a dot.
fn visible(path: &Path) -> bool {
    path.components().all(|c| match c {
        Component::Normal(name) => !name.as_encoded_bytes().starts_with(b"."),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn embedded_has_the_client() {
        let assets = Assets::embedded();
        let response = assets.serve(get("/")).await.unwrap();
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(assets.serve(get("/nope")).await.is_none());
    }

    #[tokio::test]
    async fn a_directory_never_serves_outside_itself() {
        let dir = std::env::temp_dir().join(format!("wschat-assets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.css"), "x").unwrap();
        std::fs::write(dir.join("secret"), "x").unwrap();
        let assets = Assets::dir(dir.join("sub"));
        let response = assets.serve(get("/a.css")).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/css");
        assert!(assets.serve(get("/../secret")).await.is_none());
        assert!(assets.serve(get("/..%2Fsecret")).await.is_none());
        assert!(assets.serve(get("//etc/passwd")).await.is_none());
        assert!(assets.serve(get("/%2Fetc/passwd")).await.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hidden_names_are_not_visible() {
        assert!(visible(Path::new("a/b.html")));
        for hidden in [".env", "a/.git/config", "./a", "../a", "/a"] {
            assert!(!visible(Path::new(hidden)), "{hidden}");
        }
    }
}
