//! The route table: configured prefixes, longest first, and the upstream URL of a request.

use std::path::PathBuf;

use super::path;
use crate::config::{Config, RouteConfig};

/// One configured route, ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    pub config: RouteConfig,
    /// The upstream base URL without a trailing slash.
    base: String,
}

impl Route {
    /// The upstream URL for a normalised `path`, whose first `matched` bytes are this route's
    /// prefix (see [`Proxy::find`]), and the raw `query`.
    pub fn url(&self, path: &str, matched: usize, query: &str) -> String {
        let rest = if self.config.strip_prefix {
            path.get(matched..).unwrap_or_default()
        } else {
            path
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        let mut url = format!("{}{}", self.base, rest);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }
}

/// The routes, and where the browser app lives for paths no route claims.
#[derive(Debug)]
pub struct Proxy {
    /// Longest prefix first.
    routes: Vec<Route>,
    pub static_dir: PathBuf,
}

impl Proxy {
    pub fn new(config: &Config) -> Self {
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route {
                base: r.upstream.trim_end_matches('/').to_owned(),
                config: r.clone(),
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.config.prefix.len()));
        Self {
            routes,
            static_dir: config.static_dir.clone(),
        }
    }

    /// The route for a normalised path — the longest matching prefix — and how many bytes of
    /// `path` its prefix matched.
    pub fn find(&self, path: &str) -> Option<(&Route, usize)> {
        self.routes
            .iter()
            .find_map(|r| path::matched_prefix(path, &r.config.prefix).map(|matched| (r, matched)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthMode, RouteConfig};
    use std::time::Duration;

    fn route(prefix: &str, upstream: &str, strip: bool) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            upstream: upstream.into(),
            strip_prefix: strip,
            auth: AuthMode::Required,
            csrf: true,
            timeout: Duration::from_secs(1),
            forward_cookies: vec![],
        }
    }

    fn proxy(routes: Vec<RouteConfig>) -> Proxy {
        Proxy::new(&Config {
            routes,
            ..Config::default()
        })
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let p = proxy(vec![
            route("/api", "http://a", false),
            route("/api/admin", "http://b", false),
        ]);
        assert_eq!(p.find("/api/admin/x").unwrap().0.base, "http://b");
        assert_eq!(
            p.find("/api/admin;jsessionid=1/x").unwrap().0.base,
            "http://b"
        );
        assert_eq!(p.find("/api/adminx").unwrap().0.base, "http://a");
        assert_eq!(p.find("/api").unwrap().0.base, "http://a");
        assert!(p.find("/apix").is_none());
        assert!(p.find("/").is_none());
    }

    #[test]
    fn upstream_urls_keep_or_strip_the_prefix() {
        let keep = Route {
            config: route("/api", "http://u:9/base/", false),
            base: "http://u:9/base".into(),
        };
        assert_eq!(
            keep.url("/api/notes", 4, "a=1"),
            "http://u:9/base/api/notes?a=1"
        );
        let strip = Route {
            config: route("/api", "http://u:9", true),
            base: "http://u:9".into(),
        };
        assert_eq!(strip.url("/api/notes", 4, ""), "http://u:9/notes");
        assert_eq!(strip.url("/api", 4, ""), "http://u:9/");
        assert_eq!(strip.url("/api;v=1/notes", 8, ""), "http://u:9/notes");
    }
}
