//! `guest_sdk_route_config`: a per-route filter. The JSON plugin
//! configuration lists routes; each request is matched to one by the
//! `route_name` attribute or, failing that, by the longest path prefix of
//! the `request.path` attribute, and the route's settings decide what
//! happens (ABI reference §4.3, §4.4, §10.2, §11.3).
//!
//! Envoy users usually write such a filter once and configure it once per
//! route, or once with a table like this one. Contract:
//! `spec-tests/guests/README.md`.

use std::rc::Rc;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RouteRoot { config: Rc::new(Config::default()) })
    });
}}

/// One route of the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    /// Matched against the `route_name` attribute.
    name: String,
    /// Path prefix (the query is not part of the match).
    #[serde(default)]
    prefix: Option<String>,
    /// Answer every request of the route with this status.
    #[serde(default)]
    deny: Option<u32>,
    /// A request without this header gets 401.
    #[serde(default)]
    require_header: Option<String>,
    /// `[name, value]` set on the request.
    #[serde(default)]
    request_headers: Vec<(String, String)>,
    /// `[name, value]` set on the response.
    #[serde(default)]
    response_headers: Vec<(String, String)>,
}

/// The plugin configuration (JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    routes: Vec<Route>,
}

impl Config {
    /// The route named `route_name`, else the longest matching prefix.
    fn select(&self, route_name: Option<&str>, path: &str) -> Option<(usize, &'static str)> {
        if let Some(name) = route_name.filter(|n| !n.is_empty())
            && let Some(i) = self.routes.iter().position(|r| r.name == name)
        {
            return Some((i, "route_name"));
        }
        let path = path.split('?').next().unwrap_or_default();
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let p = r.prefix.as_deref()?;
                path.starts_with(p).then_some((i, p.len()))
            })
            .max_by_key(|&(i, len)| (len, std::cmp::Reverse(i)))
            .map(|(i, _)| (i, "prefix"))
    }
}

struct RouteRoot {
    config: Rc<Config>,
}

impl Context for RouteRoot {}

impl RootContext for RouteRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(c) => {
                let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
                info!("sdk_route_config: configured routes={}", names.join(","));
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                error!("sdk_route_config: bad configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PerRoute {
            config: Rc::clone(&self.config),
            route: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct PerRoute {
    config: Rc<Config>,
    /// Index of the selected route.
    route: Option<usize>,
}

impl Context for PerRoute {}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl HttpContext for PerRoute {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let route_name = text(self.get_property(vec!["route_name"]));
        let path = text(self.get_property(vec!["request", "path"]))
            .or_else(|| self.get_http_request_header(":path"))
            .unwrap_or_default();
        let config = Rc::clone(&self.config);
        let Some((index, by)) = config.select(route_name.as_deref(), &path) else {
            info!("sdk_route_config: no route for path={path}");
            return Action::Continue;
        };
        let route = &config.routes[index];
        info!("sdk_route_config: path={path} route={} by={by}", route.name);
        self.route = Some(index);
        if let Some(status) = route.deny {
            info!(
                "sdk_route_config: route={} denies with {status}",
                route.name
            );
            let body = format!("route {} denied\n", route.name);
            self.send_http_response(
                status,
                vec![("x-route", &route.name)],
                Some(body.as_bytes()),
            );
            return Action::Pause;
        }
        if let Some(h) = &route.require_header
            && self.get_http_request_header(h).is_none()
        {
            info!("sdk_route_config: route={} missing {h}", route.name);
            let body = format!("route {} requires {h}\n", route.name);
            self.send_http_response(401, vec![("x-route", &route.name)], Some(body.as_bytes()));
            return Action::Pause;
        }
        self.set_http_request_header("x-route", Some(&route.name));
        for (k, v) in &route.request_headers {
            self.set_http_request_header(k, Some(v));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(index) = self.route else {
            return Action::Continue;
        };
        let route = &self.config.routes[index];
        // A local reply of this filter also passes here (Envoy runs local
        // replies through the encoder path, §11.3); it already has x-route.
        if self.get_http_response_header("x-route").is_none() {
            self.set_http_response_header("x-route", Some(&route.name));
        }
        for (k, v) in &route.response_headers {
            self.set_http_response_header(k, Some(v));
        }
        Action::Continue
    }
}
