//! Path normalisation before any route is matched: dot segments (plain or percent-encoded)
//! are resolved and repeated slashes merged, so `/api/../admin` or `/api/%2e%2e/admin` can
//! only reach a route that `/admin` names. Encoded slashes and backslashes are refused:
//! upstreams disagree on what they mean. So is a segment that is a dot segment once its
//! parameters are cut off (`..;`, `..;jsessionid=1`, `.;x`): Java servlet containers drop
//! everything from a segment's first `;` before resolving dot segments, so `/files/..;/secret`
//! would reach the upstream as `/secret`.

use percent_encoding::percent_decode_str;

/// Why a path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    AboveRoot,
    EncodedSeparator,
    DotSegmentWithParameters,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "the path must start with '/'",
            Self::AboveRoot => "the path climbs above the root",
            Self::EncodedSeparator => "encoded '/', '\\\\' or NUL in the path",
            Self::DotSegmentWithParameters => {
                "a path segment is '.' or '..' followed by ';' parameters"
            }
        }
    }
}

/// The normalised form of a raw (still percent-encoded) path. Segments keep their original
/// encoding; only dot segments and empty segments are removed.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = raw[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let decoded = percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Err(PathError::EncodedSeparator);
        }
        if let Some(at) = decoded.iter().position(|b| *b == b';') {
            if matches!(&decoded[..at], b"." | b"..") {
                return Err(PathError::DotSegmentWithParameters);
            }
        }
        match decoded.as_slice() {
            b"" => trailing_slash = i == last && !out.is_empty(),
            b"." => trailing_slash = i == last,
            b".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = i == last;
            }
            _ => {
                out.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut path = format!("/{}", out.join("/"));
    if trailing_slash && path.len() > 1 {
        path.push('/');
    }
    Ok(path)
}

/// If `path` (normalised) falls under the route `prefix` on segment boundaries, the length
/// in bytes of the part of `path` that matched. Each segment of `path` is compared as an
/// upstream may read it — percent-decoded, and with `;` parameters cut off — so
/// `/api/admin;x/users` and `/api/%61dmin/users` fall under `/api/admin`, not `/api`: a route
/// with stricter rules cannot be dodged by spelling. (Prefixes are plain: configuration
/// refuses escapes and `;` in them.)
pub fn matched_prefix(path: &str, prefix: &str) -> Option<usize> {
    if prefix == "/" {
        return Some(0);
    }
    let mut segments = path.strip_prefix('/')?.split('/');
    let mut matched = 0;
    for wanted in prefix.strip_prefix('/')?.split('/') {
        let segment = segments.next()?;
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        let read = decoded.split(';').next().unwrap_or_default();
        if read != wanted {
            return None;
        }
        matched += 1 + segment.len();
    }
    Some(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_resolved() {
        let cases = [
            ("/", "/"),
            ("/api/notes", "/api/notes"),
            ("/api/../admin", "/admin"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/%2E%2E/admin", "/admin"),
            ("/api/.%2e/admin", "/admin"),
            ("/api/./notes/", "/api/notes/"),
            ("/api//notes", "/api/notes"),
            ("/api/notes/..", "/api/"),
            ("/a/b/../../c", "/c"),
            ("/api/n%20x", "/api/n%20x"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn escapes_above_root_and_encoded_separators_are_refused() {
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/api/../../etc"), Err(PathError::AboveRoot));
        assert_eq!(
            normalize("/api/%2f..%2fadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(
            normalize("/api/..%5cadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(normalize("/api/%00"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("api"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn dot_segments_with_parameters_are_refused_and_other_parameters_kept() {
        for raw in [
            "/f/..;/x",
            "/f/..;jsessionid=1/x",
            "/f/%2e%2e;/x",
            "/f/.;a/x",
            "/f/..%3b/x",
        ] {
            assert_eq!(
                normalize(raw),
                Err(PathError::DotSegmentWithParameters),
                "{raw}"
            );
        }
        assert_eq!(normalize("/f;v=2/x").as_deref(), Ok("/f;v=2/x"));
        assert_eq!(normalize("/f/...;/x").as_deref(), Ok("/f/...;/x"));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert_eq!(matched_prefix("/api", "/api"), Some(4));
        assert_eq!(matched_prefix("/api/x", "/api"), Some(4));
        assert_eq!(matched_prefix("/apix", "/api"), None);
        assert_eq!(matched_prefix("/anything", "/"), Some(0));
    }

    #[test]
    fn prefixes_match_segments_as_an_upstream_reads_them() {
        assert_eq!(matched_prefix("/api/admin;x/users", "/api/admin"), Some(12));
        assert_eq!(matched_prefix("/api/%61dmin/users", "/api/admin"), Some(12));
        assert_eq!(matched_prefix("/api;v=1/x", "/api"), Some(8));
        assert_eq!(matched_prefix("/api/adminx", "/api/admin"), None);
    }
}
